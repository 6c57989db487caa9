"""polyparam plugin for Keras 3 (on TensorFlow, PyTorch or JAX). Importing this module never imports keras.

The adapter itself is :mod:`polyparam_keras._backend`; it is imported (and imports
keras) the first time a Keras object is handed to polyparam or the backend is asked
for by name. Besides the hooks, this module offers the gradient helpers (imported
from ``polyparam_keras._gradients`` on first use)::

    import polyparam_keras
    polyparam_keras.backward(model, x)                 # grads of sum(model(x)), stored per variable
    polyparam_keras.record_gradients(zip(grads, vars))   # or store the ones your own step computed
    optimizer.apply_gradients(polyparam_keras.recorded_gradients(model))   # after tree.clip_grads(...)
"""

from __future__ import annotations

from typing import Any

from polyparam.backend import discovery_hooks

__all__ = ["NAME", "backward", "polyparam_backend_for", "polyparam_backend_names", "polyparam_get_backend",
           "record_gradients", "recorded_gradients"]

NAME = "keras"

# tryfirst: under KERAS_BACKEND=torch a Keras layer is also a torch.nn.Module, so this plugin answers first.
# keras not imported means the object is not ours; tf.keras objects are keras objects.
polyparam_backend_names, polyparam_get_backend, polyparam_backend_for = discovery_hooks(
    NAME, "polyparam_keras._backend", owns=[("keras", "Layer")], tryfirst=True)


def __getattr__(name: str) -> Any:
    if name in ("backward", "record_gradients", "recorded_gradients"):
        from polyparam_keras import _gradients

        return getattr(_gradients, name)
    msg = f"module 'polyparam_keras' has no attribute {name!r}"
    raise AttributeError(msg)
