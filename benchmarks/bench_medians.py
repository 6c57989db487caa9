"""Medians, not only the best run: 5,000 tiny tensors on torch, polyparam against the native way.

The other scripts print the best of a few runs, which hides what Python's cycle collector
costs: over thousands of tensors a call can meet a full collection of the process's
heap (about 110 ms with torch imported). polyparam pauses automatic collection during
its bulk operations (``polyparam._gc``); this script prints median and best of each, and
the same with the pause switched off, so the difference stays measured:

    python benchmarks/bench_medians.py [--quick] [--repeat 11]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from typing import Callable, Iterator


def timings(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """``(median, best)`` wall time of ``repeat`` runs, in milliseconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, min(times) * 1e3


@contextlib.contextmanager
def pause_switched_off() -> Iterator[None]:
    """polyparam's operations with automatic collection running, as before the pause."""
    import importlib

    modules = [importlib.import_module(name) for name in
               ("polyparam._params.tree", "polyparam.checkpoint.single", "polyparam._transfer")]
    kept = [module.collector_paused for module in modules]
    for module in modules:
        module.collector_paused = contextlib.nullcontext
    try:
        yield
    finally:
        for module, pause in zip(modules, kept):
            module.collector_paused = pause


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 tensors instead of 5,000")
    parser.add_argument("--repeat", type=int, default=11)
    args = parser.parse_args()
    try:
        import torch
        from safetensors.torch import load_file, save_file
    except ImportError:
        print("torch is not installed: nothing to measure")
        return
    import polyparam as pp

    layers = 250 if args.quick else 2500
    model = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(layers)])
    tree = pp.tree(model)
    folder = tempfile.mkdtemp()
    ours_file, native_file = os.path.join(folder, "pp.safetensors"), os.path.join(folder, "native.safetensors")
    state = tree.state(copy=True)
    native_state = {k: v.clone() for k, v in model.state_dict().items()}
    pp.save(tree, ours_file)

    def native_init() -> None:
        with torch.no_grad():
            for layer in model:
                torch.nn.init.xavier_uniform_(layer.weight)
                torch.nn.init.zeros_(layer.bias)

    rows = [
        ("initialize", lambda: tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True), native_init),
        ("load_state", lambda: tree.load_state(state), lambda: model.load_state_dict(native_state)),
        ("save", lambda: pp.save(tree, ours_file), lambda: save_file(model.state_dict(), native_file)),
        ("load", lambda: pp.load(tree, ours_file), lambda: model.load_state_dict(load_file(native_file))),
    ]
    print(f"torch, {2 * layers:,} tensors, {args.repeat} runs each: median (best) in ms")
    for name, ours, native in rows:
        native_median, native_best = timings(native, args.repeat)
        median, best = timings(ours, args.repeat)
        with pause_switched_off():
            off_median, off_best = timings(ours, args.repeat)
        print(f"  {name:<11} polyparam {median:8.1f} ({best:7.1f})   without the pause {off_median:8.1f} "
              f"({off_best:7.1f})   native {native_median:8.1f} ({native_best:7.1f})   "
              f"median ratio {median / native_median:5.2f}x", flush=True)


if __name__ == "__main__":
    main()
