"""Reading safetensors with the reference parser's rules, and writing the same layout the library writes.

The reader follows ``safetensors/src/tensor.rs``: an 8-byte little-endian header
length capped at 100,000,000; a UTF-8 JSON object header; every entry
``{"dtype", "shape", "data_offsets"}``; byte ranges that tile the data section
exactly (no gap, no overlap, nothing after the last tensor). It is stricter where
the reference is loose: duplicate keys and unknown header fields are refused, and so
are more than ``MAX_EMPTY_TENSORS`` tensors with no bytes (a header flood; a count of
``{`` bounds the entries before the JSON is parsed). Each violation has its own error
class; nothing is allocated or mapped before all pass.

The writer lays a file out as ``safetensors.serialize`` does (tensors by dtype,
then name; a compact JSON header padded with spaces to 8 bytes), but copies each
tensor itself, a piece at a time, so that what it checksums is what it writes and a
tensor another thread updates meanwhile holds whole elements (the library writes
straight from the array's memory).
"""

from __future__ import annotations

import contextlib
import json
import mmap as _mmap
import os
import struct
from typing import Any

import numpy as np

from polyparam import errors
from polyparam._layout import bfloat16
from polyparam.checkpoint.formats.base import (
    MAX_EMPTY_TENSORS,
    MAX_TENSORS,
    Archive,
    Entry,
    PolyparamMetadata,
    check_key,
    check_shape,
    open_regular,
    refuse_other_format,
    write_snapshot,
)

__all__ = ["DTYPES", "MAX_HEADER", "SafetensorsArchive", "accepted_dtypes", "header", "parse", "write"]

MAX_HEADER = 100_000_000

DTYPES: dict[str, str] = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?", "C64": "<c8",
}
_NAMES = {np.dtype(v): k for k, v in DTYPES.items()}


def accepted_dtypes() -> list[str]:
    """The safetensors dtype names this reader and writer take: :data:`DTYPES`, and ``BF16`` with ``ml_dtypes``."""
    return sorted([*DTYPES, *(["BF16"] if bfloat16() is not None else [])])


def _np_dtype(name: str, key: str, file: str) -> np.dtype:
    if name in DTYPES:
        return np.dtype(DTYPES[name])
    bf16 = bfloat16() if name == "BF16" else None
    if bf16 is not None:
        return bf16
    accepted = accepted_dtypes()
    fix = ("Install ml_dtypes (NumPy holds bfloat16 only with it)." if name == "BF16" else
           "Convert the tensor to a supported dtype before saving.")
    msg = f"Cannot read tensor {key!r} in {file!r}: expected a dtype in {accepted}, got {name!r}. {fix}"
    raise errors.UnknownDTypeError(msg, file=file, path=key, expected=accepted, got=name)


def st_dtype_name(dtype: np.dtype) -> str | None:
    """The safetensors name of a NumPy dtype, or ``None`` when safetensors cannot store it."""
    found = _NAMES.get(np.dtype(dtype).newbyteorder("<") if np.dtype(dtype).byteorder == ">" else np.dtype(dtype))
    if found is None and np.dtype(dtype).name == "bfloat16":
        return "BF16"
    return found


def _no_duplicates(file: str) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                msg = (f"Cannot read {file!r}: expected each tensor name once in the header, got {key!r} twice. "
                       "The file is damaged or crafted to confuse readers.")
                raise errors.DuplicateKeyError(msg, file=file, path=key, expected="unique names", got=key)
            out[key] = value
        return out

    return hook


def parse(head: bytes, file_size: int, read_header: Any, file: str) -> tuple[int, dict[str, Entry],
                                                                              dict[str, tuple[int, int]], dict[str,
                                                                                                               str]]:
    """Validate a safetensors file from its first 9 bytes and its size.

    ``read_header(n)`` returns the ``n`` header bytes. Returns the header length,
    entries, byte ranges (relative to the data section) and the ``__metadata__`` map.
    """
    if file_size == 0:
        msg = f"Cannot read {file!r}: expected a safetensors file, got an empty file. Save the checkpoint again."
        raise errors.EmptyFileError(msg, file=file, expected=">= 8 bytes", got=0)
    if head[8:9] not in (b"{", b" "):  # a header length such as 0x0480 starts like a pickle: look at byte 8 first
        refuse_other_format(head, "safetensors", file)
    if file_size < 8:
        msg = (f"Cannot read {file!r}: expected at least the 8-byte header length, got {file_size} bytes. "
               "The file is truncated.")
        raise errors.TruncatedFileError(msg, file=file, expected=8, got=file_size)
    (n,) = struct.unpack("<Q", head[:8])
    if n > MAX_HEADER:
        msg = (f"Cannot read {file!r}: expected a header of at most {MAX_HEADER:,} bytes, got a declared {n:,}. "
               "The file is damaged or hostile.")
        raise errors.HeaderTooLargeError(msg, file=file, expected=MAX_HEADER, got=n)
    if 8 + n > file_size:
        msg = (f"Cannot read {file!r}: expected the declared {n:,}-byte header to fit in the file, got a file of "
               f"{file_size:,} bytes. The file is truncated or damaged.")
        raise errors.HeaderLengthError(msg, file=file, expected=f"<= {file_size - 8}", got=n)
    raw = read_header(n)
    if len(raw) != n:
        msg = f"Cannot read {file!r}: expected {n} header bytes, got {len(raw)}. The file changed while being read."
        raise errors.TruncatedFileError(msg, file=file, expected=n, got=len(raw))
    data_size = file_size - 8 - n
    # Every JSON object is written with a '{' (escapes exist only inside strings), so this bounds the entries
    # (less the outer object and __metadata__) before the parse, which costs about 1 KB of memory per entry.
    # Each tensor with bytes needs at least one byte of data; at most MAX_EMPTY_TENSORS may have none.
    objects = raw.count(b"{") - 1 - (b'"__metadata__"' in raw)
    limit = min(MAX_TENSORS, data_size + MAX_EMPTY_TENSORS)
    if objects > limit:
        msg = (f"Cannot read {file!r}: expected at most {limit:,} tensors (one per data byte, plus at most "
               f"{MAX_EMPTY_TENSORS:,} with no bytes, and never over {MAX_TENSORS:,}), got a header of up to "
               f"{objects:,} objects for {data_size:,} bytes of data. The file is hostile; if it is genuine, save "
               "it again without its empty tensors.")
        raise errors.TooManyTensorsError(msg, file=file, expected=limit, got=objects)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = f"Cannot read {file!r}: expected a UTF-8 header, got invalid byte at {exc.start}. The file is damaged."
        raise errors.HeaderEncodingError(msg, file=file, expected="UTF-8", got=exc.start) from None
    stripped = text.lstrip(" ")
    if not stripped.startswith("{"):
        msg = (f"Cannot read {file!r}: expected the header to be a JSON object starting with '{{', got "
               f"{text[:20]!r}. This is not a safetensors file.")
        raise errors.BadMagicError(msg, file=file, expected="{", got=text[:20])
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates(file))
    except errors.DuplicateKeyError:
        raise
    except (ValueError, RecursionError) as exc:
        msg = f"Cannot read {file!r}: expected a JSON header, got a parse error ({exc}). The file is damaged."
        raise errors.HeaderJSONError(msg, file=file, expected="JSON", got=str(exc)[:200]) from None
    if not isinstance(header, dict):
        msg = f"Cannot read {file!r}: expected a JSON object header, got {type(header).__name__}. The file is damaged."
        raise errors.HeaderSchemaError(msg, file=file, expected="object", got=type(header).__name__)
    metadata = header.pop("__metadata__", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k,
                                                 v in metadata.items()):
        msg = f"Cannot read {file!r}: expected '__metadata__' to map strings to strings, got {str(metadata)[:80]!r}."
        raise errors.HeaderSchemaError(msg, file=file, expected="dict[str, str]", got=str(metadata)[:80])
    if len(header) > MAX_TENSORS:
        msg = (f"Cannot read {file!r}: expected at most {MAX_TENSORS:,} tensors, got {len(header):,}. "
               "The file is hostile.")
        raise errors.TooManyTensorsError(msg, file=file, expected=MAX_TENSORS, got=len(header))
    entries: dict[str, Entry] = {}
    ranges: dict[str, tuple[int, int]] = {}
    empty = 0
    for key, info in header.items():
        check_key(key, file)
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            got = sorted(info) if isinstance(info, dict) else type(info).__name__
            msg = (f"Cannot read tensor {key!r} in {file!r}: expected exactly the fields "
                   f"['data_offsets', 'dtype', 'shape'], got {got}. The file is damaged.")
            raise errors.HeaderSchemaError(msg, file=file, path=key, expected=["data_offsets", "dtype", "shape"],
                                           got=got)
        if not isinstance(info["dtype"], str):
            msg = f"Cannot read tensor {key!r} in {file!r}: expected a dtype name, got {info['dtype']!r}."
            raise errors.HeaderSchemaError(msg, file=file, path=key, expected="str", got=info["dtype"])
        dtype = _np_dtype(info["dtype"], key, file)
        shape = check_shape(info["shape"], key, file)
        offsets = info["data_offsets"]
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                or offsets[0] < 0 or offsets[1] < offsets[0]):
            msg = (f"Cannot read tensor {key!r} in {file!r}: expected data_offsets [begin, end] with "
                   f"0 <= begin <= end, got {offsets!r}. The file is damaged.")
            raise errors.InvalidOffsetError(msg, file=file, path=key, expected="[begin, end]", got=offsets)
        begin, end = offsets
        numel = 1
        for d in shape:
            numel *= d
        if end - begin != numel * dtype.itemsize:
            msg = (f"Cannot read tensor {key!r} in {file!r}: expected {numel * dtype.itemsize:,} bytes for shape "
                   f"{list(shape)} of {info['dtype']}, got the byte range [{begin}, {end}] ({end - begin:,} bytes). "
                   "The file is damaged.")
            raise errors.TensorSizeError(msg, file=file, path=key, expected=numel * dtype.itemsize, got=end - begin)
        if begin == end:
            empty += 1
            if empty > MAX_EMPTY_TENSORS:
                msg = (f"Cannot read {file!r}: expected at most {MAX_EMPTY_TENSORS:,} tensors with no bytes, got "
                       f"{key!r} as number {empty:,}. The file is hostile; if it is genuine, save it again "
                       "without its empty tensors.")
                raise errors.TooManyTensorsError(msg, file=file, path=key, expected=MAX_EMPTY_TENSORS, got=empty)
        entries[key] = Entry(dtype, shape)
        ranges[key] = (begin, end)
    order = sorted(ranges, key=lambda k: (ranges[k][0], ranges[k][1]))
    expected_begin = 0
    contiguous = True
    for key in order:
        begin, end = ranges[key]
        if begin != expected_begin:
            contiguous = False
        expected_begin = max(expected_begin, end)
    last_end = max((end for _, end in ranges.values()), default=0)
    if last_end > data_size:
        if contiguous:
            msg = (f"Cannot read {file!r}: expected {last_end:,} bytes of tensor data, got {data_size:,}. "
                   "The file is truncated (an interrupted copy or download?).")
            raise errors.TruncatedFileError(msg, file=file, expected=last_end, got=data_size)
        key = next(k for k in order if ranges[k][1] > data_size)
        msg = (f"Cannot read tensor {key!r} in {file!r}: expected a byte range inside the {data_size:,}-byte data "
               f"section, got {list(ranges[key])}. The file is damaged or hostile.")
        raise errors.OffsetOutOfRangeError(msg, file=file, path=key, expected=data_size, got=list(ranges[key]))
    cursor = 0
    previous = None
    for key in order:
        begin, end = ranges[key]
        if begin < cursor:
            msg = (f"Cannot read tensor {key!r} in {file!r}: expected its bytes after {previous!r} (from {cursor}), "
                   f"got the range {[begin, end]} overlapping it. The file is damaged or crafted.")
            raise errors.OverlappingOffsetsError(msg, file=file, path=key, expected=cursor, got=[begin, end])
        if begin > cursor:
            msg = (f"Cannot read tensor {key!r} in {file!r}: expected its bytes to start at {cursor}, got {begin}: "
                   f"a hole of {begin - cursor} bytes. The file is damaged or crafted.")
            raise errors.OffsetGapError(msg, file=file, path=key, expected=cursor, got=begin)
        cursor, previous = end, key
    if cursor != data_size:
        msg = (f"Cannot read {file!r}: expected the file to end with its last tensor at byte {8 + n + cursor:,}, "
               f"got {data_size - cursor:,} more bytes (a polyglot or damaged file).")
        raise errors.TrailingBytesError(msg, file=file, expected=8 + n + cursor, got=file_size)
    return n, entries, ranges, metadata


class SafetensorsArchive(Archive):
    """A validated safetensors file; values are read-only views of a memory map (or reads)."""

    format = "safetensors"

    def __init__(self, file: str, *, mmap: bool = True) -> None:
        super().__init__(file)
        self._fh = open_regular(file)  # closed in close(); a FIFO or a device is refused, never waited on
        self._map: _mmap.mmap | None = None
        try:
            size = os.fstat(self._fh.fileno()).st_size
            head = self._fh.read(9)
            self._fh.seek(8)
            n, self.entries, self._ranges, raw = parse(head, size, self._fh.read, file)
            self.extra = raw
            self.metadata = PolyparamMetadata.from_strings(raw, set(self.entries), file=file)
            self._base = 8 + n
            if mmap and size > self._base:
                self._map = _mmap.mmap(self._fh.fileno(), 0, access=_mmap.ACCESS_READ)
        except BaseException:
            self._fh.close()
            raise

    def read(self, key: str, /) -> np.ndarray:
        entry = self.entries[key]
        begin, end = self._ranges[key]
        count = (end - begin) // entry.dtype.itemsize if entry.dtype.itemsize else 0
        if end == begin:
            return np.zeros(entry.shape, entry.dtype)
        if self._map is not None:
            out = np.frombuffer(self._map, dtype=entry.dtype, count=count, offset=self._base + begin)
        else:
            out = np.empty(count, entry.dtype)
            self._fh.seek(self._base + begin)
            got = self._fh.readinto(out.data.cast("B"))
            if got != end - begin:
                msg = (f"Cannot read tensor {key!r} from {self.file!r}: expected {end - begin} bytes, got {got}. "
                       "The file changed.")
                raise errors.TruncatedFileError(msg, file=self.file, path=key, expected=end - begin, got=got)
            out.flags.writeable = False
        return out.reshape(entry.shape)

    def close(self) -> None:
        if self._map is not None:
            with contextlib.suppress(BufferError):  # views are still alive; the map closes when the last one goes
                self._map.close()
            self._map = None
        self._fh.close()


#: The library's order of dtypes; it writes tensors from the last of these to the first, then by name.
_WRITE_RANK = {name: rank for rank, name in enumerate(
    ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64",
     "U64"])}


def header(path: str, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> tuple[bytes, list[str]]:
    """The header bytes (padded to 8) of a file holding ``tensors`` and ``metadata``, and the tensors' order in it."""
    names = {key: st_dtype_name(value.dtype) for key, value in tensors.items()}
    order = sorted(tensors, key=lambda key: (-_WRITE_RANK.get(names[key] or "", -1), key))
    entries: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for key in order:
        value, name = tensors[key], names[key]
        if name is None:   # write_tensors checks every dtype first; this is the writer's own guard
            msg = (f"Cannot write tensor {key!r} to {path!r}: expected a dtype safetensors stores, got {value.dtype}. "
                   "Cast it (for example to float32) before saving.")
            raise errors.UnknownDTypeError(msg, file=path, path=key, expected=accepted_dtypes(), got=str(value.dtype))
        entries[key] = {"dtype": name, "shape": list(value.shape), "data_offsets": [offset, offset + value.nbytes]}
        offset += value.nbytes
    raw = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return raw + b" " * (-len(raw) % 8), order


#: How every header :func:`header` makes begins: its metadata first, right after these bytes.
METADATA_AT = len(b'{"__metadata__":')


def metadata_bytes(metadata: dict[str, str]) -> bytes:
    """``metadata`` as :func:`header` serializes it inside the header."""
    return json.dumps(dict(metadata), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def write(path: str, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> dict[str, str]:
    """Write ``tensors`` (any strides) and ``metadata`` as a safetensors file; return each tensor's checksum.

    The checksums are :func:`~polyparam.checkpoint.formats.base.fingerprint` strings of
    the bytes the file holds.
    """
    raw, order = header(path, tensors, metadata)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        return {key: write_snapshot(fh, tensors[key]) for key in order}
