"""``pp.tie``: tie parameters, or every parameter of blocks of one architecture, after construction."""

from __future__ import annotations

from typing import Sequence

from polyparam import errors
from polyparam._params.parameter import Parameter
from polyparam._params.ties import TieGroup, tie_problem
from polyparam._params.tree import ParameterTree

__all__ = ["TieGroup", "tie"]


def _pairs(objs: Sequence[Parameter | ParameterTree]) -> list[list[Parameter]]:
    params = [o for o in objs if isinstance(o, Parameter)]
    if len(params) == len(objs):
        return [params]
    blocks = [o for o in objs if isinstance(o, ParameterTree)]
    if len(blocks) != len(objs):
        msg = (f"Cannot tie {[type(o).__name__ for o in objs]}: expected all Parameters or all blocks "
               "(ParameterTree), got a mix. Pass tree['1.weight'] with tree['2.weight'], or tree[1] with tree[2].")
        raise errors.TieError(msg, expected="Parameters or blocks", got=[type(o).__name__ for o in objs])
    layouts = []
    for block in blocks:
        prefix = len(block.path) + 1 if block.path else 0
        layouts.append({path[prefix:]: p for path, p in block._occurrences()})
    first = layouts[0]
    for block, layout in zip(blocks[1:], layouts[1:]):
        if set(layout) != set(first):
            msg = (f"Cannot tie block {blocks[0].path!r} with {block.path!r}: expected the same parameters, "
                   f"got {sorted(first)} and {sorted(layout)}. "
                   "Tie blocks of the same architecture, or tie parameters one by one.")
            raise errors.TieError(msg, path=block.path, expected=sorted(first), got=sorted(layout))
    if not first:
        msg = f"Cannot tie block {blocks[0].path!r}: expected parameters to tie, got none."
        raise errors.TieError(msg, path=blocks[0].path, expected="parameters", got=[])
    return [[layout[name] for layout in layouts] for name in first]


def tie(*objs: Parameter | ParameterTree) -> list[TieGroup]:
    """Tie parameters (or every parameter of blocks of the same architecture) after construction.

    The members take the first argument's value and storage. Works on every backend,
    also where the framework has no API for it. All checks run before the first tie.

    Returns:
        One :class:`TieGroup` per tied parameter.

    Raises:
        TieError: Fewer than two objects, different backends, shapes, dtypes or parameter sets.
        DeviceMismatchError: Members live on different devices.
    """
    if len(objs) < 2:
        msg = (f"Cannot tie {len(objs)} object(s): expected at least two, got {len(objs)}. "
               "Pass the parameters or blocks to tie.")
        raise errors.TieError(msg, expected=">= 2", got=len(objs))
    groups = _pairs(objs)
    for group in groups:
        anchor = group[0]
        for member in group[1:]:
            if member is anchor or (member.path == anchor.path and member._identity() == anchor._identity()):
                msg = (f"Cannot tie {member.path!r} to itself: expected different parameters, got the same one "
                       "twice. Pass each parameter (or block) once.")
                raise errors.TieError(msg, path=member.path, expected="different parameters", got=member.path)
            problem = tie_problem(member, anchor)
            if problem is None:
                continue
            kind, what = problem
            fix = {"backend": "Move values across frameworks with pp.transfer instead.",
                   "shape": "Tie parameters of the same shape.", "dtype": "Cast one of them first.",
                   "device": "Move both to one device first."}.get(kind, "")
            msg = f"Cannot tie {member.path!r} to {anchor.path!r}: {what}. {fix}".rstrip()
            error = errors.DeviceMismatchError if kind == "device" else errors.TieError
            expected, got = _expected_got(kind, member, anchor)
            raise error(msg, path=member.path, expected=expected, got=got)
    for group in groups:
        for member in group[1:]:
            if not member.is_tied_to(group[0]):
                member._share(group[0])
    return [TieGroup(group) for group in groups]


def _expected_got(kind: str, member: Parameter, anchor: Parameter) -> tuple[object, object]:
    if kind == "refusal":
        return "a tie the backend can make", member._tie_refusal(anchor)
    attr = {"backend": "backend", "shape": "shape", "dtype": "dtype", "device": "device"}[kind]
    return getattr(anchor, attr), getattr(member, attr)
