"""Keras tensors and variables to and from NumPy, under the active Keras backend (TensorFlow, PyTorch or JAX)."""

from __future__ import annotations

import contextlib
from typing import Any

import keras
import numpy as np

__all__ = ["assign_native", "contiguous", "device_type", "eager", "engine", "owned", "raw", "read_variable",
           "stored_dtype", "sync_jax_state", "to_numpy", "to_numpy_view", "write_variable"]


def engine() -> str:
    """The active Keras backend: ``"tensorflow"``, ``"torch"``, ..."""
    return keras.backend.backend()


def raw(variable: Any) -> Any:
    """The framework tensor behind a Keras variable (tf.Variable / torch Parameter), outside any scope."""
    return variable._value


def sync_jax_state(root: Any) -> None:
    """Put back into ``root``'s variables the values Keras on JAX holds outside them while ``fit``, ``evaluate`` or
    ``predict`` runs (the variables then hold ``None``), as ``Callback.model`` does for a callback: a read then
    gets the values, and the next step starts from what a write puts in the variables."""
    sync = getattr(root, "jax_state_sync", None)
    if sync is not None and getattr(root, "_jax_state", None):
        sync()


def stored_dtype(variable: Any) -> str:
    """The dtype a Keras variable holds its value in.

    ``Variable.dtype`` says the autocast scope's dtype (float16 under ``mixed_float16``)
    while a layer of a mixed-precision model runs: a load, save or cast there must still
    see the float32 the variable stores.
    """
    return keras.backend.standardize_dtype(variable._dtype)


def to_numpy(tensor: Any) -> np.ndarray:
    """A framework tensor as a NumPy array (0-d included): a view of CPU torch memory, a copy for TensorFlow."""
    active = engine()
    if active == "torch":
        t = tensor.detach()
        return torch_numpy(t if t.device.type == "cpu" else t.cpu())
    if active == "tensorflow":
        if _plain_cpu_variable(tensor):
            tensor = read_variable(tensor)
        return np.asarray(tensor.numpy())   # a 0-d tensor's .numpy() is a NumPy scalar, not an array
    return np.asarray(tensor)


def to_numpy_view(variable: Any) -> np.ndarray:
    """:func:`to_numpy` of a variable without TensorFlow's copy: a read-only view of the tensor a read returns.

    While that tensor lives, TensorFlow writes the variable into a new buffer (an assign, an
    optimizer step: copy on write), so the view keeps the value of the read. For a reader
    that reads it once, right away (a save copies it piece by piece as it writes).
    """
    if engine() != "tensorflow" or not _plain_cpu_variable(variable):
        return to_numpy(variable)
    view = np.asarray(read_variable(variable))   # the tensor's own buffer (EagerTensor.__array__)
    view.flags.writeable = False
    return view


def torch_numpy(t: Any) -> np.ndarray:
    """A NumPy view of a detached CPU torch tensor; bfloat16 through ``ml_dtypes`` (``t.numpy()`` refuses it)."""
    import torch

    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def _plain_cpu_variable(tensor: Any) -> bool:
    """A plain ``tf.Variable`` on the CPU, whose value one TensorFlow op reads or writes.

    ``Variable.read_value()`` and ``.assign()`` spend 16 and 30 us in Python (shape
    checks, name scopes) around the one op (``ReadVariableOp``, ``AssignVariableOp``)
    they run, which takes 5 and 8 us: over a model's hundreds of small variables that
    was most of a load. A ``tf.distribute`` variable (several copies) or one on a device
    keeps the methods.
    """
    return type(tensor).__name__ == "ResourceVariable" and device_type(tensor.device) == "CPU"


def write_variable(tensor: Any, value: Any) -> None:
    """``tensor.assign(value)`` for a ``tf.Variable``: a NumPy array of its dtype, or a tensor (which it may adopt)."""
    import tensorflow as tf

    with eager():
        same = value.dtype == (tensor.dtype.as_numpy_dtype if isinstance(value, np.ndarray) else tensor.dtype)
        if same and _plain_cpu_variable(tensor):
            # the op assign runs, with the shape check assign makes (validate_shape)
            tf.raw_ops.AssignVariableOp(resource=tensor.handle, value=value, validate_shape=True)
        else:
            tensor.assign(value)


def read_variable(tensor: Any) -> Any:
    """The current value of a ``tf.Variable`` as a tensor (sharing its buffer, as ``read_value()``)."""
    import tensorflow as tf

    with eager():
        if _plain_cpu_variable(tensor):
            return tf.raw_ops.ReadVariableOp(resource=tensor.handle, dtype=tensor.dtype)
        return tensor.read_value()


def eager() -> contextlib.AbstractContextManager[Any]:
    """TensorFlow's ``init_scope()`` while a ``tf.function`` is being traced (a write must run now, not become an
    op of the graph); nothing in eager code, the usual case, where entering the scope costs about 2 us a call."""
    import tensorflow as tf

    return contextlib.nullcontext() if tf.executing_eagerly() else tf.init_scope()


def device_type(device: str) -> str:
    """``"CPU"`` / ``"GPU"`` of a TensorFlow device string such as ``/job:localhost/.../device:CPU:0``."""
    return device.rsplit("device:", 1)[-1].split(":", 1)[0].upper() if device else "CPU"


def contiguous(array: np.ndarray) -> np.ndarray:
    """``array`` C-contiguous, of the same shape (``np.ascontiguousarray`` turns a 0-d array into 1-d)."""
    return np.asarray(array, order="C")


def owned(array: np.ndarray) -> np.ndarray:
    """``array`` C-contiguous, in memory no one else holds: a copy unless :func:`contiguous` made one.

    TensorFlow's ``AssignVariableOp`` and JAX's ``asarray`` adopt an aligned NumPy buffer
    without copying it: the variable would then share the caller's memory (a torch
    model's tensor after ``pp.transfer``, an array of ``load_state``), and a later write
    to it (an optimizer step) would change the Keras variable too. ``variable.assign``
    of a NumPy array copies on TensorFlow, so a write through polyparam must as well.
    """
    out = contiguous(array)
    return out if out is not array else np.array(out, order="C", copy=True)


def assign_native(variable: Any, array: np.ndarray) -> None:
    """Write a native-layout array into the variable's storage, bypassing stateless scopes (a copy of it:
    the variable never shares the caller's memory, see :func:`owned`)."""
    active = engine()
    tensor = raw(variable)
    if active == "torch":
        import torch

        with torch.no_grad():
            if tensor.device.type == "cpu":
                torch_numpy(tensor.detach())[...] = array
            else:
                tensor.copy_(torch.from_numpy(contiguous(array)).to(tensor.device))
    elif active == "tensorflow":
        write_variable(tensor, owned(array))
    else:   # JAX: Variable.assign would write into an active StatelessScope, which its caller then drops
        variable._direct_assign(variable._convert_to_tensor(owned(array), dtype=stored_dtype(variable)))
