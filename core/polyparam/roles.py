"""Roles and axis roles declared for a layer type the adapters do not know.

Adapters read a parameter's role (and the meaning of its axes) from the layer's type,
with the attribute name as the fallback. A custom layer whose tensors mean something
else, such as Hugging Face GPT-2's ``Conv1D`` (a dense weight stored ``(in, out)``),
is declared once::

    pp.roles.register("transformers.pytorch_utils.Conv1D", axes={"weight": ("in", "out")})
    pp.roles.register(MyLayerScale, {"gamma": "scale"}, axes={"gamma": ("out",)})

Every backend consults this registry before its own rules, so a declaration wins over
anything guessed. The layer type is a class or its qualified name as a string (which
needs no import of the framework); subclasses inherit a declaration, and the most
specific class declared wins. Attribute names are the parameter's last path
component (``weight`` for ``h.0.attn.c_attn.weight``); axis roles name the axes of the
parameter as polyparam shows it (``p.shape``, the canonical layout).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Sequence

from polyparam import errors
from polyparam._layout import AXIS_ROLES, ROLES

__all__ = ["Declaration", "declared", "lookup", "register", "unregister"]


@dataclass(frozen=True)
class Declaration:
    """What :func:`register` recorded for one layer type."""

    layer_type: str
    roles: Mapping[str, str] = field(default_factory=dict)
    axes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


_lock = threading.Lock()
_registry: dict[str, Declaration] = {}
#: What :func:`lookup` found by (id of the layer type, attribute), before the ``ndim`` check: a
#: walk of the MRO costs about 1 us, asked several times per parameter. An entry holds the type
#: weakly with the name it had (keyed by id, never by the type: a metaclass's ``__eq__`` and
#: ``__hash__`` are not called, and the type can be collected) and counts only for that type
#: under that name. Replaced by a new dict on every change of the registry (a lookup takes the
#: dict before it reads the registry, so one that read the old registry fills a dict no one
#: reads again); emptied past _FOUND_MAX entries.
_found: dict[tuple[int, str], _Found] = {}
_FOUND_MAX = 4096


def _type_name(layer_type: type | str) -> str:
    if isinstance(layer_type, str):
        if not layer_type or "." not in layer_type.strip(".") or layer_type != layer_type.strip():
            raise errors.InvalidArgumentError(
                f"Cannot register roles for layer type {layer_type!r}: expected a class or its qualified name "
                "such as 'transformers.pytorch_utils.Conv1D', got a string without a module. "
                "Pass the class, or 'package.module.ClassName'.",
                path=layer_type, expected="a class or 'module.ClassName'", got=repr(layer_type))
        return layer_type
    if isinstance(layer_type, type):
        return f"{layer_type.__module__}.{layer_type.__qualname__}"
    raise errors.InvalidArgumentError(
        f"Cannot register roles for {layer_type!r}: expected a class or its qualified name, got "
        f"{type(layer_type).__name__}. Pass the layer class (not an instance).",
        path=repr(layer_type), expected="a class or 'module.ClassName'", got=type(layer_type).__name__)


def register(layer_type: type | str, roles: Mapping[str, str] | None = None, *,
             axes: Mapping[str, Sequence[str]] | None = None) -> None:
    """Declare the roles and axis roles of a layer type's parameters, for every backend.

    Args:
        layer_type: The layer class, or its qualified name (``"package.module.Class"``).
        roles: Attribute name -> role (one of :data:`polyparam.backend.ROLES`).
        axes: Attribute name -> one axis role per axis (``"out"``, ``"in"``, ``"space"``,
            ``"other"``), in the order of ``p.shape``. Fans come from these.

    Registering a type again replaces its declaration. Attributes not named keep the
    backend's own reading.

    Raises:
        InvalidArgumentError: An unknown role or axis role, or a layer type that is not a class.
    """
    name = _type_name(layer_type)
    roles = dict(roles or {})
    axes_given: dict[str, tuple[str, ...]] = {}
    for attr, words in (axes or {}).items():
        if isinstance(words, str) or any(w not in AXIS_ROLES for w in words):
            raise errors.InvalidArgumentError(
                f"Cannot register axes {words!r} for {name}.{attr}: expected a sequence of axis roles from "
                f"{', '.join(AXIS_ROLES)}, got {words!r}. Write one word per axis, e.g. ('in', 'out').",
                path=f"{name}.{attr}", expected="a tuple of axis roles", got=repr(words))
        axes_given[attr] = tuple(words)
    for attr, role in roles.items():
        if role not in ROLES:
            raise errors.InvalidArgumentError(
                f"Cannot register role {role!r} for {name}.{attr}: expected one of {', '.join(ROLES)}, got {role!r}.",
                path=f"{name}.{attr}", expected=" | ".join(ROLES), got=repr(role))
    global _found
    with _lock:
        _registry[name] = Declaration(name, roles, axes_given)
        _found = {}


def unregister(layer_type: type | str) -> bool:
    """Forget a declaration; returns whether there was one."""
    global _found
    with _lock:
        found = _registry.pop(_type_name(layer_type), None) is not None
        _found = {}
    return found


def declared() -> dict[str, Declaration]:
    """Every declaration, by qualified type name."""
    with _lock:
        return dict(_registry)


def lookup(layer: Any, attr: str, *, ndim: int | None = None) -> tuple[str | None, tuple[str, ...] | None]:
    """The declared ``(role, axes)`` of ``layer.<attr>``; ``None`` where nothing is declared.

    For adapters: call it with the layer object (an instance) and the attribute's name
    before inferring anything. The most specific class in the layer's MRO that declares
    the attribute wins. With ``ndim``, declared axes of another length are refused.
    Answers are remembered per layer type until the registry changes (a type whose
    ``__module__`` or ``__qualname__`` changes is looked up again; a renamed base class
    is seen at the next ``register`` or ``unregister``).

    Raises:
        InvalidArgumentError: The declared axes do not fit a parameter of ``ndim`` axes.
    """
    found = _found
    if not _registry:
        return None, None
    kind = type(layer)
    key = (id(kind), attr)
    hit = found.get(key)
    if hit is not None and hit.kind() is kind and hit.name == (kind.__module__, kind.__qualname__):
        role, axes = hit.role, hit.axes
    else:
        role, axes = _search(kind, attr)
        if len(found) >= _FOUND_MAX:
            found.clear()
        found[key] = _Found(weakref.ref(kind), (kind.__module__, kind.__qualname__), role, axes)
    if axes is not None and ndim is not None and len(axes) != ndim:
        name = f"{type(layer).__module__}.{type(layer).__qualname__}.{attr}"
        raise errors.InvalidArgumentError(
            f"The axes declared for {name} do not fit: expected {ndim} axis roles (one per axis), got "
            f"{len(axes)} {axes}. Register the layer type again with one word per axis.",
            path=name, expected=f"{ndim} axis roles", got=repr(axes))
    return role, axes


class _Found(NamedTuple):
    """One remembered lookup: the layer type (weakly), its ``(__module__, __qualname__)``, what was found."""

    kind: weakref.ref[type]
    name: tuple[str, str]
    role: str | None
    axes: tuple[str, ...] | None


def _search(layer_type: type, attr: str) -> tuple[str | None, tuple[str, ...] | None]:
    """The declared ``(role, axes)`` of ``attr`` in ``layer_type``'s MRO (the most specific declaration wins)."""
    role: str | None = None
    axes: tuple[str, ...] | None = None
    for cls in layer_type.__mro__:
        entry = _registry.get(f"{cls.__module__}.{cls.__qualname__}")
        if entry is None:
            continue
        if role is None:
            role = entry.roles.get(attr)
        if axes is None:
            axes = entry.axes.get(attr)
        if role is not None and axes is not None:
            break
    return role, axes
