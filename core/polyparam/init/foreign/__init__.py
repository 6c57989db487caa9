"""A framework's own initializer given to ``initialize``: its distribution, drawn by polyparam.

``tree.initialize(nn.init.kaiming_normal_)``, ``tree.initialize(keras.initializers.HeNormal())``
and ``tree.initialize(mx.init.Xavier())`` get the polyparam built-in with the same
distribution, so fans come from axis roles (a Keras initializer called on PyTorch's
``(out, in)`` layout would take ``out`` for ``fan_in``) and a seed gives the same values
on every backend. Recognised without importing any framework: by the module an object
comes from. One this module does not know raises ``InitializerError`` naming what to
use instead, rather than being called with arguments it does not expect.
"""

from __future__ import annotations

import functools
import inspect
import json
from typing import Any, Callable

import polyparam.init.builtins as I  # noqa: N812  short, as the tables below read best
from polyparam import errors
from polyparam.init.base import Initializer, loads

__all__ = ["translate"]


def translate(obj: Any) -> Initializer | None:
    """The built-in equivalent of a torch, Keras or Gluon initializer; ``None`` for anything else."""
    fn = obj.func if isinstance(obj, functools.partial) else obj
    module = getattr(fn, "__module__", None) if inspect.isroutine(fn) else type(obj).__module__
    module = module or ""
    if module == "torch.nn.init":
        return _torch(obj)
    if module.split(".")[0] == "keras" and hasattr(obj, "get_config"):
        return _keras(obj)
    if module.split(".")[0] == "mxnet" and hasattr(obj, "dumps"):
        return _gluon(obj)
    return None


def _refuse(what: str, why: str, instead: str) -> errors.InitializerError:
    msg = (f"Invalid value for argument `init`: expected an initializer polyparam can draw, got {what}: {why}. "
           f"Use {instead}.")
    return errors.InitializerError(msg, expected="a known framework initializer", got=what)


# ---- torch.nn.init functions (plain, or functools.partial with their arguments) ------------------


def _torch(obj: Any) -> Initializer:
    fn = obj.func if isinstance(obj, functools.partial) else obj
    name = fn.__name__
    args = (obj.args, obj.keywords) if isinstance(obj, functools.partial) else ((), {})
    try:
        bound = inspect.signature(fn).bind(None, *args[0], **args[1])
    except TypeError as exc:
        raise _refuse(f"torch.nn.init.{name} with {args}", str(exc), "the function's own arguments") from None
    bound.apply_defaults()
    a = dict(bound.arguments)
    a.pop(next(iter(a)))                      # the tensor
    build: dict[str, Callable[[], Initializer | None]] = {
        "uniform_": lambda: I.Uniform(a["b"]) if a["a"] == -a["b"] else None,
        "normal_": lambda: I.Normal(sigma=a["std"], mean=a["mean"]),
        "trunc_normal_": lambda: I.TruncatedNormal(sigma=a["std"], mean=a["mean"], a=(a["a"] - a["mean"]) / a["std"],
                                                   b=(a["b"] - a["mean"]) / a["std"]),
        "constant_": lambda: I.Constant(a["val"]),
        "zeros_": I.Zero,
        "ones_": I.One,
        "xavier_uniform_": lambda: I.Xavier(rnd_type="uniform", magnitude=3 * a["gain"] ** 2),
        "xavier_normal_": lambda: I.Xavier(rnd_type="gaussian", magnitude=a["gain"] ** 2),
        "kaiming_uniform_": lambda: I.He(a["a"], a["mode"], a["nonlinearity"], "uniform"),
        "kaiming_normal_": lambda: I.He(a["a"], a["mode"], a["nonlinearity"], "normal"),
        "orthogonal_": lambda: I.Orthogonal(a["gain"]),
        "eye_": I.Identity,
        "dirac_": lambda: I.Dirac(a["groups"]),
    }
    made = build[name]() if name in build else None
    if made is None:
        raise _refuse(f"torch.nn.init.{name}{tuple(a.values())}", "no built-in draws that distribution",
                      "a pp.init built-in or a callable (shape, dtype) -> array")
    return made


# ---- Keras 3 initializer objects ----------------------------------------------------------------------


def _keras(obj: Any) -> Initializer:
    names = [c.__name__ for c in type(obj).__mro__]
    c = obj.get_config()
    if "VarianceScaling" in names:       # Glorot*, He*, Lecun* are VarianceScaling with fixed arguments
        return I.VarianceScaling(obj.scale, obj.mode, obj.distribution)
    if "RandomUniform" in names and c["minval"] == -c["maxval"]:
        return I.Uniform(c["maxval"])
    if "RandomNormal" in names:
        return I.Normal(sigma=c["stddev"], mean=c["mean"])
    if "TruncatedNormal" in names:
        return I.TruncatedNormal(sigma=c["stddev"], mean=c["mean"])
    if "Zeros" in names:
        return I.Zero()
    if "Ones" in names:
        return I.One()
    if "Constant" in names:
        return I.Constant(c["value"])
    if "Orthogonal" in names or "OrthogonalInitializer" in names:
        return I.Orthogonal(c.get("gain", 1.0))
    if "Identity" in names or "IdentityInitializer" in names:
        return I.Identity(c.get("gain", 1.0))
    raise _refuse(f"keras.initializers.{type(obj).__name__}({c})", "no built-in draws that distribution",
                  "a pp.init built-in or a callable (shape, dtype) -> array")


# ---- Gluon (mx.init) initializer objects: their own JSON is Gluon's, which pp.init.loads reads ---------


def _gluon(obj: Any) -> Initializer:
    text = obj.dumps()
    name, kwargs = json.loads(text)
    if name == "orthogonal":             # Gluon's (scale, rand_type): the scale is the gain
        return I.Orthogonal(kwargs.get("scale", 1.414))
    try:
        return loads(text)
    except errors.InitializerError as exc:
        raise _refuse(f"mx.init {text}", str(exc), "a pp.init built-in") from None
