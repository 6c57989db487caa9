"""Keras 3 backend (TensorFlow, PyTorch or JAX under Keras): the six names of :class:`polyparam.backend.Backend`.

Only deviations from the protocol are documented here; see ``docs/backends/keras.md``.

* Paths are structural: position in ``model.layers`` for Sequential and Functional
  models (Functional models list their ``InputLayer`` too, so it takes position 0),
  attribute names in subclassed layers and models. Keras' auto-numbered layer names
  (``dense_7``) never appear in paths; they are the *native names* (``Variable.path``).
* Layouts are converted: Dense ``kernel (in, out)`` reads as ``weight (out, in)``,
  Conv ``kernel (*k, in, out)`` as ``(out, in, *k)``, ConvTranspose
  ``(*k, out, in)`` as torch's ``(in, out, *k)``. Reads are transposed views;
  writes transpose back.
* Unbuilt layers are deferred: their parameters have ``None`` for unknown dims and
  ``initialize`` is recorded on the layer and applied right after Keras builds it.
* Gradients: Keras stores none. :func:`polyparam_keras.backward` (and
  :func:`polyparam_keras.record_gradients` for your own ``GradientTape`` / autograd /
  ``jax.grad`` step) stores them per variable, so a tied variable's gradient is the sum over
  its uses. Under JAX, ``backward`` differentiates ``model.stateless_call`` and then writes the
  updated non-trainable values (batch-norm statistics, seed states) back, as a training call
  does on the other two.
* Training: ``p.trainable`` is ``Variable.trainable`` (and the layers' ``trainable``); a change
  drops a compiled model's step functions so ``fit`` sees it. ``clip_grads``/``zero_grads`` rewrite
  the gradients :func:`polyparam_keras.backward` holds, which
  :func:`polyparam_keras.recorded_gradients` hands to ``optimizer.apply_gradients``.
  ``pp.param_groups`` gives variable lists and, given ``optimizer=``, excludes the groups with
  ``weight_decay`` 0 through ``optimizer.exclude_from_weight_decay``. ``tree.cast`` is refused: a
  Keras variable keeps its dtype (build the model in the dtype and ``pp.transfer``).
* Ties: a reused layer shares its variables; :func:`polyparam.tie` after
  construction swaps the member layer's variable for the anchor's (the member's
  own variable is kept aside so ``untie`` can restore it).
* Keras's own ``model.save_weights("x.weights.h5")`` loads through ``pp.load``: each
  variable's key in that file (``layers.dense.vars.0``, from Keras's own save walk) is one
  of its native aliases, and values convert from Keras's layout as reads do. A LoRA
  layer's kernel is saved merged with its factors and the factors not at all, so such a
  file loads in full only into the model without LoRA (see ``_native_keys``).

The adapter's rooms: ``_convert`` (tensors <-> NumPy), ``_variables`` (a layer's
variables), ``_layout`` (slots and layouts), ``_flatten`` (a flattened map's feature
order), ``_native_keys`` (``.weights.h5`` keys), ``_ties``, ``_parameter``, ``_tree``,
``_gradients`` and ``_models``.
"""

from __future__ import annotations

import keras

from polyparam import errors
from polyparam.backend import ModelFactory, ParameterTree
from polyparam_keras import NAME
from polyparam_keras._models import KerasModels
from polyparam_keras._tree import KerasTree

__all__ = ["CAPABILITIES", "NAME", "framework_version", "is_native", "models", "tree"]

CAPABILITIES = frozenset({"tying", "deferred", "gradients", "forward", "training"})


def framework_version() -> str:
    return f"{keras.__version__} ({keras.backend.backend()})"


def is_native(obj: object, /) -> bool:
    return isinstance(obj, keras.Layer)


def tree(obj: object, /) -> ParameterTree:
    if not is_native(obj):
        msg = (f"Cannot wrap {type(obj).__name__} with the keras backend: expected a keras Layer or Model, "
               f"got {type(obj).__name__!r}. Pass the model itself (keras.Sequential, keras.Model, a layer).")
        raise errors.UnsupportedModelError(msg, backend=NAME, expected="keras.Layer", got=type(obj).__name__)
    return KerasTree(obj, locate=lambda: obj, root=obj)


def models() -> ModelFactory:
    return KerasModels()
