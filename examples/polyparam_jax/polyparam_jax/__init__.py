"""polyparam plugin for JAX. Importing this module never imports jax.

Models are :class:`polyparam_jax.model.Model` objects: a stax-style network (pairs of
``init_fun, apply_fun``) together with its parameters, the mutable holder that JAX's
functional style leaves to the user.
"""

from __future__ import annotations

import sys
from types import ModuleType

from polyparam import hookimpl

NAME = "jax"


@hookimpl
def polyparam_backend_names() -> list[str]:
    return [NAME]


@hookimpl
def polyparam_get_backend(name: str) -> ModuleType | None:
    if name != NAME:
        return None
    from polyparam_jax import _backend  # the only place the adapter (and jax) gets imported

    return _backend


@hookimpl
def polyparam_backend_for(obj: object) -> str | None:
    # Not imported means no Model can exist: answer without importing jax.
    model = sys.modules.get("polyparam_jax.model")
    if model is None:
        return None
    return NAME if isinstance(obj, model.Model) else None
