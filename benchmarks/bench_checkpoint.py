"""Checkpoint benchmarks: save, load and transfer against the native ways, measured in the same run.

Targets (issue 7), for 100M float32 parameters (400 MB):
  save      <= 1.0x safetensors.torch.save_file
  load      <= 1.1x safetensors.torch.load_file + load_state_dict
  transfer  <= 3x one memcpy of the same bytes (torch -> keras: transposes every kernel; torch -> mxnet)
  peak extra memory in each <= largest tensor + 10%

Run: python benchmarks/bench_checkpoint.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from typing import Any, Callable

import numpy as np
from _timing import proc_status

import polyparam as pp


def rss() -> int:
    """Anonymous resident memory: what the process allocated (a file's mapped page cache is not counted)."""
    return proc_status("RssAnon")


def trim() -> None:
    """Give the memory freed so far back to the system (glibc), so that a call's new allocations show as growth.

    Without it the allocator hands a call the pages an earlier call freed, and neither the
    growth nor the cost of fresh pages shows: a baseline that allocates a whole shard looked free.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):   # not glibc: measure as is
        pass


def measure(fn: Callable[[], Any]) -> tuple[float, int]:
    """Wall time and peak RSS growth (sampled every ms) of one call, from trimmed memory."""
    trim()
    base = rss()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - t0
    stop.set()
    thread.join()
    return elapsed, max(peak[0], rss()) - base


def best(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, int]:
    """The best time and the largest peak growth of ``repeat`` calls (disk and page-cache noise is large)."""
    runs = [measure(fn) for _ in range(repeat)]
    return min(t for t, _ in runs), max(m for _, m in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small smoke size (6 x 512 x 512)")
    args = parser.parse_args()
    import torch
    from safetensors.torch import load_file, save_file

    n = 512 if args.quick else 4096
    layers = 6
    torch.manual_seed(0)
    net = torch.nn.Sequential(*[torch.nn.Linear(n, n, bias=False) for _ in range(layers)])
    other = torch.nn.Sequential(*[torch.nn.Linear(n, n, bias=False) for _ in range(layers)])
    largest = n * n * 4
    total = layers * largest
    print(f"{layers} x ({n}, {n}) float32 = {total / 1e6:.0f} MB; largest tensor {largest / 1e6:.0f} MB")
    results = []
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(__file__))) as d:
        native_file, ours_file = os.path.join(d, "native.safetensors"), os.path.join(d, "ours.safetensors")
        state = net.state_dict()
        save_file(state, native_file)  # warm the page cache and the allocator
        pp.save(net, ours_file)
        native_save, _ = best(lambda: save_file(state, native_file))
        ours_save, ours_save_mem = best(lambda: pp.save(net, ours_file))
        results.append(("save", ours_save, native_save, 1.0, ours_save_mem))

        def native_load() -> None:
            other.load_state_dict(load_file(native_file))

        native_load()
        native_load_t, _ = best(native_load)
        pp.load(other, ours_file)
        ours_load, ours_load_mem = best(lambda: pp.load(other, ours_file))
        results.append(("load (verify=True)", ours_load, native_load_t, 1.1, ours_load_mem))
        fast_load, fast_load_mem = best(lambda: pp.load(other, ours_file, verify=False))
        results.append(("load (verify=False)", fast_load, native_load_t, 1.1, fast_load_mem))

    src = np.ones(total // 4, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    memcpy, _ = best(lambda src=src, dst=dst: np.copyto(dst, src))
    del src, dst
    try:
        import keras

        model = keras.Sequential([keras.Input((n,))] + [keras.layers.Dense(n, use_bias=False) for _ in range(layers)])
        pp.transfer(net, model)
        transfer_t, transfer_mem = best(lambda: pp.transfer(net, model))
        results.append(("transfer torch->keras", transfer_t, memcpy, 3.0, transfer_mem))
    except ImportError:
        print("keras not installed: transfer skipped")
    try:  # the same layout on both sides: no transpose, one copy per tensor
        import polyparam  # noqa: F401, I001  (first: lets MXNet load beside TensorFlow)
        import mxnet as mx
        from mxnet.gluon import nn as gnn

        block = gnn.Sequential()
        for _ in range(layers):
            block.add(gnn.Dense(n, in_units=n, use_bias=False))
        block.initialize()
        pp.transfer(net, block)
        mx.nd.waitall()
        transfer_t, transfer_mem = best(lambda: (pp.transfer(net, block), mx.nd.waitall()))
        results.append(("transfer torch->mxnet", transfer_t, memcpy, 3.0, transfer_mem))
    except ImportError:
        print("mxnet not installed: transfer skipped")

    print(f"{'operation':24} {'polyparam s':>12} {'baseline s':>11} {'ratio':>7} {'target':>7} "
          f"{'peak extra MB':>14} {'limit MB':>9}")
    for name, ours, base, target, mem in results:
        ratio = ours / base
        limit = largest * 1.1
        print(f"{name:24} {ours:12.3f} {base:11.3f} {ratio:7.2f} {target:7.1f} {mem / 1e6:14.1f} {limit / 1e6:9.1f}"
              + ("" if ratio <= target and mem <= limit else "   MISSED"))


if __name__ == "__main__":
    main()
