"""``initialize``: Gluon's semantics on any backend, and its report."""

from __future__ import annotations

import math
import secrets
import warnings
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, cast

import numpy as np

from polyparam import errors
from polyparam._params.bulk import by_class
from polyparam._params.journal import Journal, exclusive_writes
from polyparam._progress import track
from polyparam.init.base import Initializer, ParamInfo
from polyparam.init.coerce import as_initializer
from polyparam.init.streams import _seed

if TYPE_CHECKING:
    from polyparam._params.parameter import Parameter

__all__ = ["InitReport", "initialize_parameters"]


@dataclass
class InitReport:
    """What one ``initialize`` call did, by canonical path.

    Attributes:
        initialized: Paths filled now.
        skipped: Path -> reason, for parameters left as they were.
        deferred: Paths whose shape is unknown; they are filled at the first forward pass.
        seed: The seed the values were drawn with (drawn at random when none was given):
            ``initialize(init, seed=report.seed)`` on the same architecture repeats them.
    """

    initialized: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    deferred: list[str] = field(default_factory=list)
    seed: int | None = None

    def __str__(self) -> str:
        return (f"initialized {len(self.initialized)}, skipped {len(self.skipped)}, "
                f"deferred {len(self.deferred)}")


def _info(p: Parameter) -> ParamInfo:
    return ParamInfo(path=p.path, native_name=p.native_name, role=p.role, axes=p.axes,
                     shape=cast("tuple[int, ...]", tuple(p.shape)), dtype=p.dtype, groups=p.groups,
                     kind=p.kind, declared=lambda: _declared(p))


def _declared(p: Parameter) -> Initializer | None:
    declared = p._declared_initializer()
    return None if declared is None else as_initializer(declared)


def fill_parameter(p: Parameter, initializer: Initializer, seed: int, *, by_role: bool,
                   info: ParamInfo | None = None, view: np.ndarray | None = None, every: bool | None = None) -> bool:
    """Draw ``p``'s value with its own generator and write it (``info``: ``p``'s facts, when read already;
    ``view``: where it is filled in place, from :func:`in_place_view`; ``every``: the initializer's
    ``_fills_every_element``, when asked already); then let the backend keep what its framework's own
    initialization keeps (:meth:`~polyparam._params.parameter.Parameter._after_fill`). Returns whether it
    did: the value was drawn by role, not copied by a ``Load``."""
    info = _info(p) if info is None else info
    _fill(p, initializer, seed, by_role=by_role, info=info, view=view, every=every)
    # as the framework's own initialization of the whole model; a loaded value is kept as it is, and one
    # parameter given an initializer (by_role off) is filled as is, as torch's own nn.init call does
    drawn = by_role and not initializer._copies(info)
    if drawn:
        p._after_fill()
    return drawn


def _fill(p: Parameter, initializer: Initializer, seed: int, *, by_role: bool,
          info: ParamInfo, view: np.ndarray | None, every: bool | None) -> None:
    if view is not None:
        initializer.fill(view, info, seed=seed, by_role=by_role)
        return
    initialized = p.state == "initialized"
    blocks = p._local_blocks() if initialized else None
    if blocks is not None:  # one value sharded over this process's devices: draw each distinct block alone
        values = []
        for block_box in blocks:
            block = np.empty(tuple(s.stop - s.start for s in block_box), info.dtype)
            initializer.fill_slice(block, info, block_box, seed=seed, by_role=by_role)
            values.append((block_box, block))
        p._write_blocks(values)
        return
    box = p._local_box() if initialized else None
    if box is not None:  # a shard of a distributed tensor: fill only this process's box
        local = p._local_view() if initializer._writes_in_place else None
        target = local if local is not None else np.empty(tuple(s.stop - s.start for s in box), info.dtype)
        initializer.fill_slice(target, info, box, seed=seed, by_role=by_role)
        if local is None:
            p._write_local(target)
        return
    in_place = initializer._writes_in_place and initialized
    every = initializer._fills_every_element if every is None else every
    # fill a buffer in native layout that the backend then takes as is (a TensorFlow variable's, or the
    # fresh storage a torch tensor's undo record left it: asked first, as the view is of the old storage);
    # a fresh buffer holds no values, so only for a fill that writes every element
    staging = p._staging() if in_place and every else None
    if staging is not None:
        buffer, adopt = staging
        initializer.fill(buffer, info, seed=seed, by_role=by_role)
        del buffer
        adopt()
        return
    view = p._writable_view() if in_place else None
    if view is not None:
        initializer.fill(view, info, seed=seed, by_role=by_role)
        return
    # elements a fill leaves keep their values, as they do when it fills through a view
    scratch = np.empty(info.shape, info.dtype)
    if initialized and not every:
        scratch[...] = p._read()
    initializer.fill(scratch, info, seed=seed, by_role=by_role)
    p._write(scratch)


def in_place_view(p: Parameter, initializer: Initializer) -> np.ndarray | None:
    """The view :func:`fill_parameter` fills ``p`` through in place, or ``None`` where it takes another way
    (a value sharded over devices or processes, a custom initializer, a backend without views)."""
    if not initializer._writes_in_place or p.state != "initialized":
        return None
    if p._local_blocks() is not None or p._local_box() is not None:
        return None
    return p._writable_view()


def initialize_parameters(params: Iterable[Parameter], init: Initializer | Callable[..., Any] | str | None, *,
                          force_reinit: bool = False, seed: int | None = None, by_role: bool = True,
                          progress: bool | None = None, skip_buffers: bool = False,
                          own_first: bool = False) -> InitReport:
    """Initialize ``params`` (tied parameters once), as ``ParameterTree.initialize`` documents.

    ``seed`` is ``None`` or an ``int`` from ``-2**63`` to ``2**64 - 1`` (anything else raises
    :class:`~polyparam.errors.InvalidArgumentError` before any work). The state checks and
    the writes run under :func:`~polyparam._params.journal.exclusive_writes`: another
    thread's ``initialize`` or load waits, then sees what this one wrote.

    With ``own_first`` (a tree or selection, not one parameter), a parameter's own
    initializer (:meth:`Parameter._own_initializer`, Gluon's ``Parameter.init``) wins over ``init``.
    """
    given = None if seed is None else _seed(seed)
    initializer = as_initializer(init)
    if given is None and initializer._framework_seed is not None:   # torch.manual_seed, a Keras seed=
        call_seed = _seed(initializer._framework_seed())
    else:
        call_seed = secrets.randbits(63) if given is None else given
    params = list(params)
    if own_first:
        owned = {p.path: own for p in params if (own := p._own_initializer()) is not None}
        if owned:
            from polyparam.init.composite import OwnFirst

            initializer = OwnFirst({path: as_initializer(own) for path, own in owned.items()}, initializer)
    with exclusive_writes():
        report = _initialize(params, initializer, call_seed, seed_given=seed is not None,
                             force_reinit=force_reinit, by_role=by_role, progress=progress,
                             skip_buffers=skip_buffers)
    initializer._finish()
    return report


def _initialize(params: list[Parameter], initializer: Initializer, call_seed: int, *, seed_given: bool,
                force_reinit: bool, by_role: bool, progress: bool | None, skip_buffers: bool) -> InitReport:
    report = InitReport()
    todo: list[Parameter] = []
    infos: dict[int, ParamInfo] = {}   # each parameter's facts, read once (its axes take a walk of its layer)
    states: dict[int, str] = {}        # and its state, read once: nothing below changes it before its fill
    seen: set[Any] = set()
    left: list[tuple[str, str]] = []
    by_declaration: list[Parameter] = []
    for p in params:
        key = p._identity()
        if key in seen:
            continue
        seen.add(key)
        if skip_buffers and p.role == "other":
            # a role no initializer knows: keep a value it has; give one without a value what its framework
            # declares (a Gluon constant, PReLU's slope), or, for a parameter, the initializer's draw
            wants = p.state == "uninitialized" or type(initializer).__name__ == "Declared"
            declared = p._declared_initializer() if wants else None
            if declared is not None:
                if p.state == "initialized" and not force_reinit:   # as every other parameter
                    warnings.warn(f"Parameter {p.path!r} is already initialized, ignoring. Set force_reinit=True "
                                  "to re-initialize.", errors.AlreadyInitializedWarning, stacklevel=4)
                    report.skipped[p.path] = "already initialized"
                    continue
                if p.state == "initialized":
                    p._require_writable("initialize")
                by_declaration.append(p)
                report.initialized.append(p.path)
                continue
            if p.kind != "parameter" or (p.state == "initialized" and not _fits(initializer, p, by_role)):
                report.skipped[p.path] = f"a {p.kind} of unknown role: select it to initialize it"
                left.append((p.kind, p.path))
                continue
        state = states[id(p)] = p.state
        if state != "deferred" and p.size == 0:
            warnings.warn(f"Parameter {p.path!r} has no elements (shape {tuple(p.shape)}): initializing it "
                          "changes nothing.", errors.PolyparamWarning, stacklevel=4)
        if state == "initialized" and not force_reinit:
            warnings.warn(f"Parameter {p.path!r} is already initialized, ignoring. "
                          "Set force_reinit=True to re-initialize.", errors.AlreadyInitializedWarning, stacklevel=4)
            report.skipped[p.path] = "already initialized"
        elif state == "deferred":
            report.deferred.append(p.path)
            todo.append(p)
        else:
            infos[id(p)] = _info(p)
            initializer.check(infos[id(p)], by_role=by_role)   # refuse before the first write
            if state == "initialized":
                p._require_writable("initialize")
            # shape known but no storage yet (torch meta tensors): recorded, filled on materialization
            (report.deferred if p._defers_init() else report.initialized).append(p.path)
            todo.append(p)

    if left:
        kinds = [kind for kind in ("buffer", "constant", "parameter") if any(k == kind for k, _ in left)]
        counts = " and ".join(f"{sum(k == kind for k, _ in left)} {kind}(s)" for kind in kinds)
        paths = [path for _, path in left]
        warnings.warn(f"initialize left {counts} of unknown role as they are: {paths[:5]}"
                      f"{' ...' if len(paths) > 5 else ''}. Select them (tree.select(...)) to initialize them.",
                      errors.PolyparamWarning, stacklevel=4)
    if not seed_given:  # one random seed for every process of a distributed model
        call_seed = next((p._agree_seed(call_seed) for p in todo if p._placement() is not None), call_seed)
    report.seed = call_seed
    for p in todo:
        if id(p) not in infos:
            infos[id(p)] = _info(p)
        info = infos[id(p)]
        if info.dtype.kind in "biu" and states[id(p)] != "deferred":
            _require_integral(p, initializer, call_seed, by_role)   # before the first write, never a silent cast
    for p in todo:
        initializer._note(infos[id(p)])
    # all or nothing, whatever a fill raises (the initializer, the framework, ^C)
    journal = Journal("initialize", writer="the initializer and the framework")
    # filled now, or (None) when it gets its storage or shape; with the bytes it writes, for the
    # undo limit and the progress bar
    now = {id(p): None if states[id(p)] == "deferred" or p._defers_init() else
           infos[id(p)].dtype.itemsize * math.prod(infos[id(p)].shape) for p in todo}
    journal.check_limit([p for p in todo if states[id(p)] == "initialized" and now[id(p)] is not None]
                        + [p for p in by_declaration if p.state == "initialized"])
    # whether every fill writes the whole value and touches nothing else: polyparam's own initializers. Other
    # code may leave elements as they were, or write the model's tensors itself: it keeps the undo copy.
    whole = initializer._fills_every_element
    drawn: list[Parameter] = []   # drawn by role, now or when they get storage (not copied by a Load)
    if by_declaration:
        from polyparam.init.composite import Declared

        as_declared = Declared()
    try:
        for p in by_declaration:   # not the tree-wide initializer: what the framework declares for it
            journal.keep(p)
            fill_parameter(p, as_declared, call_seed, by_role=False)
        for p in track(todo, description="initialize", progress=progress, weight=lambda p: now[id(p)] or 0):
            nbytes = now[id(p)]
            if nbytes is None:
                p._defer(_deferred_fill(p, initializer, call_seed, by_role))
                if by_role and not initializer._copies(infos[id(p)]):
                    drawn.append(p)   # (the hook records what it derives, to run after these fills)
                continue
            # a fill that writes every element may go to fresh storage, the old one kept as the undo record
            # (large torch tensors, Keras on TensorFlow); else the undo copy is taken from the view it fills
            if whole and states[id(p)] == "initialized" and journal.move(p, nbytes=nbytes):
                view = None
            else:
                view = in_place_view(p, initializer)   # read once: the undo copy is taken from it
                local = view is None and p._local_box() is not None
                journal.keep(p, local=local, nbytes=None if local else nbytes, view=view)
            if fill_parameter(p, initializer, call_seed, by_role=by_role, info=infos[id(p)], view=view, every=whole):
                drawn.append(p)
        for cls, members in by_class(drawn):   # what the framework derives from several drawn tensors
            cls._after_fill_many(members)
    except BaseException as exc:
        error = journal.fail(exc)
        if error is exc:
            raise
        raise error from exc
    return report


def _require_integral(p: Parameter, initializer: Initializer, seed: int, by_role: bool) -> None:
    """Refuse to fill an integer or boolean parameter (an int8 quantized kernel) with values it cannot hold.

    The initializer draws into a float64 scratch array first: random draws are not whole
    numbers, and writing them would truncate silently (Xavier would give an int8 kernel of zeros).
    """
    info = replace(_info(p), dtype=np.dtype(np.float64))
    scratch = np.zeros(info.shape, np.float64)
    initializer.fill(scratch, info, seed=seed, by_role=by_role)
    limits = (0, 1) if p.dtype.kind == "b" else (np.iinfo(p.dtype).min, np.iinfo(p.dtype).max)
    bad = ~np.isfinite(scratch) | (scratch != np.round(scratch)) | (scratch < limits[0]) | (scratch > limits[1])
    if bad.any():
        k = int(np.argmax(bad))
        name = type(initializer).__name__
        msg = (f"Cannot initialize parameter {p.path!r} ({p.dtype.name}) with {name}: expected whole numbers from "
               f"{limits[0]} to {limits[1]}, got {scratch.flat[k]!r} (a cast would change it silently). Leave "
               "integer tensors (quantized kernels, counters) out of the selection, or fill them with "
               "Zero, One or an integer Constant.")
        raise errors.InitializerError(msg, path=p.path, expected=f"whole numbers in {p.dtype.name}",
                                      got=float(scratch.flat[k]))


def _fits(initializer: Initializer, p: Parameter, by_role: bool) -> bool:
    """Whether ``initializer`` can fill ``p`` (a fan-based one cannot fill a tensor without in/out axes)."""
    try:
        initializer.check(_info(p), by_role=by_role)
    except errors.InitializerError:
        return False
    return True


def _deferred_fill(p: Parameter, initializer: Initializer, seed: int, by_role: bool) -> Callable[[], None]:
    def fill() -> None:
        initializer.check(_info(p), by_role=by_role)
        fill_parameter(p, initializer, seed, by_role=by_role)

    return fill
