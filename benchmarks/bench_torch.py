"""PyTorch backend benchmarks: polyparam against the native torch way, as ratios measured in one run.

    python benchmarks/bench_torch.py            # full size: 1,000 layers; 100M float32 parameters (~400 MB)
    python benchmarks/bench_torch.py --quick    # smoke size

Targets (issue "PyTorch backend"):
    tree + iterate every parameter   <= 1.5x  named_parameters()
    state() (zero-copy)              <= 1.05x state_dict() + .numpy() on each tensor
    load_state()                     <= 1.2x  load_state_dict()

Each figure is the best of several repeats (the machine has 2 cores and noisy timings);
native and polyparam runs are interleaved so drift hits both alike.
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Callable

import numpy as np
import torch
from torch import nn

import polyparam as pp


def best(fn: Callable[[], object], *, repeats: int, number: int = 1) -> float:
    """The best mean time of ``number`` calls, over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return min(times)


def compare(name: str, native: Callable[[], object], ours: Callable[[], object], *, target: float,
            repeats: int, number: int = 1) -> bool:
    native_t = ours_t = float("inf")
    for _ in range(repeats):  # interleave
        native_t = min(native_t, best(native, repeats=1, number=number))
        ours_t = min(ours_t, best(ours, repeats=1, number=number))
    ratio = ours_t / native_t
    ok = ratio <= target
    print(f"{name:<34} native {native_t * 1e3:9.3f} ms   polyparam {ours_t * 1e3:9.3f} ms   "
          f"ratio {ratio:5.2f}x  (target <= {target}x)  {'ok' if ok else 'MISSED'}")
    return ok


def deep_model(layers: int) -> nn.Module:
    return nn.Sequential(*[nn.Linear(8, 8) for _ in range(layers)])


def wide_model(params: int) -> nn.Module:
    layers = 6
    width = int((params / layers) ** 0.5)
    with torch.no_grad():
        net = nn.Sequential(*[nn.Linear(width, width, bias=False) for _ in range(layers)])
    return net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    n_layers, n_params = (100, 1_000_000) if args.quick else (1_000, 100_000_000)
    repeats = 5 if args.quick else 7
    torch.set_grad_enabled(False)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, numpy {np.__version__}")
    results = []

    deep = deep_model(n_layers)

    def native_iter() -> None:
        for _name, _p in deep.named_parameters():
            pass

    def ours_iter() -> None:
        for _path, _p in pp.tree(deep).items():
            pass

    results.append(compare(f"iterate {n_layers}-layer model", native_iter, ours_iter, target=1.5,
                           repeats=repeats, number=20))

    wide = wide_model(n_params)
    total = sum(p.numel() for p in wide.parameters())
    print(f"wide model: {total / 1e6:.1f}M float32 parameters in {len(list(wide.parameters()))} tensors")
    tree = pp.tree(wide)

    def native_state() -> None:
        {k: v.numpy() for k, v in wide.state_dict().items()}

    def ours_state() -> None:
        tree.state()

    results.append(compare("state() (zero-copy)", native_state, ours_state, target=1.05,
                           repeats=repeats, number=200))

    source = {k: v.clone() for k, v in wide.state_dict().items()}
    source_np = {k: v.numpy() for k, v in source.items()}

    def native_load() -> None:
        wide.load_state_dict(source)

    def ours_load() -> None:
        tree.load_state(source_np)

    results.append(compare("load_state()", native_load, ours_load, target=1.2, repeats=repeats,
                           number=20 if args.quick else 2))
    for key, value in source_np.items():
        np.testing.assert_array_equal(tree[key].numpy(), value)
    print("all targets met" if all(results) else "some targets MISSED")


if __name__ == "__main__":
    main()
