"""Moving parameter values between two models of the same architecture, in any frameworks."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from polyparam import errors
from polyparam._layout import format_shape
from polyparam._params.parameter import Parameter
from polyparam._params.plan import WritePlan, fit_problem, storage_groups

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
        for path, s_dtype, d_dtype in self.dtypes:
            lines.append(f"  dtype differs:       {path}: {s_dtype} -> {d_dtype}")
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
    from polyparam._manager import tree

    s, d = tree(src), tree(dst)
    report = TransferReport(source=s.backend, destination=d.backend)
    s_groups, d_groups = storage_groups(s), storage_groups(d)
    s_paths = {path: p for members in s_groups.values() for path, p in members}
    d_paths = {path: key for key, members in d_groups.items() for path, _ in members}
    report.unexpected = [path for path in s_paths if path not in d_paths]
    report.missing = [path for path in (m[0][0] for m in d_groups.values())
                      if not any(q in s_paths for q, _ in d_groups[d_paths[path]])]
    plan = WritePlan(f"{s.backend} parameters into {d.backend}")
    sources_of: dict[str, list[Parameter]] = {}
    for members in d_groups.values():
        given = [(q, s_paths[q]) for q, _ in members if q in s_paths]
        if not given:
            continue
        path, target = members[0]
        bad = False
        for q, p in given:
            problem = fit_problem(target, p.shape, p.dtype)
            if problem == "shape":
                report.shapes.append((q, p.shape, target.shape))
                bad = True
            elif problem == "dtype" and not np.can_cast(p.dtype, target.dtype, casting="same_kind"):
                report.dtypes.append((q, p.dtype.name, target.dtype.name))
                bad = True
        if bad:
            continue
        plan.check_writable(path, target)
        sources = list({p._identity(): p for _, p in given}.values())
        plan.add(path, target, sources[0].numpy)
        sources_of[path] = sources
    if strict and not report.ok:
        msg = (f"Cannot transfer {s.backend} parameters to {d.backend}: expected the same architecture, got "
               f"{len(report.missing)} missing, {len(report.unexpected)} unexpected, {len(report.shapes)} shape and "
               f"{len(report.dtypes)} dtype differences:\n{report}\nPass strict=False to move what matches.")
        first = (report.missing or report.unexpected or [x[0] for x in report.shapes] or [x[0] for x in report.dtypes])
        raise errors.TransferError(msg, path=first[0], expected=d.backend, got=s.backend, report=report)
    if not strict and not report.ok:
        differences = (f"{len(report.missing)} missing, {len(report.unexpected)} unexpected, {len(report.shapes)} "
                       f"shape and {len(report.dtypes)} dtype differences")
        if not plan.writes:
            msg = (f"Cannot transfer {s.backend} parameters to {d.backend}: expected at least one path to match, "
                   f"got none ({differences}). The two models name their parameters differently; compare "
                   "tree.paths() on both sides.")
            first = (report.missing or report.unexpected or [x[0] for x in report.shapes] or [""])
            raise errors.TransferError(msg, path=first[0], expected="a matching path", got=differences, report=report)
        warnings.warn(f"Transferring {len(plan.writes)} values from {s.backend} to {d.backend}; left out: "
                      f"{differences} (str(report) lists them).", errors.PolyparamWarning, stacklevel=2)

    if ties == "restore":
        for group in s.ties():
            present = [q for q in group.paths if q in d_paths]
            identities = list(dict.fromkeys(d_paths[q] for q in present))
            if len(identities) > 1:
                plan.add_tie([d_groups[i][0] for i in identities],
                             fix="Pass ties='ignore' to move the values without the tie.")
        if plan.ties:
            from polyparam._manager import get_backend

            plan.require_tying(d.backend, get_backend(d.backend).CAPABILITIES, fix="Pass ties='ignore'.")
    for path, sources in sources_of.items():
        if len(sources) > 1:
            values = [p.numpy() for p in sources]
            if not all(np.array_equal(v, values[0]) for v in values[1:]):
                msg = (f"Cannot transfer into tied parameter {path!r}: expected one source value for its tie group, "
                       f"got {len(sources)} different ones. Untie the destination first, or tie the source.")
                raise errors.TieMismatchError(msg, path=path, expected="equal values", got="different values")

    plan.commit(description=f"transfer {s.backend} -> {d.backend}", progress=progress,
                on_written=report.moved.append, on_tied=report.tied.append)
    return report
