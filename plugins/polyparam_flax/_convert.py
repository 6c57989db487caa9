"""Between NumPy and JAX: arrays, devices and the native <-> canonical layouts."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Layout", "device_name", "is_abstract", "place", "to_numpy"]


@dataclass(frozen=True)
class Layout:
    """How a native array maps to the canonical one: ``canonical = flip(native.transpose(perm), flip)``.

    ``perm`` ``None`` keeps the axes; ``flip`` names canonical axes reversed (a transposed
    convolution that convolves with its kernel as stored).
    """

    perm: tuple[int, ...] | None = None
    flip: tuple[int, ...] = ()

    def shape(self, native: tuple[Any, ...]) -> tuple[Any, ...]:
        """The canonical shape of a native shape."""
        return tuple(native) if self.perm is None else tuple(native[i] for i in self.perm)

    def to_canonical(self, native: np.ndarray) -> np.ndarray:
        """``native`` in canonical layout (a view)."""
        out = native if self.perm is None else native.transpose(self.perm)
        return np.flip(out, self.flip) if self.flip else out

    def to_native(self, canonical: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`to_canonical` (a view)."""
        out = np.flip(canonical, self.flip) if self.flip else canonical
        return out if self.perm is None else out.transpose(self._inverse)

    @functools.cached_property
    def _inverse(self) -> tuple[int, ...]:
        """The permutation that undoes :attr:`perm` (found once per layout: ``np.argsort`` costs 8 us a write)."""
        return tuple(int(i) for i in np.argsort(self.perm or ()))


def is_abstract(value: Any) -> bool:
    """Whether ``value`` describes an array without holding one (``nnx.eval_shape``'s ``ShapeDtypeStruct``)."""
    return isinstance(value, jax.ShapeDtypeStruct)


def to_numpy(array: Any) -> np.ndarray:
    """A JAX array as NumPy (read-only where JAX shares its host buffer); a sharded one gathered."""
    return np.asarray(array)


def place(array: np.ndarray, like: Any) -> Any:
    """A new JAX array holding ``array``, with the dtype and placement (sharding) of ``like``, a JAX array or a
    ``ShapeDtypeStruct``. Always a copy: JAX may alias host memory, and polyparam's buffers are reused.
    On several devices (a sharded array) each device gets its own block, the whole never lands on one device."""
    sharding = getattr(like, "sharding", None)
    host = np.asarray(array)
    if sharding is not None and len(sharding.device_set) > 1:
        return jax.make_array_from_callback(host.shape, sharding, lambda index: np.array(host[index], like.dtype))
    # a dtype given costs a conversion step even when it is the same (60 us against 40)
    value = jnp.array(host, copy=True) if host.dtype == like.dtype else jnp.array(host, dtype=like.dtype, copy=True)
    if getattr(like, "weak_type", False) and host.ndim == 0:
        # a weak-typed scalar (nnx.Param(1.0) after a jitted step) stays weak, so it does not promote what it
        # multiplies (bfloat16 activations) and a jitted function is not traced again; weak types are JAX's
        # defaults for Python numbers, which jnp.asarray of one gives
        weak = jnp.asarray(host.item())
        if weak.dtype == value.dtype:
            value = weak
    if sharding is not None and value.sharding != sharding:
        value = jax.device_put(value, sharding)
    return value


def device_name(array: Any) -> str:
    """polyparam's device name of a JAX array: ``cpu``, ``cuda:0``, ``tpu:0``; several joined by commas."""
    devices = getattr(array, "devices", None)
    if devices is None:
        return "cpu"
    names = {"cpu" if d.platform == "cpu" else f"{'cuda' if d.platform == 'gpu' else d.platform}:{d.id}"
             for d in devices()}
    return ",".join(sorted(names))
