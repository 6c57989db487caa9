"""The :class:`ParameterTree` interface: a model's parameters by canonical path."""

from __future__ import annotations

import abc
import difflib
import fnmatch
import functools
import io
import re
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import numpy as np

from polyparam import errors
from polyparam._gc import collector_paused
from polyparam._layout import KINDS, ROLES, format_shape, join_path
from polyparam._params.mapping import KeyMap, Rename
from polyparam._params.parameter import Parameter, require_backend_name
from polyparam._params.plan import (
    LoadReport,
    WritePlan,
    check_keys,
    check_partial,
    fit_problem,
    resolve_keys,
    storage_groups,
)
from polyparam._params.ties import TieGroup
from polyparam._params.training import TrainingOps, require_predicate

if TYPE_CHECKING:
    from polyparam.init import Initializer
    from polyparam.init.run import InitReport

__all__ = ["ParameterCollection", "ParameterSelection", "ParameterTree"]


def _path_rule(pattern: Any) -> Callable[[str, Parameter], bool] | None:
    """``select``'s ``pattern`` as a test of ``(path, parameter)``; ``None`` for no pattern."""
    if pattern is None:
        return None
    if isinstance(pattern, re.Pattern) and isinstance(pattern.pattern, str):
        return lambda path, p: pattern.search(path) is not None
    if isinstance(pattern, str):
        for prefix, names in (("role:", ROLES), ("kind:", KINDS)):
            if pattern.startswith(prefix):
                wanted = pattern[len(prefix):]
                if wanted not in names:   # a typo would select nothing, and freeze() or cast() would do nothing
                    close = difflib.get_close_matches(wanted, names, n=1)
                    hint = f"Did you mean {prefix + close[0]!r}? " if close else ""
                    msg = (f"Invalid value for argument `pattern` of select: expected {prefix}<one of "
                           f"{', '.join(names)}>, got {pattern!r}. {hint}".rstrip())
                    raise errors.InvalidArgumentError(msg, argument="pattern", expected=names, got=pattern)
                attribute = prefix[:-1]
                return lambda path, p: getattr(p, attribute) == wanted
        return lambda path, p: fnmatch.fnmatchcase(path, pattern)
    msg = (f"Invalid value for argument `pattern` of select: expected a glob, 'role:<role>', 'kind:<kind>' or a "
           f"compiled regular expression, got {type(pattern).__name__} {pattern!r}. Pass a predicate as where= "
           "to choose by anything else.")
    raise errors.InvalidArgumentError(msg, argument="pattern", expected="a glob or a rule", got=pattern)


class ParameterCollection(TrainingOps, abc.ABC):
    """What a whole tree and a selection of it share: iterate, read, load, initialize.

    Tied parameters appear once in :meth:`items`, :meth:`state` and ``initialize``
    (under the first path met in model order); :meth:`ties` lists every path.

    **Backend hooks** (of every collection; see :class:`ParameterTree` for the tree's own):

    * must implement: `_occurrences` (a tree gets it from `_children` and `_leaves`);
    * may implement: `_param_groups` (``pp.param_groups`` in the form the framework's
      optimizers take; the default is torch's list of ``{"params": [...], **options}``);
    * may implement, for distributed jobs: `_process_rank`, `_barrier`, `_broadcast`,
      `_all_succeeded` (the defaults describe one process).
    """

    #: The backend name, e.g. ``"torch"``.
    backend: str = ""

    @abc.abstractmethod
    def _occurrences(self) -> list[tuple[str, Parameter]]:
        """Every (path, parameter) pair in model order, tied parameters under each of their paths."""

    def _param_groups(self, groups: list[tuple[dict[str, Any], list[tuple[str, Parameter]]]], optimizer: Any,
                      /) -> Any:
        """``groups`` (options, members) in the form the framework's optimizer takes.

        Default: ``[{"params": [p.native, ...], **options}, ...]`` (``torch.optim``'s form);
        ``optimizer`` is what the user passed (``None`` usually), for frameworks that
        configure it (Keras' ``exclude_from_weight_decay``).
        """
        return [{"params": [p._native() for _, p in members], **options} for options, members in groups]

    # ---- access ----------------------------------------------------------------

    def items(self) -> list[tuple[str, Parameter]]:
        """``(path, Parameter)`` for every parameter, tied ones once, in model order."""
        seen: set[Any] = set()
        out = []
        for path, p in self._occurrences():
            key = p._identity()
            if key not in seen:
                seen.add(key)
                out.append((path, p))
        return out

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.items()]

    def paths(self) -> list[str]:
        return [path for path, _ in self.items()]

    def __len__(self) -> int:
        return len(self.items())

    def __contains__(self, path: object) -> bool:
        return any(path == q for q, _ in self._occurrences())

    def select(self, pattern: str | re.Pattern[str] | None = None, /, *, regex: str | None = None,
               where: Callable[[Parameter], bool] | None = None) -> ParameterSelection:
        """The parameters whose canonical path matches every criterion given.

        Args:
            pattern: A glob on the path (``"*.weight"``, ``"0.*"``; ``*`` crosses dots), or, as
                :func:`polyparam.param_groups`' rules, ``"role:bias"``, ``"kind:buffer"`` or a
                compiled regular expression (searched in the path).
            regex: A regular expression searched in the path (``re.search``).
            where: A predicate on the :class:`Parameter` (``lambda p: p.role == "bias"``).

        Raises:
            InvalidArgumentError: ``regex`` is not a regular expression Python compiles, or
                ``pattern`` is none of the forms above.
        """
        require_predicate(where, "select", "Pass where=lambda p: p.role == 'bias'.")
        try:
            if isinstance(regex, bytes):
                raise TypeError("a bytes pattern cannot search the str paths")
            compiled = re.compile(regex) if regex is not None else None
        except (re.error, TypeError) as exc:
            msg = (f"Invalid value for argument `regex` of select: expected a regular expression, got {regex!r} "
                   f"({exc}). Escape special characters with re.escape(...), or use a glob as the pattern.")
            raise errors.InvalidArgumentError(msg, argument="regex", expected="a regular expression",
                                              got=regex) from None
        matches = _path_rule(pattern)
        chosen = [
            (path, p) for path, p in self._occurrences()
            if (matches is None or matches(path, p))
            and (compiled is None or compiled.search(path))
            and (where is None or where(p))
        ]
        return ParameterSelection(chosen, backend=self.backend)

    def get(self, name: str, /) -> Parameter:
        """Look a parameter up by native name, canonical path, or a unique suffix of either.

        Like Gluon's ``params.get("dense1_bias")``. Suffixes match at a separator
        (``"2.bias"`` matches ``"0.2.bias"``; ``"dense1_bias"`` matches ``"model/dense1_bias"``).

        Raises:
            ParameterNotFoundError: Nothing matches.
            AmbiguousNameError: More than one parameter matches.
        """
        occurrences = self._occurrences()
        for path, p in occurrences:
            if name == path or name == p.native_name:
                return p
        found: dict[Any, tuple[str, Parameter]] = {}
        for path, p in occurrences:
            native = p.native_name
            if _suffix_match(path, name) or _suffix_match(native, name):
                found.setdefault(p._identity(), (path, p))
        if len(found) == 1:
            return next(iter(found.values()))[1]
        if found:
            paths = sorted(path for path, _ in found.values())
            msg = (f"Cannot get parameter {name!r}: expected a unique match, got {len(paths)}: {paths}. "
                   "Use a longer suffix or the full path.")
            raise errors.AmbiguousNameError(msg, path=name, expected="one match", got=paths)
        candidates = [path for path, _ in occurrences] + [p.native_name for _, p in occurrences]
        close = difflib.get_close_matches(name, candidates, n=3)
        hint = f"Did you mean {close}?" if close else "Print the tree to see every path."
        msg = f"Cannot get parameter {name!r}: expected a path, native name or unique suffix, got no match. {hint}"
        raise errors.ParameterNotFoundError(msg, path=name, expected="an existing name", got=name)

    # ---- values ----------------------------------------------------------------

    def state(self, *, copy: bool = False) -> dict[str, np.ndarray]:
        """``{path: array}`` in canonical layout, tied parameters once.

        Arrays may share memory with the framework's storage (zero-copy); pass
        ``copy=True`` for independent arrays.
        """
        if not copy:
            return {path: p.numpy() for path, p in self.items()}
        out = {}
        for path, p in self.items():
            p._require_data("read")
            out[path] = p._read_copy()
        return out

    def load_state(self, state: Mapping[str, Any], /, *, strict: bool = True, allow_missing: bool | None = None,
                   ignore_extra: bool | None = None, skip_mismatch: bool = False, rename: Rename | None = None,
                   strip_prefix: str | None = None, add_prefix: str | None = None,
                   root: str | None = None) -> LoadReport:
        """Write every value of ``state``, all or nothing.

        Every key, shape and dtype is checked before the first write, so a refused
        state changes no parameter. A tied group may be given under any of its paths;
        values given under several must be equal. Keys may also be the parameters' native
        names (``model.state_dict()`` keys where they differ from the canonical paths);
        values are in canonical layout either way.

        Args:
            state: ``{path: array}`` in canonical layout, as :meth:`state` returns.
            strict: Refuse missing and unexpected keys (the default of the next two).
            allow_missing: Leave parameters ``state`` lacks as they are (default: ``not strict``).
            ignore_extra: Ignore keys the tree lacks (default: ``not strict``).
            skip_mismatch: Skip values of another shape (a new head); ``report.skipped`` lists them.
            rename: Regex rules or a callable applied to every key first, as :func:`polyparam.load` does.
            strip_prefix: Remove this prefix from the keys that have it.
            add_prefix: Put this prefix before every key.
            root: Load into the block at this path (keys relative to it).

        Returns:
            A :class:`~polyparam.checkpoint.LoadReport`.

        Raises:
            StateError: Missing or unexpected keys (unless allowed), two keys for one parameter,
                or different values for one tie group.
            ShapeMismatchError, DTypeMismatchError: A value does not fit its parameter.
            DeferredInitializationError: A value for a deferred parameter the backend cannot take yet.
        """
        if not isinstance(state, Mapping):
            msg = (f"Cannot load state: expected a mapping {{path: array}}, got {type(state).__name__}. "
                   "Pass a dict, as tree.state() returns.")
            raise errors.StateError(msg, expected="a mapping", got=type(state).__name__)
        with collector_paused():   # see polyparam._gc
            keymap = KeyMap.of(rename=rename, strip_prefix=strip_prefix, add_prefix=add_prefix, root=root)
            target = subtree(self, root)
            mapped, renamed, dropped = keymap.apply(state, subject="state")
            state = {mapped[key]: value for key, value in state.items() if key in mapped}
            groups = storage_groups(target)
            resolved = resolve_keys(groups, state, subject="state")
            state = {resolved[key]: value for key, value in state.items()}
            missing, unexpected, ignored = check_keys(groups, state, strict=strict, subject="state",
                                                      allow_missing=allow_missing, ignore_extra=ignore_extra)
            report = LoadReport(missing=missing, unexpected=unexpected, ignored_buffers=ignored, renamed=renamed,
                                dropped=dropped)
            plan = WritePlan("state")
            values: list[np.ndarray] = []
            for members in groups.values():
                given = [(path, state[path]) for path, _ in members if path in state]
                if not given:
                    continue
                p = members[0][1]
                first_path, first_value = given[0]
                if skip_mismatch:
                    misfit = next(((q, v) for q, v in given if fit_problem(p, tuple(np.shape(v)), p.dtype) == "shape"),
                                  None)
                    if misfit is not None:   # a tie group is skipped whole: it holds one value
                        report.skipped.append((misfit[0], tuple(np.shape(misfit[1])), tuple(p.shape)))
                        continue
                array = p.coerce(first_value, action=f"load {first_path!r} into")
                for path, value in given[1:]:
                    other = p.coerce(value, action=f"load {path!r} into")
                    if not np.array_equal(other, array):
                        msg = (f"Cannot load state into tied parameters {first_path!r} and {path!r}: expected one "
                               "value for the tie group, got two different ones. Give the value under one path only.")
                        raise errors.StateError(msg, path=path, expected="equal values", got="different values")
                plan.check_writable(first_path, p)
                plan.add(first_path, p, functools.partial(np.asarray, array))
                values.append(array)
            check_partial("state", matched=len(plan.writes), missing=missing, unexpected=unexpected,
                          skipped=len(report.skipped))
            plan.copy_overlapping(values)   # views of storage this load also writes (models that share layers)
            plan.commit(description="load state", progress=False, on_written=report.loaded.append)
            return report

    # ---- initialization --------------------------------------------------------

    def initialize(self, init: Initializer | Callable[..., Any] | str | None = None, /, *,
                   force_reinit: bool = False, seed: int | None = None,
                   progress: bool | None = None) -> InitReport:
        """Initialize every parameter, with Gluon's semantics.

        Weights get ``init`` (``Uniform(0.07)`` when ``None``); biases, BatchNorm
        scale/shift and running statistics get 0, 1, 0, 0, 1. A parameter that already
        has data is skipped with an :class:`~polyparam.errors.AlreadyInitializedWarning`
        unless ``force_reinit``. A parameter whose shape is unknown is *deferred*: the
        initializer runs when the framework materializes it (the first forward pass).
        A whole tree's ``initialize`` leaves buffers and constants of role ``"other"``
        (an attention mask, a power-iteration vector: see :attr:`Parameter.kind`) as they
        are, lists them in ``report.skipped`` and warns once; a selection that contains
        them (``tree.select("*.mask").initialize(...)``) fills them.

        Args:
            init: An :class:`~polyparam.init.Initializer`, a callable ``(shape, dtype) -> array``
                or an initializer name.
            force_reinit: Re-initialize parameters that already have data.
            seed: Draw from a generator keyed by ``(seed, canonical path)``: the same
                seed gives the same values on every backend and in any order. ``None``
                draws fresh values every call.
            progress: Show a progress bar on standard error: ``None`` (default) shows
                one on a terminal for big trees, quiet elsewhere; ``POLYPARAM_PROGRESS=0/1``
                changes that default; ``True``/``False`` force it.

        Returns:
            An :class:`InitReport` of what was initialized, skipped and deferred.
        """
        from polyparam.init.run import initialize_parameters

        with collector_paused():   # see polyparam._gc
            return initialize_parameters((p for _, p in self._occurrences()), init,
                                         skip_buffers=isinstance(self, ParameterTree), own_first=True,
                                         force_reinit=force_reinit, seed=seed, by_role=True, progress=progress)

    # ---- distributed processes (optional hooks) -----------------------------------

    def _process_rank(self) -> tuple[int, int]:
        """``(rank, world_size)`` of this process in a distributed job; ``(0, 1)`` by default."""
        return 0, 1

    def _barrier(self) -> None:  # noqa: B027 - an optional hook whose default does nothing
        """Wait for every process of a distributed job (sharded saves); nothing by default."""

    def _broadcast(self, value: int) -> int:
        """Process 0's ``value`` on every process (a collective); ``value`` by default."""
        return value

    def _all_succeeded(self, ok: bool) -> bool:
        """Whether every process passed ``ok=True`` (a collective, so also a barrier); ``ok`` by default.

        Lets every process of a sharded save learn that another one failed, instead of
        waiting for it at a barrier forever.
        """
        return ok

    # ---- ties ------------------------------------------------------------------

    def ties(self) -> list[TieGroup]:
        """Every group of parameters that share storage, with all their paths."""
        groups: dict[Any, list[Parameter]] = {}
        order: dict[Any, list[str]] = {}
        for path, p in self._occurrences():
            groups.setdefault(p._identity(), []).append(p)
            order.setdefault(p._identity(), []).append(path)
        return [TieGroup(members, paths=order[key]) for key, members in groups.items() if len(members) > 1]

    # ---- display ---------------------------------------------------------------

    def table(self) -> Any:
        """The parameters as a :class:`rich.table.Table` (path, shape, dtype, device, state, tied with).

        Every cell is literal text: brackets in a name are not markup, control characters are escaped.
        """
        from rich.markup import escape
        from rich.table import Table

        from polyparam._display import literal, visible

        tied_with: dict[str, list[str]] = {}
        for group in self.ties():
            for path in group.paths:
                tied_with[path] = [q for q in group.paths if q != path]
        table = Table(title=escape(visible(f"{self.backend} parameters")), title_justify="left")
        occurrences = self._occurrences()
        placements = [p._placement() for _, p in occurrences]  # sharded parameters only
        columns = ["path", "shape", "dtype", "device", "state", "train", "tied with"]
        if any(placements):
            columns.insert(4, "placement")
        for column in columns:
            table.add_column(column, justify="right" if column == "shape" else "left", no_wrap=column == "path")
        tensors = scalars = nbytes = trainable = 0
        unknown = False
        seen: set[Any] = set()
        for (path, p), placement in zip(occurrences, placements):
            train = p.trainable
            cells = [path, format_shape(p.shape), p.dtype.name, p.device, p.state, "yes" if train else "no",
                     ", ".join(tied_with.get(path, []))]
            if any(placements):
                cells.insert(4, placement or "")
            table.add_row(*[literal(cell) for cell in cells])
            if p._identity() in seen:
                continue
            seen.add(p._identity())
            tensors += 1
            size, size_bytes = p.size, p.nbytes
            if size is None or size_bytes is None:
                unknown = True
            else:
                scalars += size
                nbytes += size_bytes
                trainable += size if train else 0
        more = " + deferred" if unknown else ""
        split = (f" ({trainable:,} trainable, {scalars - trainable:,} non-trainable)"
                 if trainable != scalars else "")
        table.caption = f"{tensors} tensors, {scalars:,} scalars{more}{split}, {_human_bytes(nbytes)}"
        table.caption_justify = "left"
        return table

    def __str__(self) -> str:
        from rich.console import Console

        buffer = io.StringIO()
        Console(file=buffer, width=120, color_system=None, force_terminal=False).print(self.table())
        return buffer.getvalue().rstrip("\n")

    def __rich__(self) -> Any:
        return self.table()

    def _repr_html_(self) -> str:
        """The table as HTML, for notebooks (Jupyter calls this to display a tree)."""
        from rich.console import Console

        console = Console(file=io.StringIO(), record=True, width=120, color_system="truecolor", force_terminal=True)
        console.print(self.table())
        return console.export_html(inline_styles=True, code_format="<pre style=\"font-family:monospace\">{code}</pre>")


def _suffix_match(full: str, suffix: str) -> bool:
    if not full.endswith(suffix) or len(full) == len(suffix):
        return False
    return full[-len(suffix) - 1] in "._/:" or suffix[0] in "._/:"


def _human_bytes(count: int) -> str:
    n = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{count:,} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError


class ParameterSelection(ParameterCollection):
    """Parameters chosen from a tree by :meth:`ParameterCollection.select`."""

    def __init__(self, chosen: list[tuple[str, Parameter]], *, backend: str) -> None:
        self._chosen = chosen
        self.backend = backend

    def _occurrences(self) -> list[tuple[str, Parameter]]:
        return list(self._chosen)

    def __getitem__(self, path: str) -> Parameter:
        for q, p in self._chosen:
            if q == path:
                return p
        msg = (f"Cannot find {path!r} in the selection: expected one of {[q for q, _ in self._chosen][:10]}, "
               f"got {path!r}. Use get() for suffixes.")
        raise errors.ParameterNotFoundError(msg, path=path, expected="a selected path", got=path)

    def __iter__(self) -> Iterator[Parameter]:
        return iter(self.parameters())

    def __repr__(self) -> str:
        return f"ParameterSelection({self.paths()!r})"


class ParameterTree(ParameterCollection):
    """A model (or one block of it) seen as a tree of parameters with canonical paths.

    ``tree[i]`` is the i-th child block, mirroring the framework's own indexing;
    ``tree["0.1.0.bias"]`` and ``tree[0][1][0]["bias"]`` reach the same parameter.

    **Backend hooks.** Must implement: `_children` (child blocks, in the framework's
    order) and `_leaves` (this node's own parameters). May implement: `_to` (move every
    parameter to a device, keeping ties; the "devices" capability), `_forward` (run the
    model in inference mode, for ``pp.transfer(..., check=x)``), and the distributed
    hooks of :class:`ParameterCollection`. Override for speed: `_occurrences` (every
    parameter in model order, tied ones under each path, without walking node by node).
    Core steps, not hooks: `_not_found`.
    """

    #: The backend name, e.g. ``"torch"``; set by each subclass.
    backend: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse a concrete subclass that does not name its backend (``backend = "mybackend"``)."""
        super().__init_subclass__(**kwargs)
        require_backend_name(cls, "ParameterTree")

    def __init__(self, native: Any, /, *, path: str = "") -> None:
        self._native_obj = native
        self._path = path

    @property
    def native(self) -> Any:
        """The framework object this node wraps (a module, layer, block or dict)."""
        return self._native_obj

    @property
    def path(self) -> str:
        """This node's canonical path (``""`` for the root)."""
        return self._path

    # ---- hooks a backend implements ----------------------------------------------

    @abc.abstractmethod
    def _children(self) -> list[tuple[str, ParameterTree]]:
        """Child blocks in the framework's order, as (name, subtree); names are path segments."""

    @abc.abstractmethod
    def _leaves(self) -> list[tuple[str, Parameter]]:
        """This node's own parameters, as (canonical leaf name, Parameter)."""

    def _to(self, device: str) -> None:
        """Move every parameter to ``device``, keeping ties. Default: accept the device they are on, refuse others."""
        current = sorted({p.device for _, p in self._occurrences()})
        if current in ([device], []):
            return
        msg = (f"Cannot move {self.backend} parameters to {device!r}: expected the device they are on "
               f"{current}, got {device!r}. The {self.backend} backend cannot move parameters between devices.")
        raise errors.DeviceMismatchError(msg, path=self.path or None, expected=current, got=device)

    def _forward(self, inputs: Any, /) -> Any:
        """The model's output on ``inputs`` in inference mode (no dropout, running statistics), unchanged.

        Inputs arrive as given by the user (usually NumPy arrays); the output may be any
        nest of tensors, which the core converts with ``numpy.asarray``. Leave the model as
        it was (e.g. restore a training flag). Default: the backend cannot run models.
        """
        msg = (f"Cannot run the {self.backend} model for a check: the {self.backend} backend does not implement "
               "running a model. Compare outputs yourself, or pass check=None.")
        raise errors.UnsupportedModelError(msg, path=self.path or None, expected="a backend that runs models",
                                           got=self.backend)

    # ---- navigation ------------------------------------------------------------

    def _occurrences(self) -> list[tuple[str, Parameter]]:
        out: list[tuple[str, Parameter]] = []
        stack: list[ParameterTree] = [self]
        while stack:
            node = stack.pop()
            out.extend((p.path, p) for _, p in node._leaves())
            stack.extend(child for _, child in reversed(node._children()))
        return out

    def children(self) -> list[tuple[str, ParameterTree]]:
        """The child blocks, as (name, subtree), in the framework's order."""
        return self._children()

    def __len__(self) -> int:
        """The number of child blocks, like ``len(net)``."""
        return len(self._children())

    def __iter__(self) -> Iterator[ParameterTree]:
        """The child blocks, like ``for layer in net``."""
        return iter([child for _, child in self._children()])

    def __getitem__(self, key: int | str) -> Any:
        """A child block by position or name, a parameter by leaf name, or either by dotted path.

        Returns a :class:`ParameterTree` or a :class:`Parameter` (typed ``Any``, as pandas types
        ``DataFrame.__getitem__``, so ``tree["0.weight"].numpy()`` type-checks)."""
        if isinstance(key, (int, np.integer)):
            children = self._children()
            try:
                return children[int(key)][1]
            except IndexError:
                where = self.path or "the root"
                msg = (f"Cannot index block {where!r} with {int(key)}: expected a position in "
                       f"[{-len(children)}, {len(children)}), got {int(key)}. Print the tree to see its blocks.")
                raise errors.ParameterNotFoundError(msg, path=join_path(self.path, str(key)),
                                                    expected=len(children), got=int(key)) from None
        if not isinstance(key, str):
            msg = f"Cannot index a parameter tree: expected an int position or a str path, got {key!r}."
            raise errors.ParameterNotFoundError(msg, path=self.path, expected="int or str", got=key)
        node: ParameterTree = self
        segments = key.split(".") if key else [key]
        for i, segment in enumerate(segments):
            last = i == len(segments) - 1
            by_name = dict(node._children())
            if segment in by_name:
                node = by_name[segment]
                continue
            if last:
                leaves = dict(node._leaves())
                if segment in leaves:
                    return leaves[segment]
            self._not_found(key, node, segment)
        return node

    def _not_found(self, key: str, node: ParameterTree, segment: str) -> None:
        options = [name for name, _ in node._children()] + [name for name, _ in node._leaves()]
        close = difflib.get_close_matches(segment, options, n=3)
        hint = f"Did you mean {close}?" if close else f"It has {options[:10]}."
        full = join_path(self.path, key)
        msg = f"Cannot find {full!r}: block {node.path or '(root)'!r} has no child or parameter {segment!r}. {hint}"
        raise errors.ParameterNotFoundError(msg, path=full, expected=options, got=segment)

    # ---- devices ---------------------------------------------------------------

    def to(self, device: str, /) -> ParameterTree:
        """Move every parameter to ``device`` (``"cpu"``, ``"cuda:0"``...); ties are kept. Returns ``self``."""
        self._to(str(device))
        return self

    def __repr__(self) -> str:
        kind = type(self._native_obj).__name__
        where = f" at {self.path!r}" if self.path else ""
        return f"<{type(self).__name__} of {kind}{where}: {len(self.items())} parameters>"


def subtree(tree: ParameterCollection, root: str | None) -> ParameterCollection:
    """``tree[root]`` when ``root`` names a block (``root=`` of the load functions); ``tree`` for ``None``.

    Raises:
        InvalidArgumentError: ``root`` names a parameter, or ``tree`` is a selection, not a tree.
        ParameterNotFoundError: No such path.
    """
    if root is None:
        return tree
    node = tree[root] if isinstance(tree, ParameterTree) else None
    if not isinstance(node, ParameterTree):
        got = "a parameter" if node is not None else type(tree).__name__
        msg = (f"Cannot load into root {root!r}: expected a block of a tree, got {got}. Pass the path of the "
               "block that holds the parameters, on pp.tree(model).")
        raise errors.InvalidArgumentError(msg, path=root, expected="a block", got=got)
    return node
