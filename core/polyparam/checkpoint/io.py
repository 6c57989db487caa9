"""What every checkpoint writer and reader shares: atomic writes, tensors to a file, the load report."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import zipfile
from typing import IO, TYPE_CHECKING, Any, Callable, Iterator, Literal, Mapping

import numpy as np

from polyparam import errors
from polyparam._params.plan import (
    SHOW_THE_LAYOUT,
    LoadReport,
    WritePlan,
    bookkeeping,
    fit_problem,
    integer_codes,
    layout_doubts,
    refuse_doubtful_layouts,
    same_value,
    storage_groups,
)
from polyparam._threads import TILED_FROM, parallel_copy, tiled_copy
from polyparam.checkpoint.formats import WRITABLE, Archive, PolyparamMetadata, detect_format
from polyparam.checkpoint.formats.base import write_snapshot

if TYPE_CHECKING:
    from polyparam._params.parameter import Parameter
    from polyparam._params.tree import ParameterTree

__all__ = ["LoadReport", "MetadataStrings", "atomic_write", "bookkeeping_keys", "check_fit", "check_recorded_ties",
           "check_writable", "collect", "contiguous", "metadata_strings", "native_order", "refuse_foreign_doubts",
           "remove_stale_temporaries", "require_writable_format", "write_checked", "write_error", "write_safetensors",
           "write_tensors"]


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
#: The longest file name most file systems take (bytes).
_NAME_MAX = 255


def _temp_tag(name: str) -> str:
    """The target's name as its temporary folder carries it: the name itself, or, when the folder name
    would exceed 255 bytes, its start followed by ``~`` and a hash of the whole name (unique per target)."""
    # ".<tag>.<host>-<pid up to 10 digits>.<8 random>.tmp"
    room = _NAME_MAX - len(f"..{_HOST}-") - 10 - len(".") - 8 - len(".tmp")
    if len(os.fsencode(name)) <= room:
        return name
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    short = name
    while len(os.fsencode(short)) > room - 1 - len(digest):
        short = short[:-1]
    return f"{short}~{digest}"


def _temporary_pid(entry: str, tag: str) -> int | None:
    """The process id in ``.<tag>.<host>-<pid>.<random>.tmp`` made on this host for exactly ``tag``, else ``None``.

    Parsed from the right: the host and the random part hold no dot, the tag may.
    """
    if not (entry.startswith(".") and entry.endswith(".tmp")):
        return None
    parts = entry[1:-len(".tmp")].rsplit(".", 2)
    if len(parts) != 3 or parts[0] != tag:
        return None
    match = re.fullmatch(re.escape(_HOST) + r"-(\d+)", parts[1])
    return int(match.group(1)) if match else None


def remove_stale_temporaries(directory: str, tag: str) -> None:
    """Delete the temporary folders of killed saves to this target: same host, process no longer running."""
    if os.name != "posix":      # os.kill(pid, 0) only probes on POSIX
        return
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            pid = _temporary_pid(entry.name, tag)
            if pid is None or pid == os.getpid() or _running(pid):
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


_FIXES = {
    errno.ENOSPC: "Free disk space or save elsewhere",
    errno.EDQUOT: "Free space within your quota or save elsewhere",
    errno.EFBIG: "Raise the file size limit (ulimit -f) or save elsewhere",
    errno.EACCES: "Make the file and its directory writable, or save elsewhere",
    errno.EPERM: "Make the file and its directory writable, or save elsewhere",
    errno.EROFS: "Save to a writable file system",
    errno.EISDIR: "Remove the directory or save under another name",
    errno.ENAMETOOLONG: "Use a shorter name",
}


def write_error(target: str, exc: BaseException) -> errors.CheckpointWriteError:
    """A :class:`~polyparam.errors.CheckpointWriteError` for ``target`` from the writer's own error.

    Keeps the error number (``OSError.errno``, or the one in a ``SafetensorError``'s text)
    and names the target, not the temporary path the writer was given.
    """
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None:
        found = re.search(r"(?:os error|code:) ?(\d+)", str(exc))
        code = int(found.group(1)) if found else None
    reason = os.strerror(code) if code is not None else f"{type(exc).__name__}: {str(exc)[:200]}"
    fix = _FIXES.get(code, "Check the directory and the disk, then save again") if code is not None else (
        "Check the directory and the disk, then save again")
    msg = f"Cannot save {target!r}: expected to write the file, got {reason}. {fix}; the previous file is kept."
    return errors.CheckpointWriteError(msg, file=target, errno=code, expected="a written file", got=reason)


def _is_write_failure(exc: BaseException) -> bool:
    """An error of the file system while writing (the safetensors writer reports those as ``SafetensorError``)."""
    if isinstance(exc, errors.PolyparamError):
        return False
    return isinstance(exc, OSError) or type(exc).__name__ == "SafetensorError"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], /) -> Iterator[str]:
    """Yield a temporary path in ``path``'s directory; on success it replaces ``path`` durably.

    The temporary file is fsynced, renamed over the target (``os.replace``, atomic on
    one filesystem) and the directory fsynced. On any exception, including
    ``KeyboardInterrupt``, the temporary file is removed and the target is untouched.
    A failure of the file system (disk full, file too large, no permission), whether
    the writer reports it as ``OSError`` or otherwise, is raised as
    :class:`~polyparam.errors.CheckpointWriteError` naming the target, with its ``errno``.

    The temporary file lives in its own folder ``.<name>.<host>-<pid>.*.tmp`` beside the
    target (``<name>`` shortened and hashed when the folder name would pass 255 bytes),
    so whatever a writer makes there goes with it. A process killed midway leaves the
    target as it was and that folder, which the next save to the same target on this
    host deletes once the process is gone; folders of other targets, hosts and running
    processes are matched exactly and left alone.
    """
    target = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(target)
    tag = _temp_tag(name)
    try:
        try:
            mode = os.stat(target).st_mode & 0o7777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        # a file the caller may not write stays as it is (a symlink is replaced, not followed)
        if os.path.isfile(target) and not os.path.islink(target) and not os.access(target, os.W_OK):
            code = errno.EROFS if _read_only_mount(directory) else errno.EACCES   # which fix to give
            raise OSError(code, os.strerror(code), target)
        remove_stale_temporaries(directory, tag)
        work = tempfile.mkdtemp(prefix=f".{tag}.{_HOST}-{os.getpid()}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise write_error(target, exc) from exc
    tmp = os.path.join(work, name)
    try:
        try:
            yield tmp
            with open(tmp, "rb") as fh:   # before the chmod: a read-only mode must not stop the fsync
                os.fsync(fh.fileno())
            # writers that replace the temporary file themselves make 0600: keep the
            # target's permissions, or the usual ones for a new file
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except BaseException as exc:
            if _is_write_failure(exc):
                raise write_error(target, exc) from exc
            raise
        _fsync_dir(directory)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---- writing tensors ----------------------------------------------------------------------


def contiguous(array: np.ndarray) -> np.ndarray:
    array = native_order(array)
    return array if array.flags.c_contiguous else c_order_copy(array)


def native_order(array: np.ndarray) -> np.ndarray:
    """``array`` with its bytes in this machine's order (a copy only where they are not), any strides."""
    array = np.asarray(array)
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def c_order_copy(array: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``array``; a transposed view (a kernel in a framework's layout read in the
    canonical one) is copied in cache-sized tiles, on this thread (``polyparam._threads.tiled_copy``).

    Over a whole model, tiles on one thread beat runs on every core: Keras ResNet50's
    ``pp.save``, when it still made this copy of every kernel, took 139 ms with tiles, 158 ms
    with :func:`~polyparam.backend.parallel_copy`'s runs on two cores, 164 ms with one NumPy
    copy (the least of 12 alternating saves). A save now copies a view piece by piece as it
    writes it (``formats.base.write_snapshot``).
    """
    if array.size < TILED_FROM:   # a small kernel: NumPy's copy, nothing to decide (0.2 us against 7 us)
        return np.ascontiguousarray(array)
    out = np.empty(array.shape, array.dtype)
    if not tiled_copy(out, array):
        parallel_copy(out, array)
    return out


def _shown(key: object) -> str:
    text = repr(key)
    return text if len(text) <= 80 else text[:77] + "..."


def _key_problem(key: object) -> str | None:
    """Why the readers would refuse ``key`` as a tensor name (the rule of ``formats.base.check_key``), or ``None``."""
    if not isinstance(key, str):
        return f"a {type(key).__name__}"
    if not key:
        return "an empty name"
    if key.startswith("__"):
        return "a name starting with '__' (reserved)"
    if len(key) > 4096:
        return f"a name of {len(key):,} characters"
    if "\x00" in key:
        return "a name holding a NUL character"
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return "a name that is not valid Unicode (a lone surrogate)"
    return None


def _npz_dtype_ok(dtype: np.dtype) -> bool:
    """Whether the npz reader takes members of ``dtype`` (numeric, not structured, a short ``.npy`` descr)."""
    if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
        return False
    from numpy.lib import format as npformat

    descr = npformat.dtype_to_descr(dtype)
    return isinstance(descr, str) and len(descr) <= 8 and np.dtype(descr) == dtype


def _read_only_mount(directory: str) -> bool:
    """Whether ``directory`` is on a file system mounted read-only (where ``os.access`` says a file is not writable
    for that reason, not its permissions)."""
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):   # no statvfs (Windows)
        return False


def check_writable(file: str, tensors: dict[str, np.ndarray], fmt: str) -> None:
    """Refuse, before anything is written, what :func:`polyparam.load` would refuse to read back.

    Raises:
        InvalidKeyError: A key the readers refuse (empty, ``__``-prefixed, NUL, over 4096 characters).
        UnknownDTypeError: A dtype ``fmt`` cannot store or its reader refuses.
        TooManyTensorsError: More tensors than a reader takes.
    """
    from polyparam.checkpoint.formats.base import MAX_TENSORS
    from polyparam.checkpoint.formats.safetensors import st_dtype_name

    if len(tensors) + 1 > MAX_TENSORS:
        msg = (f"Cannot save {file!r}: expected at most {MAX_TENSORS - 1:,} tensors, got {len(tensors):,}. "
               "Save the model in parts or as a sharded checkpoint.")
        raise errors.TooManyTensorsError(msg, file=file, expected=MAX_TENSORS - 1, got=len(tensors))
    for key, value in tensors.items():
        problem = _key_problem(key)
        if problem is not None:
            msg = (f"Cannot save {_shown(key)} to {file!r}: expected a tensor name that is a non-empty string of at "
                   f"most 4096 characters, not starting with '__' and without NUL, got {problem}. Save a state dict "
                   "with other keys (pp.load refuses such names).")
            raise errors.InvalidKeyError(msg, file=file, path=key if isinstance(key, str) else None,
                                         expected="a tensor name", got=key)
        dtype = np.asarray(value).dtype
        if fmt == "safetensors":
            ok, fix = st_dtype_name(dtype) is not None, "Save as .npz, or cast the parameter."
        else:
            ok, fix = _npz_dtype_ok(dtype), "Cast the parameter to a numeric dtype (bool, int, uint, float, complex)."
        if not ok:
            msg = (f"Cannot save {_shown(key)} to {file!r}: expected a dtype {fmt} stores and pp.load reads, "
                   f"got {dtype.name!r}. {fix}")
            raise errors.UnknownDTypeError(msg, file=file, path=key, expected=f"{fmt} dtype", got=dtype.name)


def _check_header_size(file: str, tensors: Mapping[str, Any], strings: dict[str, str], limit: int) -> None:
    """Refuse a header (safetensors) or metadata member (npz) the reader would refuse as too large."""
    size = len(json.dumps(strings, ensure_ascii=False).encode("utf-8"))
    size += sum(len(key.encode("utf-8")) + 80 + 21 * value.ndim for key, value in tensors.items())
    if size > limit:
        msg = (f"Cannot save {file!r}: expected a header of at most {limit:,} bytes, got about {size:,} "
               "(very many or very long names). Save the model in parts or with shorter names.")
        raise errors.HeaderTooLargeError(msg, file=file, expected=limit, got=size)


def _placeholder(nbytes: int) -> str:
    """A checksum-shaped, unique stand-in of the same length as the real checksum of ``nbytes`` bytes."""
    return f"{nbytes:x}:{secrets.token_hex(8)}:{'0' * 2 * (nbytes % 8)}"


def write_safetensors(tmp: str, tensors: dict[str, np.ndarray],
                      metadata: Callable[[dict[str, str]], dict[str, str]], *, checksum: bool) -> dict[str, str]:
    """Write ``tensors`` as safetensors, their checksums those of the bytes in the file.

    ``metadata(checksums)`` builds the metadata strings; with ``checksum`` it first gets
    stand-ins of the right length, which are replaced in the header, in place, by the
    checksums of the bytes written (each tensor is read once, so a tensor another thread
    changes while it is written still matches its checksum). Returns the checksums
    (empty without ``checksum``).
    """
    from polyparam.checkpoint.formats.safetensors import METADATA_AT, metadata_bytes, write

    if not checksum:
        write(tmp, tensors, metadata({}))
        return {}
    stand_ins = getattr(metadata, "stand_ins", None)   # made by metadata_strings for these tensors
    if stand_ins is not None and stand_ins[0].keys() == tensors.keys():
        placeholders = stand_ins[1]
    else:
        placeholders = metadata({key: _placeholder(value.nbytes) for key, value in tensors.items()})
    sums = write(tmp, tensors, placeholders)
    # only the metadata is written again, in place: a stand-in has its checksum's length, so the
    # header around it (the tensors' offsets) is the same
    first, final = metadata_bytes(placeholders), metadata_bytes(metadata(sums))
    with open(tmp, "r+b") as fh:
        fh.seek(8 + METADATA_AT)
        if len(final) != len(first) or fh.read(len(first)) != first:   # cannot happen
            msg = (f"Cannot save {tmp!r}: expected the header's metadata ({len(first)} bytes) where the checksums "
                   f"go, got another layout or {len(final)} bytes. Save again.")
            raise errors.CheckpointError(msg, expected=len(first), got=len(final))
        fh.seek(8 + METADATA_AT)
        fh.write(final)
    return sums


def _write_npz(fh: IO[bytes], tensors: dict[str, np.ndarray], metadata: Callable[[dict[str, str]], dict[str, str]],
               *, checksum: bool) -> None:
    """An uncompressed ``.npz`` (``np.savez`` layout), each checksum taken from the bytes written, then the metadata."""
    from numpy.lib import format as npformat

    from polyparam.checkpoint.formats.npz import META_MEMBER

    sums: dict[str, str] = {}
    with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in tensors.items():
            value = contiguous(value)
            with zf.open(f"{key}.npy", mode="w", force_zip64=True) as member:
                header = npformat.header_data_from_array_1_0(value)
                try:
                    npformat.write_array_header_1_0(member, header)
                except ValueError:   # a header over 64 KiB: format 2.0 (checked before anything is written)
                    npformat.write_array_header_2_0(member, header)
                sums[key] = write_snapshot(member, value)
        raw = np.frombuffer(json.dumps(metadata(sums if checksum else {})).encode("utf-8"), np.uint8)
        with zf.open(META_MEMBER, mode="w", force_zip64=True) as member:
            npformat.write_array(member, raw, allow_pickle=False)


def collect(tree: ParameterTree, *, aliases: Literal["reference", "materialize"] = "reference",
            keys: Literal["canonical", "native"] = "canonical", progress: bool | None = None,
            description: str = "save") -> tuple[dict[str, np.ndarray], PolyparamMetadata]:
    """What :func:`save` writes: ``{key: array}`` (views of the live values where the backend allows, in canonical
    layout: a transposed view where the framework's differs) and metadata."""
    tensors: dict[str, np.ndarray] = {}
    roles: dict[str, str] = {}
    buffers: list[str] = []
    from polyparam._progress import track

    groups = storage_groups(tree).values()   # one walk gives the items and the ties
    items = [members[0] for members in groups]
    for path_, p in track(items, description=description, progress=progress, weight=lambda item: item[1].nbytes):
        p._require_data("read")
        tensors[path_] = native_order(p._read_view())   # read once by the writer: no copy here
        roles[path_] = p.role
        if bookkeeping(p):
            buffers.append(path_)
    ties = [[path for path, _ in members] for members in groups if len(members) > 1]
    doubts = {path_: why for (path_, _), why in zip(items, layout_doubts([p for _, p in items])) if why}
    if aliases == "materialize":
        for group in ties:
            # one copy for every member, so all of them hold the same bytes even if the array changes meanwhile
            tensors[group[0]] = np.array(tensors[group[0]], copy=True)
            for member in group[1:]:
                tensors[member] = tensors[group[0]]
                roles[member] = roles[group[0]]
                if group[0] in doubts:
                    doubts[member] = doubts[group[0]]
    if keys == "native":
        name = {q: p.native_name for q, p in tree._occurrences()}
        tensors = {name[q]: value for q, value in tensors.items()}
        roles = {name[q]: role for q, role in roles.items()}
        buffers = [name[q] for q in buffers]
        ties = [[name[q] for q in group] for group in ties]
        doubts = {name[q]: why for q, why in doubts.items()}
    return tensors, PolyparamMetadata(ties=ties, backend=tree.backend, aliases=aliases, roles=roles, buffers=buffers,
                                      order=list(tensors), doubts=doubts)


def refuse_foreign_doubts(tree: ParameterTree, meta: PolyparamMetadata, writes: list[tuple[str, Parameter, str]],
                          subject: str) -> None:
    """Refuse a load of canonical values another framework saved (or that no polyparam model saved) into
    parameters whose canonical layout is in doubt, and of values whose saving model recorded a doubt: within
    one backend the native order round-trips, across two the values would land in another order silently.
    ``writes`` are ``(path, parameter, stored key)``."""
    if meta.backend == tree.backend:
        return
    saved = f"saved from {meta.backend}" if meta.backend else "not saved by a polyparam model"
    refuse_doubtful_layouts(
        [(f"parameter {path!r} (stored as {key!r})", p, meta.doubts.get(key)) for path, p, key in writes],
        what=f"Cannot load {subject} ({saved}) into this {tree.backend} model",
        fix=(f"{SHOW_THE_LAYOUT}, load the file into a model of the framework that saved it, or reorder those "
             "values yourself and write them with tree.load_state."))


def bookkeeping_keys(archive: Archive) -> list[str]:
    """The file's bookkeeping buffers a load may pass over.

    A polyparam file lists them in its metadata; only counters are believed (integer or
    0-d tensors such as ``num_batches_tracked``), so a file cannot declare real weights
    "bookkeeping" and have a strict load skip them. Native readers derive the list from
    the file's structure (a Keras file's optimizer state), which no header can forge.
    """
    if archive.format in ("keras", "torch"):
        return list(archive.metadata.buffers)
    return [key for key in archive.metadata.buffers
            if archive.entries[archive.paths().get(key, key)].dtype.kind in "biu"
            or not archive.entries[archive.paths().get(key, key)].shape]


def write_tensors(path: str | os.PathLike[str], tensors: dict[str, np.ndarray], meta: PolyparamMetadata, *,
                  format: str | None = None, checksum: bool = True) -> None:
    """Write ``tensors`` and ``meta`` atomically in ``format`` (from the extension by default).

    Everything :func:`polyparam.load` would refuse to read back (keys, dtypes, sizes) is
    refused first, with the previous file untouched. Each tensor's bytes are read once
    and its checksum is that of the bytes the file holds, even while another thread
    writes the array (see ``docs/checkpoints.md``). With ``checksum=False`` the
    checksums in ``meta`` are written as they are.
    """
    file = os.fspath(path)
    fmt = format or detect_format(file)
    require_writable_format(file, fmt)
    # the writers copy a transposed view piece by piece as they write (write_snapshot): no C-order copy first
    tensors = {key: native_order(value) for key, value in tensors.items()}
    check_writable(file, tensors, fmt)
    strings = metadata_strings(file, fmt, tensors, meta, checksum=checksum)
    write_checked(file, fmt, tensors, strings, meta, checksum=checksum)


def require_writable_format(file: str, fmt: str) -> None:
    """Refuse a format polyparam does not write (the native ones are read-only)."""
    if fmt not in WRITABLE:
        msg = (f"Cannot save to {file!r}: expected a writable format {list(WRITABLE)}, got {fmt!r}. "
               "Save as .safetensors or .npz (native formats are read-only for polyparam).")
        raise errors.UnsupportedFormatError(msg, file=file, expected=list(WRITABLE), got=fmt)


def metadata_strings(file: str, fmt: str, tensors: Mapping[str, Any], meta: PolyparamMetadata, *,
                     checksum: bool) -> MetadataStrings:
    """The function a writer calls for the file's metadata strings, given the checksums it took.

    ``tensors`` (arrays, or anything with their ``ndim`` and ``nbytes``) are checked now to
    fit, with their checksums, in the header the reader accepts (``HeaderTooLargeError``):
    nothing is written for a save that could not be read back.
    """
    from polyparam.checkpoint.formats.safetensors import MAX_HEADER

    strings = MetadataStrings(meta, checksum=checksum)
    stand_ins = {k: _placeholder(v.nbytes) for k, v in tensors.items()}
    strings.stand_ins = (stand_ins, strings(stand_ins))
    _check_header_size(file, tensors, strings.stand_ins[1], MAX_HEADER if fmt == "safetensors" else 100_000_000)
    return strings


class MetadataStrings:
    """``strings(checksums)``: the file's metadata strings with these checksums (``meta``'s own
    without ``checksum``). Only the checksums are serialized again from the second call on: the
    roles, order and ties of thousands of tensors are the same for the stand-ins and the real ones.
    """

    def __init__(self, meta: PolyparamMetadata, *, checksum: bool) -> None:
        self.meta = meta
        self.checksum = checksum
        self._strings: dict[str, str] | None = None
        #: Checksum-shaped stand-ins of the tensors checked for size, and their strings.
        self.stand_ins: tuple[dict[str, str], dict[str, str]] | None = None

    def __call__(self, sums: dict[str, str]) -> dict[str, str]:
        if self.checksum:
            self.meta.checksums = dict(sums)
        if self._strings is None:
            self._strings = self.meta.to_strings()
            return dict(self._strings)
        return {**self._strings, "polyparam.checksums": json.dumps(self.meta.checksums, sort_keys=True)}


def write_checked(file: str, fmt: str, tensors: dict[str, np.ndarray],
                  strings: Callable[[dict[str, str]], dict[str, str]], meta: PolyparamMetadata, *,
                  checksum: bool) -> None:
    """The atomic write of :func:`write_tensors` once its checks have passed (background saves share it)."""
    with atomic_write(file) as tmp:
        if fmt == "safetensors":
            sums = write_safetensors(tmp, tensors, strings, checksum=checksum)
            if checksum:
                meta.checksums = sums
        else:
            with open(tmp, "wb") as fh:
                _write_npz(fh, tensors, strings, checksum=checksum)


# ---- checks every load makes ----------------------------------------------------------------


def check_fit(plan: WritePlan, path: str, p: Parameter, shape: tuple[int, ...], dtype: np.dtype, /, *, key: str,
              cast: bool) -> None:
    """``plan.check_fit``, and integer or boolean values refused for a floating or complex parameter even with
    ``cast``: they are codes (a quantized kernel's int8, whose scale is a separate tensor), not the values
    (``docs/checkpoints.md``; :func:`polyparam.transfer` refuses them alike).

    Raises:
        ShapeMismatchError, DTypeMismatchError: The value does not fit ``p``.
    """
    dtype = np.dtype(dtype)
    if fit_problem(p, shape, dtype, cast=False) == "dtype" and integer_codes(dtype, p.dtype):
        msg = (f"Cannot load {key!r} from {plan.subject} into parameter {path!r}: expected dtype {p.dtype.name!r} "
               f"or another of its kind (with cast=True), got {dtype.name!r}. Integers are codes, not weights "
               "(cast=True does not apply): dequantize them first.")
        raise errors.DTypeMismatchError(msg, path=path, expected=p.dtype, got=dtype)
    plan.check_fit(path, p, shape, dtype, key=key, cast=cast)


def check_recorded_ties(file: str, recorded: list[list[str]], source: Mapping[str, str],
                        read: Callable[[str], np.ndarray], /) -> None:
    """Refuse a checkpoint that records a tie group (of paths, ``recorded``) but stores different tensors for its
    members (``source``: path -> stored key): tying them would keep one value and silently drop the other.

    A group stored once (``aliases="reference"``) or stored under every member with one value
    (``aliases="materialize"``) passes; only members the load writes (in ``source``) count.

    Raises:
        MetadataError: Two members' stored tensors differ; names both keys.
    """
    for group in recorded:
        keys = list(dict.fromkeys(source[q] for q in group if q in source))
        if len(keys) < 2:
            continue
        first = read(keys[0])
        for key in keys[1:]:
            if not same_value(first, read(key)):
                where = next(q for q in group if source.get(q) == keys[0])
                msg = (f"Cannot load {file!r}: expected one value for the tie group {group} its metadata records, "
                       f"got different tensors {keys[0]!r} and {key!r}. The file contradicts itself; pass "
                       "ties='ignore' to load each tensor as stored.")
                raise errors.MetadataError(msg, file=file, path=where, expected=keys[0], got=key)
