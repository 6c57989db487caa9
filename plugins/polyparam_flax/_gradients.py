"""Gradients for NNX, which keeps none on its Variables: computed with ``nnx.value_and_grad``, kept per Variable.

A tied Variable is one Variable, so its gradient is the sum over its uses (JAX sums
them). ``FlaxParameter.grad()`` reads what these functions store, in canonical layout;
``tree.clip_grads`` and ``tree.zero_grads`` write into the store, and :func:`gradients`
hands it back as the ``nnx.State`` an ``nnx.Optimizer`` takes.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx

from polyparam import errors
from polyparam_flax._layout import shape_of
from polyparam_flax._training import is_trainable, trainable

__all__ = ["backward", "gradients", "lookup", "record_gradients", "store"]

_NAME = "flax"   # the package imports this module on first use of polyparam_flax.backward

# root module -> {id(variable): (variable, gradient in native layout)}; the variable is held so its id stays
# unique. The most recent recording comes last (searched first).
_GRADS: weakref.WeakKeyDictionary[Any, dict[int, tuple[Any, np.ndarray]]] = weakref.WeakKeyDictionary()


def _params(model: Any) -> list[tuple[tuple[Any, ...], Any]]:
    """``(NNX path, Param)`` of every Param of ``model``, once each, as ``nnx.state`` lists them."""
    return [(tuple(path), value) for path, value in nnx.iter_graph(model) if isinstance(value, nnx.Param)]


def _value(leaf: Any) -> Any:
    return leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf


def record_gradients(model: Any, grads: Any, /) -> None:
    """Store ``grads``, the ``nnx.State`` that ``nnx.grad`` returned for ``model``, so ``Parameter.grad()`` sees it.

    Use it in your own training step::

        grads = nnx.grad(loss_fn)(model, x, y)
        polyparam_flax.record_gradients(model, grads)

    A frozen Param gets no gradient, whether the State leaves it out (``nnx.grad`` with
    ``DiffState(0, polyparam_flax.trainable)``) or holds it (plain ``nnx.grad``): as in torch,
    ``grad_norm`` and ``clip_grads`` count what trains. All or nothing, as Keras'
    ``record_gradients``: a gradient that is not one of ``model``'s Params (the gradients of a
    submodule, or of another model) refuses the call, and the gradients recorded before stay.

    Raises:
        InvalidArgumentError: ``model`` is not an NNX module, or ``grads`` not an ``nnx.State``.
        ParameterNotFoundError: A gradient's path names no ``nnx.Param`` of ``model``.
        ShapeMismatchError: A gradient's shape is not its Param's.
    """
    if not isinstance(model, nnx.Module):
        msg = (f"Cannot record gradients for {type(model).__name__}: expected the flax.nnx.Module they were "
               f"computed for, got {type(model).__name__}. Pass the model first, then the gradients.")
        raise errors.InvalidArgumentError(msg, argument="model", expected="flax.nnx.Module", got=type(model).__name__)
    if not isinstance(grads, nnx.State):
        msg = (f"Cannot record gradients for {type(model).__name__}: expected the nnx.State that nnx.grad returns, "
               f"got {type(grads).__name__}. Pass the State itself, as nnx.grad(loss_fn)(model, ...) returns it "
               "(not nnx.to_pure_dict of it).")
        raise errors.InvalidArgumentError(msg, argument="grads", expected="flax.nnx.State", got=type(grads).__name__)
    params = dict(_params(model))
    recorded = {}
    for path, leaf in nnx.to_flat_state(grads):
        name = ".".join(str(key) for key in path)
        var = params.get(tuple(path))
        if var is None:
            msg = (f"Cannot record the gradient {name!r} for {type(model).__name__}: expected the gradient of one of "
                   f"its Params, got a path it does not have (its Params: {_sample(params)}). Nothing was stored. "
                   "Pass the gradients of the same module, as nnx.grad(loss_fn)(model, ...) returns them.")
            raise errors.ParameterNotFoundError(msg, path=name, expected="a Param of the model", got=name)
        value = np.array(_value(leaf), copy=True)
        shape = shape_of(var)
        if value.shape != shape:
            msg = (f"Cannot record the gradient {name!r} for {type(model).__name__}: expected shape {shape}, got "
                   f"{value.shape}. Nothing was stored. Pass the gradients of the same module, as "
                   "nnx.grad(loss_fn)(model, ...) returns them.")
            raise errors.ShapeMismatchError(msg, path=name, expected=shape, got=value.shape)
        if is_trainable(var):   # a frozen Param's gradient is not kept, as torch keeps none
            recorded[id(var)] = (var, value)
    _GRADS.pop(model, None)
    _GRADS[model] = recorded


def _sample(params: dict[tuple[Any, ...], Any]) -> str:
    """A few of ``params``' paths, for a message."""
    names = [".".join(str(key) for key in path) for path in params]
    return repr(names[:4])[:-1] + (", ...]" if len(names) > 4 else "]")


def backward(model: Any, loss_fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> np.ndarray:
    """Compute ``loss_fn(model, *args, **kwargs)`` and store the gradients of every trainable ``nnx.Param``.

    ``loss_fn`` takes the model first and returns a scalar, as ``nnx.grad`` expects.
    Gradients are fresh (not accumulated); a tied Variable gets the sum over its uses; a
    frozen Param (``p.trainable = False``) gets none, as in torch. Returns the loss as NumPy.
    """
    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, trainable))(model, *args, **kwargs)
    record_gradients(model, grads)
    return np.asarray(loss)


def lookup(variable: Any) -> np.ndarray | None:
    """The last gradient stored for ``variable`` (native layout), or ``None``."""
    for recorded in reversed(list(_GRADS.values())):
        hit = recorded.get(id(variable))
        if hit is not None and hit[0] is variable:
            return hit[1]
    return None


def store(root: Any, variable: Any, grad: np.ndarray | None) -> None:
    """Replace ``variable``'s stored gradient (``None`` clears it) where it was recorded, else under ``root``."""
    for recorded in reversed(list(_GRADS.values())):
        hit = recorded.get(id(variable))
        if hit is not None and hit[0] is variable:
            if grad is None:
                del recorded[id(variable)]
            else:
                recorded[id(variable)] = (variable, grad)
            return
    if grad is not None:
        _GRADS.setdefault(root, {})[id(variable)] = (variable, grad)


def gradients(model: Any, /) -> Any:
    """The stored gradients of ``model``'s trainable Params as an ``nnx.State`` (what ``nnx.grad`` returns), zeros
    where none is stored, after ``tree.clip_grads`` / ``tree.zero_grads``: ``optimizer.update(model,
    gradients(model))`` with ``nnx.Optimizer(model, tx, wrt=polyparam_flax.trainable)``.

    A zero still moves a Param under weight decay (adamw) and steps its moments: freeze the Params that
    should not train, so the optimizer leaves them out."""
    flat = []
    for path, var in _params(model):
        if not is_trainable(var):
            continue
        grad = lookup(var)
        value = var.get_value()
        flat.append((path, var.replace(jnp.zeros_like(value) if grad is None else jnp.asarray(grad, value.dtype))))
    return nnx.from_flat_state(flat)
