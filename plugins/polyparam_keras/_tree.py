"""KerasTree: a Keras layer or model as a parameter tree, with structural paths.

Sequential and Functional models are indexed by position in ``model.layers``
(Functional models list their ``InputLayer`` too, so it takes position 0); subclassed
layers and models by attribute name. Keras' auto-numbered layer names never appear.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any, Callable

import keras
from keras.src.models.functional import Functional  # no public name: keras.Model(inputs, outputs) returns one

from polyparam import errors
from polyparam.backend import Parameter, ParameterTree, join_path
from polyparam_keras import NAME
from polyparam_keras._layout import slots_of
from polyparam_keras._parameter import KerasParameter

__all__ = ["KerasTree"]


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

    # ---- hooks a backend implements ----------------------------------------------

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

    def _forward(self, inputs: Any, /) -> Any:
        """The layer or model called with ``training=False`` (a list or tuple is one input structure, as in Keras)."""
        obj = self._locate()
        if not callable(obj):
            msg = f"Cannot run {type(obj).__name__} at {self.path or 'the root'!r}: it is not a Keras layer or model."
            raise TypeError(msg)
        out = obj(inputs, training=False)
        return keras.tree.map_structure(keras.ops.convert_to_numpy, out)

    def _param_groups(self, groups: list[tuple[dict[str, Any], list[tuple[str, Parameter]]]], optimizer: Any,
                      /) -> Any:
        """``[{"params": [variables], **options}]``; given ``optimizer``, the variables of groups whose
        ``weight_decay`` is 0 are excluded from its weight decay (``exclude_from_weight_decay``).

        Keras optimizers take one variable list: pass ``[v for g in groups for v in g["params"]]``.
        Exclusions the optimizer already had (variables, ``var_names``) are kept.
        """
        out = [{"params": [p.native for _, p in members], **options} for options, members in groups]
        if optimizer is None:
            return out
        exclude = getattr(optimizer, "exclude_from_weight_decay", None)
        if not callable(exclude):
            msg = (f"Invalid value for argument `optimizer`: expected a Keras optimizer (with "
                   f"exclude_from_weight_decay), got {type(optimizer).__name__}. Pass a keras.optimizers object.")
            raise errors.InvalidArgumentError(msg, argument="optimizer", expected="a Keras optimizer",
                                              got=type(optimizer).__name__)
        if getattr(optimizer, "built", False):
            msg = (f"Cannot exclude parameters from the weight decay of {type(optimizer).__name__}: expected an "
                   "optimizer not built yet, got one that has taken a step (Keras fixes its exclusions when it "
                   "builds). Call pp.param_groups(model, rules, optimizer=optimizer) before the first step.")
            raise errors.UsageError(msg, expected="an unbuilt optimizer", got="a built optimizer")
        no_decay = [v for group in out if group.get("weight_decay", None) == 0 for v in group["params"]]
        if not no_decay:
            return out
        kept = set(getattr(optimizer, "_exclude_from_weight_decay", None) or ())
        pattern = getattr(optimizer, "_exclude_from_weight_decay_pattern", None)
        exclude(var_list=no_decay, var_names=[pattern.pattern] if pattern is not None else None)
        optimizer._exclude_from_weight_decay |= kept
        return out

    def _leaves(self) -> list[tuple[str, Parameter]]:
        obj = self._locate()
        if not isinstance(obj, keras.Layer) or _is_container(obj):
            return []
        return [(slot.leaf, KerasParameter(join_path(self.path, slot.leaf), slot, locate=self._locate,
                                           root=self._root, site=self._site))
                for slot in slots_of(obj)]


def _is_container(layer: Any) -> bool:
    return isinstance(layer, (keras.Sequential, Functional))


def _attribute_children(layer: Any) -> list[tuple[str, Any, Callable[[Any], Any]]]:
    """Sublayers of a subclassed layer by attribute name, in ``layer.layers`` order.

    Returns ``(name, value, getter)``; a list/tuple/dict attribute of layers is one
    entry whose value is the container.
    """
    if not layer._layers:   # a plain layer (most of a model's): no sublayer to look for
        return []
    tracked = {id(sub): i for i, sub in enumerate(layer._layers)}
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
                found.append((tracked[id(value)], name, value, functools.partial(_attribute, name=name)))
                claimed.add(id(value))
        elif isinstance(value, (list, tuple, dict)) and value and not name.startswith("_"):
            items = list(value.values()) if isinstance(value, dict) else list(value)
            if all(isinstance(v, keras.Layer) and id(v) in tracked for v in items):
                first = min(tracked[id(v)] for v in items)
                found.append((first, name, value, functools.partial(_attribute, name=name)))
                claimed.update(id(v) for v in items)
    for i, sub in enumerate(layer._layers):
        if id(sub) not in claimed:
            found.append((i, str(i), sub, functools.partial(_tracked_layer, index=i)))
            claimed.add(id(sub))
    found.sort(key=lambda f: f[0])
    return [(name, value, getter) for _, name, value, getter in found]


def _attribute(layer: Any, name: str) -> Any:
    return getattr(layer, name)


def _tracked_layer(layer: Any, index: int) -> Any:
    return layer._layers[index]


def _item(locate: Callable[[], Any], key: Any) -> Any:
    return locate()[key]


def _position(locate: Callable[[], Any], i: int) -> Any:
    container = locate()
    if isinstance(container, keras.Sequential) and type(container).layers is keras.Sequential.layers:
        layers = container._layers   # what Sequential.layers copies: its layers but the InputLayer first
        return layers[i + 1 if layers and isinstance(layers[0], keras.layers.InputLayer) else i]
    return layers_of(container)[i]


# id(Functional model) -> (a weak reference to it, its operations list, its layers): ``model.layers``
# builds a new list on every call (O(layers)), and every fact a parameter reads finds its layer through it
_LAYERS: dict[int, tuple[weakref.ref[Any], Any, list[Any]]] = {}


def layers_of(container: Any) -> list[Any]:
    """``container.layers`` (a Sequential or Functional model), without rebuilding the list on every call.

    A Functional model's layers are its operations that are layers, fixed when it is built;
    the list is kept while the model holds the same operations list.
    """
    if isinstance(container, Functional) and not isinstance(container, keras.Sequential):
        ops = container.__dict__.get("_operations")
        cached = _LAYERS.get(id(container))
        if cached is not None and cached[0]() is container and cached[1] is ops:
            return cached[2]
        layers = list(container.layers)
        key = id(container)
        try:
            ref = weakref.ref(container, lambda _: _LAYERS.pop(key, None))
        except TypeError:         # not weakly referable: no cache
            return layers
        _LAYERS[id(container)] = (ref, ops, layers)
        return layers
    return list(container.layers)


def _via(locate: Callable[[], Any], getter: Callable[[Any], Any]) -> Any:
    return getter(locate())
