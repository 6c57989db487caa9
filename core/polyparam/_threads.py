"""One pool of worker threads for the work NumPy does with the GIL released (drawing, hashing, copying)."""

from __future__ import annotations

import functools
import math
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, TypeVar

import numpy as np

from polyparam import errors

__all__ = ["count", "parallel_copy", "parallel_map", "tiled_copy"]

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
    cpus = _cpus()
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


@functools.cache
def _cpus() -> int:
    """``os.cpu_count()``, read once: it reads a file under /sys on every call (5 us), and a save asks per tensor."""
    return os.cpu_count() or 1


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

    The pieces are runs of about ``piece`` elements along the first axis, on every core.
    With one thread, a transposing copy (a native layout seen canonically, or the reverse)
    goes through square tiles of its two longest axes instead, which stay in the L1 cache,
    where NumPy's own loop is slow (:func:`tiled_copy`): a conv kernel's ``(kh, kw, in,
    out)`` read as ``(out, in, kh, kw)`` runs its inner loop over ``kw``, 1 GB/s. Small
    copies and a source sharing memory with ``dst`` get one NumPy copy. Tiles are not
    spread over threads: their Python loop holds the GIL between tiles. On two cores,
    ResNet50's kernels read canonically took 31 ms in tiles (one thread) or in runs (two),
    48 ms in one NumPy copy; tiles on two threads, 37 ms.
    """
    if src.shape != dst.shape:
        msg = f"Cannot copy with parallel_copy: expected equal shapes, got {dst.shape} and {src.shape}."
        raise errors.ShapeMismatchError(msg, expected=dst.shape, got=src.shape)
    if dst.size < TILED_FROM or np.may_share_memory(dst, src):   # NumPy buffers an overlapping copy
        np.copyto(dst, src, casting="unsafe")
        return
    threads = count()
    if threads == 1 and tiled_copy(dst, src):
        return
    if dst.ndim == 0 or dst.size <= piece or threads == 1:
        np.copyto(dst, src, casting="unsafe")
        return
    rows = max(1, piece // max(1, dst.size // dst.shape[0]))

    def copy(start: int) -> None:
        np.copyto(dst[start:start + rows], src[start:start + rows], casting="unsafe")

    parallel_map(copy, range(0, dst.shape[0], rows))


#: Elements from which :func:`parallel_copy` copies a transposing copy tile by tile.
TILED_FROM = 1 << 16
#: At most this many planes (index combinations of the short axes) are tiled.
_MAX_PLANES = 64
#: Above this many planes a tile is half as wide: every plane of it stays in the cache.
_PLANES_PER_TILE = 16
#: NumPy's inner loop is short below this many elements: its per-loop cost dominates.
_SHORT_LOOP = 16
#: A source stride that is a multiple of this many bytes maps the lines a loop reads to few cache sets.
_ALIASING_STEP = 1024


def tiled_copy(dst: np.ndarray, src: np.ndarray, /) -> bool:
    """``dst[...] = src`` in square tiles on this thread, where it is a transposing copy that NumPy's own
    loop makes slow (a short inner loop, or steps of a multiple of 1 KiB through ``src``) and both tiled
    axes hold two tiles; ``False`` (nothing copied) otherwise. See :func:`parallel_copy`."""
    bands = _tile_bands(dst, src)
    if bands is None:
        return False
    for band in bands:
        _copy_band(dst, src, *band)
    return True


def _tile_bands(dst: np.ndarray, src: np.ndarray) -> list[tuple[int, int, int, int, int]] | None:
    """The work of a tiled copy: ``(first row, tile, columns, rows axis, columns axis)`` bands, or ``None``
    where tiles do not help (small, the same order on both sides, or many small planes)."""
    if dst.ndim < 2 or dst.size < TILED_FROM:
        return None
    rows_axis, cols_axis = sorted(sorted(range(dst.ndim), key=lambda k: dst.shape[k])[-2:])
    tile = max(16, 256 // max(dst.itemsize, src.itemsize, 1))
    if min(dst.shape[rows_axis], dst.shape[cols_axis]) < 2 * tile:
        return None     # a thin matrix: NumPy's one copy streams it; tiles would be a Python loop of slivers
    if np.may_share_memory(dst, src):
        return None     # tiles would read what earlier tiles wrote; NumPy buffers an overlapping copy
    faster_in_dst = abs(dst.strides[cols_axis]) < abs(dst.strides[rows_axis])
    faster_in_src = abs(src.strides[cols_axis]) < abs(src.strides[rows_axis])
    if faster_in_dst == faster_in_src:
        return None
    # NumPy's own loop runs along dst's densest axis. It is slow when that loop is short (a conv kernel's
    # kw) or steps through src by a multiple of 1 KiB (the lines it reads all fall in a few cache sets);
    # otherwise it is as fast as tiles or faster (an LM head read canonically: 18 ms against 31 ms in tiles)
    inner = min((k for k in range(dst.ndim) if dst.shape[k] > 1), key=lambda k: abs(dst.strides[k]))
    if dst.shape[inner] >= _SHORT_LOOP and abs(src.strides[inner]) % _ALIASING_STEP:
        return None
    short = [k for k in range(dst.ndim) if k not in (rows_axis, cols_axis)]
    planes = math.prod(dst.shape[k] for k in short)
    if planes > _MAX_PLANES:
        return None
    # a tile spans every plane (a conv kernel's kh x kw): each tile's rows in dst are then whole runs, where tiles
    # plane by plane write every line of dst once per plane (3x3 512x512 read canonically: 3.2 ms against 5.9 ms)
    if planes > _PLANES_PER_TILE:
        tile = max(16, tile // 2)
    return [(start, tile, dst.shape[cols_axis], rows_axis, cols_axis)
            for start in range(0, dst.shape[rows_axis], tile)]


def _copy_band(dst: np.ndarray, src: np.ndarray, start: int, tile: int, cols: int, rows_axis: int,
               cols_axis: int) -> None:
    """Copy one band of ``tile`` rows (along ``rows_axis``), a tile of every plane at a time."""
    at: list[Any] = [slice(None)] * dst.ndim
    at[rows_axis] = slice(start, start + tile)
    for j in range(0, cols, tile):
        at[cols_axis] = slice(j, j + tile)
        np.copyto(dst[tuple(at)], src[tuple(at)], casting="unsafe")
