"""Plugin manager wiring: lazy entry-point loading, isolation of broken plugins, dispatch."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterator

import pluggy

from polyparam import errors, hookspecs
from polyparam._params.tree import ParameterTree
from polyparam.backend import BACKEND_NAMES

__all__ = ["PluginStatus", "backend_for", "get_backend", "list_backends", "plugin_manager", "plugin_statuses", "tree"]

ENTRY_POINT_GROUP = "polyparam"
#: The NumPy reference backend, registered by the manager itself (it works with autoload disabled).
NUMPY_PLUGIN = "polyparam.numpy._backend"
DISABLE_AUTOLOAD_ENV = "POLYPARAM_DISABLE_PLUGIN_AUTOLOAD"
TRACE_ENV = "POLYPARAM_TRACE_PLUGINS"


@dataclass
class PluginStatus:
    """One plugin as ``polyparam plugins`` shows it."""

    name: str
    distribution: str | None = None
    backends: list[str] = field(default_factory=list)
    error: str | None = None


_lock = threading.RLock()
_pm: pluggy.PluginManager | None = None
_statuses: dict[str, PluginStatus] = {}
_backends: dict[str, Any] = {}


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    return pm


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager; entry points are loaded on the first call."""
    global _pm
    if _pm is not None:
        return _pm
    with _lock:
        if _pm is not None:
            return _pm
        pm = _new_manager()
        # Registered by name, as entry points are: the manager knows its plugins only by name.
        numpy_backend = importlib.import_module(NUMPY_PLUGIN)
        _register_checked(pm, numpy_backend, name="numpy", distribution="polyparam")
        if os.environ.get(DISABLE_AUTOLOAD_ENV, "") not in ("1", "true", "yes"):
            _load_entry_points(pm)
        if os.environ.get(TRACE_ENV, "") in ("1", "true", "yes"):
            pm.trace.root.setwriter(sys.stderr.write)
            pm.enable_tracing()
        _pm = pm
        return pm


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if pm.has_plugin(ep.name) or ep.name in _statuses:
            continue
        distribution = ep.dist.name if ep.dist is not None else None
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001  a broken plugin must not take the others down
            _statuses[ep.name] = PluginStatus(ep.name, distribution, error=_describe(exc, "import"))
            continue
        _register_checked(pm, plugin, name=ep.name, distribution=distribution)


def _describe(exc: BaseException, when: str) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({last[0].filename}:{last[0].lineno})" if last else ""
    return f"{when} failed: {type(exc).__name__}: {exc}{where}"


def _register_checked(pm: pluggy.PluginManager, plugin: Any, *, name: str, distribution: str | None) -> None:
    """Register ``plugin`` only if it passes validation on a scratch manager first.

    pluggy may leave partial state behind when ``register`` fails, so the plugin is
    tried on a throw-away manager; the real one sees it only once it is known good.
    """
    status = PluginStatus(name, distribution)
    scratch = _new_manager()
    try:
        scratch.register(plugin, name=name)
        scratch.check_pending()
        names = scratch.hook.polyparam_backend_names()
        backends = [n for result in names for n in result]
        bad = [n for n in backends if not isinstance(n, str) or not n.isidentifier() or n != n.lower()]
        if bad:
            msg = (f"Plugin {name!r} (hook polyparam_backend_names) returned {bad!r}: expected lowercase "
                   "identifiers such as 'torch'. Return the framework's import name.")
            raise errors.PluginContractError(msg, plugin=name, expected="list[str]", got=bad)
        status.backends = backends
        pm.register(plugin, name=name)
    except Exception as exc:  # noqa: BLE001  any failure marks the plugin broken, the others go on
        status.error = _describe(exc, "registration")
    _statuses[name] = status


def _quarantine(plugin_name: str, hook: str, exc: BaseException) -> None:
    """Unregister a plugin whose hook raised, and remember why."""
    pm = plugin_manager()
    if pm.has_plugin(plugin_name):
        pm.unregister(name=plugin_name)
    status = _statuses.setdefault(plugin_name, PluginStatus(plugin_name))
    status.error = _describe(exc, f"hook {hook}")
    for backend in status.backends:
        _backends.pop(backend, None)


def _call_each(hook: str, **kwargs: Any) -> Iterator[tuple[str, Any]]:
    """Call every implementation of ``hook`` in pluggy's order, isolating failures."""
    caller = getattr(plugin_manager().hook, hook)
    for impl in reversed(caller.get_hookimpls()):
        try:
            result = impl.function(*[kwargs[arg] for arg in impl.argnames])
        except Exception as exc:  # noqa: BLE001  a failing hook quarantines its plugin only
            _quarantine(impl.plugin_name, hook, exc)
            continue
        yield impl.plugin_name, result


def list_backends() -> list[str]:
    """The names of every backend the registered plugins provide, sorted."""
    names: set[str] = set()
    for _, result in _call_each("polyparam_backend_names"):
        names.update(result or [])
    return sorted(names)


def get_backend(name: str, /) -> Any:
    """The backend module called ``name`` (this may import its framework).

    Raises:
        BackendNotFoundError: No plugin provides ``name``.
        FrameworkImportError: The plugin is there but its framework cannot be imported.
        PluginContractError: The plugin returned something that is not a backend.
    """
    if name in _backends:
        return _backends[name]
    with _lock:
        for plugin_name, status in list(_statuses.items()):
            if name in status.backends and status.error and not plugin_manager().has_plugin(plugin_name):
                msg = (f"Cannot load backend {name!r}: its plugin {plugin_name!r} is disabled after an error "
                       f"({status.error}). Fix or reinstall that plugin; `polyparam plugins` shows the details.")
                raise errors.BackendNotFoundError(msg, backend=name, plugin=plugin_name, got=status.error)
        for plugin_name, impl in _impls("polyparam_get_backend"):
            try:
                backend = impl.function(*[{"name": name}[a] for a in impl.argnames])
            except errors.FrameworkImportError:
                raise  # the plugin already says why and what to do (e.g. an unsafe import order)
            except ImportError as exc:
                msg = (f"Cannot load backend {name!r}: expected its framework to import, got "
                       f"{type(exc).__name__}: {exc}. Install it, e.g. `pip install polyparam[{name}]`.")
                status = _statuses.setdefault(plugin_name, PluginStatus(plugin_name))
                status.error = _describe(exc, "import of the framework")
                raise errors.FrameworkImportError(msg, backend=name, plugin=plugin_name) from exc
            except errors.PolyparamError:
                raise
            except Exception as exc:
                _quarantine(plugin_name, "polyparam_get_backend", exc)
                msg = (f"Plugin {plugin_name!r} (hook polyparam_get_backend) raised {type(exc).__name__}: {exc}. "
                       "The plugin is disabled; `polyparam plugins` shows the error.")
                raise errors.PluginContractError(msg, backend=name, plugin=plugin_name) from exc
            if backend is None:
                continue
            missing = [attr for attr in BACKEND_NAMES if not hasattr(backend, attr)]
            if missing or getattr(backend, "NAME", None) != name:
                got = f"missing names {missing}" if missing else f"NAME={getattr(backend, 'NAME', None)!r}"
                msg = (f"Plugin {plugin_name!r} (hook polyparam_get_backend) returned {backend!r}, which does not "
                       f"satisfy polyparam.Backend for {name!r}: {got}. Fix the plugin.")
                contract_error = errors.PluginContractError(msg, backend=name, plugin=plugin_name,
                                                            expected=BACKEND_NAMES, got=missing)
                _quarantine(plugin_name, "polyparam_get_backend", contract_error)
                raise contract_error
            _backends[name] = backend
            return backend
    available = list_backends()
    msg = (f"No backend named {name!r}. Available: {available}. "
           f"Install a plugin that provides it (entry-point group {ENTRY_POINT_GROUP!r}).")
    raise errors.BackendNotFoundError(msg, backend=name, expected=available, got=name)


def _impls(hook: str) -> list[tuple[str, Any]]:
    caller = getattr(plugin_manager().hook, hook)
    return [(impl.plugin_name, impl) for impl in reversed(caller.get_hookimpls())]


def backend_for(obj: object, /) -> str:
    """The name of the backend that owns ``obj``.

    Raises:
        UnsupportedModelError: No installed backend recognises ``obj``.
    """
    for plugin_name, result in _call_each("polyparam_backend_for", obj=obj):
        if result is None:
            continue
        if not isinstance(result, str):
            exc = errors.PluginContractError(
                f"Plugin {plugin_name!r} (hook polyparam_backend_for) returned {result!r}: expected a backend "
                "name or None. Fix the plugin.", plugin=plugin_name, expected="str | None", got=result)
            _quarantine(plugin_name, "polyparam_backend_for", exc)
            continue
        return result
    available = list_backends()
    msg = (f"Cannot wrap an object of type {type(obj).__module__}.{type(obj).__qualname__}: expected a model of an "
           f"installed backend {available}, got none that recognises it. Import its framework first, or install "
           "the polyparam plugin for it (`polyparam plugins` lists what is installed).")
    raise errors.UnsupportedModelError(msg, expected=available, got=type(obj).__name__)


def plugin_statuses() -> list[PluginStatus]:
    """Every plugin that was found, with its backends and any error, sorted by name."""
    plugin_manager()
    return [_statuses[name] for name in sorted(_statuses)]


def _reset() -> None:
    """Forget every plugin (for tests): the next lookup loads them again."""
    global _pm
    with _lock:
        _pm = None
        _statuses.clear()
        _backends.clear()


def tree(model: Any, /) -> ParameterTree:
    """The parameters of ``model`` as a :class:`ParameterTree`.

    Args:
        model: A ``torch.nn.Module``, a Keras layer or model, a Gluon block, a
            :mod:`polyparam.numpy` block, or a nested dict of NumPy arrays.

    Raises:
        UnsupportedModelError: No installed backend recognises ``model``.
    """
    if isinstance(model, ParameterTree):
        return model
    return get_backend(backend_for(model)).tree(model)
