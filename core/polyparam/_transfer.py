"""Moving parameter values between two models of the same architecture, in any frameworks."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np

from polyparam import errors
from polyparam._gc import collector_paused
from polyparam._layout import format_shape, is_floating
from polyparam._params.mapping import KeyMap, Rename
from polyparam._params.parameter import Parameter
from polyparam._params.plan import (
    SHOW_THE_LAYOUT,
    WritePlan,
    WrittenMemory,
    axes_order,
    bookkeeping,
    fit_problem,
    integer_codes,
    mismatch_message,
    permuted,
    refuse_doubtful_layouts,
    storage_groups,
)
from polyparam._params.tree import ParameterTree, subtree

__all__ = ["TransferReport", "transfer"]


@dataclass
class TransferReport:
    """What :func:`transfer` moved, or why it could not.

    Attributes:
        moved: Destination paths written (one per tie group).
        missing: Destination paths the source has no value for.
        unexpected: Source paths the destination has no parameter for.
        shapes: ``(path, source shape, destination shape)`` that differ.
        dtypes: ``(path, source dtype, destination dtype)`` that cannot be cast within their kind (an integer or
            boolean source into a floating destination is one: integer codes, such as a quantized kernel's).
        tied: Tie groups of the source made in the destination.
        checked: With ``check=``, the largest absolute output difference after the move.
        renamed: ``{source path: destination path}`` where a mapping or ``match="order"`` paired other names.
        ignored_buffers: A framework's bookkeeping buffers (kind ``buffer``, role ``other``, such as
            torch's ``num_batches_tracked``) only one side has: left as they are, not a difference.
    """

    source: str = ""
    destination: str = ""
    moved: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shapes: list[tuple[str, tuple[Any, ...], tuple[Any, ...]]] = field(default_factory=list)
    dtypes: list[tuple[str, str, str]] = field(default_factory=list)
    tied: list[list[str]] = field(default_factory=list)
    checked: float | None = None
    renamed: dict[str, str] = field(default_factory=dict)
    ignored_buffers: list[str] = field(default_factory=list)

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
        if self.ignored_buffers:
            lines.append(f"  left as they are:    {len(self.ignored_buffers)} buffers only one side has "
                         f"({', '.join(self.ignored_buffers[:3])}{', ...' if len(self.ignored_buffers) > 3 else ''})")
        if self.moved:
            lines.append(f"  moved {len(self.moved)} tensors" + (f", tied {self.tied}" if self.tied else ""))
        if self.checked is not None:
            lines.append(f"  outputs agree (max difference {self.checked:.3g})")
        return "\n".join(lines)


def _read_shared_sources_first(plan: WritePlan, sources_of: dict[str, list[Parameter]]) -> None:
    """Copy, before any write, each source value whose storage the transfer also writes.

    Two models can hold the same layers (a backbone in both, two layers swapped), or
    parameters over the same memory (``nn.Parameter(other.weight.detach())``): a write to
    one destination would then change a source another write still reads. Those values
    are read now, as ``load_state(src.state(copy=True))`` would read them.
    """
    written = {w.param._identity() for w in plan.writes}
    memory = WrittenMemory(plan)
    for w in plan.writes:
        source = sources_of[w.path][0]
        span = source._memory_span() if memory else None
        if source._identity() in written or (span is not None and memory.overlaps(span[0], span[1])):
            w.read = functools.partial(np.asarray, np.array(source.numpy(), copy=True))   # the copy made now
            w.source = None


def transfer(src: Any, dst: Any, /, *, strict: bool = True, match: Literal["path", "order"] = "path",
             rename: Rename | None = None, strip_prefix: str | None = None, add_prefix: str | None = None,
             root: str | None = None, ties: Literal["restore", "ignore"] = "restore", check: Any = None,
             tolerance: float = 1e-5, progress: bool | None = None) -> TransferReport:
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
        match: ``"path"`` pairs parameters by canonical path (after the mapping below);
            ``"order"`` pairs the i-th tensor of ``src`` with the i-th of ``dst`` in model
            order (a framework's own bookkeeping buffers aside), each pair of one role and
            shape, for models whose paths differ (activation modules counted in one model
            only). The first pair that does not fit is refused, naming both, before any write.
        rename: Regex rules or a callable applied to the source's paths first, as :func:`polyparam.load` maps keys.
        strip_prefix: Remove this prefix from the source's paths that have it.
        add_prefix: Put this prefix before every source path.
        root: Move into the block of ``dst`` at this path (``src`` paths are relative to it).
        ties: ``"restore"`` ties in ``dst`` what is tied in ``src``; ``"ignore"`` leaves ``dst``'s ties.
        check: Inputs to run both models on after the move (in inference mode): one input
            for both, or a pair ``(src_input, dst_input)`` where the frameworks expect
            different data layouts (NCHW and NHWC images). If any output differs by more
            than ``tolerance``, every value and tie written is restored and
            :class:`~polyparam.errors.TransferError` is raised.
        tolerance: The largest ``|a - b| / (1 + |a|)`` accepted per output element with ``check``.
        progress: Show a progress bar (``None``: on a terminal, for big trees).

    Returns:
        A :class:`TransferReport`; ``str(report)`` lists every difference.

    Raises:
        TransferError: The structures differ (with ``strict``); ``.report`` says how. Or, between
            two backends, a parameter's canonical layout cannot be established (a dense
            kernel after a flatten of unknown channel order); or, with ``check``, the
            outputs differ (nothing is changed).
        TieMismatchError: ``dst`` ties parameters whose values differ in ``src``, or
            ``src`` ties parameters ``dst`` cannot tie.
    """
    with collector_paused():   # see polyparam._gc
        from polyparam._manager import tree

        if match not in ("path", "order"):
            msg = f"Invalid value for argument `match`: expected 'path' or 'order'. Received: match={match!r}."
            raise errors.InvalidArgumentError(msg, argument="match", expected=("path", "order"), got=match)
        keymap = KeyMap.of(rename=rename, strip_prefix=strip_prefix, add_prefix=add_prefix, root=root)
        s, full = tree(src), tree(dst)
        d = cast("ParameterTree", subtree(full, root))
        report = TransferReport(source=s.backend, destination=d.backend)
        s_groups, d_groups = storage_groups(s), storage_groups(d)
        subject = f"{s.backend} parameters into {d.backend}"
        if match == "order":
            if keymap.active and root is None:
                msg = "Invalid arguments: match='order' pairs tensors by position; pass no rename or prefix with it."
                raise errors.InvalidArgumentError(msg, argument="match", expected="no rename", got=match)
            mapped = _pair_in_order(s_groups, d_groups, subject)
        else:
            mapped, _, _ = keymap.apply([q for members in s_groups.values() for q, _ in members], subject=subject)
        report.renamed = {q: new for q, new in mapped.items() if q != new}
        s_paths = {mapped[path]: p for members in s_groups.values() for path, p in members if path in mapped}
        d_paths = {path: key for key, members in d_groups.items() for path, _ in members}
        for path, p in s_paths.items():
            if path not in d_paths:
                (report.ignored_buffers if bookkeeping(p) else report.unexpected).append(path)
        for members in d_groups.values():
            if not any(q in s_paths for q, _ in members):
                kept = all(bookkeeping(p) for _, p in members)
                (report.ignored_buffers if kept else report.missing).append(members[0][0])
        plan = WritePlan(subject)
        sources_of: dict[str, list[Parameter]] = {}
        orders: dict[str, tuple[int, ...] | None] = {}    # destination path -> the axes permutation of its source
        for members in d_groups.values():
            given = [(q, s_paths[q]) for q, _ in members if q in s_paths]
            if not given:
                continue
            path, target = members[0]
            bad = False
            for q, p in given:
                order = axes_order(p, dict(members)[q])
                if orders.setdefault(path, order) != order:
                    order = orders[path] = None    # a tie's members in two layouts: the shape check decides
                shape = p.shape if order is None else tuple(p.shape[i] for i in order)
                problem = fit_problem(target, shape, p.dtype)
                if problem == "shape":
                    report.shapes.append((q, p.shape, target.shape))
                    bad = True
                elif (problem == "dtype" and not np.can_cast(p.dtype, target.dtype, casting="same_kind")) or (
                        integer_codes(p.dtype, target.dtype)):
                    report.dtypes.append((q, p.dtype.name, target.dtype.name))
                    bad = True
            if bad:
                continue
            plan.check_writable(path, target)
            sources = list({p._identity(): p for _, p in given}.values())
            order = orders[path]
            if order is None:
                plan.add(path, target, sources[0].numpy, source=sources[0])
            else:
                plan.add(path, target, functools.partial(permuted, sources[0], order))
            sources_of[path] = sources
        if strict and not report.ok:
            shown = [f"{path}: {format_shape(a)} -> {format_shape(b)}" for path, a, b in report.shapes[:5]]
            shown += [f"{path}: {a} -> {b}" for path, a, b in report.dtypes[:max(0, 5 - len(shown))]]
            differences = (f"{len(report.shapes)} shape and {len(report.dtypes)} dtype differences: "
                           f"{'; '.join(shown)}{' ...' if len(report.shapes) + len(report.dtypes) > 5 else ''}.")
            if report.missing or report.unexpected:
                msg = mismatch_message(f"Cannot transfer {s.backend} parameters to {d.backend}", report.missing,
                                       report.unexpected, source="source's paths", target="destination's paths",
                                       partial="strict=False")   # transfer has no allow_missing / ignore_extra
                if shown:
                    msg += f" Also {differences}"
            else:   # every path pairs: the paths are not the problem, and renaming is not the fix
                msg = (f"Cannot transfer {s.backend} parameters to {d.backend}: expected each value to fit the "
                       f"parameter of the same path (its shape, a dtype of its kind), got {differences} Build the "
                       "destination with the source's architecture and dtypes, or pass strict=False to move the "
                       "rest.")
            if any(integer_codes(np.dtype(a), np.dtype(b)) for _, a, b in report.dtypes):
                msg += (" Integer values are not moved into floating parameters: they are codes (a quantized kernel,"
                        " whose scale is a separate tensor), not the values; dequantize the source first.")
            msg += " str(error.report) lists every difference."
            first = (report.missing or report.unexpected or [x[0] for x in report.shapes]
                     or [x[0] for x in report.dtypes])
            raise errors.TransferError(msg, path=first[0], expected=d.backend, got=s.backend, report=report)
        if not strict and not report.ok:
            differences = (f"{len(report.missing)} missing, {len(report.unexpected)} unexpected, {len(report.shapes)} "
                           f"shape and {len(report.dtypes)} dtype differences")
            if not plan.writes:
                msg = (f"Cannot transfer {s.backend} parameters to {d.backend}: expected at least one path to match, "
                       f"got none ({differences}). The two models name their parameters differently; compare "
                       "tree.paths() on both sides.")
                first = (report.missing or report.unexpected or [x[0] for x in report.shapes] or [""])
                raise errors.TransferError(msg, path=first[0], expected="a matching path", got=differences,
                                           report=report)
            warnings.warn(f"Transferring {len(plan.writes)} values from {s.backend} to {d.backend}; left out: "
                          f"{differences} (str(report) lists them).", errors.PolyparamWarning, stacklevel=2)

        if ties == "restore":
            for members in s_groups.values():   # the source's tie groups (s.ties(), without walking it again)
                if len(members) < 2:
                    continue
                present = [mapped[q] for q, _ in members if mapped.get(q) in d_paths]
                identities = list(dict.fromkeys(d_paths[q] for q in present))
                if len(identities) > 1:
                    plan.add_tie([d_groups[i][0] for i in identities],
                                 fix="Pass ties='ignore' to move the values without the tie.")
            if plan.ties:
                from polyparam._manager import get_backend

                plan.require_tying(d.backend, get_backend(d.backend).CAPABILITIES, fix="Pass ties='ignore'.")
        for path, sources in sources_of.items():
            if len(sources) > 1:
                values = [permuted(p, orders[path]) for p in sources]
                if not all(np.array_equal(v, values[0]) for v in values[1:]):
                    msg = (f"Cannot transfer into tied parameter {path!r}: expected one source value for its tie "
                           f"group, got {len(sources)} different ones. Untie the destination first, or tie the "
                           "source.")
                    raise errors.TieMismatchError(msg, path=path, expected="equal values", got="different values")

        _refuse_doubtful_layouts(s, d, [(w.path, w.param) for w in plan.writes], sources_of)
        _read_shared_sources_first(plan, sources_of)
        if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or not tolerance >= 0:
            msg = f"Invalid value for argument `tolerance`: expected a number >= 0, got {tolerance!r}."
            raise errors.InvalidArgumentError(msg, argument="tolerance", expected=">= 0", got=tolerance)
        verify = None
        if check is not None:
            x_src, x_dst = check if isinstance(check, tuple) and len(check) == 2 else (check, check)
            expected = _outputs(s, x_src, "source")
            if not any(np.isfinite(a).any() for _, a in expected):
                # NaN in the same place agree: such outputs would pass any destination
                msg = (f"Cannot check the transfer: expected the source {s.backend} model to give a finite output on "
                       "the check input, got no finite value (all NaN or infinite), which any destination would "
                       "match. Nothing was changed. Pass an input on which the source gives finite outputs.")
                raise errors.TransferError(msg, path=None, expected="a finite output", got="no finite value")

            def verify() -> None:
                report.checked = _compare(s, d, expected, _outputs(d, x_dst, "destination"), tolerance, report)

        plan.commit(description=f"transfer {s.backend} -> {d.backend}", progress=progress, stacklevel=3,
                    tie_source="the source model",
                    on_written=report.moved.append, on_tied=report.tied.append, verify=verify)
        return report


def _pair_in_order(s_groups: dict[Any, list[tuple[str, Parameter]]], d_groups: dict[Any, list[tuple[str, Parameter]]],
                   subject: str) -> dict[str, str]:
    """``{source path: destination path}`` pairing tensors in model order; refuses the first pair that does not fit."""
    def order(groups: dict[Any, list[tuple[str, Parameter]]]) -> list[tuple[str, Parameter]]:
        return [members[0] for members in groups.values() if not all(bookkeeping(p) for _, p in members)]

    s_order, d_order = order(s_groups), order(d_groups)
    for i, ((s_path, p), (d_path, q)) in enumerate(zip(s_order, d_order)):
        if p.role != q.role or len(p.shape) != len(q.shape) or any(
                a is not None and b is not None and a != b for a, b in zip(p.shape, q.shape)):
            msg = (f"Cannot transfer {subject} in model order: expected tensor {i} of both to have one role and "
                   f"shape, got {s_path!r} ({p.role}, {format_shape(p.shape)}) and {d_path!r} ({q.role}, "
                   f"{format_shape(q.shape)}). Nothing was changed. The models differ there: map the paths with "
                   "rename= instead.")
            raise errors.TransferError(msg, path=d_path, expected=f"{p.role} {format_shape(p.shape)}",
                                       got=f"{q.role} {format_shape(q.shape)}")
    if len(s_order) != len(d_order):
        longer, n = ("source", len(s_order)) if len(s_order) > len(d_order) else ("destination", len(d_order))
        first = (s_order if longer == "source" else d_order)[min(len(s_order), len(d_order))][0]
        msg = (f"Cannot transfer {subject} in model order: expected as many tensors on both sides, got "
               f"{len(s_order)} and {len(d_order)}; the {longer} has {n - min(len(s_order), len(d_order))} more, "
               f"from {first!r}. Nothing was changed.")
        raise errors.TransferError(msg, path=first, expected=len(d_order), got=len(s_order))
    mapped = {s_path: d_path for (s_path, _), (d_path, _) in zip(s_order, d_order)}
    # a framework's bookkeeping buffers pair among themselves, when both sides have as many of one shape each
    s_books = [m[0] for m in s_groups.values() if all(bookkeeping(p) for _, p in m)]
    d_books = [m[0] for m in d_groups.values() if all(bookkeeping(p) for _, p in m)]
    fits = all(tuple(p.shape) == tuple(q.shape) for (_, p), (_, q) in zip(s_books, d_books))
    if len(s_books) == len(d_books) and fits:
        mapped.update({s_path: d_path for (s_path, _), (d_path, _) in zip(s_books, d_books)})
    # other members of a source tie group are not paired: the destination keeps its own ties
    return mapped


def _refuse_doubtful_layouts(s: ParameterTree, d: ParameterTree, writes: list[tuple[str, Parameter]],
                             sources_of: dict[str, list[Parameter]]) -> None:
    """Refuse, before any write, a move between frameworks of a value whose canonical layout is in doubt.

    Within one backend the native order round-trips whatever the doubt, so nothing is refused (nor asked).
    """
    if s.backend == d.backend:
        return
    moves: list[tuple[str, Parameter | None, str | None]] = []
    for path, target in writes:
        moves.append((f"destination parameter {target.path!r}", target, None))
        moves.extend((f"source parameter {q.path!r}", q, None) for q in sources_of[path])
    refuse_doubtful_layouts(moves, what=f"Cannot transfer {s.backend} parameters to {d.backend}",
                            fix=f"{SHOW_THE_LAYOUT}, or transfer within one framework.")


def _flat_outputs(value: Any, where: str = "output") -> list[tuple[str, np.ndarray]]:
    """``(where, array)`` for every tensor of a nest of outputs: mappings by sorted key, sequences in order.

    ``None`` is skipped; anything that is not numeric is refused, so a check never passes
    by comparing nothing.
    """
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [a for k in sorted(value, key=str) for a in _flat_outputs(value[k], f"{where}[{k!r}]")]
    if isinstance(value, (list, tuple)):
        return [a for i, v in enumerate(value) for a in _flat_outputs(v, f"{where}[{i}]")]
    array = np.asarray(value)
    if array.dtype.kind not in "fbiuc" and not is_floating(array.dtype):   # bfloat16 outputs are compared too
        msg = (f"Cannot check the transfer: expected outputs made of tensors, got {type(value).__name__} at {where}. "
               "Nothing was changed. Check a model (or wrapper) whose forward returns arrays, dicts or tuples of them.")
        raise errors.TransferError(msg, path=None, expected="tensors", got=type(value).__name__)
    return [(where, array)]


def _outputs(t: ParameterTree, inputs: Any, side: str) -> list[tuple[str, np.ndarray]]:
    """The outputs of ``t`` on ``inputs``; buffers the forward changes (a counter) are put back afterwards."""
    buffers = [(p, p.numpy().copy()) for _, p in t.items() if p.kind != "parameter" and p.state == "initialized"]
    try:
        out = t._forward(inputs)
    except errors.PolyparamError:
        raise
    except Exception as exc:
        msg = (f"Cannot check the transfer: expected the {side} {t.backend} model to run on the check input, got "
               f"{type(exc).__name__}: {exc}. Nothing was changed. Pass an input the model accepts (a pair "
               "(src_input, dst_input) when the frameworks expect different layouts; ((a, b), (a, b)) for a "
               "model of two inputs).")
        raise errors.TransferError(msg, path=None, expected="a model that runs on the input",
                                   got=f"{type(exc).__name__}: {exc}") from exc
    finally:
        for p, value in buffers:
            if not np.array_equal(p.numpy(), value, equal_nan=value.dtype.kind in "fc"):
                p._write(value)
    arrays = _flat_outputs(out)
    if not arrays:
        msg = (f"Cannot check the transfer: expected the {side} {t.backend} model to return a tensor, got none. "
               "Nothing was changed.")
        raise errors.TransferError(msg, path=None, expected="at least one output tensor", got="none")
    return [(where, a.astype(np.complex128 if a.dtype.kind == "c" else np.float64)) for where, a in arrays]


def _compare(s: ParameterTree, d: ParameterTree, expected: list[tuple[str, np.ndarray]],
             got: list[tuple[str, np.ndarray]], tolerance: float, report: TransferReport) -> float:
    shapes_e = [(w, a.shape) for w, a in expected]
    shapes_g = [(w, a.shape) for w, a in got]
    if shapes_e != shapes_g:
        msg = (f"Cannot check the transfer {s.backend} -> {d.backend}: expected outputs of the same structure and "
               f"shapes, got {shapes_e[:4]} from the source and {shapes_g[:4]} from the destination. Nothing was "
               "changed. Check models whose outputs have the same layout (e.g. the classifier head, not an NHWC "
               "feature map).")
        raise errors.TransferError(msg, path=None, expected=str(shapes_e[:4]), got=str(shapes_g[:4]), report=report)
    worst, largest, where = 0.0, 0.0, None
    for (name, a), (_, b) in zip(expected, got):
        if a.size == 0:
            continue
        same = (a == b) | (np.isnan(a) & np.isnan(b))   # equal infinities and NaN in the same place agree
        with np.errstate(invalid="ignore", over="ignore"):
            delta = np.where(same, 0.0, np.abs(a - b))
            rel = np.where(same, 0.0, delta / (1.0 + np.abs(a)))
        rel = np.nan_to_num(rel, nan=np.inf, posinf=np.inf)
        delta = np.nan_to_num(delta, nan=np.inf, posinf=np.inf)
        k = int(np.argmax(rel))
        largest = max(largest, float(np.max(delta)))
        if rel.flat[k] > worst or where is None:
            worst, where = float(rel.flat[k]), (name, np.unravel_index(k, a.shape), a.flat[k], b.flat[k])
    if worst > tolerance and where is not None:
        name, index, a_value, b_value = where
        msg = (f"Cannot transfer {s.backend} parameters to {d.backend}: expected equal outputs on the check input "
               f"(within {tolerance:g}), got {name} at index {tuple(int(j) for j in index)} = {b_value:.6g} "
               f"where the source gives {a_value:.6g} (max difference {largest:.3g}). Nothing was changed (every "
               "value written was restored). The models compute different functions: a layer whose layout differs "
               "between the frameworks, or a different architecture; compare layer by layer.")
        raise errors.TransferError(msg, path=None, expected=f"outputs within {tolerance:g}",
                                   got=f"max difference {largest:.3g}", report=report)
    return largest
