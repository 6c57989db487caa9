"""Checkpoints: tie-aware, atomic :func:`save`; validated, all-or-nothing :func:`load`.

Files are safetensors (written by the ``safetensors`` library) or ``.npz``; both hold
one tensor per tie group in canonical layout, plus polyparam's metadata: the format
version, the layout, the tie groups and a checksum per tensor.
"""

from __future__ import annotations

import functools
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np

from polyparam import errors
from polyparam._gc import collector_paused
from polyparam._layout import format_shape, is_floating
from polyparam._manager import get_backend
from polyparam._params.mapping import KeyMap, Rename
from polyparam._params.parameter import Parameter
from polyparam._params.plan import (
    WritePlan,
    bookkeeping,
    check_keys,
    check_partial,
    fit_problem,
    resolve_keys,
    storage_groups,
)
from polyparam._params.training import cast_together
from polyparam._params.tree import ParameterTree, subtree
from polyparam.checkpoint.formats import Archive, PolyparamMetadata, open_archive
from polyparam.checkpoint.formats.hub import INDEX_NAMES, SINGLE_NAMES
from polyparam.checkpoint.io import (
    LoadReport,
    atomic_write,
    bookkeeping_keys,
    check_fit,
    check_recorded_ties,
    collect,
    contiguous,
    refuse_foreign_doubts,
    write_tensors,
)

HUB_NAMES = (*INDEX_NAMES, *SINGLE_NAMES)


def is_rank_sharded(directory: str) -> bool:
    """Whether ``directory`` holds polyparam's per-process shards (``rank-RRRRR-of-WWWWW.safetensors``)."""
    from polyparam.checkpoint.formats.orbax import is_orbax_checkpoint
    from polyparam.checkpoint.sharded import rank_files

    if is_orbax_checkpoint(directory):
        return False
    return bool(rank_files(directory)) or not any(
        os.path.isfile(os.path.join(directory, name)) for name in HUB_NAMES)

if typing.TYPE_CHECKING:
    from polyparam.checkpoint.background import SaveHandle

__all__ = ["LoadReport", "atomic_write", "collect", "convert", "load", "save"]


# ---- save -----------------------------------------------------------------------------


def _tree_of(obj: Any) -> ParameterTree:
    if isinstance(obj, ParameterTree):
        return obj
    from polyparam._manager import tree

    return tree(obj)


def save(tree: Any, path: str | os.PathLike[str], /, *, format: str | None = None,
         aliases: Literal["reference", "materialize"] = "reference", checksum: bool = True,
         sharded: bool = False, progress: bool | None = None,
         keys: Literal["canonical", "native"] = "canonical", max_shard_size: int | str | None = None,
         background: bool = False, staging: int | str | None = None) -> SaveHandle | None:
    """Save every parameter of ``tree`` to ``path``, atomically, one tensor per tie group.

    The file is written to a temporary file in the same directory, fsynced and renamed
    over ``path``: a crash at any point leaves the previous file intact. Each tensor's
    checksum is that of the bytes written, so a save made while another thread updates
    parameters in place gives a file :func:`load` reads; which update each value shows is
    not defined (save between updates for one consistent state; ``docs/checkpoints.md``).

    Args:
        tree: A :class:`ParameterTree` or any model :func:`polyparam.tree` accepts.
        path: ``*.safetensors`` (written by the safetensors library) or ``*.npz``.
        format: ``"safetensors"`` or ``"npz"``; taken from the extension when ``None``.
        aliases: ``"reference"`` stores a tie group once, under its first path, and
            records the other paths; ``"materialize"`` also stores every member's key
            (for readers that know nothing of ties).
        checksum: Record a checksum of each tensor, checked by :func:`load`.
        keys: ``"canonical"`` names tensors by canonical path; ``"native"`` by the
            framework's own names (a torch ``state_dict``'s keys), so that the framework's
            loader reads the file (torch: ``load_state_dict(safetensors.torch.load_file(f))``;
            pass ``aliases="materialize"`` too if the model has ties). Values are in
            canonical layout either way, which is torch's; :func:`load` reads both.
        progress: Show a progress bar (``None``: on a terminal, for big trees; see
            :mod:`polyparam._progress`).
        sharded: ``path`` is a directory; every process of a distributed job writes the
            shards it holds to its own file there, gathering nothing (call it on every
            process). :func:`load` reads such a directory into any world size or
            placement; :func:`polyparam.consolidate` makes one file of it.
        max_shard_size: Write the Hugging Face Hub's sharded layout into the directory
            ``path``: ``model-00001-of-0000N.safetensors`` shards of at most this size
            (``"5GB"``, ``"100MB"``, or bytes) and ``model.safetensors.index.json``, which
            ``transformers``' ``from_pretrained`` reads (with ``keys="native"``). Other
            files in the directory are kept; the previous checkpoint there stays complete
            until the new index replaces its own, and its shards are removed after.
        background: Take a snapshot of every tensor now (a copy, at most ``staging``
            bytes at a time), return a :class:`~polyparam.checkpoint.background.SaveHandle`
            at once and write while the caller goes on training. ``handle.wait()``
            returns when the file is in place and re-raises what went wrong.
        staging: The most bytes of snapshot a background save holds (``"2GB"``; ``None``:
            the whole model).

    Raises:
        UnsupportedFormatError: ``path`` is not a writable format.
        UnknownDTypeError: A dtype the format cannot store (or its reader would refuse).
        InvalidKeyError: A path the readers refuse as a tensor name (refused before writing).
        DeferredInitializationError, UninitializedParameterError: A parameter has no data yet.
        CheckpointWriteError: The file cannot be written: disk full, file too large, no
            permission (an ``OSError`` with its ``errno``; the previous file is kept).

    Example:
        >>> import numpy as np, polyparam as pp, tempfile, os
        >>> tree = pp.tree({"w": np.ones((2, 3), np.float32)})
        >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
        >>> pp.save(tree, path); pp.load(tree, path).loaded
        ['w']
    """
    if keys not in ("canonical", "native"):
        msg = f"Invalid value for argument `keys`: expected one of ('canonical', 'native'). Received: keys={keys!r}."
        raise errors.InvalidArgumentError(msg, argument="keys", expected=("canonical", "native"), got=keys)
    if aliases not in ("reference", "materialize"):
        msg = ("Invalid value for argument `aliases`: expected one of ('reference', 'materialize'). Received: "
               f"aliases={aliases!r}.")
        raise errors.InvalidArgumentError(msg, argument="aliases", expected=("reference", "materialize"), got=aliases)
    if staging is not None and not background:
        msg = (f"Invalid arguments: staging bounds a background save's snapshot; expected background=True with it. "
               f"Received: staging={staging!r}, background={background!r}.")
        raise errors.InvalidArgumentError(msg, argument="staging", expected="background=True", got=staging)
    if sharded and (background or max_shard_size is not None):
        msg = ("Invalid arguments: sharded=True writes one file per process and cannot be combined with "
               f"background=True or max_shard_size. Received: background={background!r}, "
               f"max_shard_size={max_shard_size!r}.")
        raise errors.InvalidArgumentError(msg, argument="sharded", expected="sharded alone",
                                          got="background/max_shard_size")
    tree = _tree_of(tree)
    if sharded:
        from polyparam.checkpoint.sharded import save_sharded

        save_sharded(tree, path, checksum=checksum)
        return None
    if background:
        from polyparam.checkpoint.background import save_in_background

        return save_in_background(tree, path, format=format, aliases=aliases, checksum=checksum, keys=keys,
                                  max_shard_size=max_shard_size, staging=staging)
    with collector_paused():   # see polyparam._gc
        tensors, meta = collect(tree, aliases=aliases, keys=keys, progress=progress,
                                description=f"save {os.path.basename(os.fspath(path))}")
    from polyparam.checkpoint.background import wait_for

    wait_for(path)   # a background save still writing this path finishes first: the file ends with this one
    with collector_paused():
        if max_shard_size is not None:
            from polyparam.checkpoint.hub import write_hub

            write_hub(path, tensors, meta, max_shard_size=max_shard_size, format=format, checksum=checksum)
        else:
            write_tensors(path, tensors, meta, format=format, checksum=checksum)
    return None


# ---- load -----------------------------------------------------------------------------


def load(tree: Any, path: str | os.PathLike[str], /, *, strict: bool = True, allow_missing: bool | None = None,
         ignore_extra: bool | None = None, skip_mismatch: bool = False, rename: Rename | None = None,
         strip_prefix: str | None = None, add_prefix: str | None = None, root: str | None = None,
         format: str | None = None, cast: bool = False, dtype: Literal["model", "saved"] = "model",
         ties: Literal["restore", "strict", "ignore"] = "restore", mmap: bool = True, verify: bool = True,
         progress: bool | None = None, match: Literal["path", "order"] = "path") -> LoadReport:
    """Load ``path`` into ``tree``, all or nothing, and restore the file's ties.

    Every key, shape, dtype and tie group is checked before the first write, and each
    tensor's checksum before it is written (a mismatch undoes the writes before it), so
    a refused file changes no parameter.

    Args:
        tree: A :class:`ParameterTree` or any model :func:`polyparam.tree` accepts.
        path: A file written by :func:`save`; any safetensors/npz file whose keys are
            canonical paths or the model's native names, in canonical layout; a torch
            ``state_dict`` file (``.pt``), a Gluon ``.params`` file, or a Keras
            ``.weights.h5`` file (into a Keras model, converted from Keras's layout).
        strict: Refuse missing and unexpected keys (the default of the next two).
        allow_missing: Leave model parameters the file lacks as they are (default: ``not strict``).
        ignore_extra: Ignore file keys the model lacks (default: ``not strict``).
        skip_mismatch: Skip values whose shape differs from the parameter's (a new
            classifier head) instead of refusing; ``report.skipped`` lists them.
        rename: ``[(regex, replacement), ...]`` applied in order to every file key
            (:func:`re.sub`), or a callable ``key -> new key`` (``None`` drops the key).
        strip_prefix: Remove this prefix from the file keys that have it (``"module."``).
        add_prefix: Put this prefix before every file key (after ``strip_prefix`` and ``rename``).
        root: Load into the subtree at this path: the file's keys are relative to it and
            only its parameters are expected.
        format: ``"safetensors"`` or ``"npz"``; from the extension when ``None``.
        cast: Accept values of another dtype of the same kind (float64 or bfloat16 into float32).
        dtype: ``"model"`` keeps every parameter's dtype (values are cast with ``cast=True``);
            ``"saved"`` makes floating parameters take the file's dtype (``tree.cast`` per
            parameter, where the backend can cast in place), as Gluon's ``dtype_source="saved"``.
        ties: ``"restore"`` ties the model's parameters the file records as tied;
            ``"strict"`` refuses any difference between the file's and the model's ties;
            ``"ignore"`` writes the values and leaves the model's ties as they are.
        mmap: Map the file instead of reading it (safetensors); faster, but a file
            truncated by another process while loading can crash the process (SIGBUS).
        verify: Check each tensor's recorded checksum right before it is written (a
            tensor that fits in the processor's cache is then read from memory once);
            a mismatch undoes every write before it, so a corrupt file changes nothing.
            ``False`` skips only this check, for files you trust (as safetensors and
            ``torch.load`` do: they have no checksums): a corrupted tensor then loads
            silently. Keys, shapes, dtypes, ties and byte ranges are always checked first.
        progress: Show a progress bar (``None``: on a terminal, for big trees).
        match: ``"path"`` matches file keys to paths (after any mapping); ``"order"``
            pairs the i-th stored tensor with the i-th parameter in model order (a
            framework's bookkeeping buffers aside), each pair of one shape (and role, where
            the file records roles), refusing before any write at the first pair that does
            not fit (as :func:`~polyparam.transfer` does). It needs a file that records its
            model order: polyparam's files, a torch ``state_dict`` (``.pt``), a Gluon
            ``.params``, an ``.npz``; safetensors files of other writers lay tensors out by
            dtype and name and are refused.

    Returns:
        A :class:`LoadReport`: what was loaded, renamed, skipped and left out.

    Raises:
        CheckpointFormatError: The file is malformed (one subclass per kind) or corrupt.
        StateError: Missing or unexpected keys (unless allowed), or two keys mapped to one path.
        ShapeMismatchError, DTypeMismatchError: A value does not fit its parameter.
        TieMismatchError: The file's ties and the model's cannot be reconciled.
    """
    if ties not in ("restore", "strict", "ignore"):
        msg = ("Invalid value for argument `ties`: expected one of ('restore', 'strict', 'ignore'). Received: "
               f"ties={ties!r}.")
        raise errors.InvalidArgumentError(msg, argument="ties", expected=("restore", "strict", "ignore"), got=ties)
    if match not in ("path", "order"):
        msg = f"Invalid value for argument `match`: expected 'path' or 'order'. Received: match={match!r}."
        raise errors.InvalidArgumentError(msg, argument="match", expected=("path", "order"), got=match)
    if match == "order" and (rename is not None or strip_prefix is not None or add_prefix is not None):
        msg = "Invalid arguments: match='order' pairs tensors by position; pass no rename or prefix with it."
        raise errors.InvalidArgumentError(msg, argument="match", expected="no key mapping", got="rename/prefix")
    tree = _tree_of(tree)
    keymap = KeyMap.of(rename=rename, strip_prefix=strip_prefix, add_prefix=add_prefix, root=root)
    target = typing.cast("ParameterTree", subtree(tree, root))
    file = os.fspath(path)
    if os.path.isdir(file) and is_rank_sharded(file):  # pp.save(tree, directory, sharded=True)
        from polyparam.checkpoint.sharded import load_sharded

        if dtype != "model" or match != "path":
            msg = (f"Cannot load sharded checkpoint {file!r} with dtype='saved' or match='order': expected a "
                   "single file, got a directory. Consolidate it first (pp.consolidate) and load that file.")
            raise errors.InvalidArgumentError(msg, file=file, expected="a single file", got="a directory")
        return load_sharded(target, file, strict=strict, cast=cast, ties=ties, verify=verify, keymap=keymap,
                            allow_missing=allow_missing, ignore_extra=ignore_extra, skip_mismatch=skip_mismatch)
    with open_archive(file, format=format, mmap=mmap) as archive:
        layout = archive.metadata.layout
        if layout not in ("canonical", tree.backend):
            msg = (f"Cannot load {file!r} into this {tree.backend} model: expected tensors in canonical layout or "
                   f"the {tree.backend} layout, got the {layout!r} layout. Load it into a model of the backend "
                   f"{layout!r}, then pp.save or pp.transfer from there.")
            raise errors.MetadataError(msg, file=file, expected="canonical", got=layout)
        if not isinstance(cast, (bool, np.bool_)):
            msg = f"Invalid value for argument `cast`: expected True or False. Received: cast={cast!r}."
            raise errors.InvalidArgumentError(msg, argument="cast", expected="a bool", got=cast)
        if dtype not in ("model", "saved"):
            msg = f"Invalid value for argument `dtype`: expected 'model' or 'saved'. Received: dtype={dtype!r}."
            raise errors.InvalidArgumentError(msg, argument="dtype", expected=("model", "saved"), got=dtype)
        if match == "order":
            pairs = _pair_in_order(target, archive)
            keymap = KeyMap.of(rename=pairs.get)
        options = _Options(strict=strict, allow_missing=allow_missing, ignore_extra=ignore_extra,
                           skip_mismatch=skip_mismatch, keymap=keymap, native=layout != "canonical",
                           saved_dtypes=dtype == "saved")
        with collector_paused():   # see polyparam._gc
            return _load(target, archive, options, cast=cast, ties=ties, verify=verify, progress=progress)


@dataclass(frozen=True)
class _Options:
    """How a load matches keys: the map, what may be missing or extra, whether mismatches are skipped."""

    strict: bool = True
    allow_missing: bool | None = None
    ignore_extra: bool | None = None
    skip_mismatch: bool = False
    keymap: KeyMap = field(default_factory=KeyMap)
    native: bool = False   # values in the backend's own layout (a Keras .weights.h5)
    saved_dtypes: bool = False   # dtype="saved": floating parameters take the file's dtype (cast in place first)


#: Formats whose entries come in the order the model's framework wrote them.
_ORDERED_FORMATS = ("torch", "mxnet", "npz")


def _pair_in_order(tree: ParameterTree, archive: Archive) -> dict[str, str]:
    """``{stored key: path}`` pairing the file's tensors with the model's in model order; refuses the first misfit."""
    file = archive.file
    if archive.metadata.order:
        keys = list(archive.metadata.order)
    elif archive.format in _ORDERED_FORMATS:
        keys = list(archive.entries)
    else:
        msg = (f"Cannot load {file!r} in model order: expected a file that records its tensors' model order, got "
               f"a {archive.format} file without it (safetensors lays tensors out by dtype and name). Match by "
               "path with rename=..., or save the source model with pp.save, which records the order.")
        raise errors.StateError(msg, expected="a recorded model order", got=archive.format)
    books = set(bookkeeping_keys(archive))
    stored = [key for key in keys if key not in books]
    groups = storage_groups(tree)
    model = [members[0] for members in groups.values() if not all(bookkeeping(p) for _, p in members)]
    roles = archive.metadata.roles
    for i, (key, (path, p)) in enumerate(zip(stored, model)):
        entry = archive.entries[key]
        shape = tuple(entry.shape)
        role = roles.get(key)
        if fit_problem(p, shape, entry.dtype) == "shape" or (role is not None and role != p.role):
            msg = (f"Cannot load {file!r} in model order: expected tensor {i} of the file and of the model to have "
                   f"one shape{' and role' if role is not None else ''}, got {key!r} "
                   f"({role or 'role unknown'}, {format_shape(shape)}) and {path!r} ({p.role}, "
                   f"{format_shape(p.shape)}). Nothing was changed. The models differ there: map the keys with "
                   "rename= instead.")
            raise errors.StateError(msg, path=path, expected=f"{p.role} {format_shape(p.shape)}",
                                    got=f"{role} {format_shape(shape)}")
    if len(stored) != len(model):
        longer = "file" if len(stored) > len(model) else "model"
        first = (stored[len(model)] if longer == "file" else model[len(stored)][0])
        msg = (f"Cannot load {file!r} in model order: expected as many tensors in the file as in the model, got "
               f"{len(stored)} and {len(model)}; the {longer} has {abs(len(stored) - len(model))} more, from "
               f"{first!r}. Nothing was changed.")
        raise errors.StateError(msg, path=first, expected=len(model), got=len(stored))
    pairs = {key: path for key, (path, _) in zip(stored, model)}
    # a framework's bookkeeping buffers pair among themselves, where both sides have as many of one shape each
    file_books = [key for key in keys if key in books]
    model_books = [members[0] for members in groups.values() if all(bookkeeping(p) for _, p in members)]
    if len(file_books) == len(model_books) and all(
            tuple(archive.entries[key].shape) == tuple(p.shape) for key, (_, p) in zip(file_books, model_books)):
        pairs.update({key: path for key, (path, _) in zip(file_books, model_books)})
    return pairs


def _load(tree: ParameterTree, archive: Archive, options: _Options, /, *, cast: bool, ties: str,
          verify: bool = True, progress: bool | None = None) -> LoadReport:
    file = archive.file
    subject = repr(file)
    groups = storage_groups(tree)
    mapped, renamed, dropped = options.keymap.apply(archive.paths(), subject=subject)
    stored = {mapped[key]: value for key, value in archive.paths().items() if key in mapped}  # mapped -> stored key
    resolved = resolve_keys(groups, stored, subject=subject)  # a model's native names -> canonical paths

    def path_of(key: str) -> str | None:
        return resolved.get(mapped[key], mapped[key]) if key in mapped else None

    source = {resolved[key]: value for key, value in stored.items()}
    optional = {q for q in map(path_of, bookkeeping_keys(archive)) if q is not None}
    missing, unexpected, ignored = check_keys(groups, source, strict=options.strict, subject=subject,
                                              optional=optional, allow_missing=options.allow_missing,
                                              ignore_extra=options.ignore_extra)
    plan = WritePlan(subject)

    read: Callable[[str], np.ndarray] = functools.partial(_read_checked, archive) if verify else archive.read

    # Ties: the file's groups, as sets of model identities that must end up as one.
    recorded = [[q for q in map(path_of, group) if q is not None] for group in archive.metadata.ties]
    plan.add_recorded_ties(groups, recorded, ties=ties, backend=tree.backend,
                           capabilities=get_backend(tree.backend).CAPABILITIES)
    if ties != "ignore":   # ties the model can make: the file must give each group one value
        check_recorded_ties(file, recorded, source, read)

    # Values: one stored key per model group; members given different tensors must agree.
    report = LoadReport(ignored_buffers=ignored, renamed=renamed, dropped=dropped)
    recast: list[tuple[Parameter, np.dtype]] = []
    stored_of: dict[str, str] = {}
    for members in groups.values():
        keys = list(dict.fromkeys(source[q] for q, _ in members if q in source))
        if not keys:
            continue
        path, p = members[0]
        read = functools.partial(_read_checked, archive) if verify else archive.read
        if options.native:   # a framework's own file: each value converted to canonical layout up front
            converted = {key: p._from_native_layout(archive.read(key)) for key in keys}
            read = converted.__getitem__
            shapes = {key: (value.shape, value.dtype) for key, value in converted.items()}
        else:
            shapes = {key: (archive.entries[key].shape, archive.entries[key].dtype) for key in keys}
        misfit = next((key for key in keys if fit_problem(p, shapes[key][0], shapes[key][1]) == "shape"), None)
        if options.skip_mismatch and misfit is not None:   # a tie group is skipped whole: it holds one value
            report.skipped.append((next(q for q, _ in members if source.get(q) == misfit),
                                   tuple(shapes[misfit][0]), tuple(p.shape)))
            continue
        file_dtype = np.dtype(shapes[keys[0]][1])
        if options.saved_dtypes and file_dtype != p.dtype and is_floating(file_dtype) and is_floating(p.dtype):
            recast.append((p, file_dtype))
        for key in keys:
            check_fit(plan, path, p, shapes[key][0], shapes[key][1], key=key, cast=cast or options.saved_dtypes)
        if ties != "ignore":
            plan.check_one_value(members, keys, read)
        box = p._local_box()
        if box is None:
            plan.add(path, p, functools.partial(read, keys[0]))
        else:   # a sharded parameter: this process reads and keeps (for undo) only its own box
            plan.add(path, p, functools.partial(_read_box, read, keys[0], box), local=True)
        stored_of[path] = keys[0]

    if not options.native:
        refuse_foreign_doubts(tree, archive.metadata, [(w.path, w.param, stored_of[w.path]) for w in plan.writes],
                              subject)
    report.missing, report.unexpected = missing, unexpected
    check_partial(subject, matched=len(plan.writes), missing=missing, unexpected=unexpected,
                  skipped=len(report.skipped), stacklevel=4)
    with cast_together(recast):
        plan.commit(description=f"load {os.path.basename(archive.file)}", progress=progress,
                    on_written=report.loaded.append, on_tied=report.tied.append)
    return report


def _read_checked(archive: Archive, key: str) -> np.ndarray:
    """``key``'s value once its recorded checksum agrees (summed on all threads, just before the write
    reads it again, from the cache where it fits)."""
    value = archive.read(key)
    archive.verify(key, value)
    return value


def _read_box(read: Callable[[str], np.ndarray], key: str, box: tuple[slice, ...]) -> np.ndarray:
    """The part of ``key``'s value a sharded parameter holds here (from a mapped file: only its pages are read)."""
    return read(key)[box]


# ---- inspect and convert ----------------------------------------------------------------


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str], /, *, format: str | None = None,
            checksum: bool = True, progress: Callable[[str], None] | None = None, rename: Rename | None = None,
            strip_prefix: str | None = None, add_prefix: str | None = None) -> PolyparamMetadata:
    """Copy every tensor of ``src`` (any readable format) into ``dst`` (safetensors or npz), keeping ties.

    ``rename``, ``strip_prefix`` and ``add_prefix`` map the keys on the way, as in
    :func:`load` (a dropped key is not written; two keys mapped to one are refused
    before anything is written). Returns the metadata written.
    """
    keymap = KeyMap.of(rename=rename, strip_prefix=strip_prefix, add_prefix=add_prefix)
    with open_archive(src) as archive:
        paths = archive.paths()   # every path, tie members too -> stored key
        mapped, _, _ = keymap.apply(paths, subject=repr(os.fspath(src)))
        stored_as = {key: mapped[path] for path, key in paths.items() if path == key and path in mapped}
        tensors = {}
        for key, name in stored_as.items():
            value = archive.read(key)
            archive.verify(key, value)
            tensors[name] = contiguous(value)
            if progress is not None:
                progress(key)
        meta = archive.metadata
        ties = [[mapped[q] for q in group if q in mapped] for group in meta.ties]
        ties = [group for group in ties if len(group) > 1 and any(q in tensors for q in group)]
        out = PolyparamMetadata(ties=ties, backend=meta.backend, layout=meta.layout,
                                roles={mapped[k]: v for k, v in meta.roles.items() if k in mapped},
                                buffers=[mapped[k] for k in meta.buffers if k in mapped],
                                doubts={mapped[k]: v for k, v in meta.doubts.items() if k in mapped})
        write_tensors(dst, tensors, out, format=format, checksum=checksum)
        return out
