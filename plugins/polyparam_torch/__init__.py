"""polyparam plugin for PyTorch. Importing this module never imports torch.

The adapter itself is :mod:`polyparam_torch._backend`; it is imported (and imports
torch) the first time a torch object is handed to polyparam or the backend is asked
for by name.
"""

from __future__ import annotations

from polyparam.backend import discovery_hooks

__all__ = ["NAME", "polyparam_backend_for", "polyparam_backend_names", "polyparam_get_backend"]

NAME = "torch"

polyparam_backend_names, polyparam_get_backend, polyparam_backend_for = discovery_hooks(
    NAME, "polyparam_torch._backend", owns=[("torch.nn", "Module")])
