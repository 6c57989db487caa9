"""Keras 3 initializer objects as polyparam built-ins, and Keras' string identifiers as registered names.

A translated initializer keeps the Keras object's seed as its default: with no ``seed=``
given to ``initialize``, an ``int`` seed (Keras draws one at construction when given
``None``) fills the same values on every call, and a ``SeedGenerator`` is drawn from
once per call, as Keras itself does.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

import polyparam.init.builtins as I  # noqa: N812  short, as the tables below read best
from polyparam import errors
from polyparam.init.base import _REGISTRY, Initializer, ParamInfo, register
from polyparam.init.foreign._common import refuse

__all__ = ["GlorotNormal", "GlorotUniform", "HeNormal", "HeUniform", "KerasVarianceScaling", "LecunNormal",
           "LecunUniform", "RandomNormal", "RandomUniform", "default_seed", "translate_keras"]


# ---- Keras' fans, where the axes are given by index -------------------------------------------------


def _axes_fans(info: ParamInfo, input_axes: Sequence[int], output_axes: Sequence[int]) -> tuple[int, int]:
    """Keras' ``compute_fans`` with explicit axes, on the shape polyparam fills (canonical layout)."""
    fans = []
    for name, axes in (("input_axes", input_axes), ("output_axes", output_axes)):
        n = 1
        for axis in axes:
            if not isinstance(axis, (int, np.integer)) or not -len(info.shape) <= axis < len(info.shape):
                msg = (f"Cannot initialize parameter {info.path!r} with KerasVarianceScaling: expected `{name}` "
                       f"to index the {len(info.shape)} axes of shape {info.shape}, got {list(axes)!r}. "
                       "Pass axes of this parameter, or drop input_axes/output_axes.")
                raise errors.InitializerError(msg, path=info.path, expected=f"axes of {info.shape}", got=list(axes))
            n *= info.shape[axis]
        fans.append(n)
    return fans[0], fans[1]


def _mode_fan(mode: str, fan_in: float, fan_out: float) -> float:
    return {"fan_in": fan_in, "fan_out": fan_out}.get(mode, (fan_in + fan_out) / 2)


class KerasVarianceScaling(I.VarianceScaling):
    """Keras' ``VarianceScaling`` with ``input_axes``/``output_axes``.

    polyparam takes fans from the parameter's axis roles (``in``, ``out``, ``space``);
    Keras' axes are indices into the shape. They are honoured where the fan ``mode``
    uses is the same both ways, indices read in the canonical layout (for an
    ``EinsumDense`` kernel it is Keras' own); anything else raises
    :class:`~polyparam.errors.InitializerError` before any write, never a silent drop.
    As in Keras, the axes are used only when both are given.
    """

    _region_safe = True

    def __init__(self, scale: float = 1.0, mode: str = "fan_in", distribution: str = "truncated_normal",
                 input_axes: Sequence[int] | None = None, output_axes: Sequence[int] | None = None) -> None:
        super().__init__(scale, mode, distribution)
        self.input_axes = None if input_axes is None else [int(a) for a in input_axes]
        self.output_axes = None if output_axes is None else [int(a) for a in output_axes]

    def _agree(self, info: ParamInfo) -> None:
        role_fans = info.require_fans(type(self).__name__)
        if self.input_axes is None or self.output_axes is None:
            return
        axes_fans = _axes_fans(info, self.input_axes, self.output_axes)
        if _mode_fan(self.mode, *axes_fans) != _mode_fan(self.mode, *role_fans):
            msg = (f"Cannot initialize parameter {info.path!r} with {self!r}: polyparam takes fans from axis roles "
                   f"{info.axes} of shape {info.shape} (fan_in={role_fans[0]}, fan_out={role_fans[1]}), expected "
                   f"input_axes/output_axes naming the same {self.mode}, got fan_in={axes_fans[0]}, "
                   f"fan_out={axes_fans[1]} (indices are read in polyparam's canonical layout). Drop "
                   "input_axes/output_axes, or declare the axis roles with pp.roles.register.")
            raise errors.InitializerError(msg, path=info.path, expected=role_fans, got=axes_fans)

    def check(self, info: ParamInfo, /, *, by_role: bool = True) -> None:
        if not by_role or info.role in ("weight", "other"):
            self._agree(info)

    def _fans(self) -> tuple[int, int]:
        info = self.param
        assert info is not None, "set while filling"
        self._agree(info)
        return info.require_fans(type(self).__name__)


# ---- Keras' string identifiers ------------------------------------------------------------------------


def _fixed(name: str, scale: float, mode: str, distribution: str) -> type[I.VarianceScaling]:
    """A Keras-named VarianceScaling with Keras' fixed arguments (``GlorotUniform``: 1, fan_avg, uniform)."""

    def __init__(self: I.VarianceScaling) -> None:  # noqa: N807
        I.VarianceScaling.__init__(self, scale, mode, distribution)

    doc = f"Keras' ``{name}``: VarianceScaling(scale={scale:g}, mode={mode!r}, distribution={distribution!r})."
    return type(name, (I.VarianceScaling,), {"__init__": __init__, "__doc__": doc, "_region_safe": True,
                                              "__module__": __name__})


GlorotNormal = register("glorot_normal", "glorotnormal")(_fixed("GlorotNormal", 1.0, "fan_avg", "truncated_normal"))
GlorotUniform = register("glorot_uniform", "glorotuniform")(_fixed("GlorotUniform", 1.0, "fan_avg", "uniform"))
HeNormal = register("he_normal", "henormal")(_fixed("HeNormal", 2.0, "fan_in", "truncated_normal"))
HeUniform = register("he_uniform", "heuniform")(_fixed("HeUniform", 2.0, "fan_in", "uniform"))
LecunNormal = register("lecun_normal", "lecunnormal")(_fixed("LecunNormal", 1.0, "fan_in", "truncated_normal"))
LecunUniform = register("lecun_uniform", "lecununiform")(_fixed("LecunUniform", 1.0, "fan_in", "uniform"))
register("variancescaling")(KerasVarianceScaling)


@register("random_normal", "randomnormal")
class RandomNormal(I.Normal):
    """Keras' ``RandomNormal(mean=0.0, stddev=0.05)``."""

    _region_safe = True

    def __init__(self, mean: float = 0.0, stddev: float = 0.05) -> None:
        super().__init__(sigma=stddev, mean=mean)


@register("random_uniform", "randomuniform")
class RandomUniform(I.Uniform):
    """Keras' ``RandomUniform(minval=-0.05, maxval=0.05)``."""

    _region_safe = True

    def __init__(self, minval: float = -0.05, maxval: float = 0.05) -> None:
        super().__init__(low=minval, high=maxval)


# Keras' other spellings of polyparam's own names; a name polyparam has already keeps its meaning
# ("uniform" and "normal" are Gluon's Uniform(0.07) and Normal(0.01), not Keras' 0.05 ones).
for _alias, _cls in (("orthogonalinitializer", I.Orthogonal), ("identityinitializer", I.Identity),
                     ("truncatednormal", I.TruncatedNormal)):
    _REGISTRY.setdefault(_alias, _cls)


# ---- Keras 3 initializer objects ----------------------------------------------------------------------


def _numeric(value: Any) -> Any:
    """A Keras Constant's value (a number, a NumPy array or a backend tensor) as a number or NumPy array."""
    if isinstance(value, (int, float, np.ndarray, np.generic)):
        return value
    import keras  # the value came from a Keras object: Keras is imported already

    return np.asarray(keras.ops.convert_to_numpy(value))


def default_seed(seed: Any) -> Callable[[], int] | None:
    """The seed a Keras initializer's ``seed`` gives a call of ``initialize`` without ``seed=``, or ``None``.

    An ``int`` (Keras draws one at construction when given ``None``): the same seed on
    every call. A ``SeedGenerator``: its next state, so every call differs and the
    generator advances as Keras' own draw advances it.
    """
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        fixed = int(seed)
        return lambda: fixed
    if callable(getattr(seed, "next", None)) and hasattr(seed, "state"):
        generator = seed

        def draw() -> int:
            import keras

            state = np.asarray(keras.ops.convert_to_numpy(generator.next())).ravel()
            value = 0
            for word in state[:2]:
                value = (value << 32) | (int(word) & 0xFFFFFFFF)
            return value

        return draw
    return None


def _translate(obj: Any) -> Initializer:
    names = [c.__name__ for c in type(obj).__mro__]
    c = obj.get_config()
    if "VarianceScaling" in names:       # Glorot*, He*, Lecun* are VarianceScaling with fixed arguments
        input_axes, output_axes = getattr(obj, "input_axes", None), getattr(obj, "output_axes", None)
        if input_axes is not None or output_axes is not None:
            return KerasVarianceScaling(obj.scale, obj.mode, obj.distribution, input_axes, output_axes)
        return I.VarianceScaling(obj.scale, obj.mode, obj.distribution)
    if "RandomUniform" in names:
        if obj.minval == -obj.maxval:
            return I.Uniform(obj.maxval)
        return I.Uniform(low=obj.minval, high=obj.maxval)
    if "RandomNormal" in names:
        return I.Normal(sigma=obj.stddev, mean=obj.mean)
    if "TruncatedNormal" in names:
        return I.TruncatedNormal(sigma=obj.stddev, mean=obj.mean)
    if "Zeros" in names:
        return I.Zero()
    if "Ones" in names:
        return I.One()
    if "Constant" in names:
        return I.Constant(_numeric(obj.value))   # get_config holds the value serialized (a dict for an array)
    if "Orthogonal" in names or "OrthogonalInitializer" in names:
        return I.Orthogonal(obj.gain)
    if "Identity" in names or "IdentityInitializer" in names:
        return I.Identity(obj.gain)              # Identity has no get_config: its gain is an attribute only
    raise refuse(f"keras.initializers.{type(obj).__name__}({c})", "no built-in draws that distribution",
                 "a pp.init built-in or a callable (shape, dtype) -> array")


def translate_keras(obj: Any) -> Initializer:
    """The built-in equivalent of a Keras initializer object, carrying its seed as the default (``_framework_seed``)."""
    init = _translate(obj)
    source = default_seed(getattr(obj, "seed", None))
    if source is not None:
        init.__dict__["_framework_seed"] = source
    return init

