"""torch.nn.init functions (plain, or functools.partial with their arguments) as polyparam built-ins."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import polyparam.init.builtins as I  # noqa: N812  short, as the tables below read best
from polyparam.init.base import Initializer
from polyparam.init.foreign._common import refuse

__all__ = ["translate_torch"]


# ---- torch.nn.init functions (plain, or functools.partial with their arguments) ------------------


def translate_torch(obj: Any) -> Initializer:
    fn = obj.func if isinstance(obj, functools.partial) else obj
    name = fn.__name__
    args = (obj.args, obj.keywords) if isinstance(obj, functools.partial) else ((), {})
    try:
        bound = inspect.signature(fn).bind(None, *args[0], **args[1])
    except TypeError as exc:
        raise refuse(f"torch.nn.init.{name} with {args}", str(exc), "the function's own arguments") from None
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
        raise refuse(f"torch.nn.init.{name}{tuple(a.values())}", "no built-in draws that distribution",
                      "a pp.init built-in or a callable (shape, dtype) -> array")
    return made
