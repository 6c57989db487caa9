"""Gradients for Keras, which stores none: computed by the active backend's autodiff, kept per variable.

A tied variable is one variable, so its gradient is the sum over its uses.
``KerasParameter.grad()`` reads what these functions store, in canonical layout;
``tree.clip_grads()`` and ``tree.zero_grads()`` rewrite it, and :func:`recorded_gradients`
hands it to a Keras optimizer.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from polyparam import errors
from polyparam_keras._convert import engine, raw, to_numpy
from polyparam_keras._variables import GRAD_ATTR

__all__ = ["backward", "record_gradients", "recorded_gradients"]

# the package imports this module on first use of polyparam_keras.backward, so this
# module does not import the package back for its NAME
_NAME = "keras"
_ENGINES = ("tensorflow", "torch", "jax")


def record_gradients(pairs: Iterable[tuple[Any, Any]], /) -> None:
    """Store ``(gradient, variable)`` pairs so ``Parameter.grad()`` returns them.

    Use it in your own training step::

        with tf.GradientTape() as tape:
            loss = loss_fn(model(x))
        grads = tape.gradient(loss, model.trainable_variables)
        polyparam_keras.record_gradients(zip(grads, model.trainable_variables))

    A gradient of ``None`` (variable unused) is stored as zeros; TensorFlow's
    ``IndexedSlices`` (an ``Embedding``'s gradient: rows and their values) as the dense
    gradient, rows given twice summed. All or nothing: a gradient whose shape is not its
    variable's raises :class:`~polyparam.errors.ShapeMismatchError` and none of the call's
    is stored.
    """
    staged = []
    for grad, variable in pairs:
        shape = tuple(int(d) for d in variable.shape)
        name = getattr(variable, "path", None) or getattr(variable, "name", None) or repr(variable)
        if grad is None:
            value = np.zeros(shape, np.dtype(variable.dtype))
        else:
            value = np.array(grad if isinstance(grad, np.ndarray) else to_numpy(_dense(grad, shape, name)), copy=True)
            if value.shape != shape:
                raise _misfit(name, shape, value.shape)
        staged.append((variable, value))
    for variable, value in staged:
        object.__setattr__(variable, GRAD_ATTR, value)


def _misfit(name: str, shape: tuple[int, ...], got: Any) -> errors.ShapeMismatchError:
    msg = (f"Cannot record the gradient of variable {name!r}: expected shape {shape}, got {got}. Nothing was "
           "stored. Pass each gradient with its own variable, as zip(tape.gradient(loss, "
           "model.trainable_variables), model.trainable_variables) does.")
    return errors.ShapeMismatchError(msg, path=name, expected=shape, got=got)


def _dense(grad: Any, shape: tuple[int, ...], name: str) -> Any:
    """``grad`` as a dense tensor of the variable's ``shape``: TensorFlow's ``IndexedSlices`` (rows and their values)
    summed into one, rows given twice added, as TensorFlow's own conversion does; rows outside the shape refused."""
    if type(grad).__name__ != "IndexedSlices":
        return grad
    import tensorflow as tf

    rows = np.asarray(grad.indices).reshape(-1)
    values = tuple(int(d) for d in grad.values.shape)
    outside = rows[(rows < 0) | (rows >= shape[0])] if shape else rows
    if not shape or values[1:] != shape[1:] or outside.size:
        got = (f"rows {sorted(set(outside.tolist()))[:5]} of values {values}" if shape and values[1:] == shape[1:]
               else f"slices of values {values}")
        raise _misfit(name, shape, got)
    return tf.math.unsorted_segment_sum(grad.values, grad.indices, shape[0])


def recorded_gradients(model: Any, /) -> list[tuple[Any, Any]]:
    """``(gradient, variable)`` pairs of ``model``'s trainable variables that have a recorded gradient.

    The gradients as :func:`backward` or :func:`record_gradients` stored them, after any
    ``tree.clip_grads()`` / ``tree.zero_grads()``, as tensors of the active Keras backend,
    in the form ``optimizer.apply_gradients`` takes::

        polyparam_keras.backward(model, x, loss=loss_fn)
        pp.tree(model).clip_grads(1.0)
        optimizer.apply_gradients(polyparam_keras.recorded_gradients(model))
    """
    import keras

    out = []
    for variable in model.trainable_variables:
        grad = getattr(variable, GRAD_ATTR, None)
        if grad is not None:
            out.append((keras.ops.convert_to_tensor(grad, dtype=variable.dtype), variable))
    return out


def compute_gradients(model: Any, inputs: Any, /,
                      loss: Callable[[Any], Any] | None = None) -> tuple[Any, list[Any], list[Any]]:
    """The loss (NumPy), the gradients (the backend's tensors, ``None`` for an unused variable)
    and ``model.trainable_variables``, by the active Keras backend's autodiff; nothing is stored.

    An unbuilt model is built by this forward pass (TensorFlow, torch) or by a plain call before
    it (JAX), so its variables are the ones listed."""
    active = engine()
    if active not in _ENGINES:
        msg = (f"Cannot compute gradients with Keras backend {active!r}: expected one of {_ENGINES}, got "
               f"{active!r}. Compute them yourself and pass them to record_gradients().")
        raise errors.BackendError(msg, backend=_NAME, expected=_ENGINES, got=active)
    if active == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:   # watches the variables a first call creates, too
            out = model(inputs, training=True)
            value = loss(out) if loss is not None else tf.reduce_sum(out)
        variables = list(model.trainable_variables)
        return np.asarray(value.numpy()), list(tape.gradient(value, variables)), variables
    if active == "torch":
        import torch

        with torch.enable_grad():
            out = model(inputs, training=True)
            value = loss(out) if loss is not None else out.sum()
            variables = list(model.trainable_variables)
            # autograd refuses an empty list, and a loss that needs no gradient (everything frozen)
            grads = (torch.autograd.grad(value, [raw(v) for v in variables], allow_unused=True)
                     if variables and value.requires_grad else [None] * len(variables))
        return value.detach().cpu().numpy(), list(grads), variables
    return _jax_gradients(model, inputs, loss)


def _jax_gradients(model: Any, inputs: Any,
                   loss: Callable[[Any], Any] | None) -> tuple[Any, list[Any], list[Any]]:
    """JAX keeps no tape: ``jax.value_and_grad`` over the trainable variables' values through
    ``model.stateless_call``, the non-trainable ones passed through. Their updated values (batch-norm
    statistics, seed states) are written back afterwards, as a stateful ``model(x, training=True)`` does."""
    import jax
    import jax.numpy as jnp

    if not model.built:   # stateless_call needs the variables; a plain call builds them (and runs deferred fills)
        model(inputs, training=False)
    variables = list(model.trainable_variables)
    frozen = list(model.non_trainable_variables)

    def objective(trainable: list[Any], non_trainable: list[Any]) -> tuple[Any, list[Any]]:
        out, updated = model.stateless_call(trainable, non_trainable, inputs, training=True)
        return (loss(out) if loss is not None else jnp.sum(out)), updated

    (value, updated), grads = jax.value_and_grad(objective, has_aux=True)(
        [v.value for v in variables], [v.value for v in frozen])
    for variable, new in zip(frozen, updated):
        if new is not raw(variable):
            variable.assign(new)
    return np.asarray(value), list(grads), variables


def backward(model: Any, inputs: Any, /, loss: Callable[[Any], Any] | None = None) -> Any:
    """Run ``model`` on ``inputs`` and store the gradients of ``loss(output)`` (default ``sum(output)``).

    Uses the active Keras backend's autodiff (``tf.GradientTape``, torch autograd, or
    ``jax.value_and_grad`` over ``model.stateless_call``).
    Gradients are computed fresh (not accumulated) for every trainable variable, once
    per variable: a tied variable gets the sum over its uses; a frozen variable's old one
    is cleared. Returns the loss as NumPy.
    """
    value, grads, variables = compute_gradients(model, inputs, loss)
    for variable in model.non_trainable_variables:
        if getattr(variable, GRAD_ATTR, None) is not None:
            object.__setattr__(variable, GRAD_ATTR, None)
    record_gradients(zip(grads, variables))
    return value
