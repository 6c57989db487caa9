"""KerasTree: a Keras layer or model as a parameter tree, with structural paths.

Sequential and Functional models are indexed by position in ``model.layers``
(Functional models list their ``InputLayer`` too, so it takes position 0); subclassed
layers and models by attribute name. Keras' auto-numbered layer names never appear.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any, Callable, cast

import keras
from keras.src.models.functional import Functional  # no public name: keras.Model(inputs, outputs) returns one

from polyparam import errors
from polyparam.backend import Parameter, ParameterTree, join_path
from polyparam_keras import NAME
from polyparam_keras._layout import slots_found
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
        return [(name, KerasTree(value, locate=locate, root=self._root, path=join_path(self.path, name), site=site))
                for name, value, locate, site in _child_specs(self._locate(), self._locate)]

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
        params = _leaf_params(self._locate(), self.path, self._locate, self._root, self._site)
        return [(p._slot.leaf, p) for p in params]

    # ---- the walk, without a subtree per layer ----------------------------------------

    def _occurrences(self) -> list[tuple[str, Parameter]]:
        """As the base class's walk (each node's leaves, then its children, in order), with the objects
        met on the way handed down: a subtree per layer would find its layer again from the root."""
        out: list[tuple[str, Parameter]] = []
        self._walk(self._locate(), self.path, self._locate, self._site, out, None)
        return out

    def items(self) -> list[tuple[str, Parameter]]:
        """As the base class's: tied parameters once, by the identity of the variable each holds (found with
        the layer the walk met, not from the root again)."""
        layers: list[Any] = []
        found: list[tuple[str, Parameter]] = []
        self._walk(self._locate(), self.path, self._locate, self._site, found, layers)
        seen: set[Any] = set()
        out = []
        for (path, p), layer in zip(found, layers):
            key = cast("KerasParameter", p)._identity_in(layer)
            if key not in seen:
                seen.add(key)
                out.append((path, p))
        return out

    def _walk(self, obj: Any, path: str, locate: Callable[[], Any], site: tuple[Callable[[], Any], int] | None,
              out: list[tuple[str, Parameter]], layers: list[Any] | None) -> None:
        params = _leaf_params(obj, path, locate, self._root, site)
        out.extend((p.path, p) for p in params)
        if layers is not None:
            layers.extend(obj for _ in params)
        for name, value, child_locate, child_site in _child_specs(obj, locate):
            self._walk(value, join_path(path, name), child_locate, child_site, out, layers)


def _child_specs(obj: Any, locate: Callable[[], Any]) -> list[tuple[str, Any, Callable[[], Any],
                                                                    tuple[Callable[[], Any], int] | None]]:
    """``(name, child, its locator, its site)`` for each child block of ``obj`` (found by ``locate``), in order."""
    if isinstance(obj, (list, tuple, dict)):
        keys = list(obj.keys()) if isinstance(obj, dict) else list(range(len(obj)))
        return [(str(key), obj[key], functools.partial(_item, locate, key), None) for key in keys]
    if _is_container(obj):
        sequential = isinstance(obj, keras.Sequential)
        return [(str(i), layer, functools.partial(_position, locate, i), (locate, i) if sequential else None)
                for i, layer in enumerate(layers_of(obj))]
    return [(name, value, functools.partial(_via, locate, getter), None)
            for name, value, getter in _attribute_children(obj)]


def _leaf_params(obj: Any, path: str, locate: Callable[[], Any], root: Any,
                 site: tuple[Callable[[], Any], int] | None) -> list[KerasParameter]:
    """The parameters of ``obj`` itself (a layer that is not a model), each finding it live with ``locate``."""
    if not isinstance(obj, keras.Layer) or _is_container(obj):
        return []
    slots, variables, at = slots_found(obj)
    out = []
    for slot, index in zip(slots, at):
        p = KerasParameter(join_path(path, slot.leaf), slot, locate=locate, root=root, site=site, layer=obj)
        if index is not None:   # found with the slots: its first read need not look for it by name
            p._remember_variable(obj, variables, index)
        out.append(p)
    return out


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
