"""``jax.nn.initializers`` (what Flax's ``nnx.initializers`` re-exports) as polyparam built-ins.

A JAX initializer is a function ``init(key, shape, dtype)`` that its factory closes over
its arguments (``normal(0.02)``, ``variance_scaling(2.0, "fan_in", "normal")``); called as
a plain ``fn(shape, dtype)`` it fails inside JAX. It is read here by its factory's name
and the values it closes over, without importing JAX, and drawn by polyparam, so fans
come from axis roles and a seed gives the same values on every backend.
"""

from __future__ import annotations

from typing import Any, Callable

import polyparam.init.builtins as I  # noqa: N812  short, as the table below reads best
from polyparam.init.base import Initializer
from polyparam.init.foreign._common import refuse

__all__ = ["translate_jax"]

#: JAX's distribution names for ``variance_scaling`` -> polyparam's (JAX's "normal" is not truncated)
_DISTRIBUTIONS = {"truncated_normal": "truncated_normal", "normal": "untruncated_normal", "uniform": "uniform"}


def _closed_over(fn: Any) -> dict[str, Any]:
    """The values ``fn`` closes over, by name (a factory's arguments)."""
    cells = getattr(fn, "__closure__", None) or ()
    return dict(zip(fn.__code__.co_freevars, (cell.cell_contents for cell in cells)))


def _variance_scaling(a: dict[str, Any]) -> Initializer:
    axes = (a.get("in_axis", -2), a.get("out_axis", -1), a.get("batch_axis", ()))
    if axes[:2] != (-2, -1) or axes[2] not in ((), None):
        raise refuse("JAX initializer variance_scaling", f"its in_axis, out_axis, batch_axis {axes} name native axes "
                     "for the fans, where polyparam takes them from axis roles (nnx.Embed's default gives "
                     "out_axis=0)", f"pp.init.VarianceScaling({a['scale']!r}, {a['mode']!r}, ...) where the roles "
                     "give the fans you mean, or pp.init.Normal(std)")
    return I.VarianceScaling(a["scale"], a["mode"], _DISTRIBUTIONS.get(a["distribution"], a["distribution"]))


_BUILDERS: dict[str, Callable[[dict[str, Any]], Initializer]] = {
    "zeros": lambda a: I.Zero(),
    "ones": lambda a: I.One(),
    "constant": lambda a: I.Constant(a["value"]),
    "normal": lambda a: I.Normal(a["stddev"]),
    "truncated_normal": lambda a: I.TruncatedNormal(a["stddev"], a=a["lower"], b=a["upper"]),
    "uniform": lambda a: I.Uniform(low=0.0, high=a["scale"]),      # JAX's uniform is [0, scale)
    "variance_scaling": _variance_scaling,
    "orthogonal": lambda a: _orthogonal(a["scale"], a["column_axis"]),
}


def _orthogonal(scale: float, column_axis: int) -> Initializer:
    """JAX's ``orthogonal`` over the last axis (a kernel's ``out``) is polyparam's over canonical rows."""
    if column_axis != -1:
        raise refuse("JAX initializer orthogonal", f"its columns run along axis {column_axis}, not the last",
                     "pp.init.Orthogonal(gain) (columns along the output axis)")
    return I.Orthogonal(scale)


def translate_jax(fn: Any) -> Initializer:
    """The built-in with the distribution of ``fn``, a ``jax.nn.initializers`` function; ``InitializerError``
    for one polyparam has no equivalent of (``delta_orthogonal``, ``orthogonal`` over another column axis)."""
    factory = fn.__qualname__.split(".<locals>.")[0]
    builder = _BUILDERS.get(factory)
    if builder is None:
        raise refuse(f"JAX initializer {factory}", "polyparam has no built-in with its distribution",
                     "the nearest pp.init initializer (pp.init.Xavier(), pp.init.Normal(...), ...)")
    try:
        return builder(_closed_over(fn))
    except KeyError as missing:
        raise refuse(f"JAX initializer {factory}", f"its argument {missing} could not be read (another JAX version)",
                     "the pp.init initializer of the same distribution") from None
