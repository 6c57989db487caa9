"""Flax NNX backend: the six names of :class:`polyparam.backend.Backend`.

Only deviations from the protocol are documented here; see ``docs/backends/flax.md``.

* Paths are structural: attribute names, then positions or keys of ``nnx.List`` /
  ``nnx.Dict`` (``layers.0.kernel`` is ``layers.0.weight``); an ``nnx.Sequential`` is a
  sequential container, its positions are its children (``"0.weight"``, as torch's). The
  native name is NNX's own path (``layers.0.kernel``).
* Layouts are converted: Linear ``kernel (in, out)`` reads as ``weight (out, in)``, Conv
  ``kernel (*k, in/groups, out)`` as ``(out, in/groups, *k)``, ConvTranspose as torch's
  ``(in, out, *k)`` (flipped in space unless ``transpose_kernel=True``).
* A ``Linear`` next to a convolution whose features are a multiple ``k > 1`` of its channels
  may read (or make) a map flattened channels last in ``__call__``, which NNX does not record:
  its parameters say so (``_layout_doubt``) and a transfer to another framework refuses.
* ``LinearGeneral`` (``MultiHeadAttention``'s projections) keeps NNX's layout; kernel role
  ``weight`` with its contracted axes ``in`` and made axes ``out``, bias ``bias``.
* JAX arrays are immutable: a write sets a new array as the Variable's value (same
  dtype and sharding); ``p.native`` is the Variable, which stays.
* ``nnx.Param`` is trainable; ``BatchStat`` (and other array Variables) are buffers.
  NNX has no per-Variable switch: ``p.trainable = False`` sets the Variable's
  ``"trainable"`` metadata, which the filter :data:`polyparam_flax.trainable` reads (pass
  it to ``nnx.grad`` and ``nnx.Optimizer(wrt=...)``).
* ``pp.param_groups`` gives optax labels (``OptaxGroups``) for ``optax.multi_transform``.
* Gradients: NNX keeps none on Variables; :func:`polyparam_flax.backward` stores them.
* Ties: one Variable object in two places (a module used twice, or ``pp.tie``).
* Refused when the tree is built (``UnsupportedModelError``): a child key holding ``"."``
  (its path would name no block, or another's), and layers stacked by ``nnx.vmap`` /
  ``nnx.scan`` (a Variable with more axes than its layer's configuration implies).
* No deferred shapes: NNX modules get their shapes at construction. A model built under
  ``nnx.eval_shape`` is ``"uninitialized"``; its first write creates the arrays.

The adapter's rooms: ``_convert`` (arrays, devices, layouts), ``_layout`` (structure and
leaves), ``_flatten`` (flattened maps), ``_parameter``, ``_tree``, ``_gradients``, ``_training`` and ``_models``.
"""

from __future__ import annotations

import flax
from flax import nnx

from polyparam import errors
from polyparam.backend import ModelFactory, ParameterTree
from polyparam_flax import NAME
from polyparam_flax._layout import check_model
from polyparam_flax._models import FlaxModels
from polyparam_flax._tree import FlaxTree

__all__ = ["CAPABILITIES", "NAME", "framework_version", "is_native", "models", "tree"]

CAPABILITIES = frozenset({"tying", "gradients", "forward", "training"})


def framework_version() -> str:
    import jax

    return f"{flax.__version__} (jax {jax.__version__})"


def is_native(obj: object, /) -> bool:
    """An NNX object: a Module, or another ``nnx.Pytree`` (an optimizer, metrics), which :func:`tree` refuses by
    name rather than leaving it to no backend ("import its framework first")."""
    return isinstance(obj, nnx.Pytree)


def tree(obj: object, /) -> ParameterTree:
    if not isinstance(obj, nnx.Module):
        what = (" (an nnx.Pytree that is not a Module: an optimizer's or metrics' state, not a model)"
                if isinstance(obj, nnx.Pytree) else "")
        msg = (f"Cannot wrap {type(obj).__name__} with the flax backend: expected a flax.nnx.Module, got "
               f"{type(obj).__name__!r}{what}. Pass the NNX model itself (for Linen, nnx.bridge.ToNNX wraps a "
               "module).")
        raise errors.UnsupportedModelError(msg, backend=NAME, expected="flax.nnx.Module", got=type(obj).__name__)
    check_model(obj)   # a stacked layer or a dotted key is refused here, not at the first fact
    return FlaxTree(obj)


def models() -> ModelFactory:
    return FlaxModels()
