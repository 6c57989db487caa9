"""Moving parameter values between two models of the same architecture, in any frameworks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from polyparam import errors
from polyparam._parameter import Parameter, format_shape
from polyparam._tree import storage_groups

__all__ = ["TransferReport", "transfer"]


@dataclass
class TransferReport:
    """What :func:`transfer` moved, or why it could not.

    Attributes:
        moved: Destination paths written (one per tie group).
        missing: Destination paths the source has no value for.
        unexpected: Source paths the destination has no parameter for.
        shapes: ``(path, source shape, destination shape)`` that differ.
        dtypes: ``(path, source dtype, destination dtype)`` that cannot be cast within their kind.
        tied: Tie groups of the source made in the destination.
    """

    source: str = ""
    destination: str = ""
    moved: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shapes: list[tuple[str, tuple[Any, ...], tuple[Any, ...]]] = field(default_factory=list)
    dtypes: list[tuple[str, str, str]] = field(default_factory=list)
    tied: list[list[str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the two structures match."""
        return not (self.missing or self.unexpected or self.shapes or self.dtypes)

    def __str__(self) -> str:
        lines = [f"transfer {self.source} -> {self.destination}: "
                 + ("structures match" if self.ok else "structures differ")]
        for path in self.missing:
            lines.append(f"  only in destination: {path}")
        for path in self.unexpected:
            lines.append(f"  only in source:      {path}")
        for path, s, d in self.shapes:
            lines.append(f"  shape differs:       {path}: {format_shape(s)} -> {format_shape(d)}")
        for path, s, d in self.dtypes:
            lines.append(f"  dtype differs:       {path}: {s} -> {d}")
        if self.moved:
            lines.append(f"  moved {len(self.moved)} tensors" + (f", tied {self.tied}" if self.tied else ""))
        return "\n".join(lines)


def transfer(src: Any, dst: Any, /, *, strict: bool = True,
             ties: Literal["restore", "ignore"] = "restore", progress: bool | None = None) -> TransferReport:
    """Copy every parameter value of ``src`` into ``dst``, matched by canonical path.

    The models may come from different frameworks: values leave ``src`` in canonical
    layout and each adapter converts them to its own. Everything is checked before
    the first write; values then move one tensor at a time (peak extra memory: about
    one tensor). Tie groups of ``src`` are made in ``dst`` (``ties="restore"``).

    Args:
        src: The model (or tree) to read.
        dst: The model (or tree) to write.
        strict: Refuse when the structures differ (any path only on one side, or a
            shape or dtype kind that differs); otherwise move what matches.
        ties: ``"restore"`` ties in ``dst`` what is tied in ``src``; ``"ignore"`` leaves ``dst``'s ties.
        progress: Show a progress bar (``None``: on a terminal, for big trees).

    Returns:
        A :class:`TransferReport`; ``str(report)`` lists every difference.

    Raises:
        TransferError: The structures differ (with ``strict``); ``.report`` says how.
        TieMismatchError: ``dst`` ties parameters whose values differ in ``src``, or
            ``src`` ties parameters ``dst`` cannot tie.
    """
    import polyparam

    s, d = polyparam.tree(src), polyparam.tree(dst)
    report = TransferReport(source=s.backend, destination=d.backend)
    s_groups, d_groups = storage_groups(s), storage_groups(d)
    s_paths = {path: p for members in s_groups.values() for path, p in members}
    d_paths = {path: key for key, members in d_groups.items() for path, _ in members}
    report.unexpected = [path for path in s_paths if path not in d_paths]
    report.missing = [path for path in (m[0][0] for m in d_groups.values())
                      if not any(q in s_paths for q, _ in d_groups[d_paths[path]])]
    plan: list[tuple[str, Parameter, list[Parameter]]] = []
    for members in d_groups.values():
        given = [(q, s_paths[q]) for q, _ in members if q in s_paths]
        if not given:
            continue
        path, target = members[0]
        sources = list({p._identity(): p for _, p in given}.values())
        bad = False
        for q, p in given:
            shape, target_shape = p.shape, target.shape
            if len(shape) != len(target_shape) or any(t is not None and t != g for t, g in zip(target_shape, shape)):
                report.shapes.append((q, shape, target_shape))
                bad = True
            elif p.dtype != target.dtype and not np.can_cast(p.dtype, target.dtype, casting="same_kind"):
                report.dtypes.append((q, p.dtype.name, target.dtype.name))
                bad = True
        if not bad and target.state == "deferred" and not target._accepts_deferred_value():
            target._require_data(f"transfer {path!r} into")
        if not bad:
            plan.append((path, target, sources))
    if strict and not report.ok:
        msg = (f"Cannot transfer {s.backend} parameters to {d.backend}: expected the same architecture, got "
               f"{len(report.missing)} missing, {len(report.unexpected)} unexpected, {len(report.shapes)} shape and "
               f"{len(report.dtypes)} dtype differences:\n{report}\nPass strict=False to move what matches.")
        first = (report.missing or report.unexpected or [x[0] for x in report.shapes] or [x[0] for x in report.dtypes])
        raise errors.TransferError(msg, path=first[0], expected=d.backend, got=s.backend, report=report)

    to_tie: list[list[tuple[str, Parameter]]] = []
    if ties == "restore":
        for group in s.ties():
            present = [q for q in group.paths if q in d_paths]
            identities = list(dict.fromkeys(d_paths[q] for q in present))
            if len(identities) > 1:
                to_tie.append([d_groups[i][0] for i in identities])
        if to_tie:
            from polyparam._manager import get_backend

            if "tying" not in get_backend(d.backend).CAPABILITIES:
                msg = (f"Cannot transfer ties {[[q for q, _ in g] for g in to_tie]} to the {d.backend} backend: "
                       f"expected a backend that can tie, got one that cannot. Pass ties='ignore'.")
                raise errors.TieMismatchError(msg, path=to_tie[0][0][0], expected="tying", got=d.backend)
            for anchors in to_tie:
                first_path, first = anchors[0]
                for q, member in anchors[1:]:
                    if member.shape != first.shape or member.dtype != first.dtype or member.device != first.device:
                        msg = (f"Cannot tie {q!r} to {first_path!r} in the destination as in the source: expected "
                               f"shape {format_shape(first.shape)} {first.dtype.name} on {first.device}, got "
                               f"{format_shape(member.shape)} {member.dtype.name} on {member.device}.")
                        raise errors.TieMismatchError(msg, path=q, expected=first.shape, got=member.shape)
                    refusal = member._tie_refusal(first)
                    if refusal is not None:
                        msg = (f"Cannot tie {q!r} to {first_path!r} in the destination as in the source: {refusal} "
                               "Pass ties='ignore' to move the values without the tie.")
                        raise errors.TieMismatchError(msg, path=q, expected="a tie the backend can make", got=refusal)
    for path, target, sources in plan:
        if len(sources) > 1:
            values = [p.numpy() for p in sources]
            if not all(np.array_equal(v, values[0]) for v in values[1:]):
                msg = (f"Cannot transfer into tied parameter {path!r}: expected one source value for its tie group, "
                       f"got {len(sources)} different ones. Untie the destination first, or tie the source.")
                raise errors.TieMismatchError(msg, path=path, expected="equal values", got="different values")

    from polyparam._tie import tie

    for anchors in to_tie:
        tie(*[p for _, p in anchors])
        report.tied.append([q for q, _ in anchors])
    from polyparam._progress import track

    for path, target, sources in track(plan, description=f"transfer {s.backend} -> {d.backend}", progress=progress,
                                       weight=lambda item: item[1].nbytes):
        target._commit(sources[0].numpy())
        report.moved.append(path)
    return report
