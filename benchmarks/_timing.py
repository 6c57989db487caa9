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


def peak_growth(fn: Callable[[], object]) -> int:
    """Bytes the process's resident set peaked above its size before ``fn()`` (Linux: exact high-water mark).

    Counts every allocator (NumPy's, TensorFlow's, torch's), so a framework's own way and
    polyparam's are measured alike. Elsewhere: NumPy allocations traced by tracemalloc.
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")                 # reset the high-water mark to the current size
    except OSError:
        import tracemalloc

        tracemalloc.start()
        fn()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak
    base = proc_status("VmRSS")
    fn()
    return proc_status("VmHWM") - base


def proc_status(field: str) -> int:
    """A size field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ``RssAnon``...) in bytes (Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")
