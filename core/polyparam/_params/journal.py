"""All or nothing, even when the framework refuses a write halfway: the undo journal.

Every multi-parameter write (``load_state``, ``pp.load``, the sharded load,
``pp.transfer``, ``initialize``) checks what it can before its first write (see
:mod:`polyparam._params.plan`). What it cannot foresee (a framework that refuses a
write the checks allowed, a custom initializer that raises midway, a
``KeyboardInterrupt``) is undone here: before a parameter is written, the journal
keeps a private copy of its value; if any later step raises, whatever the exception,
the values already written are put back (in reverse order) and the ties made are
unmade, then the error is raised again. An error that is not a polyparam error (the
framework's own) is wrapped in :class:`~polyparam.errors.WriteFailedError`, which names
the parameter and chains the original; ``KeyboardInterrupt`` and ``SystemExit`` are
raised as they are.

The copies cost memory: at most the bytes of the parameters written (the journal
holds them until the operation completes). ``POLYPARAM_UNDO_LIMIT`` (bytes, or a size
such as ``"2GB"``) sets a ceiling; an operation whose copies would exceed it is refused
before its first write, so the guarantee is never dropped silently.
``POLYPARAM_UNDO_MEMORY`` (a size; ``0`` for none) keeps at most that many bytes of
copies in memory and writes the rest to an unlinked temporary file (in
``POLYPARAM_UNDO_DIR``, else the system's temporary directory): loading a model larger
than the memory left then costs the file's writes instead of the memory, and a failure
reads the copies back. Each value goes straight from the parameter to the file where
the backend reads without copying (torch and NumPy on the CPU), so memory grows by at
most one tensor.

**Threads.** The users of a journal run their write phase inside
:func:`exclusive_writes`, one process-wide re-entrant lock: two multi-parameter writes
from two threads run one after the other, never interleaved, so a tree ends as one
whole operation left it. Single-parameter writes (``set``, item writes) and reads
(``pp.save``, ``numpy()``) do not take it.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from polyparam import errors

if TYPE_CHECKING:
    from polyparam._params.parameter import Parameter

__all__ = ["UNDO_DIR_ENV", "UNDO_LIMIT_ENV", "UNDO_MEMORY_ENV", "Journal", "after_writes", "exclusive_writes",
           "undo_limit", "undo_memory"]

UNDO_LIMIT_ENV = "POLYPARAM_UNDO_LIMIT"
UNDO_MEMORY_ENV = "POLYPARAM_UNDO_MEMORY"
UNDO_DIR_ENV = "POLYPARAM_UNDO_DIR"
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def _size_from(variable: str) -> int | None:
    text = os.environ.get(variable, "").strip()
    if not text:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        msg = (f"Invalid value for environment variable {variable}: expected a size in bytes such as "
               f"'500000000' or '2GB'. Received: {text!r}.")
        raise errors.InvalidArgumentError(msg, argument=variable, expected="a size such as '2GB'", got=text)
    return int(float(match.group(1)) * _UNITS[unit])


def undo_limit() -> int | None:
    """The ceiling on undo copies from ``POLYPARAM_UNDO_LIMIT`` in bytes, or ``None`` (no ceiling)."""
    return _size_from(UNDO_LIMIT_ENV)


def undo_memory() -> int | None:
    """The most bytes of undo copies kept in memory, from ``POLYPARAM_UNDO_MEMORY``; ``None``: all of them."""
    return _size_from(UNDO_MEMORY_ENV)


class _Spilled:
    """An undo copy written to the journal's temporary file: where, and how to read it back."""

    def __init__(self, fh: Any, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self.fh, self.offset, self.dtype, self.shape = fh, offset, dtype, shape

    def load(self) -> np.ndarray:
        out = np.empty(self.shape, self.dtype)
        self.fh.seek(self.offset)
        view = out.reshape(-1).view(np.uint8).data
        while view.nbytes:
            n = self.fh.readinto(view)
            if not n:
                msg = f"Cannot restore an undo copy: expected {out.nbytes} bytes in the journal's file, got fewer."
                raise errors.WriteFailedError(msg, expected=out.nbytes, got="fewer bytes")
            view = view[n:]
        return out


class _Moved:
    """A parameter's old storage, moved aside by the backend (:meth:`Parameter._keep_storage`)."""

    def __init__(self, put_back: Any) -> None:
        self.put_back = put_back


#: Held by every multi-parameter write for its write phase (see :func:`exclusive_writes`).
_WRITE_LOCK = threading.RLock()


#: The functions :func:`after_writes` deferred, per thread, while its outermost write runs.
_PENDING = threading.local()


@contextlib.contextmanager
def exclusive_writes() -> Iterator[None]:
    """Run the block while no other thread of this process makes a multi-parameter write.

    Re-entrant: a write nested in another on the same thread (a hook that loads, an
    initializer that sets) runs at once. Every :class:`Journal` user (``initialize``,
    :meth:`~polyparam._params.plan.WritePlan.commit`) holds it around checks it relies
    on and every write, so concurrent operations on one tree never interleave. When the
    outermost block ends without an error, it runs what :func:`after_writes` deferred;
    when it raises (the writes were undone), it drops them.
    """
    with _WRITE_LOCK:
        outermost = getattr(_PENDING, "calls", None) is None
        if outermost:
            _PENDING.calls = {}
        try:
            yield
        except BaseException:
            if outermost:
                _PENDING.calls = None
            raise
        if outermost:
            calls, _PENDING.calls = _PENDING.calls, None
            for call in calls.values():
                call()


def after_writes(key: Any, call: Callable[[], None], /) -> None:
    """Run ``call`` once the multi-parameter write in progress on this thread has succeeded, or now outside one.

    For a backend's bookkeeping that must follow a write but cannot be undone, such as
    Gluon dropping a ``Trainer``'s kvstore, which holds the optimizer's state, so that
    it takes the new weights: a load that fails halfway is undone and then leaves
    that state alone. Calls under one hashable ``key`` run once.
    """
    calls = getattr(_PENDING, "calls", None)
    if calls is None:
        call()
    else:
        calls.setdefault(key, call)


class Journal:
    """The values parameters had before an operation wrote them, to put back if it fails.

    Args:
        operation: What is being done, for messages (``"load 'model.safetensors'"``).
        writer: Who writes the values, for messages (``"the initializer or the framework"``).
    """

    def __init__(self, operation: str, *, writer: str = "the framework") -> None:
        self.operation = operation
        self.writer = writer
        self._values: list[tuple[Parameter, np.ndarray | _Spilled | _Moved, bool]] = []
        self._ties: list[tuple[Parameter, np.ndarray | None, Any]] = []
        self.current: str | None = None
        self._memory = undo_memory()     # bytes of copies that may stay in memory (None: all)
        self._in_memory = 0
        self._file: Any = None           # the temporary file of the copies beyond that

    # ---- before the first write -----------------------------------------------------

    def check_limit(self, params: list[Parameter]) -> None:
        """Refuse, before any write, an operation whose undo copies would exceed ``POLYPARAM_UNDO_LIMIT``."""
        limit = undo_limit()
        if limit is None:
            return
        need = sum(p.nbytes or 0 for p in params if p.state == "initialized")
        if need > limit:
            msg = (f"Cannot {self.operation}: expected undo copies within {UNDO_LIMIT_ENV}={limit:,} bytes, got "
                   f"{need:,} bytes for {len(params)} parameters. Raise {UNDO_LIMIT_ENV} (the copies let a "
                   "failed write change nothing), or write fewer parameters at a time.")
            raise errors.UndoLimitError(msg, path=params[0].path if params else None, expected=limit, got=need)

    # ---- during the operation -------------------------------------------------------

    def keep(self, p: Parameter, /, *, local: bool = False, whole: bool = False, nbytes: int | None = None,
             view: np.ndarray | None = None) -> None:
        """Keep ``p``'s current value (this process's shard with ``local``); nothing to keep without data.

        ``whole``: the next write replaces every element without reading one, so a
        backend may move the storage aside instead of copying it
        (:meth:`~polyparam._params.parameter.Parameter._keep_storage`). ``nbytes``: the
        size of what is kept, when the caller knows it already. ``view``: the caller's
        :meth:`~polyparam._params.parameter.Parameter._writable_view` of the whole value,
        copied instead of reading the value again.
        """
        self.current = p.path
        if p.state != "initialized" or p._defers_init():
            return
        local = local and p._local_box() is not None
        view = None if local else view
        if view is not None:
            nbytes = view.nbytes
        elif nbytes is None:
            nbytes = (p._read_local().nbytes if local else p.nbytes) or 0
        if whole and not local and self.move(p, nbytes=nbytes):
            return
        if self._memory is None or self._in_memory + nbytes <= self._memory:
            self._in_memory += nbytes
            if view is not None:
                self._values.append((p, np.array(view, copy=True), False))
            else:
                self._values.append((p, p._read_local().copy() if local else p._read_copy(), local))
        else:
            current = p._read_local() if local else (p._read() if view is None else view)
            self._values.append((p, self._spill(current), local))

    def move(self, p: Parameter, /, *, nbytes: int) -> bool:
        """Before a write of ``p``'s whole value (every element, none read), let the backend move its storage
        aside as the undo record (:meth:`~polyparam._params.parameter.Parameter._keep_storage`): ``True``
        where it did (the write then fills fresh storage), ``False`` where the value must be kept otherwise.

        ``p`` holds data (the caller knows its state); ``nbytes`` is its size, counted against
        ``POLYPARAM_UNDO_MEMORY`` as a copy would be.
        """
        if self._memory is not None and self._in_memory + nbytes > self._memory:
            return False
        self.current = p.path
        put_back = p._keep_storage()
        if put_back is None:
            return False
        self._in_memory += nbytes
        self._values.append((p, _Moved(put_back), False))
        return True

    def _spill(self, value: np.ndarray) -> _Spilled:
        """Write ``value`` to the journal's temporary file (made on first use, gone when closed)."""
        if self._file is None:
            import tempfile

            # closed by close() or, with the journal, when the operation's last reference goes
            self._file = tempfile.TemporaryFile(dir=os.environ.get(UNDO_DIR_ENV) or None)  # noqa: SIM115
        value = np.ascontiguousarray(value)
        offset = self._file.seek(0, os.SEEK_END)
        self._file.write(value.reshape(-1).view(np.uint8).data)
        return _Spilled(self._file, offset, value.dtype, value.shape)

    def close(self) -> None:
        """Drop the copies (the operation is complete or undone) and the temporary file."""
        self._values.clear()
        self._ties.clear()
        if self._file is not None:
            self._file.close()
            self._file = None

    def keep_tie(self, member: Parameter, /) -> None:
        """Keep what ``member`` holds before it takes another parameter's storage."""
        self.current = member.path
        value = member._read_copy() if member.state == "initialized" and not member._defers_init() else None
        self._ties.append((member, value, member._native()))

    # ---- when it fails ----------------------------------------------------------------

    def restore(self) -> list[BaseException]:
        """Put every kept value back (newest first), then unmake the ties; the errors met on the way."""
        problems: list[BaseException] = []
        for p, kept, local in reversed(self._values):
            try:
                if isinstance(kept, _Moved):
                    kept.put_back()
                    continue
                value = kept.load() if isinstance(kept, _Spilled) else kept
                if local:
                    p._write_local(value)
                else:
                    p._write(value)
            except BaseException as exc:  # noqa: BLE001 - restore every other parameter, report this one
                problems.append(exc)
        for member, value, original in reversed(self._ties):
            try:
                if member._reattach(original):   # the very object it held (an optimizer may hold it)
                    continue
                member._unshare()
                if value is not None:
                    member._write(value)
            except BaseException as exc:  # noqa: BLE001 - as above
                problems.append(exc)
        self.close()
        return problems

    def fail(self, exc: BaseException, /) -> BaseException:
        """Restore, then the exception to raise for ``exc`` (the caller raises it ``from exc``)."""
        problems = self.restore()
        note = f"polyparam: {len(problems)} value(s) could not be restored: {problems[0]!r}" if problems else ""
        if isinstance(exc, errors.PolyparamError) or not isinstance(exc, Exception):
            _add_note(exc, note)
            return exc
        path = self.current
        msg = (f"Cannot {self.operation}: expected {self.writer} to write parameter {path!r}, "
               f"got {type(exc).__name__}: {exc}. Nothing was changed (every value written before was "
               "restored); fix what the error reports and retry.")
        error = errors.WriteFailedError(msg, path=path, expected=f"a write by {self.writer}", got=repr(exc))
        _add_note(error, note)
        return error


def _add_note(exc: BaseException, note: str) -> None:
    if note and hasattr(exc, "add_note"):  # Python 3.11+
        exc.add_note(note)
