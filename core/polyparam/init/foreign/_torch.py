"""torch.nn.init functions (plain, or functools.partial with their arguments) as polyparam built-ins.

Every public function of ``torch.nn.init`` that fills a tensor is translated with all
its arguments (``uniform_(a, b)`` asymmetric too, ``sparse_``, ``dirac_(groups)``,
``trunc_normal_`` bounds, gains, modes and nonlinearities); the deprecated names without
the trailing underscore warn as torch does (``FutureWarning``) and translate as the new ones.

**Seeds.** A function that draws random numbers (``uniform_``, ``normal_``,
``trunc_normal_``, ``xavier_*``, ``kaiming_*``, ``orthogonal_``, ``sparse_``) takes
polyparam's seed from torch when ``initialize`` gets no ``seed=``: one 63-bit integer
drawn, when ``initialize`` is called, from its ``generator=`` (a ``functools.partial``
argument) or else from torch's default CPU generator. So ``torch.manual_seed(s)`` before
the call, or a generator seeded the same way, gives the same values, and the draw
advances that generator as torch's own call would (two calls in a row differ). An
explicit ``seed=`` wins and draws nothing. The values are polyparam's streams for that
seed (the same on every backend), not the numbers torch's own kernel would draw.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import warnings
from typing import Any, Callable

import polyparam.init.builtins as I  # noqa: N812  short, as the tables below read best
from polyparam.init.base import Initializer
from polyparam.init.builtins import _number
from polyparam.init.foreign._common import refuse

__all__ = ["RANDOM", "translate_torch"]

#: The functions that draw from a torch generator (the others are deterministic).
RANDOM = frozenset({"uniform_", "normal_", "trunc_normal_", "xavier_uniform_", "xavier_normal_",
                    "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_"})


def _builders(a: dict[str, Any]) -> dict[str, Callable[[], Initializer]]:
    """The built-in for each function, from its bound arguments ``a`` (defaults applied, tensor removed)."""
    return {
        "uniform_": lambda: I.Uniform(a["b"]) if a["a"] == -a["b"] else I.Uniform(low=a["a"], high=a["b"]),
        "normal_": lambda: I.Normal(sigma=a["std"], mean=a["mean"]),
        "trunc_normal_": lambda: _trunc_normal(a["mean"], a["std"], a["a"], a["b"]),
        "constant_": lambda: I.Constant(a["val"]),
        "zeros_": I.Zero,
        "ones_": I.One,
        "eye_": I.Identity,
        "dirac_": lambda: I.Dirac(a["groups"]),
        "xavier_uniform_": lambda: I.Xavier(rnd_type="uniform", magnitude=3 * _gain(a["gain"]) ** 2),
        "xavier_normal_": lambda: I.Xavier(rnd_type="gaussian", magnitude=_gain(a["gain"]) ** 2),
        "kaiming_uniform_": lambda: I.He(_slope(a["a"]), a["mode"], a["nonlinearity"], "uniform"),
        "kaiming_normal_": lambda: I.He(_slope(a["a"]), a["mode"], a["nonlinearity"], "normal"),
        "orthogonal_": lambda: I.Orthogonal(a["gain"]),
        "sparse_": lambda: I.Sparse(a["sparsity"], a["std"]),
    }


def _slope(a: Any) -> Any:
    """kaiming's ``a``: ``None`` is ``calculate_gain``'s default leaky ReLU slope, 0.01, as in torch."""
    return 0.01 if a is None else a


def _gain(gain: Any) -> float:
    """A gain as a float (``Xavier`` takes ``magnitude``, its square), refused as the built-ins refuse numbers."""
    return _number("gain", gain, "torch.nn.init.xavier_*")


def _trunc_normal(mean: Any, std: Any, a: Any, b: Any) -> Initializer:
    """torch's absolute bounds ``[a, b]`` as ``TruncatedNormal``'s bounds in standard deviations."""
    owner = "torch.nn.init.trunc_normal_"
    mean, std = _number("mean", mean, owner), _number("std", std, owner, minimum=0)
    if std == 0:
        raise refuse(f"{owner}(std=0)", "std must be > 0", "constant_ for a fixed value")
    lo, hi = _number("a", a, owner, finite=False), _number("b", b, owner, finite=False)
    return I.TruncatedNormal(sigma=std, mean=mean, a=(lo - mean) / std, b=(hi - mean) / std)


def _modern(fn: Any) -> tuple[Any, str]:
    """``(function, name)``, with a deprecated alias (``nn.init.normal``) replaced by its new name, warning as torch."""
    name = fn.__name__
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    new = getattr(module, f"{name}_", None) if not name.endswith("_") else None
    if new is None or not callable(new):
        return fn, name
    warnings.warn(f"`nn.init.{name}` is now deprecated in favor of `nn.init.{name}_`.", FutureWarning,
                  stacklevel=_caller_level())
    return new, f"{name}_"


def _caller_level() -> int:
    """The ``stacklevel`` that makes a warning point at the first frame outside polyparam (the user's call)."""
    package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def _seed_source(generator: Any, shown: str) -> Callable[[], int]:
    """A callable drawing one 63-bit seed from ``generator`` (torch's default CPU generator when ``None``)."""
    torch = sys.modules["torch"]
    if generator is not None and not isinstance(generator, torch.Generator):
        raise refuse(shown, f"generator= is a {type(generator).__name__}, not a torch.Generator",
                     "generator=torch.Generator().manual_seed(0), or seed= of initialize")

    def draw() -> int:
        device = generator.device if generator is not None else "cpu"
        return int(torch.randint(0, 2**63 - 1, (1,), generator=generator, device=device).item())

    return draw


def translate_torch(obj: Any) -> Initializer:
    """The built-in for a ``torch.nn.init`` function (or a ``functools.partial`` of one), seeded by torch.

    Raises:
        InitializerError: A function with no built-in (``calculate_gain``), arguments the
            function does not take, or values the built-in refuses.
    """
    fn, name = _modern(obj.func if isinstance(obj, functools.partial) else obj)
    args = (obj.args, obj.keywords) if isinstance(obj, functools.partial) else ((), {})
    shown = f"torch.nn.init.{name} with {args}"
    try:
        bound = inspect.signature(fn).bind(None, *args[0], **args[1])
    except (TypeError, ValueError) as exc:
        raise refuse(shown, str(exc), "the function's own arguments") from None
    bound.apply_defaults()
    a = dict(bound.arguments)
    a.pop(next(iter(a)))                      # the tensor
    build = _builders(a).get(name)
    if build is None:
        raise refuse(f"torch.nn.init.{name}{tuple(a.values())}", "no built-in draws that distribution",
                     "a pp.init built-in or a callable (shape, dtype) -> array")
    made = build()
    if name in RANDOM:
        made.__dict__["_framework_seed"] = _seed_source(a.get("generator"), shown)   # asked by initialize
    return made
