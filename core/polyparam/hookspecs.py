"""Hook specifications: the contract between polyparam and backend plugins.

A plugin is a module (or object) registered under the entry-point group
``polyparam`` that implements any subset of these hooks with
``@polyparam.hookimpl``. An implementation may accept fewer arguments than the spec
lists; polyparam only ever *adds* arguments, never removes or renames them.

The hooks handle discovery and dispatch only. The backend itself is a module that
satisfies :class:`polyparam.Backend`, returned by :func:`polyparam_get_backend`.
"""

from __future__ import annotations

from types import ModuleType

import pluggy

__all__ = ["hookimpl", "hookspec", "polyparam_backend_for", "polyparam_backend_names", "polyparam_get_backend"]

hookspec = pluggy.HookspecMarker("polyparam")
hookimpl = pluggy.HookimplMarker("polyparam")

# --------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------


@hookspec
def polyparam_backend_names() -> list[str]:  # type: ignore[empty-body]  # a spec: pluggy never runs its body
    """Name the backends this plugin provides.

    Return a list of backend names (lowercase, equal to the framework's import name,
    e.g. ``["torch"]``). Results of all plugins are concatenated.

    Constraints:
        Must not import the framework; must be cheap.

    Since version 0.1.
    """


# --------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------


@hookspec(firstresult=True)
def polyparam_get_backend(name: str) -> ModuleType | None:
    """Return the backend module called ``name``.

    Return an object satisfying :class:`polyparam.Backend` if this plugin provides
    ``name``, or ``None`` to let other plugins answer. This is where the framework
    may be imported; polyparam calls it once per name and caches the result.

    Stops at the first non-``None`` result (``firstresult``): polyparam's plugin manager calls
    the implementations one by one itself, so that a plugin whose hook raises is set aside and
    reported instead of breaking every lookup.

    Args:
        name: A backend name, as :func:`polyparam_backend_names` lists.

    Since version 0.1.
    """


@hookspec(firstresult=True)
def polyparam_backend_for(obj: object) -> str | None:
    """Name the backend that owns ``obj``.

    Return the backend name if this plugin recognises ``obj`` (a model, layer,
    block or parameter of its framework), or ``None`` to let other plugins answer.

    Stops at the first non-``None`` result (``firstresult``): polyparam's plugin manager calls
    the implementations one by one itself, so that a plugin whose hook raises is set aside and
    reported instead of breaking every lookup.

    Args:
        obj: Whatever the user passed to :func:`polyparam.tree`.

    Constraints:
        Must not import the framework: if it is not in :data:`sys.modules`, ``obj``
        cannot belong to it, so return ``None``. Must be cheap.

    Since version 0.1.
    """
