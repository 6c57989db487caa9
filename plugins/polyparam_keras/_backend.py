"""Keras 3 backend (TensorFlow or PyTorch under Keras). Only deviations from
:class:`polyparam.Backend` are documented here; see ``docs/backends/keras.md``.

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
* Gradients: Keras stores none. :func:`backward` (and :func:`record_gradients` for
  your own ``GradientTape`` / autograd step) stores them per variable, so a tied
  variable's gradient is the sum over its uses.
* Ties: a reused layer shares its variables; :func:`polyparam.tie` after
  construction swaps the member layer's variable for the anchor's (the member's
  own variable is kept aside so ``untie`` can restore it).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import keras
import numpy as np
from keras.src.layers.convolutional.base_conv import BaseConv
from keras.src.layers.convolutional.base_conv_transpose import BaseConvTranspose
from keras.src.layers.convolutional.base_depthwise_conv import BaseDepthwiseConv
from keras.src.layers.core.input_layer import InputLayer
from keras.src.models.functional import Functional

from polyparam import errors
from polyparam._models import Case, ModelFactory
from polyparam._parameter import Parameter, Shape
from polyparam._threads import parallel_copy
from polyparam._tree import ParameterTree, join_path

__all__ = ["CAPABILITIES", "NAME", "framework_version", "is_native", "models", "tree"]

NAME = "keras"
CAPABILITIES = frozenset({"tying", "deferred", "gradients"})

_GRAD_ATTR = "_polyparam_grad"
_PENDING_ATTR = "_polyparam_pending"       # layer -> {leaf: fill}, run after build
_ORIGINAL_ATTR = "_polyparam_original"     # layer -> {leaf: own variable put aside by a tie}
_HOOK_ATTR = "_polyparam_build_hooked"
_TIES_ATTR = "_polyparam_ties"             # member layer -> {leaf: anchor KerasParameter}, tie made before build
_FOLLOWERS_ATTR = "_polyparam_followers"   # anchor layer -> [member layers waiting for its build]


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


# ---- the active Keras backend ---------------------------------------------------------


def _engine() -> str:
    return keras.backend.backend()


def _raw(variable: Any) -> Any:
    """The framework tensor behind a Keras variable (tf.Variable / torch Parameter), outside any scope."""
    return variable._value


def _to_numpy(tensor: Any) -> np.ndarray:
    engine = _engine()
    if engine == "torch":
        t = tensor.detach()
        return t.numpy() if t.device.type == "cpu" else t.cpu().numpy()
    if engine == "tensorflow":
        return tensor.numpy()
    return np.asarray(tensor)


def _device_type(device: str) -> str:
    """``"CPU"`` / ``"GPU"`` of a TensorFlow device string such as ``/job:localhost/.../device:CPU:0``."""
    return device.rsplit("device:", 1)[-1].split(":", 1)[0].upper() if device else "CPU"


def _assign_native(variable: Any, array: np.ndarray) -> None:
    """Write a native-layout array into the variable's storage, bypassing stateless scopes."""
    engine = _engine()
    raw = _raw(variable)
    if engine == "torch":
        import torch

        with torch.no_grad():
            if raw.device.type == "cpu":
                raw.detach().numpy()[...] = array
            else:
                raw.copy_(torch.from_numpy(np.ascontiguousarray(array)).to(raw.device))
    elif engine == "tensorflow":
        import tensorflow as tf

        with tf.init_scope():
            raw.assign(np.ascontiguousarray(array))
    else:
        variable.assign(array)


# ---- layer kinds: canonical names, roles and layouts ------------------------------------


@dataclass(frozen=True)
class _Slot:
    """One parameter of a known layer kind."""

    leaf: str                       # canonical leaf name
    var: str                        # the Keras variable's name
    role: str
    layout: str = "same"            # "same" | "dense" | "conv" | "conv_transpose" | "depthwise" | "embedding"
    flag: str | None = None         # layer attribute that must be true for it to exist


def _perm(layout: str, ndim: int) -> tuple[int, ...] | None:
    """Native -> canonical axis permutation, or None when the layouts agree."""
    if layout == "dense":
        return (1, 0)
    if layout in ("conv", "conv_transpose", "depthwise"):
        return (ndim - 1, ndim - 2, *range(ndim - 2)) if layout != "depthwise" else (ndim - 2, ndim - 1, *range(ndim - 2))
    return None


def _to_canonical(layout: str, value: np.ndarray) -> np.ndarray:
    """A native-layout array in canonical layout (a view where a transpose does it)."""
    perm = _perm(layout, value.ndim)
    out = value if perm is None else value.transpose(perm)
    if layout == "depthwise":   # (in, mult, *k) -> torch's (in * mult, 1, *k), out channel = in * mult + m
        out = out.reshape((out.shape[0] * out.shape[1], 1, *out.shape[2:]))
    return out


def _to_native(layout: str, array: np.ndarray, native_shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of :func:`_to_canonical`, for an array of the canonical shape."""
    if layout == "depthwise":
        array = array.reshape((native_shape[-2], native_shape[-1], *native_shape[:-2]))
    perm = _perm(layout, array.ndim)
    return array if perm is None else array.transpose(np.argsort(perm))


def _canonical_shape(layout: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    perm = _perm(layout, len(shape))
    out = shape if perm is None else tuple(shape[i] for i in perm)
    if layout == "depthwise":
        out = (out[0] * out[1], 1, *out[2:])
    return out


def _axes(layout: str, ndim: int) -> tuple[str, ...] | None:
    if layout == "dense":
        return ("out", "in")
    if layout in ("conv", "depthwise"):
        return ("out", "in") + ("space",) * (ndim - 2)
    if layout == "conv_transpose":
        return ("in", "out") + ("space",) * (ndim - 2)
    if layout == "embedding":
        return ("in", "out")
    return None


_DENSE = (_Slot("weight", "kernel", "weight", "dense"), _Slot("bias", "bias", "bias", flag="use_bias"))
_CONV = (_Slot("weight", "kernel", "weight", "conv"), _Slot("bias", "bias", "bias", flag="use_bias"))
_CONV_T = (_Slot("weight", "kernel", "weight", "conv_transpose"), _Slot("bias", "bias", "bias", flag="use_bias"))
_BN = (_Slot("weight", "gamma", "scale", flag="scale"), _Slot("bias", "beta", "shift", flag="center"),
       _Slot("running_mean", "moving_mean", "running_mean"), _Slot("running_var", "moving_variance", "running_var"))
_NORM = (_Slot("weight", "gamma", "scale", flag="scale"), _Slot("bias", "beta", "shift", flag="center"))
_DEPTHWISE = (_Slot("weight", "kernel", "weight", "depthwise"), _Slot("bias", "bias", "bias", flag="use_bias"))
_EMBEDDING = (_Slot("weight", "embeddings", "weight", "embedding"),)


def _slots(layer: Any) -> tuple[_Slot, ...] | None:
    """The known slots of ``layer``'s kind, or None for a kind this adapter does not know."""
    L = keras.layers
    if isinstance(layer, L.Dense):
        return _DENSE
    if isinstance(layer, BaseConvTranspose):
        return _CONV_T
    if isinstance(layer, BaseConv):
        return _CONV
    if isinstance(layer, BaseDepthwiseConv):
        return _DEPTHWISE
    if isinstance(layer, L.BatchNormalization):
        return _BN
    if isinstance(layer, (L.LayerNormalization, L.GroupNormalization)):
        return _NORM
    if isinstance(layer, L.Embedding):
        return _EMBEDDING
    return None


def _unbuilt_shape(layer: Any, slot: _Slot) -> Shape:
    """Canonical shape of a slot before Keras builds the layer (None = unknown)."""
    L = keras.layers
    if isinstance(layer, L.Dense):
        return (layer.units, None) if slot.leaf == "weight" else (layer.units,)
    if isinstance(layer, BaseConvTranspose):
        return (None, layer.filters, *layer.kernel_size) if slot.leaf == "weight" else (layer.filters,)
    if isinstance(layer, BaseConv):
        return (layer.filters, None, *layer.kernel_size) if slot.leaf == "weight" else (layer.filters,)
    if isinstance(layer, BaseDepthwiseConv):
        return (None, 1, *layer.kernel_size) if slot.leaf == "weight" else (None,)
    if isinstance(layer, L.Embedding):
        return (layer.input_dim, layer.output_dim)
    return (None,)


def _groups(layer: Any, slot: _Slot) -> int:
    if slot.leaf != "weight":
        return 1
    if isinstance(layer, BaseConv):
        return int(getattr(layer, "groups", 1) or 1)
    if isinstance(layer, BaseDepthwiseConv) and layer.built:
        return int(_find_variable(layer, slot.var).shape[-2])
    return 1


def _own_variables(layer: Any) -> list[Any]:
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def _find_variable(layer: Any, name: str) -> Any | None:
    for v in _own_variables(layer):
        if v.name == name:
            return v
    return None


def _leaf_name(name: str) -> str:
    return name.replace(".", "_").replace("/", "_")


def _slots_of(layer: Any) -> list[_Slot]:
    """The slots present on ``layer`` now (built or not)."""
    known = _slots(layer)
    if known is not None:
        if layer.built:
            return [s for s in known if _find_variable(layer, s.var) is not None]
        return [s for s in known if s.flag is None or getattr(layer, s.flag, True)]
    if not layer.built:
        return []
    own = _own_variables(layer)
    seen: set[int] = set()
    out = []
    for v in own:
        if id(v) in seen:
            continue
        seen.add(id(v))
        out.append(_Slot(_leaf_name(v.name), v.name, "other"))
    return out


# ---- parameters --------------------------------------------------------------------------


class KerasParameter(Parameter):
    """One slot of a Keras layer, found live: the layer through ``locate``, the variable by name."""

    backend = NAME

    def __init__(self, path: str, slot: _Slot, *, locate: Callable[[], Any], root: Any,
                 site: tuple[Callable[[], Any], int] | None) -> None:
        layer = locate()
        ndim = len(_unbuilt_shape(layer, slot)) if not layer.built else len(_find_variable(layer, slot.var).shape)
        trainable = slot.role not in ("running_mean", "running_var")
        super().__init__(path, role=slot.role, axes=_axes(slot.layout, ndim), trainable=trainable,
                         groups=_groups(layer, slot))
        self._slot = slot
        self._locate = locate
        self._root = root
        self._site = site      # (parent locator, position in parent.layers) for Sequential children

    # -- resolution

    @property
    def _layer(self) -> Any:
        return self._locate()

    def _variable(self) -> Any | None:
        layer = self._layer
        return _find_variable(layer, self._slot.var) if layer.built else None

    # -- facts

    def _shape(self) -> Shape:
        v = self._variable()
        if v is None:
            return _unbuilt_shape(self._layer, self._slot)
        return _canonical_shape(self._slot.layout, tuple(int(d) for d in v.shape))

    def _dtype(self) -> Any:
        v = self._variable()
        return v.dtype if v is not None else self._layer.variable_dtype

    def _device(self) -> str:
        v = self._variable()
        if v is None or v._value is None:
            return "cpu"
        raw = _raw(v)
        if _engine() == "torch":
            return str(raw.device)
        device = str(getattr(raw, "device", "") or "")
        kind, _, index = device.rpartition("device:")[2].partition(":")
        if kind.upper() == "GPU":
            return f"cuda:{index or 0}"
        return "cpu"

    def _native(self) -> Any:
        return self._variable()

    def _native_name(self) -> str:
        v = self._variable()
        return v.path if v is not None else f"{self._layer.name}/{self._slot.var}"

    def _state(self) -> str:
        v = self._variable()
        if v is None:
            return "deferred"
        return "uninitialized" if v._value is None else "initialized"

    # -- values

    def _read(self) -> np.ndarray:
        return _to_canonical(self._slot.layout, _to_numpy(_raw(self._variable())))

    def _read_copy(self) -> np.ndarray:
        if _engine() == "tensorflow":
            return self._read()     # a TensorFlow read is already a copy (.numpy() copies)
        return super()._read_copy()

    def _write(self, array: np.ndarray, /) -> None:
        v = self._variable()
        if v._value is None:
            native = _to_native(self._slot.layout, array, tuple(int(d) for d in v.shape))
            v._initialize(np.ascontiguousarray(native))
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
        _assign_native(v, _to_native(self._slot.layout, array, tuple(int(d) for d in v.shape)))

    def _staging(self) -> tuple[np.ndarray, Callable[[], None]] | None:
        if _engine() != "tensorflow":
            return None
        v = self._variable()
        if v is None or v._value is None:
            return None
        raw = _raw(v)
        if _device_type(raw.device) != "CPU":
            return None
        import tensorflow as tf

        # an uninitialized tensor from TensorFlow's own allocator (its pool: no fresh pages,
        # and no buffer left stranded there when the variable lets its old one go)
        with tf.init_scope(), tf.device(raw.device):
            buffer = tf.raw_ops.Empty(shape=tuple(int(d) for d in v.shape), dtype=raw.dtype, init=False)
        as_numpy = getattr(buffer, "_numpy", None)   # EagerTensor._numpy: a view of the memory on CPU
        if as_numpy is None:
            return None
        native = as_numpy()
        view = _to_canonical(self._slot.layout, native)
        if not (native.flags.writeable and np.shares_memory(view, native)):
            return None

        def adopt() -> None:
            # once every NumPy view is gone, the tensor is the buffer's only owner and the
            # assign takes the buffer instead of copying it (it copies if a view lives on)
            with tf.init_scope():
                raw.assign(buffer)

        return view, adopt

    def _writable_view(self) -> np.ndarray | None:
        if _engine() != "torch":
            return None         # tf.Variable storage cannot be written through NumPy
        v = self._variable()
        if v is None or v._value is None or _raw(v).device.type != "cpu":
            return None
        view = _to_canonical(self._slot.layout, _raw(v).detach().numpy())
        return view if np.shares_memory(view, _raw(v).detach().numpy()) else None

    def _grad(self) -> np.ndarray | None:
        v = self._variable()
        grad = None if v is None else getattr(v, _GRAD_ATTR, None)
        if grad is None:
            return None
        return _to_canonical(self._slot.layout, grad)

    def _identity(self) -> Any:
        layer = self._layer
        pending = layer.__dict__.get(_TIES_ATTR, {}).get(self._slot.leaf)
        if pending is not None:
            return pending._identity()
        v = self._variable()
        if v is not None:
            return ("variable", id(v))
        return ("slot", id(layer), self._slot.leaf)

    # -- deferred initialization

    def _defer(self, fill: Callable[[], None], /) -> None:
        layer = self._layer
        _hook_build(layer)
        layer.__dict__.setdefault(_PENDING_ATTR, {})[self._slot.leaf] = fill

    # -- ties

    def _tie_refusal(self, anchor: Parameter, /) -> str | None:
        if not isinstance(anchor, KerasParameter):
            return f"expected a keras parameter, got {type(anchor).__name__}."
        mine, theirs = self._slot.layout, anchor._slot.layout
        ndim = len(self.shape)
        if _perm(mine, ndim) != _perm(theirs, ndim) or (mine == "depthwise") != (theirs == "depthwise"):
            return (f"expected the same native layout, got {mine!r} and {theirs!r}: Keras stores them transposed "
                    "to each other and one variable has one layout. Tie layers of the same kind, or pass "
                    "ties='ignore' to pp.transfer and keep equal values instead.")
        return None

    def _share(self, anchor: Parameter, /) -> None:
        if not isinstance(anchor, KerasParameter):
            msg = f"Cannot tie {self.path!r} to {anchor.path!r}: expected a keras parameter, got {type(anchor).__name__}."
            raise errors.TieError(msg, path=self.path, expected="KerasParameter", got=type(anchor).__name__)
        mine, theirs = self._variable(), anchor._variable()
        layer = self._layer
        if mine is None and theirs is None:      # both deferred: tie when Keras builds them
            layer.__dict__.setdefault(_TIES_ATTR, {})[self._slot.leaf] = anchor
            followers = anchor._layer.__dict__.setdefault(_FOLLOWERS_ATTR, [])
            if not any(f is layer for f in followers):
                followers.append(layer)
            _hook_build(layer)
            _hook_build(anchor._layer)
            return
        if mine is None or theirs is None:
            msg = (f"Cannot tie {self.path!r} to {anchor.path!r}: expected both built or both deferred, got one "
                   "layer Keras has not built yet. Call the model on one batch first, then tie.")
            raise errors.TieError(msg, path=self.path, expected="built", got="deferred")
        originals = layer.__dict__.setdefault(_ORIGINAL_ATTR, {})
        originals.setdefault(self._slot.leaf, mine)
        _swap_variable(layer, mine, theirs)
        _refresh(self._root)

    def _unshare(self) -> None:
        layer = self._layer
        if layer.__dict__.get(_TIES_ATTR, {}).pop(self._slot.leaf, None) is not None:
            return                               # a tie still waiting for the build: forget it
        shared = self._variable()
        originals = layer.__dict__.get(_ORIGINAL_ATTR, {})
        own = originals.pop(self._slot.leaf, None)
        if own is not None and shared is not None:
            _assign_native(own, _to_numpy(_raw(shared)))
            _swap_variable(layer, shared, own)
            _refresh(self._root)
            return
        if self._site is not None:
            parent_locate, position = self._site
            _clone_into_sequential(parent_locate(), position)
            _refresh(self._root)
            return
        msg = (f"Cannot untie {self.path!r}: expected a layer tied by polyparam or reused in a Sequential, got a "
               f"layer reused inside a {type(self._root).__name__} graph, where both uses are one layer object. "
               "Build two layers and tie them with pp.tie instead.")
        raise errors.TieError(msg, path=self.path, expected="untieable", got=type(self._root).__name__)


def _swap_variable(layer: Any, old: Any, new: Any) -> None:
    """Make ``layer`` use ``new`` wherever it used ``old`` (attributes and tracked lists)."""
    for name, value in list(vars(layer).items()):
        if value is old:
            object.__setattr__(layer, name, new)
    tracker = getattr(layer, "_tracker", None)
    for store in ("trainable_variables", "non_trainable_variables"):
        entries = getattr(layer, f"_{store}")
        for i, v in enumerate(entries):
            if v is old:
                list.__setitem__(entries, i, new)
        if tracker is not None and store in tracker.stored_ids:
            ids = tracker.stored_ids[store]
            if id(old) in ids and not any(v is old for v in entries):
                ids.discard(id(old))
            if any(v is new for v in entries):
                ids.add(id(new))


def _refresh(root: Any) -> None:
    """Drop what cached the old variables: compiled step functions and torch parameter dicts."""
    for layer in root._flatten_layers(include_self=True, recursive=True):
        for attr in ("train_function", "test_function", "predict_function"):
            if getattr(layer, attr, None) is not None:
                setattr(layer, attr, None)
        if _engine() == "torch" and "_torch_params" in getattr(layer, "_modules", {}):
            layer._track_variables()


def _layer_offset(seq: Any) -> int:
    return 1 if seq._layers and isinstance(seq._layers[0], InputLayer) else 0


def _clone_into_sequential(seq: Any, position: int) -> None:
    """Put a copy of ``seq.layers[position]`` (values included) in its place: untie a reused layer."""
    old = seq.layers[position]
    config = old.get_config()
    config.pop("name", None)
    clone = type(old).from_config(config)
    if old.built:
        clone.build(**old._build_shapes_dict)
        for mine, theirs in zip(_own_variables(clone), _own_variables(old)):
            _assign_native(mine, _to_numpy(_raw(theirs)))
    index = position + _layer_offset(seq)
    list.__setitem__(seq._layers, index, clone)
    seq._tracker.stored_ids["layers"].add(id(clone))
    if seq.built and getattr(seq, "_build_shapes_dict", None):
        shapes = dict(seq._build_shapes_dict)
        seq.built = False
        seq._functional = None
        seq.build(**shapes)


def _hook_build(layer: Any) -> None:
    """Run recorded initializations right after Keras builds ``layer``."""
    if layer.__dict__.get(_HOOK_ATTR):
        return
    inner = layer.build

    @functools.wraps(inner)
    def build(*args: Any, **kwargs: Any) -> Any:
        result = inner(*args, **kwargs)
        _resolve_ties(layer)
        for follower in list(layer.__dict__.get(_FOLLOWERS_ATTR, [])):
            _resolve_ties(follower)
        pending = layer.__dict__.get(_PENDING_ATTR) or {}
        while pending:
            leaf = next(iter(pending))          # in recording order
            pending.pop(leaf)()
        return result

    object.__setattr__(layer, "build", build)
    object.__setattr__(layer, _HOOK_ATTR, True)


def _resolve_ties(layer: Any) -> None:
    """Apply the ties recorded before build whose two variables now exist."""
    ties = layer.__dict__.get(_TIES_ATTR)
    if not ties or not layer.built:
        return
    for leaf, anchor in list(ties.items()):
        theirs = anchor._variable()
        if theirs is None:
            continue                             # the anchor's build will come back here
        slot = next(s for s in _slots_of(layer) if s.leaf == leaf)
        mine = _find_variable(layer, slot.var)
        del ties[leaf]
        if mine is theirs:
            continue
        if tuple(mine.shape) != tuple(theirs.shape) or mine.dtype != theirs.dtype:
            msg = (f"Cannot apply the tie of {anchor.path!r} to layer {layer.name!r} ({leaf}) at build: expected "
                   f"shape {tuple(theirs.shape)} and dtype {theirs.dtype}, got {tuple(mine.shape)} and {mine.dtype}. "
                   "Tie layers that receive inputs of the same size.")
            raise errors.TieError(msg, path=anchor.path, expected=tuple(theirs.shape), got=tuple(mine.shape))
        layer.__dict__.setdefault(_ORIGINAL_ATTR, {}).setdefault(leaf, mine)
        _swap_variable(layer, mine, theirs)
        if _engine() == "torch" and "_torch_params" in getattr(layer, "_modules", {}):
            layer._track_variables()


# ---- trees -------------------------------------------------------------------------------


def _is_container(layer: Any) -> bool:
    return isinstance(layer, (keras.Sequential, Functional))


def _attribute_children(layer: Any) -> list[tuple[str, Any, Callable[[Any], Any]]]:
    """Sublayers of a subclassed layer by attribute name, in ``layer.layers`` order.

    Returns ``(name, value, getter)``; a list/tuple/dict attribute of layers is one
    entry whose value is the container.
    """
    tracked = {id(l): i for i, l in enumerate(layer._layers)}
    candidates: list[tuple[str, Any]] = list(vars(layer).items())
    modules = vars(layer).get("_modules")
    if isinstance(modules, dict):
        candidates += list(modules.items())
    found: list[tuple[int, str, Any, Callable[[Any], Any]]] = []
    claimed: set[int] = set()
    for name, value in candidates:
        if value is layer._layers or name in ("_layers", "_modules", "_torch_params", "_functional"):
            continue
        if isinstance(value, keras.Layer):
            if id(value) in tracked and name not in {f[1] for f in found}:
                found.append((tracked[id(value)], name, value, lambda obj, n=name: getattr(obj, n)))
                claimed.add(id(value))
        elif isinstance(value, (list, tuple, dict)) and value and not name.startswith("_"):
            items = list(value.values()) if isinstance(value, dict) else list(value)
            if all(isinstance(v, keras.Layer) and id(v) in tracked for v in items):
                first = min(tracked[id(v)] for v in items)
                found.append((first, name, value, lambda obj, n=name: getattr(obj, n)))
                claimed.update(id(v) for v in items)
    for i, sub in enumerate(layer._layers):
        if id(sub) not in claimed:
            found.append((i, str(i), sub, lambda obj, i=i: obj._layers[i]))
            claimed.add(id(sub))
    found.sort(key=lambda f: f[0])
    return [(name, value, getter) for _, name, value, getter in found]


class KerasTree(ParameterTree):
    """A Keras layer or model (or a list of sublayers of a subclassed one) as a parameter tree."""

    backend = NAME

    def __init__(self, native: Any, /, *, locate: Callable[[], Any], root: Any, path: str = "",
                 site: tuple[Callable[[], Any], int] | None = None) -> None:
        super().__init__(native, path=path)
        self._locate = locate
        self._root = root
        self._site = site

    @property
    def native(self) -> Any:
        return self._locate()

    def _children(self) -> list[tuple[str, ParameterTree]]:
        obj = self._locate()
        out: list[tuple[str, ParameterTree]] = []
        if isinstance(obj, (list, tuple, dict)):
            keys = list(obj.keys()) if isinstance(obj, dict) else list(range(len(obj)))
            for key in keys:
                locate = functools.partial(_item, self._locate, key)
                out.append((str(key), KerasTree(obj[key], locate=locate, root=self._root,
                                                path=join_path(self.path, str(key)))))
            return out
        if _is_container(obj):
            for i, layer in enumerate(obj.layers):
                locate = functools.partial(_position, self._locate, i)
                out.append((str(i), KerasTree(layer, locate=locate, root=self._root, path=join_path(self.path, str(i)),
                                              site=(self._locate, i) if isinstance(obj, keras.Sequential) else None)))
            return out
        for name, value, getter in _attribute_children(obj):
            locate = functools.partial(_via, self._locate, getter)
            out.append((name, KerasTree(value, locate=locate, root=self._root, path=join_path(self.path, name))))
        return out

    def _leaves(self) -> list[tuple[str, Parameter]]:
        obj = self._locate()
        if not isinstance(obj, keras.Layer) or _is_container(obj):
            return []
        return [(slot.leaf, KerasParameter(join_path(self.path, slot.leaf), slot, locate=self._locate,
                                           root=self._root, site=self._site))
                for slot in _slots_of(obj)]


def _item(locate: Callable[[], Any], key: Any) -> Any:
    return locate()[key]


def _position(locate: Callable[[], Any], i: int) -> Any:
    return locate().layers[i]


def _via(locate: Callable[[], Any], getter: Callable[[Any], Any]) -> Any:
    return getter(locate())


# ---- gradients ---------------------------------------------------------------------------


def record_gradients(pairs: Iterable[tuple[Any, Any]], /) -> None:
    """Store ``(gradient, variable)`` pairs so ``Parameter.grad()`` returns them.

    Use it in your own training step::

        with tf.GradientTape() as tape:
            loss = loss_fn(model(x))
        grads = tape.gradient(loss, model.trainable_variables)
        polyparam_keras.record_gradients(zip(grads, model.trainable_variables))

    A gradient of ``None`` (variable unused) is stored as zeros.
    """
    for grad, variable in pairs:
        if grad is None:
            value = np.zeros(tuple(variable.shape), np.dtype(variable.dtype))
        else:
            value = np.array(_to_numpy(grad) if not isinstance(grad, np.ndarray) else grad, copy=True)
        object.__setattr__(variable, _GRAD_ATTR, value)


def backward(model: Any, inputs: Any, /, loss: Callable[[Any], Any] | None = None) -> Any:
    """Run ``model`` on ``inputs`` and store the gradients of ``loss(output)`` (default ``sum(output)``).

    Uses the active Keras backend's autodiff (``tf.GradientTape`` or torch autograd).
    Gradients are computed fresh (not accumulated) for every trainable variable, once
    per variable: a tied variable gets the sum over its uses. Returns the loss as NumPy.
    """
    variables = model.trainable_variables
    engine = _engine()
    if engine == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            out = model(inputs, training=True)
            value = loss(out) if loss is not None else tf.reduce_sum(out)
        grads = tape.gradient(value, variables)
        record_gradients(zip(grads, variables))
        return value.numpy()
    if engine == "torch":
        import torch

        with torch.enable_grad():
            out = model(inputs, training=True)
            value = loss(out) if loss is not None else out.sum()
            grads = torch.autograd.grad(value, [_raw(v) for v in variables], allow_unused=True)
        record_gradients(zip(grads, variables))
        return value.detach().cpu().numpy()
    msg = (f"Cannot compute gradients with Keras backend {engine!r}: expected 'tensorflow' or 'torch', got "
           f"{engine!r}. Compute them yourself and pass them to record_gradients().")
    raise errors.BackendError(msg, backend=NAME, expected=("tensorflow", "torch"), got=engine)


# ---- the seed's models --------------------------------------------------------------------


class KerasModels(ModelFactory):
    """The chapter's models in Keras 3, laid out like the NumPy reference (no Flatten layers)."""

    def mlp(self) -> Case:
        net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
        return Case(net, in_features=4, layers=["0", "1"])

    def rgnet(self) -> Case:
        def block1() -> Any:
            return keras.Sequential([keras.layers.Dense(32, activation="relu"), keras.layers.Dense(16, activation="relu")])

        def block2() -> Any:
            return keras.Sequential([block1() for _ in range(4)])

        net = keras.Sequential([block2(), keras.layers.Dense(10)])
        net(np.zeros((1, 4), np.float32))
        layers = [f"0.{i}.{j}" for i in range(4) for j in range(2)] + ["1"]
        return Case(net, in_features=4, layers=layers)

    def shared(self) -> Case:
        shared = keras.layers.Dense(8, activation="relu")
        net = keras.Sequential([keras.Input((20,)), keras.layers.Dense(8, activation="relu"), shared, shared,
                                keras.layers.Dense(10)])
        return Case(net, in_features=20, layers=["0", "1", "2", "3"], tied=[("1", "2")])

    def lazy(self) -> Case:
        net = keras.Sequential([keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)])
        return Case(net, in_features=20, layers=["0", "1"])

    def layer(self, kind: str, /) -> Any:
        L = keras.layers
        builders = {
            "dense": (lambda: L.Dense(400), (None, 300)),
            "conv1d": (lambda: L.Conv1D(8, 3), (None, 10, 4)),
            "conv2d": (lambda: L.Conv2D(16, 5), (None, 10, 10, 3)),
            "conv3d": (lambda: L.Conv3D(4, 3), (None, 5, 5, 5, 2)),
            "conv_transpose2d": (lambda: L.Conv2DTranspose(4, 3), (None, 5, 5, 6)),
            "grouped_conv2d": (lambda: L.Conv2D(16, 3, groups=4), (None, 6, 6, 8)),
            "depthwise_conv2d": (lambda: L.DepthwiseConv2D(3, depth_multiplier=1), (None, 6, 6, 8)),
            "embedding": (lambda: L.Embedding(50, 16), (None, 3)),
            "batchnorm": (lambda: L.BatchNormalization(), (None, 8)),
        }
        if kind not in builders:
            return super().layer(kind)
        make, input_shape = builders[kind]
        layer = make()
        layer.build(input_shape)
        return layer

    def forward(self, model: Any, x: np.ndarray, /) -> np.ndarray:
        return keras.ops.convert_to_numpy(model(np.asarray(x, np.float32)))

    def backward(self, model: Any, x: np.ndarray, /) -> None:
        backward(model, np.asarray(x, np.float32))
