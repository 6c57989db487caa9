"""Keras 3 initializer objects as polyparam built-ins."""

from __future__ import annotations

from typing import Any

import polyparam.init.builtins as I  # noqa: N812  short, as the tables below read best
from polyparam.init.base import Initializer
from polyparam.init.foreign._common import refuse

__all__ = ["translate_keras"]


# ---- Keras 3 initializer objects ----------------------------------------------------------------------


def translate_keras(obj: Any) -> Initializer:
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
    raise refuse(f"keras.initializers.{type(obj).__name__}({c})", "no built-in draws that distribution",
                  "a pp.init built-in or a callable (shape, dtype) -> array")
