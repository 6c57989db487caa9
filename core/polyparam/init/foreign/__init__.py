"""A framework's own initializer given to ``initialize``: its distribution, drawn by polyparam.

``tree.initialize(nn.init.kaiming_normal_)``, ``tree.initialize(keras.initializers.HeNormal())``,
``tree.initialize(mx.init.Xavier())`` and ``tree.initialize(nnx.initializers.lecun_normal())``
get the polyparam built-in with the same distribution, so fans come from axis roles (a
Keras initializer called on PyTorch's ``(out, in)`` layout would take ``out`` for
``fan_in``) and a seed gives the same values on every backend. Recognised without
importing any framework: by the module an object comes from. One this module does not
know raises ``InitializerError`` naming what to use instead, rather than being called
with arguments it does not expect.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from polyparam.init.base import Initializer

__all__ = ["translate"]


def translate(obj: Any) -> Initializer | None:
    """The built-in equivalent of a torch, Keras, Gluon or JAX initializer; ``None`` for anything else."""
    fn = obj.func if isinstance(obj, functools.partial) else obj
    module = getattr(fn, "__module__", None) if inspect.isroutine(fn) else type(obj).__module__
    module = module or ""
    if module == "torch.nn.init":
        from polyparam.init.foreign._torch import translate_torch

        return translate_torch(obj)
    if module.split(".")[0] == "keras" and hasattr(obj, "get_config"):
        from polyparam.init.foreign._keras import translate_keras

        return translate_keras(obj)
    if module.split(".")[0] == "mxnet" and hasattr(obj, "dumps"):
        from polyparam.init.foreign._gluon import translate_gluon

        return translate_gluon(obj)
    if module.split(".")[0] == "jax" and module.endswith("initializers") and inspect.isfunction(fn):
        from polyparam.init.foreign._jax import translate_jax

        return translate_jax(fn)
    return None


from polyparam.init.foreign import _keras as _keras  # noqa: E402  registers Keras' string identifiers (no import of keras)
