"""Reading and writing ``.npz`` without ``np.load``: members are parsed and bounded here.

``np.load`` allocates from a member's declared shape before reading it (an 80-byte
member can ask for 32 GiB) and leaks ``OverflowError``; this reader checks each
member's declared size against the zip directory's sizes first, and those sizes
against the file's, refuses object and structured dtypes, caps the ``.npy`` header at
NumPy's 10,000 bytes, and treats a member (or an archive) that expands more than
1000x as a decompression bomb. Big-endian members are read as native-endian values:
byte order is how a value is stored, not its dtype. Nothing here unpickles.
"""

from __future__ import annotations

import ast
import json
import os
import struct
import zipfile
from typing import IO

import numpy as np

from polyparam import errors
from polyparam.checkpoint.formats.base import (
    MAX_TENSORS,
    ZIP_ERRORS,
    Archive,
    Entry,
    PolyparamMetadata,
    check_key,
    check_shape,
    check_zip_members,
    open_regular,
    refuse_other_format,
)

__all__ = ["META_MEMBER", "NpzArchive", "write"]

META_MEMBER = "__polyparam__.npy"
MAX_NPY_HEADER = 10_000


def _read_npy_header(fh: IO[bytes], member: str, size: int, file: str) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """Parse one ``.npy`` header; return dtype, shape, fortran order and the header's length."""
    prefix = fh.read(8)
    if len(prefix) < 8 or prefix[:6] != b"\x93NUMPY":
        refuse_other_format(prefix, "npy", file)
        msg = f"Cannot read member {member!r} of {file!r}: expected the .npy signature, got {prefix[:6]!r}."
        raise errors.BadMagicError(msg, file=file, path=member, expected=b"\x93NUMPY", got=prefix[:6])
    major = prefix[6]
    if major == 1:
        (n,) = struct.unpack("<H", fh.read(2))
        start = 10
    elif major in (2, 3):
        raw = fh.read(4)
        if len(raw) < 4:
            msg = f"Cannot read member {member!r} of {file!r}: expected a 4-byte header length, got {len(raw)} bytes."
            raise errors.TruncatedFileError(msg, file=file, path=member, expected=4, got=len(raw))
        (n,) = struct.unpack("<I", raw)
        start = 12
    else:
        msg = f"Cannot read member {member!r} of {file!r}: expected .npy format version 1, 2 or 3, got {major}."
        raise errors.UnsupportedVersionError(msg, file=file, path=member, expected=(1, 2, 3), got=major)
    if n > MAX_NPY_HEADER:
        msg = (f"Cannot read member {member!r} of {file!r}: expected a .npy header of at most {MAX_NPY_HEADER} bytes, "
               f"got a declared {n:,}. The file is damaged or hostile.")
        raise errors.HeaderTooLargeError(msg, file=file, path=member, expected=MAX_NPY_HEADER, got=n)
    if start + n > size:
        msg = (f"Cannot read member {member!r} of {file!r}: expected its {n}-byte header to fit in the "
               f"{size}-byte member. The file is damaged.")
        raise errors.HeaderLengthError(msg, file=file, path=member, expected=size - start, got=n)
    raw = fh.read(n)
    try:
        text = raw.decode("latin1" if major < 3 else "utf-8")
    except UnicodeDecodeError:
        msg = f"Cannot read member {member!r} of {file!r}: expected a UTF-8 .npy header, got invalid bytes."
        raise errors.HeaderEncodingError(msg, file=file, path=member, expected="UTF-8", got=raw[:40]) from None
    try:
        header = ast.literal_eval(text)  # literals only: no names, calls or attribute access
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        msg = f"Cannot read member {member!r} of {file!r}: expected a Python dict literal header, got {text[:60]!r}."
        raise errors.HeaderJSONError(msg, file=file, path=member, expected="dict literal", got=text[:60]) from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        got = sorted(map(str, header)) if isinstance(header, dict) else type(header).__name__
        msg = (f"Cannot read member {member!r} of {file!r}: expected the keys ['descr', 'fortran_order', 'shape'], "
               f"got {got}. The file is damaged.")
        raise errors.HeaderSchemaError(msg, file=file, path=member, expected=["descr", "fortran_order", "shape"],
                                       got=got)
    if not isinstance(header["fortran_order"], bool):
        msg = (f"Cannot read member {member!r} of {file!r}: expected fortran_order True or False, got "
               f"{header['fortran_order']!r}.")
        raise errors.HeaderSchemaError(msg, file=file, path=member, expected=bool, got=header["fortran_order"])
    descr = header["descr"]
    dtype = None
    if isinstance(descr, str) and len(descr) <= 8:
        try:
            dtype = np.dtype(descr)
        except (TypeError, ValueError):
            dtype = None
    if dtype is None or dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
        msg = (f"Cannot read member {member!r} of {file!r}: expected a numeric dtype (bool, int, uint, float, "
               f"complex), got {descr!r}. Object and structured arrays are refused (they may hold pickles).")
        raise errors.UnknownDTypeError(msg, file=file, path=member, expected="numeric dtype", got=str(descr)[:60])
    shape = check_shape(list(header["shape"]) if isinstance(header["shape"], tuple) else header["shape"], member, file)
    return dtype, shape, header["fortran_order"], start + n


class NpzArchive(Archive):
    """A validated ``.npz`` archive (what ``np.savez`` writes)."""

    format = "npz"

    def __init__(self, file: str) -> None:
        super().__init__(file)
        self._fh = open_regular(file)  # closed in close(); a FIFO or a device is refused, never waited on
        try:
            self._open()
        except BaseException:
            self._fh.close()
            raise

    def _open(self) -> None:
        file = self.file
        size = os.fstat(self._fh.fileno()).st_size
        if size == 0:
            msg = f"Cannot read {file!r}: expected an .npz (zip) archive, got an empty file. Save the checkpoint again."
            raise errors.EmptyFileError(msg, file=file, expected="zip", got=0)
        head = self._fh.read(8)
        self._fh.seek(0)
        refuse_other_format(head, "npz", file, allowed=("zip",))
        if not head.startswith(b"PK"):
            msg = f"Cannot read {file!r}: expected an .npz (zip) archive starting with 'PK', got {head[:4]!r}."
            raise errors.BadMagicError(msg, file=file, expected=b"PK", got=head[:4])
        try:
            self._zip = zipfile.ZipFile(self._fh)
            infos = self._zip.infolist()
        except ZIP_ERRORS as exc:
            msg = (f"Cannot read {file!r}: expected a readable zip archive, got {type(exc).__name__}: {exc}. "
                   "The file is truncated or damaged.")
            raise errors.CorruptArchiveError(msg, file=file, expected="zip", got=str(exc)[:200]) from None
        if len(infos) > MAX_TENSORS:
            msg = f"Cannot read {file!r}: expected at most {MAX_TENSORS:,} members, got {len(infos):,}."
            raise errors.TooManyTensorsError(msg, file=file, expected=MAX_TENSORS, got=len(infos))
        check_zip_members(infos, size, file)
        self._members: dict[str, tuple[zipfile.ZipInfo, bool, int, np.dtype]] = {}
        meta: dict[str, str] = {}
        seen: set[str] = set()
        for info in infos:
            name = info.filename
            if name in seen:
                msg = f"Cannot read {file!r}: expected each member once, got {name!r} twice. The file is crafted."
                raise errors.DuplicateKeyError(msg, file=file, path=name, expected="unique members", got=name)
            seen.add(name)
            if not name.endswith(".npy"):
                msg = f"Cannot read {file!r}: expected only .npy members, got {name!r}."
                raise errors.InvalidKeyError(msg, file=file, path=name, expected="*.npy", got=name)
            try:
                with self._zip.open(info) as fh:
                    dtype, shape, fortran, header_len = _read_npy_header(fh, name, info.file_size, file)
                    if name == META_MEMBER:
                        meta = self._metadata(fh, dtype, shape, info.file_size - header_len)
                        continue
            except errors.CheckpointFormatError:
                raise
            except zipfile.BadZipFile as exc:
                if "CRC" not in str(exc):
                    raise errors.CorruptArchiveError(f"Cannot read member {name!r} of {file!r}: expected a readable "
                                                     f"member, got {exc}.", file=file, path=name) from None
                msg = f"Cannot read member {name!r} of {file!r}: expected intact data, got {exc}. The file is corrupt."
                raise errors.ChecksumError(msg, file=file, path=name, expected="CRC match", got=str(exc)) from None
            except ZIP_ERRORS as exc:
                msg = (f"Cannot read member {name!r} of {file!r}: expected a readable member, got "
                       f"{type(exc).__name__}: {exc}.")
                raise errors.CorruptArchiveError(msg, file=file, path=name, expected="zip member",
                                                 got=str(exc)[:200]) from None
            key = check_key(name[:-4], file)
            numel = 1
            for d in shape:
                numel *= d
            declared = numel * dtype.itemsize
            available = info.file_size - header_len
            if available > declared:
                msg = (f"Cannot read member {name!r} of {file!r}: expected {declared:,} data bytes for shape "
                       f"{shape} of {dtype.name}, got {available - declared:,} more. The file is damaged or crafted.")
                raise errors.TrailingBytesError(msg, file=file, path=key, expected=declared, got=available)
            if available < declared:
                msg = (f"Cannot read member {name!r} of {file!r}: expected {declared:,} data bytes for shape "
                       f"{shape} of {dtype.name}, got {available:,}. The file is damaged.")
                raise errors.TensorSizeError(msg, file=file, path=key, expected=declared, got=available)
            self.entries[key] = Entry(dtype.newbyteorder("="), shape)  # read() swaps a big-endian member
            self._members[key] = (info, fortran, header_len, dtype)
        self.extra = meta
        self.metadata = PolyparamMetadata.from_strings(meta, set(self.entries), file=file)

    def _metadata(self, fh: IO[bytes], dtype: np.dtype, shape: tuple[int, ...], nbytes: int) -> dict[str, str]:
        file = self.file
        if dtype != np.uint8 or len(shape) != 1 or shape[0] != nbytes or nbytes > 100_000_000:
            msg = f"Cannot read {file!r}: expected {META_MEMBER} to be a uint8 vector of JSON, got {dtype} {shape}."
            raise errors.MetadataError(msg, file=file, expected="uint8 JSON", got=f"{dtype} {shape}")
        raw = fh.read(nbytes)
        try:
            value = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):
            msg = f"Cannot read {file!r}: expected JSON in {META_MEMBER}, got {raw[:60]!r}."
            raise errors.MetadataError(msg, file=file, expected="JSON", got=raw[:60]) from None
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            msg = f"Cannot read {file!r}: expected {META_MEMBER} to map strings to strings, got {str(value)[:60]!r}."
            raise errors.MetadataError(msg, file=file, expected="dict[str, str]", got=str(value)[:60])
        return value

    def read(self, key: str, /) -> np.ndarray:
        entry = self.entries[key]
        info, fortran, header_len, stored = self._members[key]
        nbytes = entry.nbytes
        out = np.empty(int(np.prod(entry.shape, dtype=np.int64)), stored)
        try:
            with self._zip.open(info) as fh:
                fh.read(header_len)
                view = out.data.cast("B") if nbytes else memoryview(b"")
                got = 0
                while got < nbytes:
                    chunk = fh.readinto(view[got:]) if hasattr(fh, "readinto") else 0
                    if not chunk:
                        break
                    got += chunk
                if got != nbytes:
                    msg = f"Cannot read tensor {key!r} from {self.file!r}: expected {nbytes} bytes, got {got}."
                    raise errors.TruncatedFileError(msg, file=self.file, path=key, expected=nbytes, got=got)
                fh.read(1)  # reach the end of the member so zipfile checks its CRC
        except errors.CheckpointFormatError:
            raise
        except zipfile.BadZipFile as exc:
            if "CRC" not in str(exc):
                raise errors.CorruptArchiveError(f"Cannot read tensor {key!r} from {self.file!r}: expected a readable "
                                                 f"member, got {exc}.", file=self.file, path=key) from None
            msg = (f"Cannot read tensor {key!r} from {self.file!r}: expected intact data, got {exc}. "
                   "The file is corrupt.")
            raise errors.ChecksumError(msg, file=self.file, path=key, expected="CRC match", got=str(exc)) from None
        except ZIP_ERRORS as exc:
            msg = (f"Cannot read tensor {key!r} from {self.file!r}: expected a readable member, got "
                   f"{type(exc).__name__}: {exc}.")
            raise errors.CorruptArchiveError(msg, file=self.file, path=key, expected="zip member",
                                             got=str(exc)[:200]) from None
        if stored != entry.dtype:
            out = out.byteswap().view(entry.dtype)
        value = out.reshape(entry.shape[::-1]).T if fortran else out.reshape(entry.shape)
        value.flags.writeable = False
        return value

    def verify(self, key: str, value: np.ndarray, /) -> None:
        """Check ``value`` against its recorded checksum, which covers the bytes as stored (in their byte order)."""
        stored = self._members[key][3]
        if stored != self.entries[key].dtype and value.dtype == self.entries[key].dtype:
            value = value.astype(stored)  # swapped back to the stored order
        super().verify(key, value)

    def close(self) -> None:
        zf = getattr(self, "_zip", None)
        if zf is not None:
            zf.close()
        self._fh.close()


def write(fh: IO[bytes], tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """Write an uncompressed ``.npz`` (``np.savez`` layout) plus polyparam's metadata member."""
    from numpy.lib import format as npformat

    with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in tensors.items():
            with zf.open(f"{key}.npy", mode="w", force_zip64=True) as member:
                npformat.write_array(member, np.asanyarray(value), allow_pickle=False)
        raw = np.frombuffer(json.dumps(metadata).encode("utf-8"), np.uint8)
        with zf.open(META_MEMBER, mode="w", force_zip64=True) as member:
            npformat.write_array(member, raw, allow_pickle=False)
