"""polyparam plugin for PyTorch. Importing this module never imports torch.

The adapter itself is :mod:`polyparam_torch._backend`; it is imported (and imports
torch) the first time a torch object is handed to polyparam or the backend is asked
for by name.
"""

from __future__ import annotations

import sys
from types import ModuleType

from polyparam import hookimpl

__all__ = ["NAME", "polyparam_backend_for", "polyparam_backend_names", "polyparam_get_backend"]

NAME = "torch"


@hookimpl
def polyparam_backend_names() -> list[str]:
    return [NAME]


@hookimpl
def polyparam_get_backend(name: str) -> ModuleType | None:
    if name != NAME:
        return None
    from polyparam_torch import _backend  # the only place torch gets imported

    return _backend


@hookimpl
def polyparam_backend_for(obj: object) -> str | None:
    torch = sys.modules.get("torch")  # not imported means the object cannot be a torch one
    if torch is None:
        return None
    nn = getattr(torch, "nn", None)
    module = getattr(nn, "Module", None) if nn is not None else None
    return NAME if module is not None and isinstance(obj, module) else None
