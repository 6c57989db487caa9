"""What every checkpoint writer and reader shares: atomic writes, tensors to a file, the load report."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from polyparam import errors
from polyparam.checkpoint.formats import WRITABLE, PolyparamMetadata, detect_format, fingerprint

__all__ = ["LoadReport", "atomic_write", "contiguous", "write_tensors"]


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


# ---- writing tensors ----------------------------------------------------------------------


def contiguous(array: np.ndarray) -> np.ndarray:
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
        from polyparam.checkpoint.formats.safetensors import st_dtype_name, write

        # The writer takes raw pointers: every array must be C-contiguous and native-endian.
        tensors = {key: contiguous(value) for key, value in tensors.items()}
        for key, value in tensors.items():
            if st_dtype_name(value.dtype) is None:
                msg = (f"Cannot save {key!r} to {file!r}: expected a dtype safetensors stores, got "
                       f"{value.dtype.name!r}. Save as .npz, or cast the parameter.")
                raise errors.UnknownDTypeError(msg, file=file, path=key, expected="safetensors dtype",
                                               got=value.dtype.name)
    if checksum:
        meta.checksums = {key: fingerprint(value) for key, value in tensors.items()}
    strings = meta.to_strings()
    with atomic_write(file) as tmp:
        if fmt == "safetensors":
            write(tmp, tensors, strings)
        else:
            from polyparam.checkpoint.formats.npz import write as write_npz

            with open(tmp, "wb") as fh:
                write_npz(fh, tensors, strings)
