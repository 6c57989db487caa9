"""Tie groups, and the one check of whether two parameters can share storage."""

from __future__ import annotations

from typing import Sequence

from polyparam._layout import format_shape
from polyparam._params.parameter import Parameter

__all__ = ["TieGroup", "tie_problem"]


def tie_problem(member: Parameter, anchor: Parameter) -> tuple[str, str] | None:
    """Why ``member`` cannot take ``anchor``'s storage, as ``(kind, what)``; ``None`` if it can.

    ``kind`` is ``"backend"``, ``"shape"``, ``"dtype"``, ``"device"`` or ``"refusal"`` (the
    backend's own :meth:`Parameter._tie_refusal`); ``what`` says it in words
    ("expected shape (8, 4), got (4, 8)"). ``pp.tie``, ``pp.load`` and ``pp.transfer``
    all ask this before their first write.
    """
    if type(member).backend != type(anchor).backend:
        return "backend", f"expected the {anchor.backend} backend, got {member.backend}"
    if member.shape != anchor.shape:
        return "shape", f"expected shape {format_shape(anchor.shape)}, got {format_shape(member.shape)}"
    if member.dtype != anchor.dtype:
        return "dtype", f"expected dtype {anchor.dtype.name!r}, got {member.dtype.name!r}"
    if member.device != anchor.device:
        return "device", f"expected device {anchor.device!r}, got {member.device!r}"
    refusal = member._tie_refusal(anchor)
    if refusal is not None:
        return "refusal", refusal.rstrip(".")
    return None


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
