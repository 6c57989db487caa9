"""Check, then commit: the one planner of every multi-parameter write.

``load_state``, ``pp.load``, the sharded load and ``pp.transfer`` each build a
:class:`WritePlan`: they group the model's parameters by storage
(:func:`storage_groups`), match keys (:func:`check_keys`), check that each value fits
its parameter (:meth:`WritePlan.check_fit`) and that each tie the source records can
be made (:meth:`WritePlan.add_tie`, through :func:`~polyparam._params.ties.tie_problem`,
the check ``pp.tie`` makes too). Only then does :meth:`WritePlan.commit` tie and
write, every value through :meth:`Parameter._commit`.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterable

import numpy as np

from polyparam import errors
from polyparam._layout import Shape, format_shape, is_floating
from polyparam._params.bulk import by_class
from polyparam._params.journal import Journal, exclusive_writes
from polyparam._params.parameter import Parameter, byte_bounds
from polyparam._params.ties import tie_problem

if TYPE_CHECKING:
    from polyparam._params.tree import ParameterCollection

__all__ = ["SHOW_THE_LAYOUT", "LoadReport", "WritePlan", "axes_order", "bookkeeping", "check_keys", "check_partial",
           "integer_codes", "layout_doubts", "permuted", "refuse_doubtful_layouts", "resolve_keys", "same_value",
           "storage_groups"]

Groups = dict[Any, list[tuple[str, Parameter]]]


def storage_groups(collection: ParameterCollection) -> Groups:
    """Every (path, parameter) pair grouped by storage: a tie group per key, in model order."""
    groups: Groups = {}
    for path, p in collection._occurrences():
        groups.setdefault(p._identity(), []).append((path, p))
    return groups


def layout_doubts(params: list[Parameter]) -> list[str | None]:
    """The layout doubt of each of ``params`` (:meth:`Parameter._layout_doubt`), through the bulk hook of each
    class, in the order of ``params``."""
    found: dict[int, str | None] = {}
    for cls, members in by_class(params):
        found.update(zip(map(id, members), cls._layout_doubts_many(members)))
    return [found[id(p)] for p in params]


# the fix that a refused layout doubt shares, wherever it is refused
SHOW_THE_LAYOUT = ("Build the model so its structure shows the layout (in Keras, a Flatten layer right before the "
                   "Dense layer in a Sequential or functional model)")


def refuse_doubtful_layouts(moves: list[tuple[str, Parameter | None, str | None]], *, what: str, fix: str) -> None:
    """Refuse, before any write, a value moved between frameworks whose canonical layout is in doubt.

    ``moves`` are ``(description, parameter, recorded doubt)``: a parameter's own doubt is asked (all of them
    at once, through the bulk hook) where one is given, and a doubt recorded elsewhere (by the model that saved
    a file) counts as well. ``what`` starts the message ("Cannot transfer torch parameters to keras"), ``fix``
    ends it.
    """
    asked = [p for _, p, _ in moves if p is not None]
    own = dict(zip(map(id, asked), layout_doubts(asked)))
    for where, p, recorded in moves:
        doubt = recorded or (own[id(p)] if p is not None else None)
        if doubt:
            path = p.path if p is not None else None
            msg = (f"{what}: expected a known canonical layout for {where}, got a doubt: {doubt} Nothing was "
                   f"changed. {fix}")
            raise errors.TransferError(msg, path=path, expected="a known canonical layout", got=doubt)


@dataclass
class LoadReport:
    """What a load (:func:`polyparam.load`, ``tree.load_state``) did.

    Attributes:
        loaded: Paths written (one per tie group of the model).
        missing: Model paths the file had no value for (only with ``strict=False``).
        unexpected: File paths the model has no parameter for (only with ``strict=False``).
        tied: Tie groups restored from the file (paths).
        ignored_buffers: A framework's bookkeeping buffers (kind ``buffer``, role ``other``, such as
            torch's ``num_batches_tracked``) only the model or only the file has: left as they are,
            never a difference, even with ``strict``.
        renamed: ``{file key: model path}`` for every key a mapping changed.
        dropped: File keys a ``rename`` callable dropped (returned ``None`` for).
        skipped: ``(path, file shape, model shape)`` of values left out by ``skip_mismatch``.
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    tied: list[list[str]] = field(default_factory=list)
    ignored_buffers: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    skipped: list[tuple[str, tuple[Any, ...], tuple[Any, ...]]] = field(default_factory=list)


def resolve_keys(groups: Groups, keys: Any, *, subject: str) -> dict[str, str]:
    """``{key: key or canonical path}``: keys that are a parameter's native name (a torch
    ``state_dict`` key, a Gluon or Keras variable name) where they differ from its canonical
    path are mapped to that path, so a model's own checkpoint loads. Canonical paths win over
    native names, and two keys that mean one parameter are refused.

    Raises:
        StateError: Two keys name the same parameter (its path and its native name).
    """
    paths = {path for members in groups.values() for path, _ in members}
    if all(key in paths for key in keys):  # the usual case: no native name to look up
        return {key: key for key in keys}
    native = {p.native_name: path for members in groups.values() for path, p in members}
    native.update({alias: path for members in groups.values() for path, p in members for alias in p._native_aliases()
                   if alias not in native})
    out: dict[str, str] = {}
    by_path: dict[str, str] = {}
    for key in keys:
        path = key if key in paths else native.get(key, key)
        if path in by_path:
            msg = (f"Cannot load {subject}: expected one key per parameter, got {by_path[path]!r} and {key!r} for "
                   f"{path!r} (its canonical path and its native name). Keep one of them.")
            raise errors.StateError(msg, path=path, expected="one key per parameter", got=[by_path[path], key])
        by_path[path] = key
        out[key] = path
    return out


def axes_order(source: Parameter, destination: Parameter) -> tuple[int, ...] | None:
    """How to permute ``source``'s value into ``destination``'s axes, where the two name the same distinct axis
    roles in another order (a Hugging Face ``Conv1D`` or Keras ``EinsumDense`` kernel, stored ``(in, out)``,
    into a dense ``(out, in)`` weight); ``None`` where the orders agree or the two name different roles.

    Raises:
        TransferError: The same roles in another order, one of them repeated (``(out, in, out)`` into ``(in,
            out, out)``): which axis goes where is unknown, and moving the value as it is would be a guess.
    """
    a, b = source.axes, destination.axes
    if a == b or sorted(a) != sorted(b):
        return None
    if len(set(a)) != len(a):
        msg = (f"Cannot move parameter {source.path!r} into {destination.path!r}: expected axis roles that say "
               f"which axis goes where, got {a} into {b}: the same roles in another order, one repeated. Nothing "
               f"was changed. Set that value yourself: tree[{destination.path!r}].set(value.transpose(...)).")
        raise errors.TransferError(msg, path=destination.path, expected=b, got=a)
    return tuple(a.index(role) for role in b)


def permuted(p: Parameter, order: tuple[int, ...] | None) -> np.ndarray:
    """``p``'s value with its axes in ``order`` (as it is where ``None``)."""
    value = p.numpy()
    return value if order is None else np.ascontiguousarray(value.transpose(order))


def same_value(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``a`` and ``b`` hold one value: equal elements, or the same bytes (NaN, as a save writes it twice)."""
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "biufc" and b.dtype.kind in "biufc" and np.array_equal(a, b):
        return True
    return a.dtype == b.dtype and bool(np.array_equal(np.ascontiguousarray(a).reshape(-1).view(np.uint8),
                                                      np.ascontiguousarray(b).reshape(-1).view(np.uint8)))


def integer_codes(source: np.dtype, target: np.dtype, /) -> bool:
    """Whether values of dtype ``source`` are integers or booleans meant for a floating (or complex) ``target``:
    codes (a quantized kernel's int8, whose scale is a separate tensor), not the values, so a load or transfer
    refuses them, cast or not, though NumPy casts them safely."""
    return source.kind in "biu" and (is_floating(target) or target.kind == "c")


def bookkeeping(p: Parameter) -> bool:
    """A framework's own bookkeeping buffer (kind ``buffer``, role ``other``), such as torch's
    ``num_batches_tracked``: another framework's model or file may lack it, and that is no difference."""
    return p.kind == "buffer" and p.role == "other"


def check_keys(groups: Groups, keys: Any, *, strict: bool, subject: str, optional: Collection[str] = (),
               allow_missing: bool | None = None, ignore_extra: bool | None = None,
               ) -> tuple[list[str], list[str], list[str]]:
    """``(missing, unexpected, ignored)``: model groups no key covers, keys no model path has, and the
    bookkeeping buffers (:func:`bookkeeping`; ``optional`` keys on the source's side) only one side has.

    Missing keys raise :class:`~polyparam.errors.StateError` ("Cannot load <subject>") unless
    ``allow_missing``, unexpected ones unless ``ignore_extra``; both default to ``not strict``.
    Ignored buffers never do: they are left as they are.
    """
    allow_missing = not strict if allow_missing is None else allow_missing
    ignore_extra = not strict if ignore_extra is None else ignore_extra
    known = {path for members in groups.values() for path, _ in members}
    extra = sorted(k for k in keys if k not in known)
    unexpected = [k for k in extra if k not in optional]
    ignored = [k for k in extra if k in optional]
    missing: list[str] = []
    for members in groups.values():
        if not any(path in keys for path, _ in members):
            (ignored if all(bookkeeping(p) for _, p in members) else missing).append(members[0][0])
    refused_missing = missing if not allow_missing else []
    refused_extra = unexpected if not ignore_extra else []
    if refused_missing or refused_extra:
        raise errors.StateError(mismatch_message(f"Cannot load {subject}", refused_missing, refused_extra),
                                path=(refused_missing or refused_extra)[0], expected=missing, got=unexpected)
    return missing, unexpected, ignored


def mismatch_message(head: str, missing: list[str], unexpected: list[str], *, show: int = 5,
                     source: str = "source's keys", target: str = "model's paths",
                     partial: str = "allow_missing=True / ignore_extra=True (strict=False for both)") -> str:
    """A structure mismatch that fits a screen: the counts, the first few of each, the likely cause, one fix
    (``partial``: the arguments of the caller that take what matches)."""
    from polyparam._params.mapping import likely_cause

    def short(key: str) -> str:
        return repr(key) if len(key) <= 80 else repr(key[:38] + "..." + key[-38:])

    def few(keys: list[str]) -> str:
        more = f", ... ({len(keys) - show} more)" if len(keys) > show else ""
        return ", ".join(short(k) for k in keys[:show]) + more

    parts = [f"{head}: expected the {source} to match the {target}, got {len(missing)} missing and "
             f"{len(unexpected)} unexpected."]
    where = target.split("'")[0]
    if missing:
        parts.append(f"Missing (in the {where}, not in the source): {few(missing)}.")
    if unexpected:
        parts.append(f"Unexpected (in the source, not in the {where}): {few(unexpected)}.")
    cause = likely_cause(missing, unexpected)
    parts.append(cause or "Map the keys (rename=, strip_prefix=, add_prefix=, root=), or pass "
                 f"{partial} to take what matches.")
    return " ".join(parts)


def check_partial(subject: str, *, matched: int, missing: list[str], unexpected: list[str],
                  skipped: int = 0, stacklevel: int = 3) -> None:
    """After a non-strict match: refuse one that matched nothing, warn about one that left anything out.

    A ``strict=False`` load that quietly moves nothing (keys of another naming scheme, a
    prefix) is the worst outcome of all, so it is an error; a partial one warns with the counts.

    Raises:
        StateError: Nothing matched although there was something to match.
    """
    if not (missing or unexpected or skipped):
        return
    if matched == 0 and skipped and not (missing or unexpected):
        msg = (f"Cannot load {subject}: expected at least one value to fit, got {skipped} skipped by skip_mismatch "
               "(every shape differs). The source is another architecture; compare pp.diff(model, source).")
        raise errors.StateError(msg, expected="a value that fits", got=f"{skipped} skipped")
    if matched == 0:
        msg = (f"Cannot load {subject}: expected at least one key to match a parameter, got none "
               f"({len(unexpected)} keys the model lacks, e.g. {unexpected[:3]}; {len(missing)} parameters the "
               f"source lacks, e.g. {missing[:3]}). Check that the keys are the model's paths or native names.")
        raise errors.StateError(msg, path=[*missing, *unexpected, ""][0], expected="a matching key",
                                got=unexpected[:10])
    parts = [f"{len(missing)} parameters kept their values (not in the source)" if missing else "",
             f"{len(unexpected)} keys ignored (not in the model)" if unexpected else "",
             f"{skipped} values skipped (shape differs)" if skipped else ""]
    warnings.warn(f"Loaded {matched} values from {subject}; " + "; ".join(p for p in parts if p) + ".",
                  errors.PolyparamWarning, stacklevel=stacklevel)


def castable(dtype: np.dtype, target: np.dtype) -> bool:
    """Whether values of ``dtype`` cast to ``target`` within their kind (bfloat16 counts as a float; signed and
    unsigned integers are one kind here: the commit refuses values the target cannot hold)."""
    if dtype.kind in "iu" and target.kind in "iu":
        return True
    return (dtype.kind in "biufc" or is_floating(dtype)) and bool(np.can_cast(dtype, target, casting="same_kind"))


def fit_problem(p: Parameter, shape: Shape, dtype: np.dtype, *, cast: bool = True) -> str | None:
    """``"shape"`` or ``"dtype"`` if a value of ``shape`` and ``dtype`` cannot be written to ``p``; else ``None``.

    Unknown (deferred) dimensions of ``p`` accept any size. With ``cast``, a dtype of the
    same kind that casts safely is accepted (float64 into float32); without it, only ``p``'s own.
    """
    expected = p.shape
    if len(expected) != len(shape) or any(d is not None and d != g for d, g in zip(expected, shape)):
        return "shape"
    same = dtype.newbyteorder("=") == p.dtype.newbyteorder("=")   # byte order is not a dtype difference
    if not same and not (cast and castable(dtype, p.dtype)):
        return "dtype"
    return None


class WrittenMemory:
    """The host memory a plan's writes overwrite, as each parameter's :meth:`Parameter._memory_span` gives it.

    About 3 us per tensor on torch (0.85 ms on ResNet50's 320): one span each, one sort,
    then one binary search per question.
    Parameters whose backend reports no span (reads copy) are left out.
    """

    def __init__(self, plan: WritePlan) -> None:
        self.own = [w.param._memory_span() for w in plan.writes]
        spans = sorted((s[0], s[1], i) for i, s in enumerate(self.own) if s is not None and s[1] > s[0])
        self.starts = [s for s, _, _ in spans]
        self.reach = list(itertools.accumulate((e for _, e, _ in spans), max))   # furthest end in spans[:k + 1]
        self.clash = {i for k, (s, e, i) in enumerate(spans)   # spans that overlap another span
                      if (k and s < self.reach[k - 1]) or (k + 1 < len(spans) and self.starts[k + 1] < e)}

    def __bool__(self) -> bool:
        return bool(self.starts)

    def overlaps(self, start: int, end: int) -> bool:
        """Whether bytes ``[start, end)`` overlap any written storage."""
        k = bisect.bisect_left(self.starts, end)   # spans[:k] start before ``end``
        return bool(k) and self.reach[k - 1] > start

    def is_own(self, i: int, start: int, end: int, value: np.ndarray) -> bool:
        """Whether ``value`` (bytes ``[start, end)``) is write ``i``'s storage element for element, and no other's:
        both C-contiguous over the same bytes."""
        own = self.own[i]
        return (own is not None and own == (start, end, True) and i not in self.clash
                and value.flags.c_contiguous and end - start == value.nbytes)


@dataclass
class _Write:
    path: str
    param: Parameter
    read: Callable[[], np.ndarray]
    local: bool = False
    source: Parameter | None = None   # a transfer's source: the backend may copy it natively


@dataclass
class WritePlan:
    """Writes and ties checked before the first one is made.

    Attributes:
        subject: What is written, for messages (``"'model.safetensors'"``, ``"state"``).
        writes: The checked writes, in model order.
        ties: Groups of ``(path, Parameter)`` to tie, anchor first.
    """

    subject: str
    writes: list[_Write] = field(default_factory=list)
    ties: list[list[tuple[str, Parameter]]] = field(default_factory=list)

    # ---- checks (no write) -----------------------------------------------------------

    def check_fit(self, path: str, p: Parameter, shape: Shape, dtype: np.dtype, /, *, key: str | None = None,
                  cast: bool = True) -> None:
        """Refuse a value of ``shape`` and ``dtype`` for ``p`` (at ``path``) with the typed error, before any write.

        ``key`` names the value in its source when that differs from ``path``.
        """
        what = f"{key!r} from {self.subject} into parameter {path!r}" if key is not None else f"parameter {path!r}"
        problem = fit_problem(p, shape, dtype, cast=cast)
        if problem == "shape":
            msg = (f"Cannot load {what}: expected shape {format_shape(p.shape)}, got {format_shape(shape)}. "
                   "Load values of the same architecture (canonical layout: dense weights are (out, in)).")
            raise errors.ShapeMismatchError(msg, path=path, expected=p.shape, got=tuple(shape))
        if problem == "dtype":
            fix = ("Pass cast=True to convert it." if castable(dtype, p.dtype)
                   else f"Convert the values to {p.dtype.name!r} first.")
            msg = f"Cannot load {what}: expected dtype {p.dtype.name!r}, got {dtype.name!r}. {fix}"
            raise errors.DTypeMismatchError(msg, path=path, expected=p.dtype, got=dtype)
        self.check_writable(path, p, key=key)

    def check_writable(self, path: str, p: Parameter, /, *, key: str | None = None) -> None:
        """Refuse a deferred parameter the backend cannot take a value for yet, or storage that refuses writes."""
        if p.state == "deferred" and not p._accepts_deferred_value():
            p._require_data(f"load {key or path!r} into")
        p._require_writable(f"load {key or path!r} into")

    def add(self, path: str, p: Parameter, read: Callable[[], np.ndarray], /, *, local: bool = False,
            source: Parameter | None = None) -> None:
        """Plan writing ``read()`` (a checked canonical value) to ``p``; ``local``: the process's shard only.

        ``source``: the parameter ``read`` reads (a transfer), which ``p``'s backend may
        copy without NumPy (:meth:`Parameter._native_copier`).
        """
        self.writes.append(_Write(path, p, read, local, source))

    def copy_overlapping(self, values: list[np.ndarray], /) -> None:
        """Copy now each value (``values[i]`` for ``writes[i]``) that shares memory with a written storage.

        ``load_state(other.state())`` hands over views of ``other``'s storage; where the two
        models share layers (``[l1, l2]`` into ``[l2, l1]``), the first write would change a
        value a later one still reads. A value that is its own parameter's storage, element
        for element, and nothing else's, is left as it is: writing it onto itself changes nothing.
        """
        memory = WrittenMemory(self)
        if not memory:
            return
        for i, value in enumerate(values):
            if not isinstance(value, np.ndarray) or not value.size:
                continue
            start, end = byte_bounds(value)
            if memory.overlaps(start, end) and not memory.is_own(i, start, end, value):
                self.writes[i].read = functools.partial(np.asarray, np.array(value, copy=True))

    def add_tie(self, anchors: list[tuple[str, Parameter]], /, *, fix: str,
                error: type[errors.PolyparamError] = errors.TieMismatchError) -> None:
        """Plan tying ``anchors`` (the first keeps its storage); refuse now if a member cannot be tied."""
        first_path, first = anchors[0]
        for q, member in anchors[1:]:
            problem = tie_problem(member, first)
            if problem is not None:
                msg = (f"Cannot load {self.subject}: expected {q!r} and {first_path!r} to be tieable, "
                       f"{problem[1]}. {fix}")
                raise error(msg, path=q, expected=first_path, got=problem[1])
        self.ties.append(anchors)

    def add_recorded_ties(self, groups: Groups, recorded: Iterable[Iterable[str]], /, *, ties: str,
                          backend: str, capabilities: Iterable[str]) -> None:
        """Plan the ties a checkpoint records (``ties="restore"``), or refuse them (``"strict"``), before any write.

        ``recorded`` holds groups of canonical paths; members the model lacks are ignored.
        """
        model_paths = {path: key for key, members in groups.items() for path, _ in members}
        for group in recorded:
            present = [q for q in group if q in model_paths]
            identities = list(dict.fromkeys(model_paths[q] for q in present))
            if len(identities) < 2:
                continue
            if ties == "strict":
                msg = (f"Cannot load {self.subject}: expected the model to tie {present} as the checkpoint does, got "
                       "them untied. Pass ties='restore' to tie them, or tie them with pp.tie first.")
                raise errors.TieMismatchError(msg, path=present[0], expected="tied", got="untied")
            if ties == "restore":
                self.add_tie([groups[i][0] for i in identities],
                             fix="Load into the architecture the checkpoint was saved from, or pass ties='ignore'.")
        self.require_tying(backend, capabilities, fix="Pass ties='ignore'.")

    def check_one_value(self, members: list[tuple[str, Parameter]], keys: list[str],
                        read: Callable[[str], np.ndarray], /) -> None:
        """Refuse different stored values for one tie group of the model (``keys`` name them in the source)."""
        if len(keys) < 2:
            return
        first = read(keys[0])
        for key in keys[1:]:
            if not same_value(read(key), first):   # NaN too: a save writes one value under each member's key
                msg = (f"Cannot load {self.subject}: expected one value for the model's tie group "
                       f"{[q for q, _ in members]}, got different tensors {keys[0]!r} and {key!r}. Untie the "
                       "model's parameters first, or pass ties='ignore' to take the first.")
                raise errors.TieMismatchError(msg, path=members[0][0], expected=keys[0], got=key)

    def require_tying(self, backend: str, capabilities: Iterable[str], /, *, fix: str) -> None:
        """Refuse planned ties on a backend that cannot tie."""
        if self.ties and "tying" not in capabilities:
            groups = [[q for q, _ in anchors] for anchors in self.ties]
            msg = (f"Cannot load {self.subject}: expected a backend that can tie parameters to make the ties "
                   f"{groups}, got the {backend} backend. {fix}")
            raise errors.TieMismatchError(msg, path=groups[0][0], expected="tying", got=backend)

    # ---- commit -------------------------------------------------------------------------

    def commit(self, *, description: str, progress: bool | None = None,
               on_written: Callable[[str], None] | None = None,
               on_tied: Callable[[list[str]], None] | None = None,
               verify: Callable[[], None] | None = None, stacklevel: int = 4,
               tie_source: str | None = None) -> None:
        """Make the planned ties, then write every value through :meth:`Parameter._commit`, all or nothing.

        ``verify`` runs after the last write, still under the journal: whatever it raises
        undoes every write and tie, as a failing write does. A tie the model did not have
        warns (at ``stacklevel``, the caller's line; ``tie_source`` names what records the ties,
        default :attr:`subject`): the parameter objects it replaced may be what an optimizer
        built before holds.

        Whatever a write raises (the framework refusing it, ``KeyboardInterrupt``), the
        values written before are restored and the ties made are unmade (see
        :class:`~polyparam._params.journal.Journal`) before the error propagates. The
        ties and writes run under :func:`~polyparam._params.journal.exclusive_writes`, so
        another thread's multi-parameter write waits for them instead of interleaving.
        """
        from polyparam._progress import track

        journal = Journal(f"load {self.subject}")
        journal.check_limit([w.param for w in self.writes] + [m for anchors in self.ties for _, m in anchors[1:]])
        written: list[str] = []
        tied: list[list[str]] = []
        made: list[list[tuple[str, Parameter]]] = []   # groups with a member tied now
        waits: list[Callable[[], None]] = []
        with exclusive_writes():  # one multi-parameter write at a time in this process
            try:
                for anchors in self.ties:  # checked by add_tie, as pp.tie checks before it shares
                    first = anchors[0][1]
                    for _, member in anchors[1:]:
                        if not member.is_tied_to(first):
                            journal.keep_tie(member)
                            member._share(first)
                            if not made or made[-1] is not anchors:
                                made.append(anchors)
                    tied.append([q for q, _ in anchors])
                writes = self.writes if progress is False else track(
                    self.writes, description=description, progress=progress, weight=lambda item: item.param.nbytes or 0)
                for write in writes:
                    journal.current = write.param.path   # what a failure names, from the first step
                    source = write.source
                    copy = write.param._native_copier(source) if source is not None and not write.local else None
                    if copy is not None:
                        journal.keep(write.param, whole=True)
                        wait = copy()
                        if wait is not None:
                            waits.append(wait)
                    else:
                        value = write.read()
                        journal.keep(write.param, local=write.local, whole=True)
                        write.param._commit(value, local=write.local)
                        del value
                    written.append(write.path)
                for wait in waits:   # asynchronous native copies (see Parameter._native_copier) have finished
                    wait()
                if verify is not None:
                    verify()
            except BaseException as exc:
                error = journal.fail(exc)
                if error is exc:
                    raise
                raise error from exc
        if made:
            shown = ", ".join(str([q for q, _ in anchors]) for anchors in made[:3]) + (" ..." if len(made) > 3 else "")
            warnings.warn(f"{description}: tied {shown} as {tie_source or self.subject} ties them; the model held "
                          "them apart, so each member now holds the first one's parameter object. An optimizer built "
                          "before holds the replaced ones: build it after this call, or pass ties='ignore' to keep "
                          "them apart.",
                          errors.PolyparamWarning, stacklevel=stacklevel)
        for group in tied:
            if on_tied is not None:
                on_tied(group)
        for path in written:
            if on_written is not None:
                on_written(path)
