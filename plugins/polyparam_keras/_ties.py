"""Ties on Keras layers: swapping a layer's variable for another's, ties and fills recorded until build.

A tie made after construction swaps the member layer's variable for the anchor's (the
member's own variable is kept aside so ``untie`` can restore it). A tie or an
initialization asked of an unbuilt layer is recorded on it and applied right after
Keras builds it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import keras

from polyparam import errors
from polyparam_keras._convert import assign_native, engine, raw, to_numpy
from polyparam_keras._layout import slots_of
from polyparam_keras._variables import (
    FOLLOWERS_ATTR,
    HOOK_ATTR,
    ORIGINAL_ATTR,
    PENDING_ATTR,
    TIES_ATTR,
    find_variable,
    own_variables,
)

if TYPE_CHECKING:
    from polyparam_keras._parameter import KerasParameter

__all__ = ["clone_into_sequential", "hook_build", "layer_offset", "refresh", "resolve_ties", "swap_variable"]


def swap_variable(layer: Any, old: Any, new: Any) -> None:
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


def refresh(root: Any) -> None:
    """Drop what cached the old variables: compiled step functions and torch parameter dicts."""
    for layer in root._flatten_layers(include_self=True, recursive=True):
        for attr in ("train_function", "test_function", "predict_function"):
            if getattr(layer, attr, None) is not None:
                setattr(layer, attr, None)
        if engine() == "torch" and "_torch_params" in getattr(layer, "_modules", {}):
            layer._track_variables()


def layer_offset(seq: Any) -> int:
    """1 when ``seq._layers`` starts with the ``InputLayer`` that ``seq.layers`` hides, else 0."""
    return 1 if seq._layers and isinstance(seq._layers[0], keras.layers.InputLayer) else 0


def clone_into_sequential(seq: Any, position: int) -> None:
    """Put a copy of ``seq.layers[position]`` (values included) in its place: untie a reused layer."""
    old = seq.layers[position]
    config = old.get_config()
    config.pop("name", None)
    clone = type(old).from_config(config)
    if old.built:
        clone.build(**old._build_shapes_dict)
        for mine, theirs in zip(own_variables(clone), own_variables(old)):
            assign_native(mine, to_numpy(raw(theirs)))
    index = position + layer_offset(seq)
    list.__setitem__(seq._layers, index, clone)
    seq._tracker.stored_ids["layers"].add(id(clone))
    if seq.built and getattr(seq, "_build_shapes_dict", None):
        shapes = dict(seq._build_shapes_dict)
        seq.built = False
        seq._functional = None
        seq.build(**shapes)


def hook_build(layer: Any) -> None:
    """Run recorded ties and initializations right after Keras builds ``layer``."""
    if layer.__dict__.get(HOOK_ATTR):
        return
    inner = layer.build

    @functools.wraps(inner)
    def build(*args: Any, **kwargs: Any) -> Any:
        result = inner(*args, **kwargs)
        resolve_ties(layer)
        for follower in list(layer.__dict__.get(FOLLOWERS_ATTR, [])):
            resolve_ties(follower)
        pending = layer.__dict__.get(PENDING_ATTR) or {}
        while pending:
            leaf = next(iter(pending))          # in recording order
            pending.pop(leaf)()
        return result

    object.__setattr__(layer, "build", build)
    object.__setattr__(layer, HOOK_ATTR, True)


def resolve_ties(layer: Any) -> None:
    """Apply the ties recorded before build whose two variables now exist."""
    ties: dict[str, KerasParameter] | None = layer.__dict__.get(TIES_ATTR)
    if not ties or not layer.built:
        return
    for leaf, anchor in list(ties.items()):
        theirs = anchor._variable()
        if theirs is None:
            continue                             # the anchor's build will come back here
        slot = next(s for s in slots_of(layer) if s.leaf == leaf)
        mine = find_variable(layer, slot.var)
        assert mine is not None, "slots_of lists the variables a built layer has"
        del ties[leaf]
        if mine is theirs:
            continue
        if tuple(mine.shape) != tuple(theirs.shape) or mine.dtype != theirs.dtype:
            msg = (f"Cannot apply the tie of {anchor.path!r} to layer {layer.name!r} ({leaf}) at build: expected "
                   f"shape {tuple(theirs.shape)} and dtype {theirs.dtype}, got {tuple(mine.shape)} and {mine.dtype}. "
                   "Tie layers that receive inputs of the same size.")
            raise errors.TieError(msg, path=anchor.path, expected=tuple(theirs.shape), got=tuple(mine.shape))
        layer.__dict__.setdefault(ORIGINAL_ATTR, {}).setdefault(leaf, mine)
        swap_variable(layer, mine, theirs)
        if engine() == "torch" and "_torch_params" in getattr(layer, "_modules", {}):
            layer._track_variables()
