"""Random streams keyed by (seed, canonical path): Philox blocks, region fills, kernels.

See :mod:`polyparam.init` for what the streams are; never change :data:`BLOCK`."""

from __future__ import annotations

import hashlib
import math
import threading
from typing import Any, Callable, Sequence

import numpy as np

from polyparam import errors
from polyparam._threads import count, parallel_map

__all__ = ["BLOCK", "generator_for", "stream_key"]

#: Elements per random-stream block. Part of what seeded values are: never change it.
BLOCK = 1 << 20


# ---- streams -----------------------------------------------------------------------

#: The seeds accepted: every 64-bit integer, signed or unsigned (what NumPy, PyTorch and
#: Python's ``hash`` produce), from ``SEED_MIN`` to ``SEED_MAX`` inclusive.
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1


def _seed(seed: Any, /) -> int:
    """``seed`` as a Python ``int``, or :class:`~polyparam.errors.InvalidArgumentError` if it is not a seed.

    A seed is an ``int`` or a NumPy integer (not a ``bool``) from ``SEED_MIN`` to
    ``SEED_MAX``. Strings, floats (``1.1`` and ``1.9`` would give the same values) and
    anything else are refused, never converted.
    """
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)):
        value = int(seed)
        if SEED_MIN <= value <= SEED_MAX:
            return value
        shown = f"<an integer of {value.bit_length()} bits>" if value.bit_length() > 96 else repr(value)
        msg = (f"Invalid value for argument `seed`: expected an integer from -2**63 to 2**64 - 1. Received: "
               f"seed={shown}. Reduce it into that range, e.g. seed % 2**64.")
    else:
        shown = repr(seed) if len(repr(seed)) <= 80 else f"{repr(seed)[:77]}..."
        msg = (f"Invalid value for argument `seed`: expected an int (or a NumPy integer) from -2**63 to 2**64 - 1, "
               f"got {type(seed).__name__}. Received: seed={shown}. Pass an int, e.g. seed=0.")
    raise errors.InvalidArgumentError(msg, argument="seed", expected="an int from -2**63 to 2**64 - 1", got=seed)


def stream_key(seed: int, path: str) -> int:
    """The 128-bit Philox key of one parameter: a hash of ``(seed, canonical path)``.

    ``seed`` is an ``int`` from ``-2**63`` to ``2**64 - 1`` (a NumPy integer is one);
    anything else is refused with :class:`~polyparam.errors.InvalidArgumentError`.
    """
    digest = hashlib.blake2b(f"{_seed(seed)}\x00{path}".encode(), digest_size=16).digest()
    return int.from_bytes(digest, "little")


def _block_generator(key: int, block: int) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(key=key, counter=[0, 0, 0, block]))


#: Each thread's reusable generator for :func:`_stream`, and the state it is set to (made on first use).
_REUSED = threading.local()
_WORD = (1 << 64) - 1


def _stream(key: int, block: int, steps: int = 0) -> np.random.Generator:
    """What :func:`_block_generator` gives, as this thread's one reusable generator with its state set.

    ``steps``: start that many counter steps (of 32 bytes: four 64-bit words) into the
    block's stream, where a piece of the block starts (:func:`_fill_streams`).

    A new ``Philox`` draws OS entropy for a seed that its key then replaces (7 us); setting
    the state of one kept per thread takes 0.6 us (its state's arrays are kept too and
    changed in place: the setter copies their values), a tenth of a small tensor's fill.
    Only for the fills below, whose kernel is done with the generator before this thread
    asks for the next one.
    """
    generator = getattr(_REUSED, "generator", None)
    if generator is None:
        generator = _REUSED.generator = np.random.Generator(np.random.Philox(key=0))
        _REUSED.counter, _REUSED.key = np.zeros(4, np.uint64), np.zeros(2, np.uint64)
        _REUSED.state = {"bit_generator": "Philox", "state": {"counter": _REUSED.counter, "key": _REUSED.key},
                         "buffer": np.zeros(4, np.uint64), "buffer_pos": 4, "has_uint32": 0, "uinteger": 0}
    counter = _REUSED.counter
    counter[0], counter[3] = steps, block
    words = _REUSED.key
    words[0], words[1] = key & _WORD, key >> 64
    generator.bit_generator.state = _REUSED.state
    return generator


def generator_for(seed: int, path: str) -> np.random.Generator:
    """The counter-based generator of one parameter (its block-0 stream), keyed by ``(seed, path)``.

    ``seed`` is checked as :func:`stream_key` checks it.
    """
    return _block_generator(stream_key(seed, path), 0)


def _fill_streams(arr: np.ndarray, key: int, kernel: Callable[[np.random.Generator, np.ndarray], None]) -> None:
    """Fill ``arr`` block by block, each block from its own counter range of the key's stream.

    Values depend only on the key and the C-order position, not on threads or memory layout.
    A C-contiguous float array is drawn into directly; any other (a strided view of a
    native layout, another dtype) gets each block drawn in :data:`_CHUNK`-element pieces
    into a small scratch and scattered to its place, so no whole-array copy is made.

    A kernel marked ``per_element`` (it draws exactly one uniform per element, a slice at a
    time) is also split within a block, in :data:`_PIECE`-element pieces on every core: a
    piece's generator starts where the block's stream stands at the piece's first element
    (Philox is a counter: 32 bytes of uniforms per step), so the values are those of one
    draw of the block. A single-block tensor then fills on every core too.
    """
    dtype = np.dtype(np.float64 if arr.dtype == np.float64 else np.float32)
    size = arr.size
    step = _PIECE if getattr(kernel, "per_element", False) and size > _PIECE and count() > 1 else BLOCK
    flat = arr.reshape(-1) if arr.dtype == dtype and arr.flags.c_contiguous and arr.flags.writeable else None

    def run(lo: int) -> None:
        block, offset = divmod(lo, BLOCK)   # pieces never cross a block: BLOCK is a multiple of _PIECE
        g = _stream(key, block, offset * dtype.itemsize // 32)
        hi = min(lo + step, size)
        if flat is not None:
            kernel(g, flat[lo:hi])
            return
        # kernels consume their generator slice by slice, so drawing a block in pieces
        # of whole slices gives the values of drawing it at once
        scratch = np.empty(min(_CHUNK, hi - lo), dtype)
        for start in range(lo, hi, _CHUNK):
            piece = scratch[:min(_CHUNK, hi - start)]
            kernel(g, piece)
            _scatter(arr, start, piece)

    if size <= step:
        run(0)
    else:
        parallel_map(run, range(0, size, step))


def _scatter(arr: np.ndarray, start: int, values: np.ndarray) -> None:
    """Write the 1-D ``values`` to the C-order flat positions ``start, start + 1, ...`` of ``arr`` (any strides)."""
    n = values.size
    if n == 0:
        return
    if arr.ndim <= 1:
        arr.reshape(-1)[start:start + n] = values   # 0-d and 1-d arrays reshape to views
        return
    inner = math.prod(arr.shape[1:])
    first, end = start // inner, start + n
    if start % inner:                                # a partial leading sub-array
        take = min(n, inner - start % inner)
        _scatter(arr[first], start % inner, values[:take])
        values, start, first = values[take:], start + take, first + 1
    whole = (end - start) // inner
    if whole:
        arr[first:first + whole] = values[:whole * inner].reshape((whole, *arr.shape[1:]))
    if (end - start) % inner:                        # a partial trailing sub-array
        _scatter(arr[first + whole], 0, values[whole * inner:])


def _region(index: Sequence[slice], shape: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """``index`` (one step-1 slice per axis) as ``((start, stop), ...)`` within ``shape``."""
    index = tuple(index)
    if len(index) != len(shape) or not all(isinstance(s, slice) and s.step in (None, 1) for s in index):
        msg = (f"Invalid value for argument `index`: expected one slice with step 1 per axis of shape "
               f"{tuple(shape)}. Received: index={index!r}.")
        raise errors.InitializerError(msg, expected="tuple of slices", got=index)
    return tuple(s.indices(int(d))[:2] for s, d in zip(index, shape))


def _fill_region_streams(arr: np.ndarray, key: int, kernel: Callable[[np.random.Generator, np.ndarray], None],
                         shape: Sequence[int], region: Sequence[tuple[int, int]]) -> None:
    """Fill ``arr`` with the box ``region`` of what :func:`_fill_streams` gives an array of ``shape``.

    Only the blocks the box overlaps are drawn, each into its own scratch block
    (so memory is ``BLOCK`` elements per thread, whatever the array's size).
    """
    shape = tuple(int(d) for d in shape)
    lengths = tuple(max(0, b - a) for a, b in region)
    if arr.shape != lengths:
        msg = f"Cannot fill a slice of shape {arr.shape}: expected the box's shape {lengths}."
        raise errors.InitializerError(msg, expected=lengths, got=arr.shape)
    if math.prod(lengths) == 0:
        return
    if lengths == shape:
        _fill_streams(arr, key, kernel)
        return
    dtype = np.float64 if arr.dtype == np.float64 else np.float32
    total = math.prod(shape)
    strides = [math.prod(shape[i + 1:]) for i in range(len(shape))]
    # the box as runs of the flat array: axes after the last partial one are whole
    k = max(i for i, (d, n) in enumerate(zip(shape, lengths)) if n != d)
    run = lengths[k] * strides[k]
    outer = lengths[:k]
    starts = np.full(math.prod(outer), region[k][0] * strides[k], dtype=np.int64)
    if outer:
        grids = np.indices(outer, dtype=np.int64).reshape(len(outer), -1)
        for i in range(len(outer)):
            starts += (grids[i] + region[i][0]) * strides[i]
        del grids
    ends = starts + run
    direct = arr.dtype == dtype and arr.flags.c_contiguous and arr.flags.writeable
    target = arr if direct else np.empty(arr.shape, dtype)
    rows = target.reshape(len(starts), run)
    first, last = int(starts[0]) // BLOCK, (int(ends[-1]) - 1) // BLOCK
    offsets = np.arange(min(run, BLOCK), dtype=np.int64)  # runs inside one block are at most BLOCK long

    def block(b: int) -> None:
        lo_flat, hi_flat = b * BLOCK, min((b + 1) * BLOCK, total)
        lo = int(np.searchsorted(ends, lo_flat, side="right"))
        hi = int(np.searchsorted(starts, hi_flat, side="left"))
        if lo >= hi:
            return
        if hi - lo == 1 and starts[lo] <= lo_flat and hi_flat <= ends[lo]:  # the block lies in one run: in place
            kernel(_stream(key, b), rows[lo, lo_flat - int(starts[lo]):hi_flat - int(starts[lo])])
            return
        values = np.empty(hi_flat - lo_flat, dtype)
        kernel(_stream(key, b), values)
        inside = np.flatnonzero((starts[lo:hi] >= lo_flat) & (ends[lo:hi] <= hi_flat)) + lo
        if inside.size:
            rows[inside] = values[(starts[inside] - lo_flat)[:, None] + offsets]
        for r in sorted({lo, hi - 1}):   # runs cut by the block's edges
            if lo_flat <= starts[r] and ends[r] <= hi_flat:
                continue
            a, e = max(int(starts[r]), lo_flat), min(int(ends[r]), hi_flat)
            rows[r, a - int(starts[r]):e - int(starts[r])] = values[a - lo_flat:e - lo_flat]

    parallel_map(block, range(first, last + 1))
    if not direct:
        arr[...] = target


#: Kernels work through a block in slices of this many elements (cache-sized; keeps
#: Box-Muller's scratch small). Part of what seeded normal values are.
_SLICE = 1 << 16

#: Elements drawn at a time into scratch when the target is not a contiguous float
#: array (a whole number of slices; its size only sets memory and speed, not values).
_CHUNK = 1 << 19

#: Elements per task when a block is split over the cores (a whole number of slices that
#: divides BLOCK, about 0.5 ms of draws; its size only sets speed, not values).
_PIECE = 1 << 18


def _uniform_kernel(low: float, high: float) -> Callable[[np.random.Generator, np.ndarray], None]:
    def kernel(g: np.random.Generator, block: np.ndarray) -> None:
        scale, shift = block.dtype.type(high - low), block.dtype.type(low)
        if block.size <= _SLICE:   # most tensors: one slice
            g.random(out=block, dtype=block.dtype)
            np.multiply(block, scale, out=block)
            np.add(block, shift, out=block)
            return
        for start in range(0, block.size, _SLICE):   # scale each slice while it is in cache
            v = block[start:start + _SLICE]
            g.random(out=v, dtype=v.dtype)
            v *= scale
            v += shift

    kernel.per_element = True   # type: ignore[attr-defined]  # one uniform per element: see _fill_streams
    return kernel


def _box_muller(g: np.random.Generator, n: int, dtype: np.dtype, out: np.ndarray | None = None) -> np.ndarray:
    """``n`` standard normals by the Box-Muller transform of ``2 * ceil(n / 2)`` uniforms (exact)."""
    h = (n + 1) // 2
    u = g.random(2 * h, dtype=dtype)
    radius, angle = u[:h], u[h:]
    np.subtract(1, radius, out=radius)          # (0, 1]: log is finite
    np.log(radius, out=radius)
    radius *= -2
    np.sqrt(radius, out=radius)
    angle *= dtype.type(2 * np.pi)
    out = np.empty(n, dtype) if out is None else out
    cos = np.cos(angle)
    np.multiply(radius, cos, out=cos)
    np.sin(angle, out=angle)
    angle *= radius
    out[:h] = cos
    out[h:] = angle[:n - h]
    return out


def _normal_kernel(mean: float, std: float, low: float | None = None,
                   high: float | None = None) -> Callable[[np.random.Generator, np.ndarray], None]:
    """N(mean, std^2), optionally truncated to [low, high] (in standard deviations) by redrawing."""

    def kernel(g: np.random.Generator, block: np.ndarray) -> None:
        for start in range(0, block.size, _SLICE):
            v = block[start:start + _SLICE]
            _box_muller(g, v.size, v.dtype, out=v)
            if low is not None:
                bad = np.flatnonzero((v < low) | (v > high))
                while bad.size:
                    redraw = _box_muller(g, bad.size, v.dtype)
                    v[bad] = redraw
                    bad = bad[(redraw < low) | (redraw > high)]
        block *= block.dtype.type(std)
        if mean:
            block += block.dtype.type(mean)
        if low is not None and high is not None and std > 0:   # rounding may step one ulp past a bound
            np.clip(block, block.dtype.type(mean + low * std), block.dtype.type(mean + high * std), out=block)

    # Box-Muller takes one uniform per element of a whole slice; redraws past a bound take any number
    kernel.per_element = low is None   # type: ignore[attr-defined]
    return kernel


