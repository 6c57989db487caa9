"""Conversions between torch tensors and NumPy arrays, and the dtype map between them."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from polyparam import errors

__all__ = ["MOVABLE_BYTES", "PLAIN", "REAL_DTYPES", "TORCH2NP", "np2torch", "np_dtype", "torch2np", "torch_dtype"]

#: torch dtypes with a NumPy counterpart; ``np_dtype`` adds bfloat16 when ml_dtypes is installed.
TORCH2NP: dict[torch.dtype, np.dtype] = {
    torch.float16: np.dtype(np.float16), torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64),
    torch.complex64: np.dtype(np.complex64), torch.complex128: np.dtype(np.complex128),
    torch.int8: np.dtype(np.int8), torch.int16: np.dtype(np.int16), torch.int32: np.dtype(np.int32),
    torch.int64: np.dtype(np.int64), torch.uint8: np.dtype(np.uint8), torch.bool: np.dtype(np.bool_),
}

#: Dtypes whose CPU tensors ``.numpy()`` reads as they are (no conjugate bit to resolve).
REAL_DTYPES = frozenset(d for d in TORCH2NP if not d.is_complex)
#: Tensor types that are plain storage (not DTensor, not Uninitialized*).
PLAIN = frozenset({nn.Parameter, torch.Tensor})


def np_dtype(dtype: torch.dtype) -> np.dtype:
    """The NumPy dtype of a torch dtype (bfloat16 through ml_dtypes)."""
    found = TORCH2NP.get(dtype)
    if found is not None:
        return found
    if dtype == torch.bfloat16:
        try:
            import ml_dtypes
        except ImportError:
            pass
        else:
            TORCH2NP[dtype] = np.dtype(ml_dtypes.bfloat16)
            return TORCH2NP[dtype]
    msg = (f"Cannot represent torch dtype {dtype} in NumPy: expected one of "
           f"{sorted(str(d) for d in TORCH2NP)}, got {dtype}. Cast the module first, e.g. module.float().")
    raise errors.DTypeMismatchError(msg, expected=sorted(str(d) for d in TORCH2NP), got=str(dtype))


def torch_dtype(dtype: np.dtype) -> torch.dtype:
    """The torch dtype of a NumPy dtype (ml_dtypes' ``bfloat16`` is ``torch.bfloat16``).

    Raises:
        DTypeMismatchError: torch has no such dtype.
    """
    if dtype.name == "bfloat16":
        return torch.bfloat16
    for t, n in TORCH2NP.items():
        if n == dtype:
            return t
    names = sorted({n.name for n in TORCH2NP.values()} | {"bfloat16"})
    msg = f"Cannot use NumPy dtype {dtype.name} in torch: expected one of {names}, got {dtype.name}. Pick one of those."
    raise errors.DTypeMismatchError(msg, expected=names, got=dtype.name)


#: Tensors from this size up may have their storage moved by a whole write (``_keep_storage``): their
#: NumPy views must leave the storage resizable. Smaller ones never move, and take ``tensor.numpy()``.
MOVABLE_BYTES = 1 << 20


class _Memory:
    """A CPU tensor's memory as NumPy sees it (``__array_interface__``); the view holds the tensor, so its storage."""

    __slots__ = ("__array_interface__", "tensor")

    def __init__(self, tensor: torch.Tensor, interface: dict[str, Any]) -> None:
        self.tensor = tensor
        self.__array_interface__ = interface


def torch2np(t: torch.Tensor) -> np.ndarray:
    """A NumPy view of a detached CPU tensor (zero-copy; bfloat16 through ml_dtypes).

    Made through ``__array_interface__`` rather than ``t.numpy()``, which marks the
    storage not resizable for good: that flag is how a torch write tells that a user
    made a NumPy view of a parameter (see ``owns_storage``), and polyparam's own views,
    made on every read, must not set it. The view holds the tensor, so its storage
    lives as long as the view (what the flag protects against is a later ``resize_``,
    which nothing does to a parameter's storage while polyparam reads it).
    """
    if t.dtype == torch.bfloat16:
        return torch2np(t.view(torch.int16)).view(np_dtype(torch.bfloat16))
    dtype = TORCH2NP.get(t.dtype)
    if (dtype is None or not t.is_cpu or t.numel() * t.element_size() < MOVABLE_BYTES or t.is_conj()
            or t.is_neg()):
        return t.numpy()   # (or torch's own error for what NumPy cannot view) about 1.3 us faster
    if t.is_contiguous():    # C order: no strides to spell out
        strides = None
    else:
        size = t.element_size()
        strides = tuple(s * size for s in t.stride())
    return np.asarray(_Memory(t, {"version": 3, "shape": t.shape, "typestr": dtype.str,
                                  "data": (t.data_ptr(), False), "strides": strides}))


def np2torch(a: np.ndarray) -> torch.Tensor:
    """A CPU tensor with ``a``'s values (shares memory where torch can)."""
    if a.dtype.kind == "V" and torch.bfloat16 in TORCH2NP and a.dtype == TORCH2NP[torch.bfloat16]:
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16)
    if not a.flags.writeable or any(s < 0 for s in a.strides):
        a = np.array(a, copy=True)
    return torch.from_numpy(a)
