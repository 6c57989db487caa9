"""Sharded JAX arrays (``nnx.with_partitioning``, ``NamedSharding``): placements and per-device blocks.

A sharded Variable holds one global ``jax.Array``; polyparam shows its global shape,
in canonical layout. In one process (JAX's single controller) every block is
addressable, so reads gather to the host and writes put each device's block on its
device (:func:`assemble`, never the whole array on one device). :func:`blocks` lists
the distinct blocks as boxes of the *canonical* array, replicated copies once, so a
seeded initializer can draw each block on its own
(:meth:`polyparam.init.Initializer.fill_slice`).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from polyparam_flax._convert import Layout

__all__ = ["Box", "assemble", "blocks", "is_distributed", "placement_text"]

Box = tuple[slice, ...]


def _devices(value: Any) -> int:
    sharding = getattr(value, "sharding", None)
    return 0 if sharding is None else len(sharding.device_set)


def is_distributed(value: Any) -> bool:
    """Whether ``value`` (a ``jax.Array`` or ``ShapeDtypeStruct``) lives on more than one device."""
    return _devices(value) > 1


def placement_text(value: Any, layout: Layout) -> str | None:
    """``"P('model', None) mesh (model=4)"``: the partition spec in canonical axes and the mesh, or ``None``
    for an array on one device. A sharding that is not a ``NamedSharding`` is named by its type."""
    if not is_distributed(value):
        return None
    sharding = value.sharding
    spec = getattr(sharding, "spec", None)
    mesh = getattr(sharding, "mesh", None)
    if spec is None or mesh is None:
        return f"{type(sharding).__name__} on {_devices(value)} devices"
    native = tuple(spec) + (None,) * (len(value.shape) - len(tuple(spec)))
    canonical = native if layout.perm is None else tuple(native[i] for i in layout.perm)
    axes = ", ".join("None" if a is None else repr(a) if isinstance(a, str) else repr(tuple(a)) for a in canonical)
    sizes = ", ".join(f"{name}={size}" for name, size in dict(mesh.shape).items())
    return f"P({axes}) mesh ({sizes})"


def _canonical_box(index: tuple[slice, ...], native_shape: tuple[int, ...], layout: Layout) -> Box:
    """The canonical box of the native block ``index`` (full slices resolved, axes permuted, flipped axes mirrored)."""
    native = tuple(slice(*s.indices(n)[:2]) for s, n in zip(index, native_shape))
    perm = layout.perm if layout.perm is not None else tuple(range(len(native_shape)))
    box = []
    for axis, source in enumerate(perm):
        s, n = native[source], native_shape[source]
        box.append(slice(n - s.stop, n - s.start) if axis in layout.flip else s)
    return tuple(box)


def blocks(value: Any, layout: Layout) -> list[Box]:
    """The distinct canonical boxes the devices of ``value`` hold, in device order (replicas once)."""
    shape = tuple(int(d) for d in value.shape)
    seen: list[Box] = []
    for index in value.sharding.devices_indices_map(shape).values():
        box = _canonical_box(tuple(index), shape, layout)
        if box not in seen:
            seen.append(box)
    return seen


def assemble(like: Any, layout: Layout, block: Callable[[Box], np.ndarray]) -> Any:
    """A new array with the shape, dtype and sharding of ``like`` whose device blocks are ``block(box)`` (canonical
    values of each canonical box), put in native layout on each device; one host block at a time."""
    shape = tuple(int(d) for d in like.shape)

    def native_block(index: Any) -> np.ndarray:
        box = _canonical_box(tuple(index), shape, layout)
        return np.ascontiguousarray(layout.to_native(np.asarray(block(box))), dtype=like.dtype)

    return jax.make_array_from_callback(shape, like.sharding, native_block)
