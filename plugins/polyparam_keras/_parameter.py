"""KerasParameter: one slot of a Keras layer, read and written in canonical layout."""

from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np

from polyparam import errors
from polyparam.backend import Parameter, Shape, State, parallel_copy
from polyparam_keras import NAME
from polyparam_keras._convert import assign_native, contiguous, device_type, engine, raw, to_numpy
from polyparam_keras._layout import (
    NORMALIZATION_STATS,
    Slot,
    axes,
    canonical_shape,
    groups,
    perm,
    to_canonical,
    to_native,
    unbuilt_shape,
)
from polyparam_keras._ties import clone_into_sequential, hook_build, refresh, swap_variable
from polyparam_keras._variables import FOLLOWERS_ATTR, GRAD_ATTR, ORIGINAL_ATTR, PENDING_ATTR, TIES_ATTR, find_variable

__all__ = ["KerasParameter"]


class KerasParameter(Parameter):
    """One slot of a Keras layer, found live: the layer through ``locate``, the variable by name."""

    backend = NAME

    def __init__(self, path: str, slot: Slot, *, locate: Callable[[], Any], root: Any,
                 site: tuple[Callable[[], Any], int] | None) -> None:
        # Parameter.__init__ is not called on purpose: it stores ``trainable``, which here is
        # read live from Keras (a property); role, axes and groups are set as it sets them.
        layer = locate()
        v = find_variable(layer, slot.var) if layer.built else None
        ndim = len(unbuilt_shape(layer, slot)) if v is None else len(v.shape)
        self._path = path
        self.role = slot.role
        self._axes = slot.axis_roles if slot.axis_roles is not None else axes(slot.layout, ndim)
        self.groups = groups(layer, slot)
        self._slot = slot
        self._locate = locate
        self._root = root
        self._site = site      # (parent locator, position in parent.layers) for Sequential children

    @property
    def _layer(self) -> Any:
        return self._locate()

    @property
    def trainable(self) -> bool:  # type: ignore[override]
        """Whether Keras trains it: it is in the root's ``trainable_weights``.

        That is the variable's own ``trainable`` (which ``layer.trainable = ...`` sets on the
        layer's variables and its sublayers') while the root layer or model is trainable.
        Before the build: not for statistics, nor in a frozen layer.
        """
        v = self._variable()
        if v is None:
            own = self._slot.role not in ("running_mean", "running_var") and bool(self._layer.trainable)
        else:
            own = bool(v.trainable)
        return own and bool(getattr(self._root, "trainable", True))

    def _variable(self) -> Any | None:
        layer = self._layer
        return find_variable(layer, self._slot.var) if layer.built else None

    # ---- hooks a backend implements ----------------------------------------------

    def _shape(self) -> Shape:
        v = self._variable()
        if v is None:
            return unbuilt_shape(self._layer, self._slot)
        return canonical_shape(self._slot.layout, tuple(int(d) for d in v.shape))

    def _dtype(self) -> Any:
        v = self._variable()
        return v.dtype if v is not None else self._layer.variable_dtype

    def _device(self) -> str:
        v = self._variable()
        if v is None or v._value is None:
            return "cpu"
        tensor = raw(v)
        if engine() == "torch":
            return str(tensor.device)
        device = str(getattr(tensor, "device", "") or "")
        kind, _, index = device.rpartition("device:")[2].partition(":")
        if kind.upper() == "GPU":
            return f"cuda:{index or 0}"
        return "cpu"

    def _native(self) -> Any:
        return self._variable()

    def _native_name(self) -> str:
        v = self._variable()
        return v.path if v is not None else f"{self._layer.name}/{self._slot.var}"

    def _kind(self) -> str:
        """Statistics (BatchNormalization's moving ones, Normalization's adapted ones) are buffers."""
        layer = self._layer
        if self._slot.role in ("running_mean", "running_var") or (
                isinstance(layer, keras.layers.Normalization) and self._slot.var in NORMALIZATION_STATS):
            return "buffer"
        return "parameter"

    def _state(self) -> State:
        v = self._variable()
        if v is None:
            return "deferred"
        return "uninitialized" if v._value is None else "initialized"

    def _read(self) -> np.ndarray:
        return to_canonical(self._slot.layout, to_numpy(raw(self._variable())))

    def _write(self, array: np.ndarray, /) -> None:
        v = self._variable()
        assert v is not None, "the core writes initialized or uninitialized parameters, never deferred ones"
        if v._value is None:
            native = to_native(self._slot.layout, array, tuple(int(d) for d in v.shape))
            v._initialize(contiguous(native))
            return
        staging = self._staging()
        if staging is not None:
            # TensorFlow: one (transposing) copy, on every core, into a buffer the variable then
            # takes; converting the array to a tensor would copy it once more
            view, adopt = staging
            parallel_copy(view, array)
            del view
            adopt()
            return
        assign_native(v, to_native(self._slot.layout, array, tuple(int(d) for d in v.shape)))

    def _grad(self) -> np.ndarray | None:
        v = self._variable()
        grad = None if v is None else getattr(v, GRAD_ATTR, None)
        if grad is None:
            return None
        return to_canonical(self._slot.layout, grad)

    def _identity(self) -> Any:
        layer = self._layer
        pending = layer.__dict__.get(TIES_ATTR, {}).get(self._slot.leaf)
        if pending is not None:
            return pending._identity()
        v = self._variable()
        if v is not None:
            return ("variable", id(v))
        return ("slot", id(layer), self._slot.leaf)

    # ---- hooks overridden for speed ---------------------------------------------

    def _read_copy(self) -> np.ndarray:
        if engine() == "tensorflow":
            return self._read()     # a TensorFlow read is already a copy (.numpy() copies)
        return super()._read_copy()

    def _writable_view(self) -> np.ndarray | None:
        if engine() != "torch":
            return None         # tf.Variable storage cannot be written through NumPy
        v = self._variable()
        if v is None or v._value is None or raw(v).device.type != "cpu":
            return None
        view = to_canonical(self._slot.layout, raw(v).detach().numpy())
        return view if np.shares_memory(view, raw(v).detach().numpy()) else None

    def _staging(self) -> tuple[np.ndarray, Callable[[], None]] | None:
        if engine() != "tensorflow":
            return None
        v = self._variable()
        if v is None or v._value is None:
            return None
        tensor = raw(v)
        if device_type(tensor.device) != "CPU":
            return None
        import tensorflow as tf

        # an uninitialized tensor from TensorFlow's own allocator (its pool: no fresh pages,
        # and no buffer left stranded there when the variable lets its old one go)
        with tf.init_scope(), tf.device(tensor.device):
            buffer = tf.raw_ops.Empty(shape=tuple(int(d) for d in v.shape), dtype=tensor.dtype, init=False)
        as_numpy = getattr(buffer, "_numpy", None)   # EagerTensor._numpy: a view of the memory on CPU
        if as_numpy is None:
            return None
        native = as_numpy()
        view = to_canonical(self._slot.layout, native)
        if not (native.flags.writeable and np.shares_memory(view, native)):
            return None

        def adopt() -> None:
            # once every NumPy view is gone, the tensor is the buffer's only owner and the
            # assign takes the buffer instead of copying it (it copies if a view lives on)
            with tf.init_scope():
                tensor.assign(buffer)

        return view, adopt

    # ---- deferred initialization ------------------------------------------------

    def _defer(self, fill: Callable[[], None], /) -> None:
        layer = self._layer
        hook_build(layer)
        layer.__dict__.setdefault(PENDING_ATTR, {})[self._slot.leaf] = fill

    # ---- ties -------------------------------------------------------------------

    def _tie_refusal(self, anchor: Parameter, /) -> str | None:
        if not isinstance(anchor, KerasParameter):
            return f"expected a keras parameter, got {type(anchor).__name__}."
        mine, theirs = self._slot.layout, anchor._slot.layout
        ndim = len(self.shape)
        if perm(mine, ndim) != perm(theirs, ndim) or (mine == "depthwise") != (theirs == "depthwise"):
            return (f"expected the same native layout, got {mine!r} and {theirs!r}: Keras stores them transposed "
                    "to each other and one variable has one layout. Tie layers of the same kind, or pass "
                    "ties='ignore' to pp.transfer and keep equal values instead.")
        return None

    def _share(self, anchor: Parameter, /) -> None:
        if not isinstance(anchor, KerasParameter):
            msg = (f"Cannot tie {self.path!r} to {anchor.path!r}: expected a keras parameter, "
                   f"got {type(anchor).__name__}.")
            raise errors.TieError(msg, path=self.path, expected="KerasParameter", got=type(anchor).__name__)
        mine, theirs = self._variable(), anchor._variable()
        layer = self._layer
        if mine is None and theirs is None:      # both deferred: tie when Keras builds them
            layer.__dict__.setdefault(TIES_ATTR, {})[self._slot.leaf] = anchor
            followers = anchor._layer.__dict__.setdefault(FOLLOWERS_ATTR, [])
            if not any(f is layer for f in followers):
                followers.append(layer)
            hook_build(layer)
            hook_build(anchor._layer)
            return
        if mine is None or theirs is None:
            msg = (f"Cannot tie {self.path!r} to {anchor.path!r}: expected both built or both deferred, got one "
                   "layer Keras has not built yet. Call the model on one batch first, then tie.")
            raise errors.TieError(msg, path=self.path, expected="built", got="deferred")
        originals = layer.__dict__.setdefault(ORIGINAL_ATTR, {})
        originals.setdefault(self._slot.leaf, mine)
        swap_variable(layer, mine, theirs)
        refresh(self._root)

    def _unshare(self) -> None:
        layer = self._layer
        if layer.__dict__.get(TIES_ATTR, {}).pop(self._slot.leaf, None) is not None:
            return                               # a tie still waiting for the build: forget it
        shared = self._variable()
        originals = layer.__dict__.get(ORIGINAL_ATTR, {})
        own = originals.pop(self._slot.leaf, None)
        if own is not None and shared is not None:
            assign_native(own, to_numpy(raw(shared)))
            swap_variable(layer, shared, own)
            refresh(self._root)
            return
        if self._site is not None:
            parent_locate, position = self._site
            clone_into_sequential(parent_locate(), position)
            refresh(self._root)
            return
        msg = (f"Cannot untie {self.path!r}: expected a layer tied by polyparam or reused in a Sequential, got a "
               f"layer reused inside a {type(self._root).__name__} graph, where both uses are one layer object. "
               "Build two layers and tie them with pp.tie instead.")
        raise errors.TieError(msg, path=self.path, expected="untieable", got=type(self._root).__name__)
