"""Tied parameters: :class:`TieGroup` and :func:`tie`."""

from __future__ import annotations

from typing import Sequence

from polyparam import errors
from polyparam._parameter import Parameter, format_shape
from polyparam._tree import ParameterTree

__all__ = ["TieGroup", "tie"]


class TieGroup:
    """Parameters that share one storage: a write through one is seen through all,
    and their gradient is the sum of the gradients of every use.

    Attributes:
        paths: The canonical path of every member, in model order.
        members: The :class:`Parameter` of every member.
    """

    def __init__(self, members: Sequence[Parameter], /, *, paths: Sequence[str] | None = None) -> None:
        self.members = list(members)
        self.paths = list(paths) if paths is not None else [p.path for p in self.members]

    def untie(self) -> None:
        """Give every member but the first its own copy of the current value."""
        for member in self.members[1:]:
            if member.is_tied_to(self.members[0]):
                member._unshare()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TieGroup):
            return self.paths == other.paths
        if isinstance(other, (list, tuple)):
            return self.paths == list(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self.paths))

    def __repr__(self) -> str:
        return f"TieGroup({self.paths!r})"


def _pairs(objs: Sequence[Parameter | ParameterTree]) -> list[list[Parameter]]:
    if all(isinstance(o, Parameter) for o in objs):
        return [list(objs)]
    if not all(isinstance(o, ParameterTree) for o in objs):
        msg = (f"Cannot tie {[type(o).__name__ for o in objs]}: expected all Parameters or all blocks "
               "(ParameterTree), got a mix. Pass tree['1.weight'] with tree['2.weight'], or tree[1] with tree[2].")
        raise errors.TieError(msg, expected="Parameters or blocks", got=[type(o).__name__ for o in objs])
    layouts = []
    for block in objs:
        prefix = len(block.path) + 1 if block.path else 0
        layouts.append({path[prefix:]: p for path, p in block._occurrences()})
    first = layouts[0]
    for block, layout in zip(objs[1:], layouts[1:]):
        if set(layout) != set(first):
            msg = (f"Cannot tie block {objs[0].path!r} with {block.path!r}: expected the same parameters, "
                   f"got {sorted(first)} and {sorted(layout)}. Tie blocks of the same architecture, or tie parameters one by one.")
            raise errors.TieError(msg, path=block.path, expected=sorted(first), got=sorted(layout))
    if not first:
        msg = f"Cannot tie block {objs[0].path!r}: expected parameters to tie, got none."
        raise errors.TieError(msg, path=objs[0].path, expected="parameters", got=[])
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
        msg = f"Cannot tie {len(objs)} object(s): expected at least two, got {len(objs)}. Pass the parameters or blocks to tie."
        raise errors.TieError(msg, expected=">= 2", got=len(objs))
    groups = _pairs(objs)
    for group in groups:
        anchor = group[0]
        for member in group[1:]:
            if type(member).backend != type(anchor).backend:
                msg = (f"Cannot tie {member.path!r} to {anchor.path!r}: expected the {anchor.backend} backend, "
                       f"got {member.backend}. Move values across frameworks with pp.transfer instead.")
                raise errors.TieError(msg, path=member.path, expected=anchor.backend, got=member.backend)
            if member.shape != anchor.shape:
                msg = (f"Cannot tie {member.path!r} to {anchor.path!r}: expected shape {format_shape(anchor.shape)}, "
                       f"got {format_shape(member.shape)}. Tie parameters of the same shape.")
                raise errors.TieError(msg, path=member.path, expected=anchor.shape, got=member.shape)
            if member.dtype != anchor.dtype:
                msg = (f"Cannot tie {member.path!r} to {anchor.path!r}: expected dtype {anchor.dtype.name!r}, "
                       f"got {member.dtype.name!r}. Cast one of them first.")
                raise errors.TieError(msg, path=member.path, expected=anchor.dtype, got=member.dtype)
            if member.device != anchor.device:
                msg = (f"Cannot tie {member.path!r} to {anchor.path!r}: expected device {anchor.device!r}, "
                       f"got {member.device!r}. Move both to one device first.")
                raise errors.DeviceMismatchError(msg, path=member.path, expected=anchor.device, got=member.device)
            refusal = member._tie_refusal(anchor)
            if refusal is not None:
                msg = f"Cannot tie {member.path!r} to {anchor.path!r}: {refusal}"
                raise errors.TieError(msg, path=member.path, expected="a tie the backend can make", got=refusal)
    for group in groups:
        for member in group[1:]:
            if not member.is_tied_to(group[0]):
                member._share(group[0])
    return [TieGroup(group) for group in groups]
