"""polyparam plugin for Keras 3 (on TensorFlow or PyTorch). Importing this module never imports keras.

Besides the hooks, it offers the gradient helpers (imported from the adapter on first use)::

    import polyparam_keras
    polyparam_keras.backward(model, x)                 # grads of sum(model(x)), stored per variable
    polyparam_keras.record_gradients(zip(grads, vars))   # or store the ones your own step computed
"""

from __future__ import annotations

import sys
from typing import Any

from polyparam import hookimpl

__all__ = ["NAME", "backward", "polyparam_backend_for", "polyparam_backend_names", "polyparam_get_backend",
           "record_gradients"]

NAME = "keras"


@hookimpl
def polyparam_backend_names() -> list[str]:
    return [NAME]


@hookimpl
def polyparam_get_backend(name: str) -> Any:
    if name != NAME:
        return None
    from polyparam_keras import _backend  # the only place keras gets imported

    return _backend


@hookimpl(tryfirst=True)  # under KERAS_BACKEND=torch a Keras layer is also a torch.nn.Module
def polyparam_backend_for(obj: object) -> str | None:
    keras = sys.modules.get("keras")  # not imported means not ours; tf.keras objects are keras objects
    if keras is None:
        return None
    layer = getattr(keras, "Layer", None)
    return NAME if layer is not None and isinstance(obj, layer) else None


def __getattr__(name: str) -> Any:
    if name in ("backward", "record_gradients"):
        from polyparam_keras import _backend

        return getattr(_backend, name)
    msg = f"module 'polyparam_keras' has no attribute {name!r}"
    raise AttributeError(msg)
