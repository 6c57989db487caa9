"""polyparam plugin for JAX. Importing this module never imports jax.

Models are :class:`polyparam_jax.model.Model` objects: a stax-style network (pairs of
``init_fun, apply_fun``) together with its parameters, the mutable holder that JAX's
functional style leaves to the user.

Files: ``_backend`` (the names of :class:`polyparam.backend.Backend`), ``_convert``
(NumPy <-> JAX arrays, layouts, devices), ``_parameter`` and ``_tree`` (the
subclasses), ``_models`` (the reference models) and ``model`` (the stax-style layers
and :class:`~polyparam_jax.model.Model`, the framework side).
"""

from __future__ import annotations

from polyparam.backend import discovery_hooks

__all__ = ["NAME", "polyparam_backend_for", "polyparam_backend_names", "polyparam_get_backend"]

NAME = "jax"

# The backend module is imported by name on first use: the only place the adapter (and
# jax) gets imported. Ownership is answered from sys.modules: polyparam_jax.model not
# imported means no Model can exist, so the object is not ours, and jax stays unimported.
polyparam_backend_names, polyparam_get_backend, polyparam_backend_for = discovery_hooks(
    NAME, "polyparam_jax._backend", owns=[("polyparam_jax.model", "Model")])
