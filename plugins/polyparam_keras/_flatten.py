"""The order of a Dense layer's input features when they are a flattened feature map.

The canonical order is PyTorch's: its ``Flatten`` of a ``(C, H, W)`` map orders the features
``(C, H, W)``. Keras' ``Flatten`` reshapes its input as it is, except that one with
``data_format="channels_first"`` first moves axis 1 last: a channels-last map ``(H, W, C)``
flattens ``(H, W, C)`` with the default Flatten and ``(W, C, H)`` with a channels-first one,
a channels-first map ``(C, H, W)`` flattens ``(H, W, C)`` and ``(C, H, W)``. Which axis of the
map holds the channels is the ``data_format`` of the layer that made it (a convolution, a
pooling; found past element-wise merges, concatenations and nested models), else the Flatten's
own (a map from the model's input); a ``Permute``, ``Reshape``, ``Lambda`` or a layer of your own
that changes the map's shape on the way puts it in doubt. So the input axis of such a Dense kernel reads permuted into
PyTorch's order and writes back, wherever the model's graph (Sequential and Functional models)
shows the Flatten. Where it cannot be known (a subclassed model holding a Flatten, or a layer that
makes a map of exactly a Dense layer's input size, the nearest such layer before it with no Dense
between, a Reshape, ``Lambda`` or ``keras.ops.reshape``
that flattens a map) the parameter says so (``_layout_doubt``), and a transfer to another
framework refuses. The other way round, a Dense whose outputs a reshape makes a channels-last
map (a generator's first layer) has its outputs in ``(H, W, C)`` order where PyTorch's
``Unflatten`` makes ``(C, H, W)``: :func:`unflatten_doubt` says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

__all__ = ["FlatOrder", "flatten_order", "from_canonical_order", "norm_axes_doubt", "to_canonical_order",
           "unflatten_doubt"]

_L = keras.layers
# layers that keep each feature where it is and hold nothing per feature
_PASS_THROUGH = (_L.Dropout, _L.Activation, _L.ReLU, _L.LeakyReLU, _L.ELU, _L.Softmax, _L.GaussianNoise,
                 _L.GaussianDropout, _L.AlphaDropout, _L.ActivityRegularization, _L.Identity)
# layers that keep each feature where it is but hold per-feature values (in the flattened order too)
_PER_FEATURE = (_L.BatchNormalization, _L.LayerNormalization, _L.PReLU, _L.UnitNormalization)
# layers that make a feature map (their output shape is cheap to ask, from the input shape they were built with)
_MAP_MAKERS = tuple(getattr(_L, name) for d in (1, 2, 3) for name in (
    f"Conv{d}D", f"Conv{d}DTranspose", f"SeparableConv{d}D", f"DepthwiseConv{d}D", f"MaxPooling{d}D",
    f"AveragePooling{d}D", f"UpSampling{d}D", f"ZeroPadding{d}D", f"Cropping{d}D") if hasattr(_L, name))


@dataclass(frozen=True)
class FlatOrder:
    """Features flattened from a map: ``dims`` in Keras' flattened order, and ``axes``, the order of
    those dims that is PyTorch's (channels, then the spatial dims): canonical dims are ``dims[a] for a in axes``."""

    dims: tuple[int, ...]
    axes: tuple[int, ...]


Found = FlatOrder | str | None   # str: why the order cannot be established


def to_canonical_order(order: FlatOrder, value: np.ndarray) -> np.ndarray:
    """A canonical ``(out, in)`` array with its in axis from Keras' flattened order to PyTorch's."""
    out = value.reshape((value.shape[0], *order.dims))
    return out.transpose((0, *(a + 1 for a in order.axes))).reshape(value.shape)


def from_canonical_order(order: FlatOrder, value: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_canonical_order`."""
    out = value.reshape((value.shape[0], *(order.dims[a] for a in order.axes)))
    back = np.argsort(order.axes)
    return out.transpose((0, *(int(a) + 1 for a in back))).reshape(value.shape)


def flatten_order(layer: Any, root: Any, before: list[Any] | None = None) -> Found:
    """How ``layer``'s input features are ordered: a :class:`FlatOrder` to permute, ``None``
    when they need nothing, or a sentence saying why it cannot be known.

    From the layer's graph nodes; without them (a Sequential building its graph right now,
    which builds the layer before it records the layer's node), from ``before``, the layers
    before it in its Sequential; else from what ``root`` holds.
    """
    nodes = [n for n in getattr(layer, "_inbound_nodes", []) if n.input_tensors]
    if nodes:
        found = {_from_tensor(n.input_tensors[0], per_feature=None, root=root) for n in nodes}
        if len(found) > 1:
            return (f"layer {layer.name!r} is called on inputs of different feature orders (a flattened feature map "
                    "in one use, not in another), so its kernel has no one canonical input order.")
        return found.pop()
    if before is not None:
        return _in_sequence(before, root)
    return _without_graph(layer, root)


def _in_sequence(before: list[Any], root: Any = None) -> Found:
    """From the layers before one in a Sequential (each already called, so each has its node)."""
    per_feature: str | None = None
    for i in range(len(before) - 1, -1, -1):
        op = before[i]
        if isinstance(op, _PASS_THROUGH + _PER_FEATURE):
            if isinstance(op, _PER_FEATURE):
                per_feature = per_feature or op.name
            continue
        nodes = [n for n in getattr(op, "_inbound_nodes", []) if n.input_tensors]
        if isinstance(op, (_L.Flatten, _L.Reshape)) and nodes:
            return _from_tensor(nodes[-1].output_tensors[0], per_feature=per_feature, root=root)
        if isinstance(op, (_L.Flatten, _L.Reshape)):
            return f"the shape of the map that {type(op).__name__} layer {op.name!r} flattens is not known yet."
        return _unknown_flatten(op, nodes[-1]) if nodes else None
    return None


def _unknown_flatten(op: Any, node: Any) -> str | None:
    """Why the order is unknown where ``op`` (neither a Flatten nor a Reshape layer: a ``Lambda``, a
    ``keras.ops.reshape`` in a functional model) turns a feature map into flat features, else ``None``."""
    if not node.input_tensors or not node.output_tensors:
        return None
    shape, out = tuple(node.input_tensors[0].shape), tuple(node.output_tensors[0].shape)
    if len(out) != 2 or not (_is_map(shape, channels_first=False) or _is_map(shape, channels_first=True)):
        return None
    if None not in shape[1:] and out[1] is not None and math.prod(shape[1:]) != out[1]:
        return None    # not every feature of the map is kept (a pooling to one value per channel)
    return (f"its input is a feature map {shape[1:]} flattened by {type(op).__name__} {op.name!r}, whose order of "
            "channels and positions the model does not show.")


def _history(tensor: Any) -> tuple[Any, Any] | None:
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None
    op, node_index = history[0], history[1]
    nodes = getattr(op, "_inbound_nodes", [])
    return (op, nodes[node_index]) if node_index < len(nodes) else None


def _from_tensor(tensor: Any, *, per_feature: str | None, root: Any = None,
                 memo: dict[Any, Found] | None = None) -> Found:
    """How the features of ``tensor`` are ordered (see :func:`flatten_order`), walking its graph back: into a
    nested model that made it, and out of one at its input, to the tensors its calls in ``root`` give (which
    must agree). ``memo`` holds the answers found so far (a nested model called on its own output, a chain of
    merges: each tensor is asked once; a cycle adds nothing)."""
    memo = {} if memo is None else memo
    key = (id(tensor), per_feature)
    if key not in memo:
        memo[key] = None
        memo[key] = _from_tensor_walk(tensor, per_feature, root, memo)
    return memo[key]


def _from_tensor_walk(tensor: Any, per_feature: str | None, root: Any, memo: dict[Any, Found]) -> Found:
    for _ in range(10_000):          # a graph is finite; this bounds a malformed one
        found = _history(tensor)
        if found is None:
            return None
        op, node = found
        if not node.input_tensors:                               # an Input: of root, or of a model inside it
            outer = _outer_inputs(tensor, root)
            if not isinstance(outer, _Calls):
                return None
            orders = {_from_tensor(t, per_feature=per_feature, root=root, memo=memo) for t in outer}
            if len(orders) > 1:
                return (f"{type(outer.model).__name__} {outer.model.name!r}, which holds it, is called on inputs of "
                        "different feature orders (a flattened feature map in one call, not in another, or maps of "
                        "different layouts), so its kernel has no one canonical input order.")
            return orders.pop()
        inner = _inner_output(op, node, tensor)
        if inner is not None:                                    # a nested model: its own graph made it
            tensor = inner
            continue
        if isinstance(op, _PASS_THROUGH + _PER_FEATURE) and node.input_tensors:
            if isinstance(op, _PER_FEATURE):
                per_feature = per_feature or op.name
            tensor = node.input_tensors[0]
            continue
        if isinstance(op, _L.Flatten):
            return _flatten(op, node.input_tensors[0], per_feature, root)
        if isinstance(op, _L.Reshape) and len(op.target_shape) == 1:
            shape = tuple(node.input_tensors[0].shape)
            if _is_map(shape, channels_first=False):
                return (f"its input is a feature map {shape[1:]} flattened by Reshape layer {op.name!r}, whose "
                        "channel order (channels-last or channels-first data) the model does not show.")
            return None
        if isinstance(op, _L.Concatenate):
            parts = {_from_tensor(t, per_feature=per_feature, root=root, memo=memo) for t in node.input_tensors}
            if parts != {None}:
                return (f"its input is a Concatenate ({op.name!r}) of parts of which some are flattened feature "
                        "maps; polyparam does not permute parts of an input axis.")
            return None
        return _unknown_flatten(op, node)
    return None


def _is_map(shape: tuple[Any, ...], *, channels_first: bool) -> bool:
    """Whether a batch shape holds more than one channel at more than one position."""
    if len(shape) < 3:
        return False
    dims = shape[1:]
    channels, spatial = (dims[0], dims[1:]) if channels_first else (dims[-1], dims[:-1])
    if channels is None or None in spatial:
        return True
    return channels > 1 and math.prod(spatial) > 1


def _flatten(op: Any, source: Any, per_feature: str | None, root: Any = None) -> Found:
    shape = tuple(source.shape)
    flatten_first = getattr(op, "data_format", "channels_last") == "channels_first"
    made_by = _map_format(source, root=root)
    if isinstance(made_by, _Unknown):
        if _is_map(shape, channels_first=False) or _is_map(shape, channels_first=True):
            return f"its input is a feature map {shape[1:]} flattened by {op.name!r}, {made_by.why}."
        return None
    if len(shape) == 3 and made_by is None:
        # (N, L, D): a sequence, which PyTorch holds (N, L, D) too; a channels-first Flatten gives (D, L)
        if not flatten_first or shape[1] == 1 or shape[2] == 1:
            return None
        map_first = False
        channels_axis = None
    else:
        map_first = (made_by or ("channels_first" if flatten_first else "channels_last")) == "channels_first"
        channels_axis = 0 if map_first else len(shape) - 2
    if channels_axis is not None and not _is_map(shape, channels_first=map_first):
        return None
    dims = shape[1:]
    if None in dims:
        return (f"its input is a feature map of unknown shape {dims} flattened by {op.name!r}, so the channel "
                "order cannot be worked out.")
    rank = len(dims)
    flat = (*range(1, rank), 0) if flatten_first else tuple(range(rank))    # Keras' order, in the map's axes
    if channels_axis is None:
        torch = tuple(range(rank))                                           # a sequence: as it is
    else:
        torch = (channels_axis, *(a for a in range(rank) if a != channels_axis))
    if flat == torch:
        return None
    if per_feature is not None:
        return (f"layer {per_feature!r} between Flatten {op.name!r} and it holds per-feature values in Keras' "
                "flattened order, which polyparam does not permute.")
    return FlatOrder(tuple(int(dims[a]) for a in flat), tuple(flat.index(a) for a in torch))


@dataclass(frozen=True)
class _Unknown:
    """The channel axis of a map cannot be known: ``why`` (a clause: "made by ...")."""

    why: str


# layers that combine maps of one shape element-wise: the result keeps their layout
_MERGES = tuple(getattr(_L, name) for name in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
                if hasattr(_L, name))


def _map_format(tensor: Any, depth: int = 0, *, root: Any = None,
                memo: dict[int, str | _Unknown | None] | None = None) -> str | _Unknown | None:
    """``"channels_first"`` or ``"channels_last"``: the ``data_format`` of the layer that made the map ``tensor``,
    found through pass-through and per-feature layers, element-wise merges (a residual ``Add``: its inputs must
    agree), concatenations and nested models (into one: the map its input comes from in ``root``); ``None`` where
    no layer made it (the model's input); or
    :class:`_Unknown` where a layer between may have moved its axes (a ``Permute``, a ``Reshape``, a ``Lambda``
    or a layer of your own that changes the shape). ``memo`` holds the answers found so far, as
    :func:`_from_tensor`'s does."""
    memo = {} if memo is None else memo
    if id(tensor) not in memo:
        memo[id(tensor)] = None
        memo[id(tensor)] = _map_format_walk(tensor, depth, root, memo)
    return memo[id(tensor)]


def _map_format_walk(tensor: Any, depth: int, root: Any,
                     memo: dict[int, str | _Unknown | None]) -> str | _Unknown | None:
    for _ in range(10_000):
        found = _history(tensor)
        if found is None or depth > 50:
            return None
        op, node = found
        if not node.input_tensors:                               # an Input: of root, or of a model inside it
            outer = _outer_inputs(tensor, root)
            if outer is None or isinstance(outer, _Unknown):
                return outer
            return _agreed({_map_format(t, depth + 1, root=root, memo=memo) for t in outer},
                           f"made inside {type(outer.model).__name__} {outer.model.name!r}, whose calls give it a mix")
        if isinstance(op, _PASS_THROUGH + _PER_FEATURE):
            tensor = node.input_tensors[0]
            continue
        made = getattr(op, "data_format", None)
        if made in ("channels_first", "channels_last"):
            return str(made)
        if isinstance(op, _MERGES + (_L.Concatenate,)):
            return _agreed({_map_format(t, depth + 1, root=root, memo=memo) for t in node.input_tensors},
                           f"made by {type(op).__name__} {op.name!r}")
        inner = _inner_output(op, node, tensor)
        if inner is not None:                                    # a nested model: its own graph made the map
            tensor = inner
            depth += 1
            continue
        shape_in, shape_out = tuple(node.input_tensors[0].shape), tuple(node.output_tensors[0].shape)
        if isinstance(op, (_L.Permute, _L.Reshape, _L.Lambda)) or shape_in != shape_out:
            return _Unknown(f"made by {type(op).__name__} {op.name!r}, which may move the map's axes, so the channel "
                            "order cannot be worked out")
        tensor = node.input_tensors[0]                           # a layer of your own keeping the shape
    return None


def _agreed(formats: set[str | _Unknown | None], made: str) -> str | _Unknown | None:
    """The one layout of maps that are combined (merged, concatenated, or given to one nested model by its calls):
    the first doubt among them, a doubt where channels-first and channels-last maps meet, else the known one."""
    unknown = next((f for f in formats if isinstance(f, _Unknown)), None)
    known = {f for f in formats if isinstance(f, str)}
    if unknown is not None:
        return unknown
    if len(known) > 1:
        return _Unknown(f"{made} of channels-first and channels-last maps")
    return known.pop() if known else None


class _Calls(list[Any]):
    """The tensors that a nested model's calls in the outer graph give one of its inputs (``model``)."""

    def __init__(self, model: Any, tensors: list[Any]) -> None:
        super().__init__(tensors)
        self.model = model


def _inner_output(op: Any, node: Any, tensor: Any) -> Any:
    """Where ``op`` is a nested model whose call ``node`` gives ``tensor``: the output of its own graph that
    ``tensor`` stands for (by position: a model of several outputs), else ``None``."""
    outputs = getattr(op, "outputs", None) if isinstance(op, keras.Model) else None
    if not outputs:
        return None
    index = next((i for i, t in enumerate(node.output_tensors) if t is tensor), 0)
    return outputs[index] if index < len(outputs) else None


def _graph_nodes(models: list[Any]) -> set[int]:
    """The nodes (their ids) of the graphs of ``models`` (a Sequential's is its inner functional model's)."""
    out: set[int] = set()
    for model in models:
        graph = getattr(model, "_functional", None) or model
        for nodes in (getattr(graph, "_nodes_by_depth", None) or {}).values():
            out.update(id(n) for n in nodes)
    return out


def _nested_models(root: Any) -> list[Any]:
    """The models with a graph (``inputs``) nested in ``root``, at any depth."""
    if root is None or not hasattr(root, "_flatten_layers"):
        return []
    return [sub for sub in root._flatten_layers(include_self=False, recursive=True)
            if isinstance(sub, keras.Model) and getattr(sub, "inputs", None)]


def _outer_inputs(tensor: Any, root: Any) -> _Calls | _Unknown | None:
    """The tensors that feed the input ``tensor`` of a model nested in ``root``, one per call in the outer graph;
    ``None`` (an input of ``root`` itself, or no root), or :class:`_Unknown` (no call shows it). Only the calls
    in ``root``'s graphs count: a model that another model calls too has those calls in its list."""
    for sub in _nested_models(root):
        index = next((i for i, t in enumerate(sub.inputs) if t is tensor), None)
        if index is None:
            continue
        scope = _Scope.of(root)
        calls = [n.input_tensors[index] for n in getattr(sub, "_inbound_nodes", [])
                 if len(n.input_tensors) > index and scope.counts(n)]
        if not calls:
            return _Unknown(f"made inside {type(sub).__name__} {sub.name!r} from an input no call of it shows")
        return _Calls(sub, calls)
    return None


@dataclass(frozen=True)
class _Scope:
    """The models nested in a root model, and the nodes of the root's and their graphs (empty where no graph
    shows them: every node counts)."""

    nested: list[Any]
    nodes: set[int]

    @classmethod
    def of(cls, root: Any) -> _Scope:
        nested = _nested_models(root)
        return cls(nested, _graph_nodes([root, *nested]) if root is not None else set())

    def counts(self, node: Any) -> bool:
        return not self.nodes or id(node) in self.nodes


def _reads(tensor: Any, scope: _Scope, seen: set[int] | None = None) -> list[Any]:
    """The nodes of ``scope`` that take ``tensor`` as an input, across the edges of its nested models: where it
    is a nested model's output, the nodes that read that model's calls; where a nested model reads it, the nodes
    inside that read its input. ``seen``: the tensors asked already (a model called on its own output)."""
    seen = set() if seen is None else seen
    found = _history(tensor)
    if found is None or id(tensor) in seen:
        return []
    seen.add(id(tensor))
    out: list[Any] = []
    for node in getattr(found[0], "_outbound_nodes", []):
        if not scope.counts(node):
            continue
        for index, given in enumerate(node.input_tensors):
            if given is not tensor:
                continue
            model = getattr(node, "operation", None)
            inputs = getattr(model, "inputs", None) if isinstance(model, keras.Model) else None
            if inputs and index < len(inputs):
                out.extend(_reads(inputs[index], scope, seen))
            else:
                out.append(node)
    for sub in scope.nested:
        at = next((i for i, t in enumerate(sub.outputs) if t is tensor), None)
        if at is not None:
            for call in getattr(sub, "_inbound_nodes", []):
                if scope.counts(call) and len(call.output_tensors) > at:
                    out.extend(_reads(call.output_tensors[at], scope, seen))
    return out


def unflatten_doubt(layer: Any, root: Any = None) -> str | None:
    """Why ``layer``'s (a Dense's) outputs may be a channels-last feature map in the model's graph, else ``None``:
    reshaped into a map (a ``Reshape``, ``keras.ops.reshape``) that a channels-last layer reads, as a generator's
    first Dense is, across the edges of models nested in ``root``. PyTorch's ``Unflatten`` makes a ``(C, H, W)`` map
    of the same features, so the kernel's output axis and the bias would be in another order; polyparam does not
    permute them."""
    scope = _Scope.of(root)
    stack = [(node.output_tensors[0], 0) for node in getattr(layer, "_inbound_nodes", [])
             if node.output_tensors and scope.counts(node)]
    seen: set[int] = set()
    while stack:
        tensor, depth = stack.pop()
        if id(tensor) in seen or depth > 50:
            continue
        seen.add(id(tensor))
        for node in _reads(tensor, scope):
            op = node.operation
            if not node.output_tensors:
                continue
            if isinstance(op, _PASS_THROUGH + _PER_FEATURE):
                stack.append((node.output_tensors[0], depth + 1))
                continue
            shape_in, shape_out = tuple(tensor.shape), tuple(node.output_tensors[0].shape)
            if len(shape_in) != 2 or len(shape_out) < 3 or not _is_map(shape_out, channels_first=False):
                continue
            if any(getattr(reader, "data_format", None) == "channels_last"
                   for reader in _readers(node.output_tensors[0], scope)):
                return (f"its outputs are reshaped into a feature map {shape_out[1:]} by {type(op).__name__} "
                        f"{op.name!r} that a channels-last layer reads: channels last, in (H, W, C) order, where the "
                        "canonical (PyTorch) order of the map's features is (C, H, W)")
    return None


def norm_axes_doubt(layer: Any, root: Any = None) -> str | None:
    """Why a normalization over several axes of a map (``LayerNormalization(axis=[1, 2, 3])``) may hold its
    per-element values (``gamma``, ``beta``) in another order than PyTorch's, else ``None``: over a channels-last
    map they are ``(H, W, C)``, where ``torch.nn.LayerNorm([C, H, W])`` holds ``(C, H, W)``. A channels-first map,
    or a sequence ``(L, D)`` from the model's input, is in PyTorch's order."""
    nodes = [n for n in getattr(layer, "_inbound_nodes", []) if n.input_tensors]
    if not nodes:
        return (f"{type(layer).__name__} {layer.name!r} normalizes several axes of an input its structure (a "
                "subclassed model's call) does not show, so whether the channels come last cannot be known")
    tensor = nodes[0].input_tensors[0]
    made = _map_format(tensor, root=root)
    rank = len(tuple(tensor.shape))
    if made == "channels_first" or (made is None and rank < 4):
        return None
    axes = {int(a) % rank for a in (layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis])}
    if not isinstance(made, _Unknown) and rank - 1 not in axes:
        return None             # the positions only, (H, W): as LayerNorm([H, W]) of a (C, H, W) map holds them
    how = made.why if isinstance(made, _Unknown) else f"a channels-last map {tuple(tensor.shape)[1:]}"
    return (f"{type(layer).__name__} {layer.name!r} normalizes several axes of {how}: its values are in the "
            "map's (H, W, C) order, where PyTorch's LayerNorm([C, H, W]) holds (C, H, W)")


def _readers(tensor: Any, scope: _Scope) -> list[Any]:
    """The layers that read the map ``tensor`` and say its layout (a ``data_format``), past pass-through layers,
    merges, concatenations, layers that keep the shape, and the edges of ``scope``'s nested models."""
    out, stack, seen = [], [tensor], set()
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        for node in _reads(tensor, scope):
            reader = node.operation
            if getattr(reader, "data_format", None) is not None:
                out.append(reader)
            elif node.output_tensors and (
                    isinstance(reader, _PASS_THROUGH + _PER_FEATURE + _MERGES + (_L.Concatenate,))
                    or tuple(tensor.shape) == tuple(node.output_tensors[0].shape)):
                stack.append(node.output_tensors[0])
    return out


def _without_graph(layer: Any, root: Any) -> Found:
    """No graph shows the layer's input (a subclassed model): a doubt if the model flattens a feature map."""
    in_dim = None
    kernel = next((v for v in layer._trainable_variables + layer._non_trainable_variables if v.name == "kernel"),
                  None)
    if kernel is not None and len(kernel.shape) == 2:
        in_dim = int(kernel.shape[0])
    flatteners = [sub for sub in root._flatten_layers(include_self=True, recursive=True)
                  if isinstance(sub, _L.Flatten) or (isinstance(sub, _L.Reshape) and len(sub.target_shape) == 1)]
    for sub in flatteners:
        recorded = (getattr(sub, "_build_shapes_dict", None) or {}).get("input_shape")
        shape = tuple(recorded) if isinstance(recorded, (tuple, list)) else None
        if shape is not None:
            channels_first = getattr(sub, "data_format", "channels_last") == "channels_first"
            if not _is_map(shape, channels_first=channels_first):
                continue
            if in_dim is not None and None not in shape[1:] and math.prod(shape[1:]) != in_dim:
                continue
        what = "a feature map" if shape is None else f"a feature map {shape[1:]}"
        return (f"the model flattens {what} with {type(sub).__name__} layer {sub.name!r} and its structure (a "
                "subclassed model's call) does not show whether that is this layer's input, nor in which channel "
                "order.")
    if in_dim is None:
        return None
    # no flattening layer: a reshape inside call() may flatten into this layer's input the map that the nearest
    # map-making layer before it (in the order the model holds its layers) makes, when that map has exactly its
    # inputs and no other Dense comes between (a pooled map's MLP head: its second Dense reads the first)
    suspect = None
    for sub in root._flatten_layers(include_self=False, recursive=True):
        if sub is layer:
            break
        if isinstance(sub, _L.Dense):
            suspect = None
        elif isinstance(sub, _MAP_MAKERS):
            made = _made_map(sub)
            suspect = (sub, made) if made is not None and math.prod(made[1:]) == in_dim else None
    else:
        return None
    if suspect is not None:
        sub, made = suspect
        return (f"layer {sub.name!r} makes a feature map {made[1:]} of exactly its {in_dim} inputs, which the "
                "model (a subclassed model's call) may flatten into it, in an order its structure does not show.")
    return None


def _made_map(layer: Any) -> tuple[int, ...] | None:
    """The batch shape of the feature map ``layer`` outputs, from the input shape it was built with, or ``None``
    (not built, not a map, or a layer Keras cannot tell the output shape of)."""
    recorded = (getattr(layer, "_build_shapes_dict", None) or {})
    shape = next(iter(recorded.values()), None) if len(recorded) == 1 else None
    if not isinstance(shape, (tuple, list)) or len(shape) < 3:
        return None
    try:
        out = tuple(layer.compute_output_shape(tuple(shape)))
    except Exception:     # noqa: BLE001 - any layer's own refusal: no shape to compare
        return None
    if len(out) < 3 or not all(isinstance(d, int) for d in out[1:]):
        return None
    return out if _is_map(out, channels_first=False) or _is_map(out, channels_first=True) else None
