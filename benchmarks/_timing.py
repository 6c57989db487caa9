"""Small helpers shared by the benchmark scripts."""

from __future__ import annotations

import time
from typing import Callable


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """The best wall time of ``repeat`` runs, in seconds (least disturbed by other load)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def report(name: str, ours: float, native: float, target: float | None = None) -> None:
    ratio = ours / native if native > 0 else float("inf")
    verdict = "" if target is None else ("  ok" if ratio <= target else f"  OVER target {target}x")
    print(f"{name:<58} polyparam {ours:8.4f} s   native {native:8.4f} s   ratio {ratio:5.2f}x{verdict}", flush=True)
