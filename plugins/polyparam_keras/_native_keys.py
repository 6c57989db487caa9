"""The keys Keras's own ``.weights.h5`` files give a model's variables.

``model.save_weights("x.weights.h5")`` walks the model's saveables (layers, containers,
attributes) and stores each layer's values under ``<path>/vars/<i>``; a ``.weights.h5``
reads with the HDF5 ``/`` as ``.`` (``layers.dense.vars.0``). The keys here come from
Keras's own walk, run on a store that records which variable went where, so they are
exactly the file's keys, whatever the model's structure.

Only variables get a key. A value Keras computes when it saves has none: a LoRA layer
saves its kernel merged with its factors (``kernel + A @ B * alpha / rank``, requantized
when the layer is quantized) and not the factors themselves, so a ``.weights.h5`` of a
LoRA model holds no value for the kernel, ``lora_*_a`` or ``lora_*_b`` of a LoRA layer.
Into a model without LoRA it loads in full (the merged kernel into the plain kernel);
into a LoRA model the merged key is unexpected and the kernel and factors are missing,
so ``pp.load`` refuses it, and loads the rest only with ``strict=False`` (warning what
it left out) — never the merged kernel into the base kernel.

A compiled model's file also holds its optimizer's variables (``optimizer.vars.<i>``),
which are not model parameters: load it with ``ignore_extra=True``.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import keras

__all__ = ["h5_keys"]


@dataclass
class _Keys:
    """One walk of one root: where each variable went."""

    signature: tuple[int, ...]
    by_layer: dict[tuple[int, str | None], list[str]] = field(default_factory=dict)  # (id(var), layer name) -> keys
    by_variable: dict[int, list[str]] = field(default_factory=dict)                 # id(var) -> keys


# root -> its last walk; a walk stays valid while the root's variables (their identity and order) do
_CACHE: weakref.WeakKeyDictionary[Any, _Keys] = weakref.WeakKeyDictionary()


def _signature(root: Any) -> tuple[int, ...]:
    return tuple(id(v) for v in root.weights)


def _walk(root: Any, signature: tuple[int, ...]) -> _Keys:
    """Run Keras's ``save_weights`` walk on a store that records keys instead of writing values."""
    out = _Keys(signature)
    try:
        from keras.src.saving import saving_lib  # no public name: the walk save_weights itself runs
    except ImportError:
        return out

    class _Recorder(dict):
        def __init__(self, prefix: str, name: str | None) -> None:
            super().__init__()
            self._prefix = prefix
            self._name = name

        def __setitem__(self, key: str, value: Any) -> None:
            super().__setitem__(key, None)
            if isinstance(value, keras.Variable):     # a value Keras computes (a LoRA-merged kernel) has no variable
                where = f"{self._prefix}.{key}"
                out.by_layer.setdefault((id(value), self._name), []).append(where)
                out.by_variable.setdefault(id(value), []).append(where)

    class _Store(saving_lib.NpzIOStore):
        def __init__(self) -> None:   # nothing to open: make() hands out recorders
            pass

        def make(self, path: str, metadata: dict[str, Any] | None = None) -> _Recorder:
            prefix = f"{path.replace('/', '.')}.vars" if path else "vars"
            name = (metadata or {}).get("name")
            return _Recorder(prefix, name if isinstance(name, str) else None)

    try:
        saving_lib._save_state(root, weights_store=_Store(), assets_store=None, inner_path="",
                               visited_saveables=set())
    except (AttributeError, TypeError, ValueError):    # another Keras's private walk: no keys rather than wrong ones
        return _Keys(signature)
    return out


def h5_keys(root: Any, layer: Any, variable: Any) -> tuple[str, ...]:
    """The keys of ``layer``'s ``variable`` in a ``.weights.h5`` that ``root.save_weights`` writes.

    Usually one; a variable two layers share through ``pp.tie`` has one key per layer, and
    this layer's comes back. None for a value Keras does not store as it is (LoRA).
    One walk per root, reused while the root's variables stay the same objects in the same order.
    """
    signature = _signature(root)
    keys = _CACHE.get(root)
    if keys is None or keys.signature != signature:
        keys = _walk(root, signature)
        _CACHE[root] = keys
    found = keys.by_layer.get((id(variable), getattr(layer, "name", None)))
    if found is None:
        found = keys.by_variable.get(id(variable), [])
    return tuple(found)
