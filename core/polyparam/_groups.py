"""``pp.param_groups`` and ``pp.average``: optimizer groups by rule, and averages of models (EMA, soups)."""

from __future__ import annotations

import fnmatch
import functools
import re
import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from polyparam import errors
from polyparam._params.parameter import Parameter
from polyparam._params.plan import WritePlan, axes_order, bookkeeping, permuted, storage_groups
from polyparam._params.training import real_number, roles_of, trainable_flags
from polyparam._params.tree import ParameterCollection

__all__ = ["average", "param_groups"]

Rule = Any  # a glob on the path, "role:<role>", "kind:<kind>", a compiled regex, or a predicate on the Parameter


Entry = tuple[str, Parameter, str]   # (path, parameter, role)


def _split(rule: Rule, entries: list[Entry], aliases: Mapping[str, list[str]]) -> tuple[list[Entry], list[Entry]]:
    """``entries`` the rule chooses and the rest, each in model order (one comprehension per rule, no call per
    entry for the string and regex rules). A path rule also matches a tied parameter by any of its other paths
    (``aliases``, by first path), as ``tree.select`` does."""
    test: Callable[[str], bool] | None = None
    if isinstance(rule, re.Pattern):
        hits = [rule.search(e[0]) is not None for e in entries]
        test = lambda path: rule.search(path) is not None   # noqa: E731
    elif isinstance(rule, str) and rule.startswith("role:"):
        wanted = rule[5:]
        hits = [e[2] == wanted for e in entries]
    elif isinstance(rule, str) and rule.startswith("kind:"):
        wanted = rule[5:]
        hits = [e[1].kind == wanted for e in entries]
    elif isinstance(rule, str):
        match = re.compile(fnmatch.translate(rule)).match   # what fnmatchcase does, compiled once
        hits = [match(e[0]) is not None for e in entries]
        test = lambda path: match(path) is not None   # noqa: E731
    else:
        hits = [bool(rule(e[1])) for e in entries]
    if test is not None and aliases:
        hits = [hit or any(map(test, aliases.get(e[0], ()))) for e, hit in zip(entries, hits)]
    return [e for e, hit in zip(entries, hits) if hit], [e for e, hit in zip(entries, hits) if not hit]


def _tree(obj: Any) -> ParameterCollection:
    if isinstance(obj, ParameterCollection):
        return obj
    from polyparam._manager import tree

    return tree(obj)


def _aliases(t: ParameterCollection, items: list[tuple[str, Parameter]]) -> dict[str, list[str]]:
    """A tied parameter's other paths, by the path ``items()`` lists it under (empty for a model without ties)."""
    occurrences = t._occurrences()
    if len(occurrences) == len(items):
        return {}
    first = {p._identity(): path for path, p in items}
    aliases: dict[str, list[str]] = {}
    for path, p in occurrences:
        listed = first.get(p._identity())
        if listed is not None and listed != path:
            aliases.setdefault(listed, []).append(path)
    return aliases


def param_groups(model: Any, rules: Sequence[tuple[Rule, Mapping[str, Any]]], /, *,
                 default: Mapping[str, Any] | None = None, optimizer: Any = None) -> Any:
    """Optimizer parameter groups by rule, in the form the model's framework takes.

    Rules use the language of :class:`polyparam.init.Mixed`: a glob on the canonical path
    (``"*.bias"``), ``"role:bias"``, ``"kind:buffer"``, a compiled regex, or a predicate on
    the :class:`Parameter`; the first rule that matches a parameter chooses its group, the
    rest go to ``default`` (``{}`` when ``None``). Frozen parameters and buffers are left
    out, tied parameters appear once; a path rule matches a tied parameter by any of its
    paths (GPT-2's ``"lm_head.*"`` chooses the tied embedding), as ``tree.select`` does; a
    predicate gets the :class:`Parameter`, whose ``path`` is the tie's first path. A rule
    that matches nothing warns, and says so when an earlier rule took what it matches.

    Returns, per backend: torch a list of ``{"params": [...], **options}`` for
    ``torch.optim``; Keras the same with variables (and, given ``optimizer``, groups whose
    ``weight_decay`` is 0 passed to ``optimizer.exclude_from_weight_decay``); Gluon the
    ``{name: Parameter}`` a ``Trainer`` takes, with ``wd_mult``/``lr_mult`` set from the
    options ``weight_decay``/``lr_mult``/``wd_mult``.

    Raises:
        InvalidArgumentError: A rule that is not a (rule, options) pair, or options that are not a mapping.
    """
    pairs = []
    for item in rules:
        if not (isinstance(item, Sequence) and not isinstance(item, (str, bytes)) and len(item) == 2
                and isinstance(item[1], Mapping)
                and (isinstance(item[0], (str, re.Pattern)) or callable(item[0]))):
            msg = (f"Invalid rule for param_groups: expected a (rule, options) pair such as "
                   f"('role:bias', {{'weight_decay': 0.0}}), got {item!r}.")
            raise errors.InvalidArgumentError(msg, argument="rules", expected="(rule, options)", got=item)
        pairs.append((item[0], dict(item[1])))
    if default is not None and not isinstance(default, Mapping):
        msg = f"Invalid value for argument `default`: expected a mapping of options, got {default!r}."
        raise errors.InvalidArgumentError(msg, argument="default", expected="a mapping", got=default)
    t = _tree(model)
    items = t.items()
    # read each flag, kind and role once, the flags and roles in one bulk-hook call per parameter class
    flags = trainable_flags([p for _, p in items])
    chosen_items = [(path, p) for (path, p), flag in zip(items, flags) if flag and p._kind() == "parameter"]
    needs_roles = any(isinstance(rule, str) and rule.startswith("role:") for rule, _ in pairs)
    roles = roles_of([p for _, p in chosen_items]) if needs_roles else [""] * len(chosen_items)
    entries = rest = [(path, p, role) for (path, p), role in zip(chosen_items, roles)]
    aliases = _aliases(t, items)
    members: list[list[tuple[str, Parameter]]] = []
    for rule, _ in pairs:   # first match wins: each rule sees what the ones before left
        hit, rest = _split(rule, rest, aliases)
        members.append([(path, p) for path, p, _ in hit])
    members.append([(path, p) for path, p, _ in rest])
    for (rule, _), chosen in zip(pairs, members):
        if chosen:
            continue
        taken = [path for path, _, _ in _split(rule, entries, aliases)[0]]
        if taken:
            shown = ", ".join(repr(q) for q in taken[:3]) + (f" and {len(taken) - 3} more" if len(taken) > 3 else "")
            warnings.warn(f"param_groups rule {rule!r} chose no parameter: what it matches ({shown}) an earlier rule "
                          "took (the first rule that matches wins). Put it before that rule, or drop it.",
                          errors.PolyparamWarning, stacklevel=2)
        else:
            warnings.warn(f"param_groups rule {rule!r} matched no trainable parameter. Check it against "
                          "tree.paths().", errors.PolyparamWarning, stacklevel=2)
    options = [options for _, options in pairs] + [dict(default or {})]
    groups = [(opts, chosen) for opts, chosen in zip(options, members) if chosen]
    return t._param_groups(groups, optimizer)


def average(dst: Any, *sources: Any, decay: float | None = None) -> None:
    """Average models into ``dst``: an EMA step (``decay=``, one source) or the plain mean of the sources.

    ``pp.average(ema_model, model, decay=0.999)`` sets ``ema = decay * ema + (1 - decay) * model``;
    ``pp.average(soup, a, b, c)`` sets ``soup`` to the mean of ``a``, ``b`` and ``c``. Sources
    may be models of other frameworks with the same architecture (matched by canonical path,
    values in canonical layout). Computed in float64 (complex128 for complex ``dst``), written
    in ``dst``'s dtypes; integer tensors (counters) take the last source's value (``decay=1``
    keeps ``dst``'s: it changes nothing); a framework's own counter that some sources lack (a
    soup of torch and Keras models) is taken from the last source that has it, and kept where
    none has. Ties in ``dst`` are kept. All or nothing.

    Raises:
        InvalidArgumentError: No source, ``decay`` outside [0, 1], or ``decay`` with several sources.
        TransferError: A source lacks a path of ``dst`` or has another shape.
        TieMismatchError: A source gives one of ``dst``'s tie groups two different values.
    """
    if not sources:
        msg = "Cannot average: expected at least one source model, got none. Pass pp.average(dst, src, ...)."
        raise errors.InvalidArgumentError(msg, argument="sources", expected="one or more models", got=0)
    if decay is not None:
        decay = real_number(decay, "decay")
        if not 0 <= decay <= 1:
            msg = f"Invalid value for argument `decay`: expected a number in [0, 1], got {decay!r}."
            raise errors.InvalidArgumentError(msg, argument="decay", expected="0 <= decay <= 1", got=decay)
        if len(sources) != 1:
            msg = (f"Cannot average with decay: expected one source (an EMA step), got {len(sources)}. Drop "
                   "decay= for the plain mean of several models.")
            raise errors.InvalidArgumentError(msg, argument="decay", expected="one source", got=len(sources))
    d = _tree(dst)
    trees = [_tree(s) for s in sources]
    values = [{path: p for members in storage_groups(t).values() for path, p in members} for t in trees]
    plan = WritePlan("average")
    for members in storage_groups(d).values():
        path, target = members[0]
        holders = list(enumerate(values))
        if all(bookkeeping(q) for _, q in members):   # a framework's own counter: from the sources that have it
            holders = [(i, v) for i, v in holders if any(m in v for m, _ in members)]
            if not holders or (decay is not None and len(holders) < len(values)):
                continue
        found: list[tuple[Parameter, tuple[int, ...] | None]] = []
        for i, v in holders:
            held = [(m, v[m]) for m, _ in members if m in v]
            src = held[0][1] if held else None
            _require_one_value(path, i, held)
            order = None if src is None else axes_order(src, dict(members)[held[0][0]])   # a Conv1D into a Linear
            shape = None if src is None else tuple(src.shape if order is None else (src.shape[j] for j in order))
            if src is None or shape != tuple(target.shape):
                got = "nothing" if src is None else f"shape {tuple(src.shape)}"
                msg = (f"Cannot average into {path!r}: expected source {i} to hold it with shape "
                       f"{tuple(target.shape)}, got {got}. Average models of one architecture.")
                raise errors.TransferError(msg, path=path, expected=tuple(target.shape), got=got)
            found.append((src, order))
        plan.check_writable(path, target)
        plan.add(path, target, _combine(target, found, decay))
    plan.commit(description="average", progress=False)


def _require_one_value(path: str, index: int, held: list[tuple[str, Parameter]]) -> None:
    """Refuse a source that gives one of ``dst``'s tie groups different values under its paths, as transfer does."""
    distinct = list({q._identity(): (m, q) for m, q in held}.values())
    if len(distinct) < 2:
        return
    first_path, first = distinct[0]
    for other_path, other in distinct[1:]:
        if tuple(other.shape) == tuple(first.shape) and np.array_equal(other.numpy(), first.numpy()):
            continue
        msg = (f"Cannot average into the tie group of {path!r}: expected one value from source {index}, got different "
               f"tensors {first_path!r} and {other_path!r} (the source does not tie them). Tie them in the source "
               "(pp.tie), or average into an untied copy.")
        raise errors.TieMismatchError(msg, path=path, expected=first_path, got=other_path)


def _combine(target: Parameter, found: list[tuple[Parameter, tuple[int, ...] | None]],
             decay: float | None) -> Callable[[], np.ndarray]:
    """What ``average`` writes to ``target``: each source read in ``target``'s axes order (``found``: source, order)."""
    def read() -> np.ndarray:
        sources = [functools.partial(permuted, s, order) for s, order in found]
        if target.dtype.kind not in "fc" and "bfloat16" not in target.dtype.name:
            if decay == 1:   # an EMA step that keeps everything keeps the counters too
                return np.asarray(target.numpy())
            return np.asarray(sources[-1]()).astype(target.dtype)
        wide = np.dtype(np.complex128 if target.dtype.kind == "c" else np.float64)   # complex keeps its imaginary part
        if decay is not None:
            mixed = decay * target.numpy().astype(wide) + (1 - decay) * sources[0]().astype(wide)
        else:
            stacked: Any = [np.asarray(s(), dtype=wide) for s in sources]   # (NumPy's stubs: real or complex)
            mixed = np.mean(stacked, axis=0)
        return np.asarray(mixed).astype(target.dtype)

    return read
