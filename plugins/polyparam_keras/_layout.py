"""Layer layers: their slots (canonical names, roles, layouts) and Keras' layout <-> the canonical one.

Keras stores Dense ``kernel (in, out)``, Conv ``(*k, in, out)``, ConvTranspose
``(*k, out, in)`` and DepthwiseConv ``(*k, in, mult)``; the canonical layouts are
torch's ``(out, in)``, ``(out, in, *k)``, ``(in, out, *k)`` and ``(in * mult, 1, *k)``.
A SeparableConv's ``depthwise_kernel`` and ``pointwise_kernel`` read as torch's depthwise
``(in * mult, 1, *k)`` (groups = in) and pointwise ``(out, in * mult, 1, ...)`` convolutions.

A variable made by ``add_weight`` without a name has a per-process auto-numbered Keras name
(``variable_7``); its leaf is the attribute the layer keeps it under (``gamma``), else its
position among the layer's own variables (``var0``), so every build has the same paths.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from polyparam.backend import Shape
from polyparam_keras._variables import find_variable, leaf_name, own_variables

__all__ = ["Slot", "axes", "canonical_shape", "declared_initializer", "einsum_axes", "extra_slot", "groups",
           "keras_fans", "perm", "slots", "slots_found", "slots_of", "to_canonical", "to_native", "typed_role",
           "unbuilt_shape"]

# the public classes of keras' private base classes (BaseConv, BaseConvTranspose, BaseDepthwiseConv)
_CONV_LAYERS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_CONV_T_LAYERS = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
_DEPTHWISE_LAYERS = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE_LAYERS = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
# recurrent cells: kernel (in, gates * units), recurrent_kernel (units, gates * units), kept in Keras' layout
_RNN_CELLS = (keras.layers.LSTMCell, keras.layers.GRUCell, keras.layers.SimpleRNNCell)


@dataclass(frozen=True)
class Slot:
    """One parameter of a known layer kind."""

    leaf: str                       # canonical leaf name
    var: str                        # the Keras variable's name
    role: str
    layout: str = "same"            # "same" | "dense" | "conv" | "conv_transpose" | "depthwise" | "embedding"
    flag: str | None = None         # layer attribute that must be true for it to exist
    axis_roles: tuple[str, ...] | None = None   # declared axis roles (else from ``layout``)


def perm(layout: str, ndim: int) -> tuple[int, ...] | None:
    """Native -> canonical axis permutation, or None when the layouts agree."""
    if layout == "dense":
        return (1, 0)
    if layout in ("conv", "conv_transpose"):
        return (ndim - 1, ndim - 2, *range(ndim - 2))
    if layout == "depthwise":
        return (ndim - 2, ndim - 1, *range(ndim - 2))
    return None


def to_canonical(layout: str, value: np.ndarray) -> np.ndarray:
    """A native-layout array in canonical layout (a view where a transpose does it)."""
    p = perm(layout, value.ndim)
    out = value if p is None else value.transpose(p)
    if layout == "depthwise":   # (in, mult, *k) -> torch's (in * mult, 1, *k), out channel = in * mult + m
        out = out.reshape((out.shape[0] * out.shape[1], 1, *out.shape[2:]))
    return out


def to_native(layout: str, array: np.ndarray, native_shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of :func:`to_canonical`, for an array of the canonical shape."""
    if layout == "depthwise":
        array = array.reshape((native_shape[-2], native_shape[-1], *native_shape[:-2]))
    p = perm(layout, array.ndim)
    return array if p is None else array.transpose(np.argsort(p))


def canonical_shape(layout: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The canonical shape of a native-layout shape."""
    p = perm(layout, len(shape))
    out = shape if p is None else tuple(shape[i] for i in p)
    if layout == "depthwise":
        out = (out[0] * out[1], 1, *out[2:])
    return out


def axes(layout: str, ndim: int) -> tuple[str, ...] | None:
    """The axis roles of the canonical layout, or None for the core's default."""
    if layout == "dense":
        return ("out", "in")
    if layout in ("conv", "depthwise"):
        return ("out", "in") + ("space",) * (ndim - 2)
    if layout == "conv_transpose":
        return ("in", "out") + ("space",) * (ndim - 2)
    if layout == "embedding":
        return ("in", "out")
    return None


_DENSE = (Slot("weight", "kernel", "weight", "dense"), Slot("bias", "bias", "bias", flag="use_bias"))
_CONV = (Slot("weight", "kernel", "weight", "conv"), Slot("bias", "bias", "bias", flag="use_bias"))
_CONV_T = (Slot("weight", "kernel", "weight", "conv_transpose"), Slot("bias", "bias", "bias", flag="use_bias"))
_BN = (Slot("weight", "gamma", "scale", flag="scale"), Slot("bias", "beta", "shift", flag="center"),
       Slot("running_mean", "moving_mean", "running_mean"), Slot("running_var", "moving_variance", "running_var"))
_NORM = (Slot("weight", "gamma", "scale", flag="scale"), Slot("bias", "beta", "shift", flag="center"))
_DEPTHWISE = (Slot("weight", "kernel", "weight", "depthwise"), Slot("bias", "bias", "bias", flag="use_bias"))
_EMBEDDING = (Slot("weight", "embeddings", "weight", "embedding"),)
_SEPARABLE = (Slot("depthwise_kernel", "depthwise_kernel", "weight", "depthwise"),
              Slot("pointwise_kernel", "pointwise_kernel", "weight", "conv"),
              Slot("bias", "bias", "bias", flag="use_bias"))


def slots(layer: Any) -> tuple[Slot, ...] | None:
    """The known slots of ``layer``'s kind, or None for a kind this adapter does not know."""
    layers = keras.layers
    if isinstance(layer, layers.Dense):
        return _DENSE
    if isinstance(layer, _CONV_T_LAYERS):
        return _CONV_T
    if isinstance(layer, _CONV_LAYERS):
        return _CONV
    if isinstance(layer, _DEPTHWISE_LAYERS):
        return _DEPTHWISE
    if isinstance(layer, _SEPARABLE_LAYERS):
        return _SEPARABLE
    if isinstance(layer, layers.BatchNormalization):
        return _BN
    if isinstance(layer, (layers.LayerNormalization, layers.GroupNormalization)):
        return _NORM
    if isinstance(layer, layers.Embedding):
        return _EMBEDDING
    return None


def unbuilt_shape(layer: Any, slot: Slot) -> Shape:
    """Canonical shape of a slot before Keras builds the layer (None = unknown)."""
    layers = keras.layers
    if isinstance(layer, layers.Dense):
        return (layer.units, None) if slot.leaf == "weight" else (layer.units,)
    if isinstance(layer, _CONV_T_LAYERS):
        return (None, layer.filters, *layer.kernel_size) if slot.leaf == "weight" else (layer.filters,)
    if isinstance(layer, _CONV_LAYERS):
        return (layer.filters, None, *layer.kernel_size) if slot.leaf == "weight" else (layer.filters,)
    if isinstance(layer, _DEPTHWISE_LAYERS):
        return (None, 1, *layer.kernel_size) if slot.leaf == "weight" else (None,)
    if isinstance(layer, _SEPARABLE_LAYERS):
        if slot.leaf == "depthwise_kernel":
            return (None, 1, *layer.kernel_size)
        if slot.leaf == "pointwise_kernel":
            return (layer.filters, None, *(1,) * len(layer.kernel_size))
        return (layer.filters,)
    if isinstance(layer, layers.Embedding):
        return (layer.input_dim, layer.output_dim)
    return (None,)


def groups(layer: Any, slot: Slot) -> int:
    """The groups of a grouped (or depthwise, or separable's depthwise) convolution kernel; 1 for everything else."""
    if slot.layout == "depthwise":
        kernel = find_variable(layer, slot.var) if layer.built else None
        return 1 if kernel is None else int(kernel.shape[-2])
    if slot.leaf == "weight" and isinstance(layer, _CONV_LAYERS):
        return int(getattr(layer, "groups", 1) or 1)
    return 1


def slots_of(layer: Any) -> list[Slot]:
    """The slots present on ``layer`` now (built or not).

    A built layer of a known kind also lists every other variable it has (LoRA factors,
    a quantized kernel's scale, ...), so nothing Keras saves is left out.
    """
    return slots_found(layer)[0]


def slots_found(layer: Any) -> tuple[list[Slot], list[Any], list[int | None]]:
    """:func:`slots_of` with ``layer``'s own variables (:func:`own_variables`; none before it is built) and,
    per slot, the position among them of its variable (what :func:`find_variable` finds; ``None``: not built).
    """
    known = slots(layer)
    if not layer.built:
        out = [] if known is None else [s for s in known if s.flag is None or getattr(layer, s.flag, True)]
        return out, [], [None] * len(out)
    variables = own_variables(layer)
    cached = _SLOTS.get(id(layer))
    if (cached is not None and cached[0]() is layer and len(cached[1]) == len(variables)
            and all(a() is b for a, b in zip(cached[1], variables))):
        return list(cached[2]), variables, list(cached[3])
    out = _built_slots(layer, known, variables)
    names = [v.name for v in variables]
    at = [names.index(slot.var) for slot in out]   # every built slot has its variable (_built_slots)
    if not any(_AUTO_NAME.fullmatch(name) for name in names):   # those leaves follow the layer's attributes
        key = id(layer)
        try:
            ref = weakref.ref(layer, lambda _: _SLOTS.pop(key, None))
            held = [weakref.ref(v) for v in variables]   # weakly: a variable the layer drops (quantize) is freed
        except TypeError:         # not weakly referable: no cache
            return out, variables, list(at)
        _SLOTS[key] = (ref, held, list(out), list(at))
    return out, variables, list(at)


# id(built layer) -> (weak references to it and to its own variables, their slots, the position of each slot's
# variable): a layer's slots follow from its type and its variables (names and ranks), and a tree walk asks for
# them on every call
_SLOTS: dict[int, tuple[weakref.ref[Any], list[weakref.ref[Any]], list[Slot], list[int]]] = {}


def _built_slots(layer: Any, known: tuple[Slot, ...] | None, variables: list[Any]) -> list[Slot]:
    out = [s for s in known or () if find_variable(layer, s.var) is not None]
    taken = {s.var for s in out}
    leaves = {s.leaf for s in out}
    seen: set[int] = set()
    for index, v in enumerate(variables):
        if id(v) in seen or v.name in taken:
            continue
        seen.add(id(v))
        slot = extra_slot(layer, v.name, len(v.shape), leaf=_stable_leaf(layer, v, index, leaves))
        leaves.add(slot.leaf)
        out.append(slot)
    return out


# the name Keras gives a variable made without one: the class's name, numbered per process
_AUTO_NAME = re.compile(r"variable(_[0-9]+)?")


def _stable_leaf(layer: Any, variable: Any, index: int, taken: set[str]) -> str:
    """The leaf of ``variable``: from its Keras name, or, for an auto-numbered one, the attribute
    ``layer`` keeps it under, else ``var<index>`` (its position among the layer's own variables)."""
    if not _AUTO_NAME.fullmatch(variable.name):
        return leaf_name(variable.name)
    names = [name for name, value in vars(layer).items() if value is variable]
    names.sort(key=lambda name: name.startswith("_"))
    for name in names:
        if leaf_name(name) not in taken:
            return leaf_name(name)
    return f"var{index}"


_LORA_DENSE = {"lora_kernel_a": Slot("lora_kernel_a", "lora_kernel_a", "weight", "dense"),
               "lora_kernel_b": Slot("lora_kernel_b", "lora_kernel_b", "bias", "dense")}


def extra_slot(layer: Any, var: str, ndim: int, *, leaf: str | None = None) -> Slot:
    """The slot of variable ``var`` of ``layer`` outside the slot table.

    LoRA factors (``lora_<name>_a``/``_b``, from ``enable_lora``): A is a weight and B,
    which Keras starts at zeros, has role ``"bias"``, so a tree-wide initialize is a LoRA
    start (A drawn, B zero: the adapter adds nothing). A Dense layer's factors read in
    torch's Linear layout, as peft stores them: A ``(rank, in)``, B ``(out, rank)``.
    ``leaf`` is its path segment (default: from ``var``).
    """
    leaf = leaf_name(var) if leaf is None else leaf
    if isinstance(layer, keras.layers.Dense) and var in _LORA_DENSE:
        return _LORA_DENSE[var]
    if var.startswith("lora_") and var.endswith(("_a", "_b")) and ndim >= 2:
        if var.endswith("_b"):
            return Slot(leaf, var, "bias", axis_roles=("in",) + ("out",) * (ndim - 1))
        kernel = find_variable(layer, "kernel")
        kernel_axes = None
        if isinstance(layer, keras.layers.EinsumDense) and kernel is not None:
            kernel_axes = einsum_axes(layer.equation, len(kernel.shape))
        if kernel_axes is not None and len(kernel_axes) == ndim and "in" in kernel_axes[:-1]:
            return Slot(leaf, var, "weight", axis_roles=(*kernel_axes[:-1], "out"))
        return Slot(leaf, var, "weight", axis_roles=("in",) * (ndim - 1) + ("out",))
    role, axis_roles = typed_role(layer, var, ndim, leaf=leaf)
    return Slot(leaf, var, role, axis_roles=axis_roles)


# Normalization's adapted statistics: data the layer learned by adapt(), not weights. Role "other" and
# kind "buffer" (KerasParameter._kind): a tree-wide initialize leaves them as adapted.
NORMALIZATION_STATS = ("mean", "variance", "count")


def typed_role(layer: Any, var: str, ndim: int, *, leaf: str | None = None) -> tuple[str, tuple[str, ...] | None]:
    """Role and axis roles of variable ``var`` (path segment ``leaf``) of a layer outside the slot table.

    From the layer's type and the variable's attribute name first, the name as the
    fallback (``bias``, ``*_bias``); Keras' own ``LayerScale`` (ConvNeXt's) has a ``"scale"``
    ``gamma``; anything else is ``"other"`` (a custom layer's ``gamma`` too: declare it with
    ``pp.roles``). ``None`` axis roles mean the core's default for the role.
    """
    layers = keras.layers
    if isinstance(layer, layers.EinsumDense):
        if var == "kernel":
            return "weight", einsum_axes(layer.equation, ndim)
        if var == "bias":
            return "bias", None
    elif isinstance(layer, _RNN_CELLS):
        if var in ("kernel", "recurrent_kernel") and ndim == 2:
            return "weight", ("in", "out")
        if var == "bias":
            return "bias", None
    elif isinstance(layer, layers.Normalization) and var in NORMALIZATION_STATS:
        return "other", None
    if var == "bias" or var.endswith("_bias"):
        return "bias", None
    if ndim == 1 and "gamma" in (var, leaf) and _is_keras_layer_scale(layer):
        return "scale", None
    return "other", None


def _is_keras_layer_scale(layer: Any) -> bool:
    """Keras' ``LayerScale`` (``keras.applications`` ConvNeXt; it has no public name)."""
    kind = type(layer)
    return kind.__name__ == "LayerScale" and kind.__module__.split(".")[0] == "keras"


def einsum_axes(equation: str, ndim: int) -> tuple[str, ...] | None:
    """Axis roles of an EinsumDense kernel from its equation, or None where it cannot say.

    A kernel axis that the input has and the output lacks is contracted ("in"); one the
    output has and the input lacks is "out"; one both have is "other" (per-position
    weights). ``"abc,cde->abde"`` gives ``("in", "out", "out")``.
    """
    operands, arrow, output = equation.replace(" ", "").partition("->")
    inputs = operands.split(",")
    if not arrow or len(inputs) != 2 or "." in inputs[1] or len(inputs[1]) != ndim:
        return None
    source, kernel = inputs
    roles = tuple("in" if c in source and c not in output else "out" if c in output and c not in source else "other"
                  for c in kernel)
    return roles if "in" in roles and "out" in roles else None


# The layer attribute that holds the initializer Keras declares for a variable, by the variable's
# name, where it is not ``<name>_initializer`` (BatchNormalization's ``gamma_initializer``, ...).
_INITIALIZER_ATTRS = {"kernel": ("kernel_initializer",), "recurrent_kernel": ("recurrent_initializer",),
                      "depthwise_kernel": ("depthwise_initializer",), "pointwise_kernel": ("pointwise_initializer",)}


def declared_initializer(layer: Any, var: str) -> Any | None:
    """The Keras initializer object ``layer`` declares for its variable ``var``, or None.

    A depthwise convolution's ``kernel`` is its ``depthwise_initializer``; every other
    variable is ``<name>_initializer`` or the table above (``recurrent_kernel`` ->
    ``recurrent_initializer``).
    """
    names = _INITIALIZER_ATTRS.get(var, ())
    if isinstance(layer, _DEPTHWISE_LAYERS) and var == "kernel":
        names = ("depthwise_initializer",)
    for name in (*names, f"{var}_initializer"):
        init = getattr(layer, name, None)
        if init is not None:
            return init
    return None


def keras_fans(shape: tuple[int, ...], input_axes: Any = None, output_axes: Any = None) -> tuple[int, int]:
    """Keras' ``compute_fans`` on a native shape: by the axes when both are given, else by position."""
    if input_axes is not None and output_axes is not None:
        return (int(np.prod([shape[a] for a in input_axes], dtype=np.int64)),
                int(np.prod([shape[a] for a in output_axes], dtype=np.int64)))
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = int(np.prod(shape[:-2], dtype=np.int64))
    return shape[-2] * receptive, shape[-1] * receptive
