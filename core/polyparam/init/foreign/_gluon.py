"""Gluon (mx.init) initializer objects as polyparam built-ins: their own JSON is Gluon's, which pp.init.loads reads."""

from __future__ import annotations

import json
from typing import Any

import polyparam.init.builtins as I  # noqa: N812  short, as the tables below read best
from polyparam import errors
from polyparam.init.base import Initializer, loads
from polyparam.init.foreign._common import refuse

__all__ = ["translate_gluon"]


# ---- Gluon (mx.init) initializer objects: their own JSON is Gluon's, which pp.init.loads reads ---------


def translate_gluon(obj: Any) -> Initializer:
    text = obj.dumps()
    name, kwargs = json.loads(text)
    if name == "orthogonal":             # Gluon's (scale, rand_type): the scale is the gain
        return I.Orthogonal(kwargs.get("scale", 1.414))
    try:
        return loads(text)
    except errors.InitializerError as exc:
        raise refuse(f"mx.init {text}", str(exc), "a pp.init built-in") from None
