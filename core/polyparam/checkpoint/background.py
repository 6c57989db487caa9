"""Background saves: a consistent snapshot now, the file written while training goes on.

``pp.save(tree, path, background=True, staging="2GB")`` calls :func:`save_in_background`.
The caller's thread checks everything a blocking save would refuse, then copies every
tensor into a staging pool, in the order the file is written; a writer thread writes
each copy and frees it. The call returns once the last tensor is copied, so the file
holds the values of that moment whatever the training loop writes afterwards, and the
extra memory stays under ``staging`` or the largest tensor, whichever is larger. The
writer starts once the snapshot is complete or the pool is full, so that it does not
slow the copy down; copies load whole elements, as a blocking save reads them.

When the model is larger than ``staging``, the call waits for the writer to free room,
so it blocks for about the time it takes to write everything but the last ``staging``
bytes: a ``staging`` of the model's size (or ``None``) makes the call as short as one
copy of the model; ``staging=1`` holds one tensor at a time and blocks almost as long as
a blocking save.

The file is written as a blocking save writes it (:func:`polyparam.checkpoint.io.atomic_write`):
a process killed at any point leaves the previous file intact. The writer thread is not a
daemon: a normal interpreter exit waits for it, so the file is in place when the process ends.
"""

from __future__ import annotations

import os
import threading
import time
import typing
from types import TracebackType
from typing import Any, Literal, Mapping, final

import numpy as np

from polyparam import errors
from polyparam._copies import own_copy, written_as_is
from polyparam.checkpoint.formats import PolyparamMetadata, detect_format
from polyparam.checkpoint.formats.base import copy_whole
from polyparam.checkpoint.io import (
    check_writable,
    collect,
    metadata_strings,
    require_writable_format,
    write_checked,
)

if typing.TYPE_CHECKING:
    from polyparam._params.tree import ParameterTree

__all__ = ["SaveHandle", "save_in_background", "wait_for"]


# ---- the handle -------------------------------------------------------------------------------------------


@final
class SaveHandle:
    """A save running in the background; :func:`polyparam.save` returns it with ``background=True``.

    The snapshot is taken when the handle is returned; the file appears at :attr:`path`
    (atomically, as with a blocking save) once :meth:`done` is true. Used as a context
    manager, it waits for the file on exit.

    Attributes:
        path: The file (or Hub directory) being written.
        snapshot_seconds: How long the call blocked the caller: validation and the copy of
            every tensor (longer when ``staging`` is smaller than the model).

    Example:
        >>> import numpy as np, polyparam as pp, tempfile, os
        >>> tree = pp.tree({"w": np.ones((2, 3), np.float32)})
        >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
        >>> with pp.save(tree, path, background=True) as handle:
        ...     tree["w"].set(np.zeros((2, 3), np.float32))   # training goes on; the file keeps the ones
        >>> copy = pp.tree({"w": np.zeros((2, 3), np.float32)})
        >>> handle.done(), pp.load(copy, path).loaded, float(copy["w"].numpy().sum())
        (True, ['w'], 6.0)
    """

    def __init__(self, path: str, /) -> None:
        self.path = path
        self.snapshot_seconds = 0.0
        self._finished = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def done(self) -> bool:
        """Whether the writer has finished, successfully or not (:meth:`wait` tells which)."""
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the file is in place; ``True`` then, ``False`` if ``timeout`` seconds passed first.

        Raises:
            CheckpointWriteError: The file could not be written (disk full, no permission; the
                previous file is kept), as a blocking save raises it.
            CheckpointError: Any other error of the writer, raised again on every call.
        """
        if not self._finished.wait(timeout):
            return False
        if self._error is not None:
            raise self._error
        return True

    def __enter__(self) -> SaveHandle:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:
            self.wait()
        else:   # the body failed: still finish the save, but let the body's error be the one raised
            self._finished.wait()

    def __repr__(self) -> str:
        state = "writing" if not self.done() else ("failed" if self._error is not None else "done")
        return f"<SaveHandle {self.path!r} {state}, snapshot took {self.snapshot_seconds:.3f}s>"


#: The last background save started to each target: a new one writes after it (never two writers at once).
_LATEST: dict[str, SaveHandle] = {}
_LATEST_LOCK = threading.Lock()


def wait_for(path: str | os.PathLike[str], /) -> None:
    """Return once no background save to ``path`` runs (their errors stay with their handles).

    For a blocking save to a file a background save may be writing: called first, it makes
    the file end up holding the later of the two.
    """
    with _LATEST_LOCK:
        latest = _LATEST.get(os.path.abspath(os.fspath(path)))
    if latest is not None:   # the latest one's writer waits for the ones before it
        latest._finished.wait()


class _Cancelled(Exception):  # noqa: N818 (internal signal, never reaches a user)
    """The caller stopped before the snapshot was complete: the writer removes its temporary file."""


# ---- the staging pool -------------------------------------------------------------------------------------


class _Staging:
    """Copies made by the caller's thread, taken in turn by the writer, freed once written.

    The caller copies in the file's order and waits while the copies not yet written hold
    more than ``limit`` bytes. A copy is always admitted when nothing is held or when the
    writer is waiting for it, so neither side can wait for the other forever, whatever
    order the writer asks in.
    """

    def __init__(self, sources: dict[str, np.ndarray], order: list[str], limit: int | None) -> None:
        self._cond = threading.Condition()
        self._sources = sources
        self._limit = limit
        self._remaining = dict.fromkeys(order)    # keys not copied yet, in copy order
        self._users: dict[int, int] = {}          # id(source) -> keys of it not yet written
        for key in order:
            self._users[id(sources[key])] = self._users.get(id(sources[key]), 0) + 1
        self._copies: dict[int, np.ndarray] = {}  # id(source) -> its copy, while held
        self._staged: dict[str, np.ndarray] = {}  # key -> copy, until the writer takes it
        self._taken: list[str] = []               # handed to the writer, freed at its next request
        self._wanted: str | None = None
        self._copying: str | None = None          # the key the caller is copying (outside the lock)
        self._stopped = False                     # the writer has finished (or failed)
        self._needs_room = False                  # the caller waits for the writer to free copies
        self._cancelled = False
        self.held = 0
        self.peak = 0

    # the caller's side

    def fill(self) -> None:
        """Copy every tensor (returns early if the writer stopped: its error is the handle's)."""
        while True:
            with self._cond:
                while True:
                    if self._stopped or not self._remaining:
                        return
                    key = self._wanted if self._wanted in self._remaining else next(iter(self._remaining))
                    source = self._sources[key]
                    shared = id(source) in self._copies   # a tie group's array under another key: one copy
                    need = 0 if shared else source.nbytes
                    if (self._limit is None or need == 0 or self.held == 0 or self.held + need <= self._limit
                            or key == self._wanted):
                        break
                    self._needs_room = True
                    self._cond.notify_all()
                    self._cond.wait()
                self._needs_room = False
                del self._remaining[key]
                self._copying = key
                self.held += need
                self.peak = max(self.peak, self.held)
            # outside the lock, so the writer writes meanwhile; only this thread copies
            copy = self._copies[id(source)] if shared else _copy(source)
            with self._cond:
                self._copies[id(source)] = copy
                self._staged[key] = copy
                self._copying = None
                self._cond.notify_all()

    def cancel(self) -> None:
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()

    # the writer's side

    def take(self, key: str) -> np.ndarray:
        """The copy of ``key``, once made; what the writer took before is freed."""
        with self._cond:
            self._release()
            # the writer starts once the snapshot is complete or the pool is full: while the caller
            # copies, the writer's reads and page-cache writes would only slow the copy down
            while (self._remaining or self._copying is not None) and not self._needs_room and not self._cancelled:
                self._cond.wait()
            self._wanted = key
            self._cond.notify_all()
            while key not in self._staged:
                if self._cancelled:
                    raise _Cancelled(key)
                # asked for twice: its copy is gone (a writer's bug, not the user's)
                if key not in self._remaining and key != self._copying:
                    msg = f"Cannot write {key!r}: expected each tensor to be written once, got a second request."
                    raise errors.CheckpointError(msg, path=key, expected="one request", got="two")
                self._cond.wait()
            self._wanted = None
            self._taken.append(key)
            return self._staged.pop(key)

    def stop(self) -> None:
        with self._cond:
            self._release()
            self._staged.clear()
            self._copies.clear()
            self.held = 0
            self._stopped = True
            self._cond.notify_all()

    def _release(self) -> None:
        for key in self._taken:
            ident = id(self._sources[key])
            self._users[ident] -= 1
            if self._users[ident] == 0:
                self.held -= self._sources[key].nbytes
                self._copies.pop(ident, None)
        self._taken.clear()


def _copy(source: np.ndarray) -> np.ndarray:
    """A C-ordered copy of ``source``, every element loaded whole (``formats.base.copy_whole``).

    As :func:`~polyparam.checkpoint.formats.base.write_snapshot` reads: a bytewise copy
    (``memcpy``) racing another thread's update could store a value no step held. A
    C-ordered copy the read made already (:func:`~polyparam.backend.own_copy`) is used as it is.
    The copy is marked as one: the writer writes it without copying it again.
    """
    if written_as_is(source):
        return source
    out = np.empty(source.shape, source.dtype)
    if source.size:
        copy_whole(out, source)
    return own_copy(out)


class _Pending:
    """A tensor the writer will get from the staging pool: its shape and dtype now, its bytes on ``np.asarray``."""

    def __init__(self, key: str, source: np.ndarray, staging: _Staging) -> None:
        self._key, self._staging = key, staging
        self.dtype, self.shape, self.nbytes = source.dtype, source.shape, source.nbytes
        self.ndim, self.size = source.ndim, source.size

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        value = self._staging.take(self._key)
        return value if dtype is None else value.astype(dtype, copy=False)


def _file_order(file: str, tensors: dict[str, np.ndarray], fmt: str) -> list[str]:
    """The order the writer writes ``tensors`` in (safetensors: the library's, by dtype then name; npz: as given)."""
    if fmt != "safetensors":
        return list(tensors)
    from polyparam.checkpoint.formats.safetensors import header

    return header(file, tensors, {})[1]


# ---- the save ---------------------------------------------------------------------------------------------


def save_in_background(tree: ParameterTree, path: str | os.PathLike[str], /, *, format: str | None = None,
                       aliases: Literal["reference", "materialize"] = "reference", checksum: bool = True,
                       keys: Literal["canonical", "native"] = "canonical", max_shard_size: int | str | None = None,
                       staging: int | str | None = None) -> SaveHandle:
    """Snapshot every tensor of ``tree`` now and write it to ``path`` in a writer thread.

    What :func:`polyparam.save` with ``background=True`` runs; the arguments are its own.
    Everything a blocking save refuses before writing is refused here, before returning,
    with nothing written. A second background save to the same ``path`` writes after the
    first (its snapshot is still taken at the call, with the caller waiting for room in
    its staging pool), so the file ends up holding the later snapshot.

    Args:
        tree: The tree to save.
        path: The file (``*.safetensors``, ``*.npz``) or, with ``max_shard_size``, the directory.
        format, aliases, checksum, keys, max_shard_size: As for :func:`polyparam.save`.
        staging: The most bytes of copies held at once (``"2GB"``, ``"500MB"``, ``"1.5GiB"``,
            bytes), not counting one tensor larger than that (``1``: one tensor at a time);
            ``None``: a copy of the whole model. A Hub-layout save (``max_shard_size``)
            always copies the whole model first.

    Returns:
        A :class:`SaveHandle`; ``handle.wait()`` re-raises what went wrong while writing.

    Raises:
        InvalidArgumentError: ``staging`` or ``max_shard_size`` is not a size.
        UnsupportedFormatError, InvalidKeyError, UnknownDTypeError, TooManyTensorsError,
        HeaderTooLargeError: As a blocking save, before anything is written.
    """
    start = time.perf_counter()
    from polyparam.checkpoint.hub import parse_size

    limit = None if staging is None else parse_size(staging, argument="staging")
    shard_size = None if max_shard_size is None else parse_size(max_shard_size, argument="max_shard_size")
    if shard_size is not None and format not in (None, "safetensors"):   # as write_hub refuses it
        msg = (f"Cannot save {os.fspath(path)!r} with max_shard_size: expected format 'safetensors' (the Hub's "
               f"sharded layout), got {format!r}. Drop format= or save one file without max_shard_size.")
        raise errors.InvalidArgumentError(msg, argument="format", expected="safetensors", got=format)
    file = os.fspath(path)
    tensors, meta = collect(tree, aliases=aliases, keys=keys, progress=False,
                            description=f"save {os.path.basename(file)}")
    fmt = format or ("safetensors" if shard_size is not None else detect_format(file))
    require_writable_format(file, fmt)
    check_writable(file, tensors, fmt)
    if shard_size is None:
        strings = metadata_strings(file, fmt, tensors, meta, checksum=checksum)
        pool = _Staging(tensors, _file_order(file, tensors, fmt), limit)
        pending = {key: _Pending(key, value, pool) for key, value in tensors.items()}

        def write() -> None:
            _write_file(file, fmt, pending, strings, checksum=checksum, meta=meta)
    else:   # the Hub writer gets whole arrays: the snapshot is a copy of the model
        pool = _Staging(tensors, list(tensors), None)

        def write() -> None:
            from polyparam.checkpoint.hub import write_hub

            write_hub(file, {key: pool.take(key) for key in tensors}, meta, max_shard_size=shard_size,
                      format=format, checksum=checksum)

    handle = SaveHandle(file)
    target = os.path.abspath(file)
    with _LATEST_LOCK:
        previous = _LATEST.get(target)
        _LATEST[target] = handle

    def run() -> None:
        try:
            if previous is not None and previous._thread is not None:
                previous._thread.join()   # one writer per target at a time; its outcome is its own handle's
            write()
        except BaseException as exc:  # noqa: BLE001 (kept for wait(), which raises it)
            handle._error = exc
        finally:
            pool.stop()
            with _LATEST_LOCK:
                if _LATEST.get(target) is handle:
                    del _LATEST[target]
            handle._finished.set()

    # not a daemon: a normal interpreter exit waits for the file to be in place
    handle._thread = threading.Thread(target=run, name=f"polyparam save {os.path.basename(file)}", daemon=False)
    handle._thread.start()
    try:
        pool.fill()
    except BaseException:
        pool.cancel()   # the writer removes its temporary file; the previous file stays
        if previous is None or previous.done():   # else it ends after the save it waits for, not holding the caller
            handle._thread.join()
        raise
    handle.snapshot_seconds = time.perf_counter() - start
    return handle


def _write_file(file: str, fmt: str, tensors: Mapping[str, _Pending], strings: Any, *, checksum: bool,
                meta: PolyparamMetadata) -> None:
    """What :func:`~polyparam.checkpoint.io.write_tensors` does after its checks, each tensor taken when written."""
    write_checked(file, fmt, typing.cast("dict[str, np.ndarray]", tensors), strings, meta, checksum=checksum)
