"""Checkpoints: tie-aware, atomic :func:`save`; validated, all-or-nothing :func:`load`.

Files are safetensors (written by the ``safetensors`` library) or ``.npz``; both hold
one tensor per tie group in canonical layout, plus polyparam's metadata: the format
version, the layout, the tie groups and a checksum per tensor.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal

import numpy as np

from polyparam import errors
from polyparam._formats import (WRITABLE, Archive, PolyparamMetadata, detect_format, fingerprint, open_archive)
from polyparam._parameter import Parameter, format_shape
from polyparam._tree import ParameterTree, check_keys, storage_groups

__all__ = ["LoadReport", "atomic_write", "convert", "load", "save"]


# ---- atomic writes --------------------------------------------------------------------


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not every platform lets a directory be opened (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


#: This host, as temporary file names carry it (a process id means nothing on another host).
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"


def _remove_stale_temporaries(directory: str, prefix: str) -> None:
    """Delete ``prefix<pid>.*.tmp`` folders left by killed saves: same host, process no longer running."""
    if os.name != "posix":      # os.kill(pid, 0) only probes on POSIX
        return
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
                continue
            pid = entry.name[len(prefix):].split(".", 1)[0]
            if not pid.isdigit() or int(pid) == os.getpid() or _running(int(pid)):
                continue
            shutil.rmtree(entry.path, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:             # exists but is not ours to signal, or cannot be probed
        return True
    return True


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], /) -> Iterator[str]:
    """Yield a temporary path in ``path``'s directory; on success it replaces ``path`` durably.

    The temporary file is fsynced, renamed over the target (``os.replace``, atomic on
    one filesystem) and the directory fsynced. On any exception, including
    ``KeyboardInterrupt``, the temporary file is removed and the target is untouched.

    The temporary file lives in its own folder ``.<name>.<host>-<pid>.*.tmp`` beside the
    target, so whatever a writer makes there (safetensors writes its own temporary file
    and renames it) goes with it. A process killed midway leaves the target as it was
    and that folder, which the next save to the same target on this host deletes once
    the process is gone.
    """
    target = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(target)
    prefix = f".{name}.{_HOST}-"
    _remove_stale_temporaries(directory, prefix)
    work = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}.", suffix=".tmp", dir=directory)
    tmp = os.path.join(work, name)
    try:
        try:
            mode = os.stat(target).st_mode & 0o7777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        yield tmp
        # writers that replace the temporary file themselves make 0600: keep the
        # target's permissions, or the usual ones for a new file
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(directory)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---- save -----------------------------------------------------------------------------


def _tree_of(obj: Any) -> ParameterTree:
    if isinstance(obj, ParameterTree):
        return obj
    import polyparam

    return polyparam.tree(obj)


def _contiguous(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def write_tensors(path: str | os.PathLike[str], tensors: dict[str, np.ndarray], meta: PolyparamMetadata, *,
                  format: str | None = None, checksum: bool = True) -> None:
    """Write ``tensors`` and ``meta`` atomically in ``format`` (from the extension by default)."""
    file = os.fspath(path)
    fmt = format or detect_format(file)
    if fmt not in WRITABLE:
        msg = (f"Cannot save to {file!r}: expected a writable format {list(WRITABLE)}, got {fmt!r}. "
               "Save as .safetensors or .npz (native formats are read-only for polyparam).")
        raise errors.UnsupportedFormatError(msg, file=file, expected=list(WRITABLE), got=fmt)
    if fmt == "safetensors":
        from polyparam._formats._safetensors import st_dtype_name, write

        # The writer takes raw pointers: every array must be C-contiguous and native-endian.
        tensors = {key: _contiguous(value) for key, value in tensors.items()}
        for key, value in tensors.items():
            if st_dtype_name(value.dtype) is None:
                msg = (f"Cannot save {key!r} to {file!r}: expected a dtype safetensors stores, got "
                       f"{value.dtype.name!r}. Save as .npz, or cast the parameter.")
                raise errors.UnknownDTypeError(msg, file=file, path=key, expected="safetensors dtype", got=value.dtype.name)
    if checksum:
        meta.checksums = {key: fingerprint(value) for key, value in tensors.items()}
    strings = meta.to_strings()
    with atomic_write(file) as tmp:
        if fmt == "safetensors":
            write(tmp, tensors, strings)
        else:
            from polyparam._formats._npz import write as write_npz

            with open(tmp, "wb") as fh:
                write_npz(fh, tensors, strings)


def save(tree: Any, path: str | os.PathLike[str], /, *, format: str | None = None,
         aliases: Literal["reference", "materialize"] = "reference", checksum: bool = True,
         sharded: bool = False, progress: bool | None = None) -> None:
    """Save every parameter of ``tree`` to ``path``, atomically, one tensor per tie group.

    The file is written to a temporary file in the same directory, fsynced and renamed
    over ``path``: a crash at any point leaves the previous file intact.

    Args:
        tree: A :class:`ParameterTree` or any model :func:`polyparam.tree` accepts.
        path: ``*.safetensors`` (written by the safetensors library) or ``*.npz``.
        format: ``"safetensors"`` or ``"npz"``; taken from the extension when ``None``.
        aliases: ``"reference"`` stores a tie group once, under its first path, and
            records the other paths; ``"materialize"`` also stores every member's key
            (for readers that know nothing of ties).
        checksum: Record a checksum of each tensor, checked by :func:`load`.
        progress: Show a progress bar (``None``: on a terminal, for big trees; see
            :mod:`polyparam._progress`).
        sharded: ``path`` is a directory; every process of a distributed job writes the
            shards it holds to its own file there, gathering nothing (call it on every
            process). :func:`load` reads such a directory into any world size or
            placement; :func:`polyparam.consolidate` makes one file of it.

    Raises:
        UnsupportedFormatError: ``path`` is not a writable format.
        UnknownDTypeError: A dtype the format cannot store.
        DeferredInitializationError, UninitializedParameterError: A parameter has no data yet.
        OSError: The file cannot be written (the previous file is kept).

    Example:
        >>> import numpy as np, polyparam as pp, tempfile, os
        >>> tree = pp.tree({"w": np.ones((2, 3), np.float32)})
        >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
        >>> pp.save(tree, path); pp.load(tree, path).loaded
        ['w']
    """
    if aliases not in ("reference", "materialize"):
        msg = f"Invalid value for argument `aliases`: expected one of ('reference', 'materialize'). Received: aliases={aliases!r}."
        raise ValueError(msg)
    tree = _tree_of(tree)
    if sharded:
        from polyparam._sharded import save_sharded

        save_sharded(tree, path, checksum=checksum)
        return
    tensors: dict[str, np.ndarray] = {}
    roles: dict[str, str] = {}
    from polyparam._progress import track

    for path_, p in track(tree.items(), description=f"save {os.path.basename(os.fspath(path))}",
                          progress=progress, weight=lambda item: item[1].nbytes):
        tensors[path_] = _contiguous(p.numpy())
        roles[path_] = p.role
    ties = [list(group.paths) for group in tree.ties()]
    if aliases == "materialize":
        for group in ties:
            for member in group[1:]:
                tensors[member] = tensors[group[0]]
                roles[member] = roles[group[0]]
    meta = PolyparamMetadata(ties=ties, backend=tree.backend, aliases=aliases, roles=roles)
    write_tensors(path, tensors, meta, format=format, checksum=checksum)


# ---- load -----------------------------------------------------------------------------


@dataclass
class LoadReport:
    """What :func:`load` did.

    Attributes:
        loaded: Paths written (one per tie group of the model).
        missing: Model paths the file had no value for (only with ``strict=False``).
        unexpected: File paths the model has no parameter for (only with ``strict=False``).
        tied: Tie groups restored from the file (paths).
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    tied: list[list[str]] = field(default_factory=list)


def _check_fits(p: Parameter, path: str, key: str, archive: Archive, cast: bool) -> None:
    entry = archive.entries[key]
    shape = p.shape
    if len(shape) != len(entry.shape) or any(d is not None and d != g for d, g in zip(shape, entry.shape)):
        msg = (f"Cannot load {key!r} from {archive.file!r} into parameter {path!r}: expected shape "
               f"{format_shape(shape)}, got {format_shape(entry.shape)}. Load a checkpoint of the same architecture "
               "(canonical layout: dense weights are (out, in)).")
        raise errors.ShapeMismatchError(msg, path=path, expected=shape, got=entry.shape)
    if entry.dtype != p.dtype:
        castable = entry.dtype.kind in "biufc" and np.can_cast(entry.dtype, p.dtype, casting="same_kind")
        if not (cast and castable):
            fix = ("Pass cast=True to convert it." if castable
                   else f"Convert the checkpoint to {p.dtype.name!r} first.")
            msg = (f"Cannot load {key!r} from {archive.file!r} into parameter {path!r}: expected dtype "
                   f"{p.dtype.name!r}, got {entry.dtype.name!r}. {fix}")
            raise errors.DTypeMismatchError(msg, path=path, expected=p.dtype, got=entry.dtype)
    if p.state == "deferred" and not p._accepts_deferred_value():
        p._require_data(f"load {key!r} into")


def load(tree: Any, path: str | os.PathLike[str], /, *, strict: bool = True, format: str | None = None,
         cast: bool = False, ties: Literal["restore", "strict", "ignore"] = "restore",
         mmap: bool = True, verify: bool = True, progress: bool | None = None) -> LoadReport:
    """Load ``path`` into ``tree``, all or nothing, and restore the file's ties.

    Every key, shape, dtype, tie group and checksum is checked before the first write,
    so a refused file changes no parameter.

    Args:
        tree: A :class:`ParameterTree` or any model :func:`polyparam.tree` accepts.
        path: A file written by :func:`save`, or any safetensors/npz file whose keys are
            canonical paths in canonical layout.
        strict: Refuse missing and unexpected keys.
        format: ``"safetensors"`` or ``"npz"``; from the extension when ``None``.
        cast: Accept values of another dtype of the same kind (float64 into float32).
        ties: ``"restore"`` ties the model's parameters the file records as tied;
            ``"strict"`` refuses any difference between the file's and the model's ties;
            ``"ignore"`` writes the values and leaves the model's ties as they are.
        mmap: Map the file instead of reading it (safetensors); faster, but a file
            truncated by another process while loading can crash the process (SIGBUS).
        verify: Check every tensor's recorded checksum before the first write, which
            reads the data twice (about 1.7x the time of a load that does not check).
            ``False`` skips only this check, for files you trust (as safetensors and
            ``torch.load`` do: they have no checksums): a corrupted tensor then loads
            silently. Keys, shapes, dtypes, ties and byte ranges are always checked first.
        progress: Show a progress bar (``None``: on a terminal, for big trees).

    Returns:
        A :class:`LoadReport`.

    Raises:
        CheckpointFormatError: The file is malformed (one subclass per kind) or corrupt.
        StateError: Missing or unexpected keys with ``strict``.
        ShapeMismatchError, DTypeMismatchError: A value does not fit its parameter.
        TieMismatchError: The file's ties and the model's cannot be reconciled.
    """
    if ties not in ("restore", "strict", "ignore"):
        msg = f"Invalid value for argument `ties`: expected one of ('restore', 'strict', 'ignore'). Received: ties={ties!r}."
        raise ValueError(msg)
    tree = _tree_of(tree)
    file = os.fspath(path)
    if os.path.isdir(file):  # a sharded checkpoint: pp.save(tree, directory, sharded=True)
        from polyparam._sharded import load_sharded

        return load_sharded(tree, file, strict=strict, cast=cast, verify=verify)
    with open_archive(file, format=format, mmap=mmap) as archive:
        if archive.metadata.layout != "canonical":
            msg = (f"Cannot load {file!r} into a tree: expected tensors in canonical layout, got "
                   f"{archive.metadata.layout!r} layout. Convert it with a polyparam tree of that framework.")
            raise errors.MetadataError(msg, file=file, expected="canonical", got=archive.metadata.layout)
        return _load(tree, archive, strict=strict, cast=cast, ties=ties, verify=verify, progress=progress)


def _load(tree: ParameterTree, archive: Archive, *, strict: bool, cast: bool, ties: str, verify: bool = True,
          progress: bool | None = None) -> LoadReport:
    file = archive.file
    source = archive.paths()  # file path -> stored key
    groups = storage_groups(tree)
    model_paths = {path: key for key, members in groups.items() for path, _ in members}
    missing, unexpected = check_keys(groups, source, strict=strict, subject=repr(file))

    # Tie plan: the file's groups, as sets of model identities that must end up as one.
    to_tie: list[list[tuple[str, Parameter]]] = []
    for fgroup in archive.metadata.ties:
        present = [(q, groups[model_paths[q]]) for q in fgroup if q in model_paths]
        identities = list(dict.fromkeys(model_paths[q] for q, _ in present))
        if len(identities) < 2:
            continue
        anchors = [groups[i][0] for i in identities]
        if ties == "strict":
            msg = (f"Cannot load {file!r}: expected the model to tie {[q for q, _ in present]} as the file does, got "
                   f"them untied. Pass ties='restore' to tie them, or tie them with pp.tie first.")
            raise errors.TieMismatchError(msg, path=present[0][0], expected="tied", got="untied")
        if ties == "ignore":
            continue
        first_path, first = anchors[0]
        for q, member in anchors[1:]:
            problem = None
            if member.shape != first.shape:
                problem = f"shapes {format_shape(first.shape)} and {format_shape(member.shape)}"
            elif member.dtype != first.dtype:
                problem = f"dtypes {first.dtype.name!r} and {member.dtype.name!r}"
            elif member.device != first.device:
                problem = f"devices {first.device!r} and {member.device!r}"
            elif type(member).backend != type(first).backend:
                problem = "different backends"
            if problem:
                msg = (f"Cannot load {file!r}: expected {first_path!r} and {q!r} to be tieable as the file records, "
                       f"got {problem}. Load into the architecture the file was saved from.")
                raise errors.TieMismatchError(msg, path=q, expected=first_path, got=problem)
        to_tie.append(anchors)
    if to_tie:
        from polyparam._manager import get_backend

        backend = get_backend(tree.backend)
        if "tying" not in backend.CAPABILITIES:
            msg = (f"Cannot load {file!r}: expected a backend that can tie parameters to restore the file's ties "
                   f"{[[q for q, _ in a] for a in to_tie]}, got the {tree.backend} backend. Pass ties='ignore'.")
            raise errors.TieMismatchError(msg, path=to_tie[0][0][0], expected="tying", got=tree.backend)

    # Value plan: one stored key per model group; members given different tensors must agree.
    plan: list[tuple[str, Parameter, str]] = []
    report = LoadReport(unexpected=unexpected if not strict else [], missing=missing if not strict else [])
    for members in groups.values():
        keys = list(dict.fromkeys(source[q] for q, _ in members if q in source))
        if not keys:
            continue
        path, p = members[0]
        for key in keys:
            _check_fits(p, path, key, archive, cast)
        if len(keys) > 1:
            values = [archive.read(k) for k in keys]
            for k, v in zip(keys[1:], values[1:]):
                if not np.array_equal(v, values[0]):
                    if ties == "ignore":
                        break
                    msg = (f"Cannot load {file!r}: expected one value for the model's tie group "
                           f"{[q for q, _ in members]}, got different tensors {keys[0]!r} and {k!r}. Untie the "
                           "model's parameters first, or pass ties='ignore' to take the first.")
                    raise errors.TieMismatchError(msg, path=path, expected=keys[0], got=k)
            del values
        plan.append((path, p, keys[0]))
    if verify:  # one tensor at a time (archives read through one file handle); each is summed on all threads
        for _, _, key in plan:
            archive.verify(key, archive.read(key))

    # Commit: nothing below is expected to fail on validated input.
    for anchors in to_tie:
        from polyparam._tie import tie

        tie(*[p for _, p in anchors])
        report.tied.append([q for q, _ in anchors])
    from polyparam._progress import track

    for path, p, key in track(plan, description=f"load {os.path.basename(archive.file)}", progress=progress,
                              weight=lambda item: item[1].nbytes):
        value = archive.read(key)
        p._commit(value)
        del value
        report.loaded.append(path)
    return report


# ---- inspect and convert ----------------------------------------------------------------


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str], /, *, format: str | None = None,
            checksum: bool = True, progress: Callable[[str], None] | None = None) -> PolyparamMetadata:
    """Copy every tensor of ``src`` (any readable format) into ``dst`` (safetensors or npz), keeping ties.

    Returns the metadata written.
    """
    with open_archive(src) as archive:
        tensors = {}
        for key in archive.entries:
            value = archive.read(key)
            archive.verify(key, value)
            tensors[key] = _contiguous(value)
            if progress is not None:
                progress(key)
        meta = PolyparamMetadata(ties=[list(g) for g in archive.metadata.ties], backend=archive.metadata.backend,
                                 layout=archive.metadata.layout, roles=dict(archive.metadata.roles))
        write_tensors(dst, tensors, meta, format=format, checksum=checksum)
        return meta
