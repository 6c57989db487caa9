"""One pool of worker threads for the work NumPy does with the GIL released (drawing, hashing, copying)."""

from __future__ import annotations

import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

import numpy as np

from polyparam import errors

__all__ = ["count", "parallel_copy", "parallel_map"]

T = TypeVar("T")
R = TypeVar("R")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


THREADS_ENV = "POLYPARAM_NUM_THREADS"
#: Values of ``POLYPARAM_NUM_THREADS`` already warned about (one warning per value).
_warned: set[str] = set()


def count() -> int:
    """Worker threads: ``POLYPARAM_NUM_THREADS``, else one per CPU.

    The variable is a whole number of threads (``0`` or empty: one per CPU). Any other
    value (``"abc"``, ``"1e3"``, ``"-2"``) is ignored with one
    :class:`~polyparam.errors.PolyparamWarning` per value, and one thread per CPU is used:
    the count changes speed, never values, so a typo does not stop a save or a load.
    """
    text = os.environ.get(THREADS_ENV, "").strip()
    cpus = os.cpu_count() or 1
    if not text:
        return cpus
    if text.isascii() and text.isdigit():
        return int(text) or cpus
    if text not in _warned:
        _warned.add(text)
        shown = repr(text) if len(text) <= 40 else f"{text[:37]!r}..."
        warnings.warn(f"Ignoring environment variable {THREADS_ENV}={shown}: expected a whole number of threads "
                      f"such as '4' (or 0 for one per CPU); using {cpus}. Set it to a number or unset it.",
                      errors.PolyparamWarning, stacklevel=2)
    return cpus


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None or _pool._max_workers != count():
            _pool = ThreadPoolExecutor(max_workers=count(), thread_name_prefix="polyparam")
        return _pool


def parallel_map(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(x) for x in items]``, on the pool when there is more than one item and thread."""
    items = list(items)
    if len(items) <= 1 or count() == 1 or threading.current_thread().name.startswith("polyparam"):
        return [fn(x) for x in items]      # (a worker never waits on its own pool)
    return list(_executor().map(fn, items))


def parallel_copy(dst: np.ndarray, src: np.ndarray, /, *, piece: int = 1 << 18) -> None:
    """``dst[...] = src`` (same shape, any strides, casting as assignment does), in pieces on the pool.

    Pieces are runs of about ``piece`` elements along the first axis, so a transposing
    copy (a native layout seen canonically) works through cache-sized pieces on every core.
    """
    if src.shape != dst.shape:
        msg = f"Cannot copy with parallel_copy: expected equal shapes, got {dst.shape} and {src.shape}."
        raise errors.ShapeMismatchError(msg, expected=dst.shape, got=src.shape)
    if dst.ndim == 0 or dst.size <= piece or count() == 1:
        np.copyto(dst, src, casting="unsafe")
        return
    rows = max(1, piece // max(1, dst.size // dst.shape[0]))

    def copy(start: int) -> None:
        np.copyto(dst[start:start + rows], src[start:start + rows], casting="unsafe")

    parallel_map(copy, range(0, dst.shape[0], rows))
