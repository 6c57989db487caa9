"""JAX backend. See :class:`polyparam.backend.Backend` for the contract; only the differences are noted.

- Models are :class:`polyparam_jax.model.Model` (stax-style layers plus their parameters).
- Dense kernels are stored ``(in, out)``; they cross polyparam as ``(out, in)``.
- JAX arrays are immutable: a write replaces the array in the model's parameter tree.
- Gradients are those of the last :meth:`Model.backward` call.
- A tie makes one leaf feed several places of the function; ``jax.grad`` sums the
  group's gradients into the anchor.
"""

from __future__ import annotations

import jax

from polyparam import errors
from polyparam.backend import ModelFactory, ParameterTree
from polyparam_jax import NAME
from polyparam_jax import model as jm
from polyparam_jax._models import JaxModels
from polyparam_jax._tree import JaxTree

__all__ = ["CAPABILITIES", "NAME", "framework_version", "is_native", "models", "tree"]

CAPABILITIES = frozenset({"tying", "deferred", "gradients", "forward", "training"})


def framework_version() -> str:
    """JAX's version (``jax.__version__``)."""
    return jax.__version__


def is_native(obj: object, /) -> bool:
    """Whether ``obj`` is a :class:`polyparam_jax.model.Model`."""
    return isinstance(obj, jm.Model)


def tree(obj: object, /) -> ParameterTree:
    """The parameter tree of a :class:`polyparam_jax.model.Model`."""
    if not isinstance(obj, jm.Model):
        msg = (f"Cannot wrap {type(obj).__name__} with the jax backend: expected a polyparam_jax.model.Model, "
               f"got {type(obj).__name__}. Wrap the stax layers in Model(...).")
        raise errors.UnsupportedModelError(msg, backend=NAME, expected="Model", got=type(obj).__name__)
    return JaxTree(obj, obj.layer, ())


def models() -> ModelFactory:
    """The chapter's reference models as stax networks."""
    return JaxModels()
