"""The per-parameter paths behind :class:`~polyparam._params.parameter.Parameter`'s bulk hooks.

The training-loop operations group a collection's parameters by class and call each
class's bulk hook once (``type(p)._grad_norm_many(params, 2.0)``); the defaults of those
hooks, here, loop over the per-parameter hooks (`_grad`, `_write_grad`, `_cast`) and keep
what they need to put everything back if one refuses. This module imports no other
module of polyparam, so the hooks' defaults can use it without an import cycle.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from polyparam._params.parameter import Parameter

__all__ = ["by_class", "cast_each", "combine_norms", "grad_norm_of", "numpy_grad_norm", "rewrite_grads"]


def by_class(params: list[Parameter]) -> list[tuple[type[Parameter], list[Parameter]]]:
    """``params`` grouped by class (one group for a one-backend tree), classes in order of first appearance."""
    if not params:
        return []
    first = type(params[0])
    if all(type(p) is first for p in params):
        return [(first, params)]
    groups: dict[type[Parameter], list[Parameter]] = {}
    for p in params:
        members = groups.get(type(p))
        if members is None:
            groups[type(p)] = [p]
        else:
            members.append(p)
    return list(groups.items())


def combine_norms(norms: list[float], norm_type: float) -> float:
    """The ``norm_type`` norm of disjoint groups whose own norms are ``norms`` (``0.0`` for none)."""
    if len(norms) <= 1:
        return float(norms[0]) if norms else 0.0
    if math.isinf(norm_type):
        return float(np.max(norms))   # NaN wins, as in torch (Python's max keeps 5.0 over a later NaN)
    return float(sum(n ** norm_type for n in norms) ** (1.0 / norm_type))


def grad_norm_of(params: list[Parameter], norm_type: float) -> float:
    """The global ``norm_type`` norm of the gradients of ``params``: each class's `_grad_norm_many`, combined."""
    return combine_norms([float(cls._grad_norm_many(members, norm_type)) for cls, members in by_class(params)],
                         norm_type)


def numpy_grad_norm(params: list[Parameter], norm_type: float) -> float:
    """The norm of the gradients `_grad` reads (parameters without data or gradient left out), with NumPy:
    one BLAS dot per tensor in its own floating dtype (float64 for narrower ones), as torch's ``vector_norm``."""
    grads = [g for g in (p._grad() for p in params if p._state() == "initialized") if g is not None]
    if not grads:
        return 0.0
    if math.isinf(norm_type):
        return float(np.max([float(np.max(np.abs(g))) if g.size else 0.0 for g in grads]))   # NaN wins
    if norm_type == 2.0:
        total = 0.0
        for g in grads:
            flat = np.ravel(g)
            if flat.dtype.kind == "f" and flat.dtype.itemsize >= 4:
                total += float(np.dot(flat, flat))
            else:
                wide = flat.astype(np.float64)
                total += float(np.dot(wide, wide))
        return math.sqrt(total)
    total = sum(float(np.sum(np.abs(g.astype(np.float64)) ** norm_type)) for g in grads)
    return float(total ** (1.0 / norm_type))


def rewrite_grads(params: list[Parameter], change: Callable[[np.ndarray], np.ndarray]) -> None:
    """Write ``change(g)`` as the gradient of each of ``params`` that has one (`_grad`, then `_write_grad`);
    if one refuses, the gradients written are put back before the error propagates."""
    done: list[tuple[Parameter, np.ndarray]] = []
    try:
        for p in params:
            if p.state != "initialized":
                continue
            g = p.grad()
            if g is None:
                continue
            p._write_grad(np.asarray(change(g), order="C"))   # (np.ascontiguousarray makes a 0-d value 1-d)
            done.append((p, g))
    except BaseException:
        for p, g in reversed(done):
            try:
                p._write_grad(g)
            except Exception:  # noqa: BLE001 - restoring the others matters more than this one
                continue
        raise


def cast_each(casts: list[tuple[Parameter, np.dtype]]) -> Callable[[], None]:
    """Cast each parameter to its dtype with `_cast`; returns the function that casts them back.

    Values are copied first (a cast to a narrower dtype loses them) and written back on
    undo. If one refuses, the ones cast are put back before the error propagates.
    """
    done: list[tuple[Parameter, np.dtype, np.ndarray | None]] = []

    def undo() -> None:
        for p, old_dtype, old in reversed(done):
            try:
                p._cast(old_dtype)
                if old is not None:
                    p._write(old)
            except Exception:  # noqa: BLE001 - restoring the others matters more than this one
                continue

    try:
        for p, dtype in casts:
            old = p.numpy().copy() if p.state == "initialized" else None
            old_dtype = p.dtype
            p._cast(dtype)
            done.append((p, old_dtype, old))
    except BaseException:
        undo()
        raise
    return undo
