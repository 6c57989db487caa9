"""What all-or-nothing costs: the undo copies of every multi-parameter write, measured.

Every load_state, pp.load, pp.transfer and initialize(force_reinit=True) keeps a copy of
each value it overwrites until the whole operation succeeded, so that a write the
framework refuses halfway (or a Ctrl-C) changes nothing. This prints, per operation on
a torch model of 6 Linear(4096, 4096) (100M float32 parameters, 403 MB), the peak
resident memory above the start and its ratio to the model's size, beside the native
way in the same run (which keeps no copy: a failure leaves the model half-written).
Expected: about one model size for the overwritten values, plus what the operation
itself needed before (pp.load: a mapped file; initialize: under 64 MiB of scratch).

Run: python benchmarks/bench_undo.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any, Callable

import torch
from _timing import best_of, peak_growth

import polyparam as pp


def model(width: int) -> torch.nn.Module:
    return torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(6)])


def line(name: str, fn: Callable[[], Any], native: Callable[[], Any], nbytes: int) -> None:
    fn()  # warm up (first-call imports and allocations are not the operation's)
    native()
    ours, theirs = peak_growth(fn), peak_growth(native)
    t_ours, t_theirs = best_of(fn), best_of(native)
    print(f"{name:<34} peak extra {ours / 2**20:8.1f} MiB = {ours / nbytes:4.2f}x model   "
          f"native {theirs / 2**20:8.1f} MiB   time {t_ours:.3f} s vs {t_theirs:.3f} s ({t_ours / t_theirs:4.2f}x)",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a small model (smoke run)")
    width = 512 if parser.parse_args().quick else 4096
    torch.manual_seed(0)
    dst, src = model(width), model(width)
    tree, source = pp.tree(dst), pp.tree(src)
    nbytes = sum(p.numel() * p.element_size() for p in dst.parameters())
    print(f"model: {nbytes / 2**20:.1f} MiB in {len(tree)} blocks", flush=True)
    state = source.state()
    native_state = src.state_dict()
    line("load_state", lambda: tree.load_state(state), lambda: dst.load_state_dict(native_state), nbytes)
    with tempfile.TemporaryDirectory() as tmp:
        file = os.path.join(tmp, "src.safetensors")
        pp.save(source, file)
        from safetensors.torch import load_file

        line("pp.load (verify=False)", lambda: pp.load(tree, file, verify=False),
             lambda: dst.load_state_dict(load_file(file)), nbytes)
    line("pp.transfer torch -> torch", lambda: pp.transfer(src, dst), lambda: dst.load_state_dict(src.state_dict()),
         nbytes)

    def native_init() -> None:
        with torch.no_grad():
            for layer in dst:
                torch.nn.init.xavier_uniform_(layer.weight)
                torch.nn.init.zeros_(layer.bias)

    line("initialize(Xavier, force_reinit)", lambda: tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True),
         native_init, nbytes)


if __name__ == "__main__":
    main()
