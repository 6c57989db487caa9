"""Plugin manager wiring: lazy entry-point loading, isolation of broken plugins, dispatch.

Isolation covers everything a plugin can raise (``BaseException``), with one rule for
``KeyboardInterrupt``: Python delivers Ctrl-C only to the main thread. Entry points are
imported in a worker thread, so a ``KeyboardInterrupt`` raised there is the plugin's own and
is reported, while the user's Ctrl-C reaches the waiting thread and stops the program. Hooks run
in the caller's thread, where the two cannot be told apart: a ``KeyboardInterrupt`` from a hook
is passed on and the plugin is not blamed.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import math
import os
import re
import reprlib
import sys
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pluggy

from polyparam import errors, hookspecs
from polyparam._params.tree import ParameterTree
from polyparam.backend import BACKEND_NAMES

__all__ = ["PluginStatus", "backend_for", "backend_owners", "get_backend", "list_backends", "plugin_manager",
           "plugin_statuses", "tree"]

ENTRY_POINT_GROUP = "polyparam"
#: The NumPy reference backend, registered by the manager itself (it works with autoload disabled).
NUMPY_PLUGIN = "polyparam.numpy._backend"
DISABLE_AUTOLOAD_ENV = "POLYPARAM_DISABLE_PLUGIN_AUTOLOAD"
TRACE_ENV = "POLYPARAM_TRACE_PLUGINS"
#: Seconds one entry point may take to import (and name its backends) before it is reported and left behind.
PLUGIN_TIMEOUT_ENV = "POLYPARAM_PLUGIN_TIMEOUT"
DEFAULT_PLUGIN_TIMEOUT = 10.0
#: Comma-separated built-in backend names a third-party plugin may take over.
ALLOW_OVERRIDE_ENV = "POLYPARAM_ALLOW_OVERRIDE"
#: The distribution that ships the built-in backends.
BUILTIN_DISTRIBUTION = "polyparam"
#: Each built-in backend name, and the module (entry point) of :data:`BUILTIN_DISTRIBUTION` that provides it.
BUILTIN_BACKENDS = {"numpy": NUMPY_PLUGIN, "torch": "polyparam_torch", "keras": "polyparam_keras",
                    "mxnet": "polyparam_mxnet", "flax": "polyparam_flax"}


@dataclass
class PluginStatus:
    """One plugin as ``polyparam plugins`` shows it."""

    name: str
    distribution: str | None = None
    backends: list[str] = field(default_factory=list)
    error: str | None = None
    #: Built-in backend names it took over, as allowed by ``POLYPARAM_ALLOW_OVERRIDE``.
    overrides: list[str] = field(default_factory=list)


_lock = threading.RLock()
_pm: pluggy.PluginManager | None = None
_statuses: dict[str, PluginStatus] = {}
_backends: dict[str, Any] = {}
#: Set in a thread that imports a plugin, to the plugin's name.
_importing = threading.local()


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    return pm


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager; entry points are loaded on the first call.

    Raises:
        InvalidArgumentError: ``POLYPARAM_PLUGIN_TIMEOUT`` or ``POLYPARAM_ALLOW_OVERRIDE`` is malformed.
        PluginContractError: Called by a plugin while it is being imported.
    """
    global _pm
    if _pm is not None:
        return _pm
    importing = getattr(_importing, "plugin", None)
    if importing is not None:
        msg = (f"Plugin {importing!r} looked up backends while it was being imported: expected its import to only "
               "define hooks, got a call that needs every plugin loaded first. Move the call into a hook or a "
               "function called later.")
        raise errors.PluginContractError(msg, plugin=importing, expected="no lookup at import", got="a lookup")
    with _lock:
        if _pm is not None:
            return _pm
        timeout = plugin_timeout()
        allowed = allowed_overrides()
        try:
            pm = _new_manager()
            # Registered by name, as entry points are: the manager knows its plugins only by name.
            numpy_backend = importlib.import_module(NUMPY_PLUGIN)
            _register_checked(pm, numpy_backend, name="numpy", distribution=BUILTIN_DISTRIBUTION,
                              module=NUMPY_PLUGIN, allowed=allowed)
            if os.environ.get(DISABLE_AUTOLOAD_ENV, "") not in ("1", "true", "yes"):
                _load_entry_points(pm, timeout, allowed)
        except BaseException:
            _statuses.clear()  # e.g. the user's Ctrl-C: the next lookup starts over
            raise
        if os.environ.get(TRACE_ENV, "") in ("1", "true", "yes"):
            pm.trace.root.setwriter(sys.stderr.write)
            pm.enable_tracing()
        _pm = pm
        return pm


def plugin_timeout() -> float | None:
    """Seconds an entry point may take to load, from ``POLYPARAM_PLUGIN_TIMEOUT`` (default 10).

    ``0`` means no limit: entry points are then imported in the calling thread.
    """
    text = os.environ.get(PLUGIN_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_PLUGIN_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        msg = (f"Invalid value for environment variable {PLUGIN_TIMEOUT_ENV}: expected a number of seconds, 0 or "
               f"more (0: no limit). Received: {text!r}. Set it to e.g. 30, or unset it for "
               f"{DEFAULT_PLUGIN_TIMEOUT:g} s.")
        raise errors.InvalidArgumentError(msg, argument=PLUGIN_TIMEOUT_ENV, expected="seconds >= 0", got=text)
    return min(seconds, threading.TIMEOUT_MAX) if seconds > 0 else None


def allowed_overrides() -> frozenset[str]:
    """The built-in backend names ``POLYPARAM_ALLOW_OVERRIDE`` lets a third-party plugin take over."""
    text = os.environ.get(ALLOW_OVERRIDE_ENV, "")
    names = [name for name in re.split(r"[\s,]+", text.strip()) if name]
    unknown = [name for name in names if name not in BUILTIN_BACKENDS]
    if unknown:
        msg = (f"Invalid value for environment variable {ALLOW_OVERRIDE_ENV}: expected built-in backend names "
               f"from {sorted(BUILTIN_BACKENDS)}, comma-separated. Received: {unknown!r}. Only a built-in name "
               "needs the opt-in; remove the others.")
        raise errors.InvalidArgumentError(msg, argument=ALLOW_OVERRIDE_ENV, expected=sorted(BUILTIN_BACKENDS),
                                          got=unknown)
    return frozenset(names)


def _load_entry_points(pm: pluggy.PluginManager, timeout: float | None, allowed: frozenset[str]) -> None:
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        distribution = ep.dist.name if ep.dist is not None else None
        if pm.has_plugin(ep.name) or ep.name in _statuses:
            owner = _statuses.get(ep.name)
            if owner is not None and owner.distribution != distribution:
                key = f"{ep.name} ({distribution})"
                _statuses[key] = PluginStatus(key, distribution, error=(
                    f"not loaded: the plugin name {ep.name!r} is already taken by {owner.distribution}. "
                    "Rename this entry point."))
            continue
        stage = ["import"]

        def load(ep: importlib.metadata.EntryPoint = ep, stage: list[str] = stage) -> tuple[Any, list[str]]:
            plugin = ep.load()
            stage[0] = "registration"
            return plugin, _validate(plugin, ep.name)

        done, value, exc = _run_plugin_code(ep.name, load, timeout)
        if not done:
            _statuses[ep.name] = PluginStatus(ep.name, distribution, error=(
                f"{stage[0]} failed: timed out after {timeout:g} s ({PLUGIN_TIMEOUT_ENV}); not registered, and the "
                "thread running it is left behind. Make the plugin import its framework in polyparam_get_backend, "
                f"not at import, or raise {PLUGIN_TIMEOUT_ENV}."))
            continue
        if exc is not None:
            _statuses[ep.name] = PluginStatus(ep.name, distribution, error=_describe(exc, stage[0]))
            continue
        plugin, backends = value
        _register_checked(pm, plugin, name=ep.name, distribution=distribution, module=ep.module,
                          allowed=allowed, backends=backends)


def _run_plugin_code(name: str, work: Callable[[], Any],
                     timeout: float | None) -> tuple[bool, Any, BaseException | None]:
    """Run ``work`` (a plugin's import) within ``timeout`` seconds: ``(finished, result, exception)``.

    It runs in a daemon thread, which no signal reaches: whatever it raises, ``KeyboardInterrupt`` and
    ``SystemExit`` included, is the plugin's and is returned. The caller waits in its own thread, so the
    user's Ctrl-C still interrupts the wait. With no timeout, or where no thread can start, ``work`` runs
    in the calling thread and a ``KeyboardInterrupt`` is passed on (it may be the user's).
    """
    if timeout is not None:
        outcome: list[Any] = [None, None]
        finished = threading.Event()

        def target() -> None:
            _importing.plugin = name
            try:
                outcome[0] = work()
            except BaseException as exc:  # noqa: BLE001  raised by the plugin itself: no signal reaches this thread
                outcome[1] = exc
            finally:
                finished.set()

        thread = threading.Thread(target=target, name=f"polyparam-plugin-{name}", daemon=True)
        try:
            thread.start()
        except RuntimeError:
            pass  # no threads on this platform: import in the calling thread
        else:
            if not finished.wait(timeout):
                return False, None, None
            return True, outcome[0], outcome[1]
    _importing.plugin = name
    try:
        return True, work(), None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001  sys.exit in a plugin must not end the program
        return True, None, exc
    finally:
        _importing.plugin = None


def _describe(exc: BaseException, when: str) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({last[0].filename}:{last[0].lineno})" if last else ""
    text = str(exc)
    return f"{when} failed: {type(exc).__name__}" + (f": {text}" if text else "") + where


def _validate(plugin: Any, name: str) -> list[str]:
    """The backend names of ``plugin``, checked on a scratch manager (this runs the plugin's code)."""
    scratch = _new_manager()
    scratch.register(plugin, name=name)
    scratch.check_pending()
    if not scratch.get_hookcallers(plugin):
        got = reprlib.repr(plugin)
        msg = (f"Plugin {name!r} implements no polyparam hook: expected a module or object with @hookimpl "
               f"functions, got {got}, which has none. Point its entry point at the plugin module.")
        raise errors.PluginContractError(msg, plugin=name, expected="at least one hook", got=got)
    names = scratch.hook.polyparam_backend_names()
    backends = [n for result in names for n in result]
    bad = [n for n in backends if not isinstance(n, str) or not n.isidentifier() or n != n.lower()]
    if bad:
        msg = (f"Plugin {name!r} (hook polyparam_backend_names) returned {bad!r}: expected lowercase "
               "identifiers such as 'torch'. Return the framework's import name.")
        raise errors.PluginContractError(msg, plugin=name, expected="list[str]", got=bad)
    return backends


def _register_checked(pm: pluggy.PluginManager, plugin: Any, *, name: str, distribution: str | None,
                      module: str, allowed: frozenset[str], backends: list[str] | None = None) -> None:
    """Register ``plugin`` only if it passes validation on a scratch manager first.

    pluggy may leave partial state behind when ``register`` fails, so the plugin is
    tried on a throw-away manager; the real one sees it only once it is known good.
    ``backends`` are its names when that was done already. A built-in backend name is
    refused to any other plugin unless ``allowed`` lists it.
    """
    status = PluginStatus(name, distribution)
    try:
        if backends is None:
            backends = _validate(plugin, name)
        status.backends = backends
        for backend in backends:
            builtin = backend in BUILTIN_BACKENDS and (distribution, module) == (BUILTIN_DISTRIBUTION,
                                                                                 BUILTIN_BACKENDS[backend])
            if backend not in BUILTIN_BACKENDS or builtin:
                continue
            if backend not in allowed:
                msg = (f"Plugin {name!r} ({distribution or 'no distribution'}) claims the built-in backend name "
                       f"{backend!r}: expected a name of its own, got one that polyparam ships. Rename its backend, "
                       f"or set {ALLOW_OVERRIDE_ENV}={backend} to let it replace polyparam's.")
                raise errors.PluginContractError(msg, plugin=name, backend=backend, expected="a name of its own",
                                                 got=backend)
            status.overrides.append(backend)
        pm.register(plugin, name=name)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001  any failure marks the plugin broken, the others go on
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
    """Call every implementation of ``hook`` in pluggy's order, isolating failures.

    ``polyparam_backend_for`` runs on every ``pp.tree`` call: a third-party plugin's
    implementation of it runs within ``POLYPARAM_PLUGIN_TIMEOUT`` in a worker thread, so
    one that blocks is set aside and reported instead of hanging every lookup
    (polyparam's own plugins are called directly).
    """
    caller = getattr(plugin_manager().hook, hook)
    timeout = plugin_timeout() if hook == "polyparam_backend_for" else None
    for impl in reversed(caller.get_hookimpls()):
        status = _statuses.get(impl.plugin_name)
        if timeout is not None and (status is None or status.distribution != "polyparam"):
            args = [kwargs[arg] for arg in impl.argnames]
            finished, result, error = _run_plugin_code(impl.plugin_name, functools.partial(impl.function, *args),
                                                       timeout)
            if not finished:
                error = TimeoutError(f"{hook} did not return within {timeout:g} s ({PLUGIN_TIMEOUT_ENV})")
            if error is not None:
                _quarantine(impl.plugin_name, hook, error)
                continue
            yield impl.plugin_name, result
            continue
        try:
            result = impl.function(*[kwargs[arg] for arg in impl.argnames])
        except KeyboardInterrupt:
            raise  # maybe the user's Ctrl-C: in this thread it cannot be told from the plugin's own
        except BaseException as exc:  # noqa: BLE001  a failing hook (even sys.exit) quarantines its plugin only
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
    plugin_manager()  # outside the lock: refuses a lookup from a plugin's import instead of waiting on it
    with _lock:
        provided = any(name in status.backends and not status.error for status in _statuses.values())
        for plugin_name, status in list(_statuses.items()):
            if provided:
                break
            if name in status.backends and status.error and not plugin_manager().has_plugin(plugin_name):
                msg = (f"Cannot load backend {name!r}: its plugin {plugin_name!r} is disabled after an error "
                       f"({status.error}). Fix or reinstall that plugin; `polyparam plugins` shows the details.")
                raise errors.BackendNotFoundError(msg, backend=name, plugin=plugin_name, got=status.error)
        for plugin_name, impl in _impls("polyparam_get_backend", name):
            try:
                backend = impl.function(*[{"name": name}[a] for a in impl.argnames])
            except errors.FrameworkImportError:
                raise  # the plugin already says why and what to do (e.g. an unsafe import order)
            except ImportError as exc:
                msg = (f"Cannot load backend {name!r}: expected its framework to import, got "
                       f"{type(exc).__name__}: {exc}. {_install_hint(name, plugin_name, exc)}")
                status = _statuses.setdefault(plugin_name, PluginStatus(plugin_name))
                status.error = _describe(exc, "import of the framework")
                raise errors.FrameworkImportError(msg, backend=name, plugin=plugin_name) from exc
            except errors.PolyparamError:
                raise
            except KeyboardInterrupt:
                raise  # maybe the user's Ctrl-C: in this thread it cannot be told from the plugin's own
            except BaseException as exc:  # noqa: BLE001  sys.exit in a hook must not end the program
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


def _install_hint(backend: str, plugin: str, exc: ImportError) -> str:
    """How to install what backend ``backend`` could not import: polyparam's extra for a built-in one."""
    if backend in BUILTIN_BACKENDS and _statuses.get(plugin, PluginStatus(plugin)).distribution == BUILTIN_DISTRIBUTION:
        return f'Install it with `pip install "{BUILTIN_DISTRIBUTION}[{backend}]"`.'
    missing = exc.name or backend
    return (f"Install the package that provides {missing!r}, as the documentation of plugin {plugin!r} says "
            "(polyparam has no extra for it).")


def _impls(hook: str, backend: str | None = None) -> list[tuple[str, Any]]:
    """The implementations of ``hook`` in the order they are asked.

    For a built-in ``backend`` name only the plugins that declare it are asked, those
    allowed to override it first: no other plugin can answer for ``numpy``.
    """
    caller = getattr(plugin_manager().hook, hook)
    impls = [(impl.plugin_name, impl) for impl in reversed(caller.get_hookimpls())]
    if backend not in BUILTIN_BACKENDS:
        return impls
    claims = [(plugin, impl) for plugin, impl in impls
              if plugin in _statuses and backend in _statuses[plugin].backends]
    return sorted(claims, key=lambda pair: backend not in _statuses[pair[0]].overrides)


def backend_owners() -> dict[str, str]:
    """Each backend name, and the plugin that :func:`get_backend` asks for it first."""
    owners: dict[str, str] = {}
    for name in list_backends():
        claims = [plugin for plugin, _ in _impls("polyparam_get_backend", name)
                  if name in _statuses.get(plugin, PluginStatus(plugin)).backends]
        if claims:
            owners[name] = claims[0]
    return owners


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
