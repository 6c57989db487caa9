"""What every checkpoint format shares: detection, checksums, metadata, the :class:`Archive` view, key/shape checks.

Every reader validates the whole structure (header, names, dtypes, shapes, byte
ranges) against the file's real size *before* it allocates or maps anything, and
refuses with one typed :class:`~polyparam.errors.CheckpointFormatError` subclass per
kind of malformation. No reader can unpickle: PyTorch files go only through
``torch.load(weights_only=True)`` after the pickle-only legacy layout is refused by
its magic bytes, ``.npz`` members are parsed here (never ``np.load``), HDF5 links and
external storage are refused.
"""

from __future__ import annotations

import abc
import errno
import io
import json
import os
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from polyparam import errors
from polyparam._copies import written_as_is
from polyparam._threads import parallel_map, tiled_copy

__all__ = ["BOMB_FLOOR", "FORMAT_VERSION", "MAX_DOUBT", "MAX_EMPTY_TENSORS", "MAX_RATIO", "READABLE", "WRITABLE",
           "ZIP_ERRORS", "Archive", "Entry", "PolyparamMetadata", "check_zip_members", "copy_whole", "cut_doubts",
           "detect_format", "fingerprint", "open_regular", "sniff", "word_dtype", "write_snapshot"]

#: The version of polyparam's metadata layout inside safetensors and npz files.
FORMAT_VERSION = 1
#: Formats :func:`open_archive` reads, by name, with their extensions.
READABLE = {"safetensors": (".safetensors",), "npz": (".npz",), "torch": (".pt", ".pth", ".bin"),
            "mxnet": (".params",), "keras": (".weights.h5", ".h5"), "hub": (".index.json",),
            "orbax": ()}   # a directory, recognized by its metadata files
#: Formats :func:`polyparam.save` writes.
WRITABLE = ("safetensors", "npz")
#: Upper bound on the number of tensors in one file (a header DoS guard).
MAX_TENSORS = 1_000_000
#: Upper bound on the number of tensors with no bytes in one file: they cost header parsing but need no data.
MAX_EMPTY_TENSORS = 10_000
#: Upper bound on a dimension or an element count (far beyond any real tensor; a guard on arithmetic).
MAX_ELEMENTS = 1 << 56
#: Upper bound on how far a zip archive may expand (per member, and all members against the file's size).
MAX_RATIO = 1000
#: Expansion below this many bytes is never called a bomb (tiny members compress far better than 1000x).
BOMB_FLOOR = 1 << 20
#: What :mod:`zipfile` raises on a damaged archive.
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, struct.error, ValueError, OverflowError,
              NotImplementedError, RuntimeError, IndexError, KeyError, UnicodeDecodeError,
              OSError)  # a directory entry pointing before the start of the file seeks to EINVAL

_MAGICS = (
    (b"\x89HDF\r\n\x1a\n", "HDF5"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"\x93NUMPY", "npy"),
)


def sniff(head: bytes) -> str | None:
    """Name the format whose signature ``head`` (the first bytes of a file) starts with."""
    for magic, name in _MAGICS:
        if head.startswith(magic):
            return name
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    return None


def detect_format(path: str | os.PathLike[str], /) -> str:
    """The format of ``path`` from its extension (``.weights.h5`` before ``.h5``).

    Raises:
        UnsupportedFormatError: The extension is not one polyparam knows.
    """
    name = os.fspath(path).lower()
    for fmt, extensions in READABLE.items():
        if any(name.endswith(ext) for ext in extensions):
            return fmt
    known = sorted(ext for exts in READABLE.values() for ext in exts)
    msg = (f"Cannot read or write checkpoint {os.fspath(path)!r}: expected one of the extensions {known}, "
           f"got {os.path.splitext(name)[1]!r}. Rename the file or pass format=... explicitly.")
    raise errors.UnsupportedFormatError(msg, file=os.fspath(path), expected=known, got=os.path.splitext(name)[1])


def fingerprint(array: np.ndarray, /) -> str:
    """A cheap checksum of an array's bytes: length and the wrapping sum of its 64-bit words.

    Any single changed bit changes it; it is for detecting corruption, not tampering.
    """
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    n = flat.size
    words = flat[: n // 8 * 8].view("<u8")
    step = _HASH_PIECE // 8        # a wrapping sum is the sum of its pieces' sums, mod 2**64
    parts = parallel_map(lambda i: int(words[i:i + step].sum(dtype=np.uint64)), range(0, words.size, step))
    total = sum(parts) % 2**64
    tail = bytes(flat[words.size * 8:]).hex()
    return f"{n:x}:{total:016x}:{tail}"


#: Bytes summed per task when fingerprinting on the worker threads.
_HASH_PIECE = 1 << 22

#: Bytes copied, summed and written at a time by :func:`write_snapshot` (a multiple of 8).
SNAPSHOT_BYTES = 1 << 22


def write_snapshot(fh: Any, array: np.ndarray, /) -> str:
    """Write ``array``'s bytes (C order) to ``fh``; return the :func:`fingerprint` of exactly the bytes written.

    Each piece of :data:`SNAPSHOT_BYTES` is copied once and the copy is summed and
    written, so the checksum holds even while another thread updates the array in
    place. The copy is a ufunc loop over whole elements (a bytewise copy, as
    ``memcpy`` or the kernel's ``write`` may do, can take an element's bytes from
    both sides of a concurrent update and store a value no step ever held).

    ``array`` may have any strides (a kernel in a framework's layout seen canonically):
    the piece copy is then the transposing copy, in tiles (``tiled_copy``), into the
    same buffer, never a C-order copy of the whole array first. A C-ordered array no one
    else writes (:func:`~polyparam.backend.own_copy`) is summed and written as it is.
    """
    array = np.asarray(array)   # (a background save's tensor: its staged copy, marked as one)
    buffer = None if written_as_is(array) else np.empty(min(SNAPSHOT_BYTES, array.nbytes), np.uint8)
    total, tail = 0, b""
    for block in _pieces(array):
        raw = block.view(np.uint8) if buffer is None else _fill(buffer, block)
        total, tail = _sum_and_write(fh, raw, total, tail)
    return f"{array.nbytes:x}:{total % 2**64:016x}:{tail.hex()}"


def _pieces(array: np.ndarray) -> Iterator[np.ndarray]:
    """The pieces of ``array`` whose C orders, one after another, are its C order, each of at most
    :data:`SNAPSHOT_BYTES`: runs of a C-ordered array, blocks of whole rows of another."""
    if array.size:
        yield from _row_blocks(array.reshape(-1) if array.flags.c_contiguous else array,
                               max(1, SNAPSHOT_BYTES // array.itemsize))


def _fill(buffer: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Copy ``block`` into the bytes of ``buffer`` (:func:`copy_whole`); return the bytes filled.

    (Copying the next piece on a worker thread while this one is written was tried: Keras
    ResNet50's save took 190 ms against 163 ms in turn, on two cores.)
    """
    out = buffer[:block.nbytes].view(block.dtype).reshape(block.shape)
    copy_whole(out, block)
    return out.reshape(-1).view(np.uint8)


def copy_whole(out: np.ndarray, source: np.ndarray, /) -> None:
    """``out[...] = source`` (``out`` C-ordered, same shape and dtype), every element loaded whole, once.

    A C-ordered source is copied by a ufunc loop over its words (:func:`word_dtype`); a
    strided one (a transposed kernel) by the strided copy, which loads each element whole,
    in tiles where NumPy's own loop is slow (``tiled_copy``).
    """
    if source.flags.c_contiguous:   # flat: NumPy views a 0-d complex128 as words only in one dimension
        word = word_dtype(source.dtype)
        np.bitwise_or(source.reshape(-1).view(word), word.type(0), out=out.reshape(-1).view(word))
    elif not tiled_copy(out, source):
        np.copyto(out, source)


def _row_blocks(array: np.ndarray, limit: int) -> Iterator[np.ndarray]:
    """Sub-arrays of ``array`` whose C orders, one after another, are its C order; each of at most ``limit``
    elements where whole rows allow."""
    if array.size <= limit:
        yield array
        return
    if array.ndim == 1:
        for start in range(0, array.size, limit):
            yield array[start:start + limit]
        return
    row = array.size // array.shape[0]
    if row > limit:
        for i in range(array.shape[0]):
            yield from _row_blocks(array[i], limit)
        return
    rows = limit // row
    for start in range(0, array.shape[0], rows):
        yield array[start:start + rows]


def _sum_and_write(fh: Any, raw: np.ndarray, total: int, carry: bytes) -> tuple[int, bytes]:
    """Write ``raw`` (the next piece's bytes) and add the little-endian 8-byte words of ``carry`` (the bytes after
    the last whole word so far) + ``raw`` to ``total``; return the new total and the bytes after its last word."""
    fh.write(raw.data)
    if carry:
        head = carry + bytes(raw[:8 - len(carry)])
        if len(head) < 8:
            return total, head
        total += int.from_bytes(head, "little")
        raw = raw[8 - len(carry):]
    whole = raw.size // 8 * 8
    total += int(raw[:whole].view("<u8").sum(dtype=np.uint64))
    return total, bytes(raw[whole:])


def word_dtype(dtype: np.dtype) -> np.dtype:
    """The unsigned integer dtype whose elements a copy over whole values of ``dtype`` loads: the widest of 8,
    4, 2, 1 bytes that divides its item size (complex128: two 8-byte words)."""
    size = next(size for size in (8, 4, 2, 1) if dtype.itemsize % size == 0)
    return np.dtype(f"<u{size}")


@dataclass(frozen=True)
class Entry:
    """One stored tensor: its dtype and shape (canonical layout unless the archive says otherwise)."""

    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=object)) * self.dtype.itemsize


#: The longest doubt a file's metadata may put into an error message (a tampered file's may be megabytes).
MAX_DOUBT = 2000


def cut_doubts(doubts: dict[str, str]) -> dict[str, str]:
    """``doubts`` (read from a file) with each cut to :data:`MAX_DOUBT` characters."""
    return {key: why if len(why) <= MAX_DOUBT else why[:MAX_DOUBT] + " [...]" for key, why in doubts.items()}


@dataclass
class PolyparamMetadata:
    """What polyparam records next to the tensors.

    Attributes:
        ties: Tie groups as lists of paths; the first path present in the file holds the data.
        checksums: ``{key: fingerprint}`` of the stored bytes.
        backend: The backend the tree came from.
        layout: ``"canonical"`` (PyTorch's layout) or a native layout name.
        aliases: ``"reference"`` (one tensor per tie group) or ``"materialize"`` (every member stored).
        roles: ``{key: role}``.
        buffers: Keys of a framework's bookkeeping buffers (kind ``buffer``, role ``other``):
            a model of another framework may lack them, and loads then pass them over.
        order: The stored keys in the model's order (safetensors lays tensors out by dtype
            and name), for ``pp.load(..., match="order")``; empty when unknown.
        doubts: ``{key: why}`` of the tensors whose canonical layout the saving model could not
            establish (a Dense kernel after a flatten its structure does not show): stored in
            that framework's own order, so a load into another framework refuses them.
    """

    ties: list[list[str]] = field(default_factory=list)
    checksums: dict[str, str] = field(default_factory=dict)
    backend: str | None = None
    layout: str = "canonical"
    aliases: str = "reference"
    roles: dict[str, str] = field(default_factory=dict)
    buffers: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    doubts: dict[str, str] = field(default_factory=dict)
    version: int | None = None

    def to_strings(self) -> dict[str, str]:
        return {
            "format": "polyparam",
            "polyparam.version": str(FORMAT_VERSION),
            "polyparam.layout": self.layout,
            "polyparam.aliases": self.aliases,
            "polyparam.backend": self.backend or "",
            "polyparam.ties": json.dumps(self.ties),
            "polyparam.checksums": json.dumps(self.checksums, sort_keys=True),
            "polyparam.roles": json.dumps(self.roles, sort_keys=True),
            "polyparam.buffers": json.dumps(sorted(self.buffers)),
            **({"polyparam.order": json.dumps(self.order)} if self.order else {}),
            **({"polyparam.doubts": json.dumps(self.doubts, sort_keys=True)} if self.doubts else {}),
        }

    @classmethod
    def from_strings(cls, raw: dict[str, str], keys: set[str], *, file: str | None) -> PolyparamMetadata:
        """Parse and check polyparam's entries of a string-to-string metadata map."""
        if raw.get("format") != "polyparam" or "polyparam.version" not in raw:
            return cls()  # a foreign file: no ties, no checksums, canonical layout assumed

        def bad(what: str, got: Any) -> errors.MetadataError:
            msg = (f"Cannot read checkpoint {file!r}: expected {what} in its polyparam metadata, got {got!r}. "
                   "The file was damaged or edited; save it again.")
            return errors.MetadataError(msg, file=file, expected=what, got=got)

        version_text = raw["polyparam.version"]
        if not (version_text.isascii() and version_text.isdigit() and len(version_text) <= 9):  # not '²' or '١'
            raise bad("an integer format version", version_text)
        version = int(version_text)
        if version > FORMAT_VERSION:
            msg = (f"Cannot read checkpoint {file!r}: expected polyparam format version <= {FORMAT_VERSION}, "
                   f"got {version}. Upgrade polyparam to read it.")
            raise errors.UnsupportedVersionError(msg, file=file, expected=FORMAT_VERSION, got=version)

        def load(name: str, default: Any) -> Any:
            text = raw.get(name)
            if text is None:
                return default
            try:
                return json.loads(text)
            except (ValueError, RecursionError):
                raise bad(f"JSON under {name!r}", text[:80]) from None

        ties = load("polyparam.ties", [])
        if not isinstance(ties, list) or not all(
                isinstance(g, list) and len(g) >= 2 and all(isinstance(p, str) and p for p in g) for g in ties):
            raise bad("a list of tie groups (lists of two or more paths)", ties)
        seen: set[str] = set()
        for group in ties:
            if len(set(group)) != len(group) or seen & set(group):
                raise bad("each path in at most one tie group, once", group)
            seen |= set(group)
            if not any(p in keys for p in group):
                raise bad(f"a stored tensor for tie group {group}", sorted(keys)[:5])
        checksums = load("polyparam.checksums", {})
        if not isinstance(checksums, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                      for k, v in checksums.items()):
            raise bad("a map of checksums", checksums)
        unknown = sorted(set(checksums) - keys)
        if unknown:
            raise bad("checksums only for stored tensors", unknown[:5])
        roles = load("polyparam.roles", {})
        if not isinstance(roles, dict):
            raise bad("a map of roles", roles)
        buffers = load("polyparam.buffers", [])
        if not isinstance(buffers, list) or not all(isinstance(k, str) and k in keys for k in buffers):
            raise bad("a list of stored keys that are buffers", buffers)
        order = load("polyparam.order", [])
        if not isinstance(order, list) or not all(isinstance(k, str) and k in keys for k in order) \
                or len(set(order)) != len(order):
            raise bad("a list of stored keys, each once, in model order", order)
        doubts = load("polyparam.doubts", {})
        if not isinstance(doubts, dict) or not all(isinstance(k, str) and k in keys and isinstance(v, str) and v
                                                   for k, v in doubts.items()):
            raise bad("a map of stored keys to the doubts of their layout", doubts)
        doubts = cut_doubts(doubts)
        aliases = raw.get("polyparam.aliases", "reference")
        if aliases not in ("reference", "materialize"):
            raise bad("aliases 'reference' or 'materialize'", aliases)
        return cls(ties=ties, checksums=checksums, backend=raw.get("polyparam.backend") or None,
                   layout=raw.get("polyparam.layout", "canonical"), aliases=aliases,
                   roles={str(k): str(v) for k, v in roles.items()}, buffers=list(buffers), order=order,
                   doubts=doubts, version=version)


class Archive(abc.ABC):
    """A readable checkpoint: entries by key, metadata, and values on demand.

    Opening validates the whole structure; :meth:`read` returns one tensor (which may
    be a read-only view of a memory map). Use it as a context manager.
    """

    format: str = ""

    def __init__(self, file: str) -> None:
        self.file = file
        self.entries: dict[str, Entry] = {}
        self.metadata = PolyparamMetadata()
        self.extra: dict[str, str] = {}

    @abc.abstractmethod
    def read(self, key: str, /) -> np.ndarray:
        """The value stored under ``key`` (read-only; copy before keeping it past :meth:`close`)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the file."""

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def verify(self, key: str, value: np.ndarray, /) -> None:
        """Check ``value`` against the checksum recorded for ``key``, if there is one."""
        expected = self.metadata.checksums.get(key)
        if expected is None:
            return
        got = fingerprint(value)
        if got != expected:
            msg = (f"Cannot load tensor {key!r} from {self.file!r}: expected data with checksum {expected}, "
                   f"got {got}. The file is corrupt; restore it from a good copy.")
            raise errors.ChecksumError(msg, file=self.file, path=key, expected=expected, got=got)

    def paths(self) -> dict[str, str]:
        """Every path the file gives a value for, mapped to the key that stores it (ties included)."""
        out = {key: key for key in self.entries}
        for group in self.metadata.ties:
            anchor = next(p for p in group if p in self.entries)
            for member in group:
                out.setdefault(member, anchor)
        return out


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def open_regular(file: str) -> io.BufferedReader:
    """Open ``file`` for binary reading, refusing anything but a regular file before a byte is read.

    The file is opened without blocking, so a FIFO with no writer cannot hang the caller.

    Raises:
        UnsupportedFormatError: ``file`` is a FIFO, a device or a socket.
        IsADirectoryError: ``file`` is a directory.
        OSError: ``file`` cannot be opened.
    """
    nonblock = getattr(os, "O_NONBLOCK", 0)
    fd = os.open(file, os.O_RDONLY | nonblock | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), file)
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "a special file")
            msg = (f"Cannot read checkpoint {file!r}: expected a regular file, got {kind}. "
                   "Copy the data to a regular file and read that.")
            raise errors.UnsupportedFormatError(msg, file=file, expected="a regular file", got=kind)
        if nonblock:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_zip_members(infos: list[zipfile.ZipInfo], size: int, file: str) -> None:
    """Bound a zip directory's declared sizes against the file's real ``size`` before any member is inflated.

    Raises:
        TruncatedFileError: A member's stored bytes would run past the end of the file.
        CorruptArchiveError: A stored (uncompressed) member declares two different sizes.
        DecompressionBombError: A member, or the archive as a whole, expands more than ``MAX_RATIO`` times.
    """
    total = 0
    for info in infos:
        name = info.filename
        if info.header_offset < 0 or info.header_offset + info.compress_size > size:
            msg = (f"Cannot read member {name!r} of {file!r}: expected its {info.compress_size:,} stored bytes from "
                   f"offset {info.header_offset:,} inside the {size:,}-byte file, got them past its end. "
                   "The file is truncated or its zip directory is damaged.")
            raise errors.TruncatedFileError(msg, file=file, path=name, expected=size,
                                            got=info.header_offset + info.compress_size)
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            msg = (f"Cannot read member {name!r} of {file!r}: expected an uncompressed member to declare one size, "
                   f"got {info.compress_size:,} stored and {info.file_size:,} extracted bytes. The file is damaged.")
            raise errors.CorruptArchiveError(msg, file=file, path=name, expected=info.compress_size,
                                             got=info.file_size)
        if info.file_size > MAX_RATIO * max(info.compress_size, 1) and info.file_size > BOMB_FLOOR:
            msg = (f"Cannot read member {name!r} of {file!r}: expected at most {MAX_RATIO}x expansion, got "
                   f"{info.file_size:,} bytes from {info.compress_size:,}. Refused as a decompression bomb.")
            raise errors.DecompressionBombError(msg, file=file, path=name, expected=MAX_RATIO, got=info.file_size)
        total += info.file_size
    if total > MAX_RATIO * size and total > BOMB_FLOOR:
        msg = (f"Cannot read {file!r}: expected its members to expand to at most {MAX_RATIO}x the {size:,}-byte "
               f"file, got {total:,} bytes declared. Refused as a decompression bomb.")
        raise errors.DecompressionBombError(msg, file=file, expected=MAX_RATIO * size, got=total)


def refuse_other_format(head: bytes, expected: str, file: str, *, allowed: tuple[str, ...] = ()) -> None:
    """Refuse a file whose signature says it is another format (a pickle renamed, say)."""
    found = sniff(head)
    if found is None or found in allowed:
        return
    if found == "pickle":
        msg = (f"Cannot read {file!r} as {expected}: expected {expected} data, got a Python pickle. "
               "polyparam never unpickles; convert the file with its own framework in a trusted environment.")
        raise errors.UnsafeContentError(msg, file=file, expected=expected, got="pickle")
    msg = (f"Cannot read {file!r} as {expected}: expected {expected} data, got the signature of {found}. "
           "Give the file the extension of its real format.")
    raise errors.BadMagicError(msg, file=file, expected=expected, got=found)


def check_shape(shape: Any, key: str, file: str) -> tuple[int, ...]:
    """A validated shape: a list/tuple of non-negative ints whose product stays bounded."""
    if not isinstance(shape, (list, tuple)) or len(shape) > 64:
        msg = (f"Cannot read tensor {key!r} in {file!r}: expected a shape of at most 64 dimensions, got {shape!r}. "
               "The file is damaged.")
        raise errors.HeaderSchemaError(msg, file=file, path=key, expected="shape list", got=shape)
    total = 1
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0 or d > MAX_ELEMENTS:
            msg = (f"Cannot read tensor {key!r} in {file!r}: expected dimensions that are integers in "
                   f"[0, 2**56], got shape {shape!r}. The file is damaged or hostile.")
            raise errors.ShapeOverflowError(msg, file=file, path=key, expected="0 <= dim <= 2**56", got=shape)
        total *= d
    if total > MAX_ELEMENTS:
        msg = (f"Cannot read tensor {key!r} in {file!r}: expected at most 2**56 elements, got shape {shape!r} "
               f"({total} elements). The file is damaged or hostile.")
        raise errors.ShapeOverflowError(msg, file=file, path=key, expected="<= 2**56 elements", got=shape)
    return tuple(shape)


def check_key(key: Any, file: str) -> str:
    if not isinstance(key, str) or not key or key.startswith("__") or len(key) > 4096 or "\x00" in key:
        msg = (f"Cannot read {file!r}: expected tensor names that are non-empty strings not starting with '__', "
               f"got {key!r}. The file is damaged.")
        raise errors.InvalidKeyError(msg, file=file, expected="a tensor name", got=key)
    return key
