"""polyparam plugin for Flax NNX (``flax.nnx.Module``). Importing this module never imports flax or jax.

The adapter itself is :mod:`polyparam_flax._backend`; it is imported (and imports flax)
the first time an NNX module is handed to polyparam or the backend is asked for by
name. Besides the hooks, this module offers the gradient helpers (imported from
``polyparam_flax._gradients`` on first use)::

    import polyparam_flax
    polyparam_flax.backward(model, loss_fn, x, y)     # nnx.grad of loss_fn(model, x, y), stored per Variable
    polyparam_flax.record_gradients(model, grads)    # or store the nnx.State your own step computed
    polyparam_flax.gradients(model)                  # the stored (maybe clipped) gradients as an nnx.State

and the NNX filter of the Params polyparam has not frozen (``p.trainable = False``),
from ``polyparam_flax._training``::

    optimizer = nnx.Optimizer(model, tx, wrt=polyparam_flax.trainable)
"""

from __future__ import annotations

from typing import Any

from polyparam.backend import discovery_hooks

__all__ = ["NAME", "OptaxGroups", "backward", "gradients", "polyparam_backend_for", "polyparam_backend_names",
           "polyparam_get_backend", "record_gradients", "trainable"]

NAME = "flax"

# flax.nnx not imported means no NNX object can exist: the object is not ours, and flax stays unimported.
polyparam_backend_names, polyparam_get_backend, polyparam_backend_for = discovery_hooks(
    NAME, "polyparam_flax._backend", owns=[("flax.nnx", "Pytree")])   # optimizers too: refused by name


def __getattr__(name: str) -> Any:
    if name in ("backward", "gradients", "record_gradients"):
        from polyparam_flax import _gradients

        return getattr(_gradients, name)
    if name in ("trainable", "OptaxGroups"):
        from polyparam_flax import _training

        return getattr(_training, name)
    msg = f"module 'polyparam_flax' has no attribute {name!r}"
    raise AttributeError(msg)
