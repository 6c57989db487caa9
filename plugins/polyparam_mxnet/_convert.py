"""Between NumPy and MXNet: arrays, layouts and contexts. The one module that imports mxnet.

libmxnet is loaded here, after :func:`polyparam_mxnet._loadorder.check` (a clear error
instead of a segmentation fault); the other modules take ``mx``, ``gluon`` and
``autograd`` from here, so none of them can load libmxnet before the check.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from polyparam import errors
from polyparam_mxnet import _loadorder

_loadorder.check()  # before libmxnet is loaded: a clear error instead of a segfault

with warnings.catch_warnings():
    # mxnet 1.9.1 aliases NumPy names deprecated since 1.20 (np.bool, np.mirr...) at import
    warnings.simplefilter("ignore", DeprecationWarning)
    import mxnet as mx  # noqa: E402
from mxnet import autograd, gluon  # noqa: E402
from mxnet.util import is_np_array  # noqa: E402

__all__ = ["as_value", "autograd", "format_context", "from_numpy", "gluon", "input_array", "mx", "parse_devices",
           "to_canonical", "to_native", "to_numpy"]


# ---- arrays -----------------------------------------------------------------------------


def to_numpy(array: Any) -> np.ndarray:
    """A NumPy copy of an NDArray (``asnumpy`` waits for pending writes and always copies)."""
    return array.asnumpy()


def as_value(value: Any) -> Any:
    """``value`` with an MXNet array (``mx.nd.NDArray``, ``mx.np.ndarray``, sparse ones) as a NumPy copy.

    NumPy cannot read an NDArray itself (it iterates it into a 32-dimensional or object
    array); anything else is returned as it is, for the core's checks.
    """
    return value.asnumpy() if isinstance(value, mx.nd.NDArray) else value


def from_numpy(array: np.ndarray, dtype: Any) -> Any:
    """A new CPU NDArray in the default layout (an ``mx.np.ndarray`` when NumPy semantics are on, as Gluon expects).

    A fresh array takes a raw synchronous copy; ``mx.nd.array`` would do the same after a
    deprecated SciPy check that warns on every call.
    """
    array = np.asarray(array, dtype=dtype, order="C")
    if is_np_array():
        out = mx.np.empty(array.shape, dtype=array.dtype, ctx=mx.cpu())
    else:
        out = mx.nd.empty(array.shape, ctx=mx.cpu(), dtype=array.dtype)
    out._sync_copyfrom(array)
    return out


def input_array(x: np.ndarray) -> Any:
    """A float32 network input."""
    return from_numpy(np.asarray(x, np.float32), "float32")


# ---- layouts ----------------------------------------------------------------------------


def to_canonical(native: np.ndarray, perm: tuple[int, ...] | None) -> np.ndarray:
    """``native`` in the canonical layout, given the native-to-canonical permutation (``None``: the same)."""
    if perm is None:
        return native
    return np.ascontiguousarray(native.transpose(perm))


def to_native(canonical: np.ndarray, perm: tuple[int, ...] | None) -> np.ndarray:
    """``canonical`` in the native layout: the inverse of :func:`to_canonical`."""
    if perm is None:
        return canonical
    return np.ascontiguousarray(canonical.transpose(np.argsort(perm)))


# ---- contexts ---------------------------------------------------------------------------


def format_context(ctx: mx.Context) -> str:
    """polyparam's device name of an MXNet context (``cpu``, ``cpu:1``, ``cuda:0``)."""
    if ctx.device_type == "cpu":
        return "cpu" if ctx.device_id == 0 else f"cpu:{ctx.device_id}"
    if ctx.device_type == "gpu":
        return f"cuda:{ctx.device_id}"
    return f"{ctx.device_type}:{ctx.device_id}"


def parse_devices(device: str) -> list[mx.Context]:
    """The MXNet contexts of a device name, comma-separated for replicas (``"cpu,cpu:1"``)."""
    contexts = []
    for part in (s.strip() for s in str(device).split(",")):
        kind, _, index = part.partition(":")
        try:
            number = int(index) if index else 0
        except ValueError:
            number = -1
        if kind == "cpu" and number >= 0:
            contexts.append(mx.cpu(number))
        elif kind in ("cuda", "gpu") and 0 <= number < mx.context.num_gpus():
            contexts.append(mx.gpu(number))
        else:
            available = ["cpu", "cpu:1"] + [f"cuda:{i}" for i in range(mx.context.num_gpus())]
            msg = (f"Cannot move mxnet parameters to {device!r}: expected devices such as {available} "
                   f"(comma-separated for replicas), got {part!r}. Check mx.context.num_gpus().")
            raise errors.DeviceMismatchError(msg, expected=available, got=device)
    return contexts
