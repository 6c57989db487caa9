"""Read-only access to native checkpoints for ``polyparam inspect`` and ``convert``.

* PyTorch ``.pt``/``.pth``/``.bin``: only the zip layout, only through
  ``torch.load(weights_only=True)``; the legacy raw-pickle layout is refused by its
  magic bytes before torch sees it, and a zip directory declaring more than the file
  could hold (or a record expanding over 1000x) before torch inflates it. Values must
  be a flat ``{name: Tensor}`` (or one under ``"state_dict"``) of dense CPU tensors
  whose dtype NumPy holds. Tensors sharing storage become tie groups. Before any tensor
  is copied out of its storage, one whose elements share memory (a zero stride: more
  bytes than its storage holds) past 1000x the file is refused, and so are views that
  together would expand that far.
* MXNet ``.params`` (``nd.save``/``save_parameters``): parsed here, in pure Python,
  with every count and size checked against the file size (no libmxnet, whose
  reader aborts on malformed input).
* Keras ``.weights.h5``: h5py, lazily; soft and external links, virtual and external
  datasets, non-numeric dtypes, datasets declaring more than 1000x the file size and
  two HDF5 paths that name one key (``a.b/c`` and ``a/b.c``) are refused.

Every reader refuses a FIFO, a device or a socket before reading from it.
"""

from __future__ import annotations

import os
import struct
import zipfile
from typing import IO, Any

import numpy as np

from polyparam import errors
from polyparam._layout import bfloat16
from polyparam.checkpoint.formats.base import (
    BOMB_FLOOR,
    MAX_RATIO,
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

__all__ = ["KerasH5Archive", "MxnetArchive", "TorchArchive"]


def _empty(file: str, what: str) -> errors.EmptyFileError:
    msg = f"Cannot read {file!r}: expected {what}, got an empty file."
    return errors.EmptyFileError(msg, file=file, expected=what, got=0)


class _InMemory(Archive):
    def __init__(self, file: str) -> None:
        super().__init__(file)
        self._values: dict[str, np.ndarray] = {}

    def read(self, key: str, /) -> np.ndarray:
        return self._values[key]


# ---- PyTorch ------------------------------------------------------------------------


class TorchArchive(_InMemory):
    """A PyTorch state dict, loaded with ``torch.load(weights_only=True)`` only."""

    format = "torch"

    def __init__(self, file: str) -> None:
        super().__init__(file)
        with open_regular(file) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise _empty(file, "a PyTorch zip checkpoint")
            head = fh.read(8)
            refuse_other_format(head, "a PyTorch zip checkpoint", file, allowed=("zip",))
            if not head.startswith(b"PK"):
                msg = (f"Cannot read {file!r}: expected a PyTorch zip checkpoint (torch.save since 1.6), got "
                       f"{head[:4]!r}. Save it again with a recent torch.")
                raise errors.BadMagicError(msg, file=file, expected=b"PK", got=head[:4])
            fh.seek(0)
            try:
                with zipfile.ZipFile(fh) as zf:
                    infos = zf.infolist()
            except ZIP_ERRORS as exc:
                msg = (f"Cannot read {file!r}: expected a readable PyTorch zip checkpoint, got {type(exc).__name__}: "
                       f"{exc}. The file is truncated or damaged.")
                raise errors.CorruptArchiveError(msg, file=file, expected="torch zip", got=str(exc)[:200]) from None
            check_zip_members(infos, size, file)  # torch's reader allocates what the directory declares
        import torch  # only here: inspecting a .pt file is the one reason to import torch

        try:
            loaded = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many untyped errors on bad input
            text = str(exc)
            if "weights_only" in text or "Weights only" in text or "global" in text.lower():
                msg = (f"Cannot read {file!r}: expected tensors only, got content torch's weights-only loader "
                       f"refuses ({type(exc).__name__}). polyparam never unpickles arbitrary objects.")
                raise errors.UnsafeContentError(msg, file=file, expected="tensors", got=type(exc).__name__) from None
            msg = (f"Cannot read {file!r}: expected a readable PyTorch checkpoint, got {type(exc).__name__}: "
                   f"{text[:200]}.")
            raise errors.CorruptArchiveError(msg, file=file, expected="torch zip", got=text[:200]) from None
        if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
            loaded = loaded["state_dict"]
        if not isinstance(loaded, dict):
            msg = f"Cannot read {file!r}: expected a state dict {{name: tensor}}, got {type(loaded).__name__}."
            raise errors.HeaderSchemaError(msg, file=file, expected="dict", got=type(loaded).__name__)
        storages: dict[Any, list[str]] = {}
        expanded = 0   # the bytes the distinct tensors take once copied out of their storages
        for key, value in loaded.items():
            check_key(key, file)
            if not isinstance(value, torch.Tensor):
                msg = f"Cannot read {file!r}: expected tensors only, got {type(value).__name__} under {key!r}."
                raise errors.HeaderSchemaError(msg, file=file, path=key, expected="Tensor", got=type(value).__name__)
            t = value.detach()
            if t.layout != torch.strided or t.device.type != "cpu":
                got = f"layout {t.layout} on device {t.device.type}".replace("torch.", "")
                msg = (f"Cannot read tensor {key!r} in {file!r}: expected a dense (strided) CPU tensor, got {got}. "
                       "Save it as t.to_dense().cpu() instead.")
                raise errors.HeaderSchemaError(msg, file=file, path=key, expected="strided on cpu", got=got)
            if t.is_quantized:
                raise _torch_dtype(file, key, t.dtype, "t.dequantize()")
            dtype = _numpy_dtype(torch, t.dtype)
            if dtype is None:  # float8, complex32 ...
                raise _torch_dtype(file, key, t.dtype, "t.float()")
            identity = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
            storages.setdefault(identity, []).append(key)
            if len(storages[identity]) > 1:   # the same tensor under another name (a tie): read once
                first = storages[identity][0]
                self._values[key], self.entries[key] = self._values[first], self.entries[first]
                continue
            expanded += _check_extent(t, key, file, size) // t.element_size() * dtype.itemsize
            if expanded > MAX_RATIO * size and expanded > BOMB_FLOOR:
                msg = (f"Cannot read {file!r}: expected its tensors to take at most {MAX_RATIO}x the {size:,}-byte "
                       f"file once read, got {expanded:,} bytes by {key!r} (views of shared storage). Refused as a "
                       "decompression bomb.")
                raise errors.DecompressionBombError(msg, file=file, path=key, expected=MAX_RATIO * size,
                                                    got=expanded)
            array = _to_numpy(torch, t, key, file)
            self._values[key] = array
            self.entries[key] = Entry(array.dtype, tuple(array.shape))
        ties = [keys for keys in storages.values() if len(keys) > 1 and storages and any(
            self.entries[k].nbytes for k in keys)]
        for group in ties:
            for member in group[1:]:
                del self._values[member], self.entries[member]
        counters = [k for k in self.entries if k.rsplit(".", 1)[-1] == "num_batches_tracked"]
        self.metadata = PolyparamMetadata(ties=ties, backend="torch", buffers=counters)  # BatchNorm's step counters


def _numpy_dtype(torch: Any, dtype: Any) -> np.dtype | None:
    """The NumPy dtype a tensor of torch ``dtype`` is read as (bfloat16: ``ml_dtypes``' where installed, else
    float32), or ``None`` where NumPy has none; asked of an empty tensor, so that nothing is copied."""
    if dtype == torch.bfloat16:
        bf16 = bfloat16()
        return np.dtype(np.float32) if bf16 is None else bf16
    try:
        return np.dtype(torch.empty(0, dtype=dtype).numpy().dtype)
    except (TypeError, RuntimeError, NotImplementedError):
        return None


def _check_extent(t: Any, key: str, file: str, size: int) -> int:
    """The bytes ``t`` takes once copied out of its storage; refused where that is more than its storage holds
    from its first element (its elements share memory: a zero stride) and more than the ``size``-byte file may
    expand to (:data:`MAX_RATIO`): a copy would conjure bytes the file never held (one stored element seen as
    16384 x 16384 is 1 GiB from a 1.5 KB file). A small broadcast (``torch.arange(3.).expand(4, 3)``) reads."""
    logical = t.numel() * t.element_size()
    held = t.untyped_storage().nbytes() - t.storage_offset() * t.element_size()
    if logical > held and logical > MAX_RATIO * size and logical > BOMB_FLOOR:
        shape, stride = tuple(t.shape), tuple(t.stride())
        msg = (f"Cannot read tensor {key!r} in {file!r}: expected at most the {held:,} bytes its storage holds, or "
               f"{MAX_RATIO}x the file, got shape {shape} with strides {stride} ({logical:,} bytes: its elements "
               "share memory). Refused as a shape bomb; save t.contiguous() instead.")
        raise errors.DecompressionBombError(msg, file=file, path=key, expected=held, got=logical)
    return logical


def _to_numpy(torch: Any, t: Any, key: str, file: str) -> np.ndarray:
    """``t``'s values as a NumPy array (bfloat16 as ``ml_dtypes``' bfloat16, float32 without it, as a
    safetensors file's BF16 reads): a view where ``t`` is contiguous, else a copy."""
    try:
        if t.dtype == torch.bfloat16:
            bf16 = bfloat16()
            if bf16 is None:
                return np.asarray(t.float().numpy())
            return np.asarray(t.contiguous().view(torch.int16).numpy().view(bf16))
        return np.asarray(t.contiguous().numpy())
    except (MemoryError, RuntimeError) as exc:
        text = str(exc)
        nbytes = t.numel() * (4 if t.dtype == torch.bfloat16 and bfloat16() is None else t.element_size())
        if isinstance(exc, MemoryError) or "alloc" in text.lower():   # torch: "DefaultCPUAllocator: can't allocate"
            msg = (f"Cannot read tensor {key!r} in {file!r}: expected {nbytes:,} bytes of memory for its values, "
                   "got an allocation failure. Free memory, or read the file where more is available.")
            raise MemoryError(msg) from exc
        msg = f"Cannot read tensor {key!r} in {file!r}: expected a readable tensor, got RuntimeError: {text[:200]}."
        raise errors.CorruptArchiveError(msg, file=file, path=key, expected="a tensor", got=text[:200]) from None


def _torch_dtype(file: str, key: str, dtype: Any, fix: str) -> errors.UnknownDTypeError:
    got = str(dtype).replace("torch.", "")
    msg = (f"Cannot read tensor {key!r} in {file!r}: expected a dtype NumPy can hold, got {got}. "
           f"Convert it in torch ({fix}) and save again.")
    return errors.UnknownDTypeError(msg, file=file, path=key, expected="a NumPy dtype", got=got)


# ---- MXNet --------------------------------------------------------------------------

_MX_LIST_MAGIC = 0x112
_MX_V1, _MX_V2, _MX_V3 = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
_MX_DTYPES = {0: "<f4", 1: "<f8", 2: "<f2", 3: "u1", 4: "<i4", 5: "i1", 6: "<i8", 7: "?"}
_MX_LEAVES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_var": "running_var"}


class _Cursor:
    def __init__(self, fh: IO[bytes], size: int, file: str) -> None:
        self.fh, self.size, self.file, self.pos = fh, size, file, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.size:
            msg = (f"Cannot read {self.file!r}: expected {n:,} bytes of {what} at offset {self.pos:,}, got a file of "
                   f"{self.size:,} bytes. The file is truncated or damaged.")
            raise errors.TruncatedFileError(msg, file=self.file, expected=self.pos + n, got=self.size)
        data = self.fh.read(n)
        self.pos += n
        return data

    def u64(self, what: str) -> int:
        return int(struct.unpack("<Q", self.take(8, what))[0])

    def i32(self, what: str) -> int:
        return int(struct.unpack("<i", self.take(4, what))[0])

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])


class MxnetArchive(Archive):
    """An MXNet ``.params`` file (``nd.save`` / Gluon ``save_parameters``), parsed without libmxnet."""

    format = "mxnet"

    def __init__(self, file: str) -> None:
        super().__init__(file)
        self._fh = open_regular(file)  # closed in close(); a FIFO or a device is refused, never waited on
        try:
            size = os.fstat(self._fh.fileno()).st_size
            if size == 0:
                raise _empty(file, "an MXNet .params file")
            self._parse(size)
        except BaseException:
            self._fh.close()
            raise

    def _parse(self, size: int) -> None:
        file = self.file
        head = self._fh.read(8)
        self._fh.seek(0)
        refuse_other_format(head, "an MXNet .params file", file)
        cur = _Cursor(self._fh, size, file)
        magic = cur.u64("the list magic") if size >= 8 else None
        if magic != _MX_LIST_MAGIC:
            msg = f"Cannot read {file!r}: expected the MXNet list magic 0x112, got {head[:8]!r}."
            raise errors.BadMagicError(msg, file=file, expected=hex(_MX_LIST_MAGIC), got=head[:8])
        cur.u64("the reserved field")
        count = cur.u64("the array count")
        if count > MAX_TENSORS:
            msg = f"Cannot read {file!r}: expected at most {MAX_TENSORS:,} arrays, got {count:,}."
            raise errors.TooManyTensorsError(msg, file=file, expected=MAX_TENSORS, got=count)
        arrays: list[tuple[np.dtype, tuple[int, ...], int]] = []
        for i in range(count):
            what = f"array {i}"
            version = cur.u32(what)
            if version not in (_MX_V2, _MX_V3):
                msg = f"Cannot read {file!r}: expected an NDArray V2/V3 magic for {what}, got {version:#x}."
                raise errors.UnsupportedVersionError(msg, file=file, expected=[hex(_MX_V2), hex(_MX_V3)],
                                                     got=hex(version))
            stype = cur.i32(what)
            if stype != 0:
                msg = (f"Cannot read {file!r}: expected dense arrays, got storage type {stype} for {what}. "
                       "Save dense arrays.")
                raise errors.HeaderSchemaError(msg, file=file, expected=0, got=stype)
            ndim = cur.i32(what)
            if ndim < 0 or ndim > 64:
                if ndim == -1 and version == _MX_V3:
                    msg = f"Cannot read {file!r}: expected a known shape for {what}, got none."
                    raise errors.HeaderSchemaError(msg, file=file, expected="shape", got=None)
                msg = f"Cannot read {file!r}: expected 0..64 dimensions for {what}, got {ndim}."
                raise errors.ShapeOverflowError(msg, file=file, expected="0..64", got=ndim)
            dims = struct.unpack(f"<{ndim}q", cur.take(8 * ndim, what)) if ndim else ()
            shape = check_shape(list(dims), what, file)
            cur.i32(what)  # device type
            cur.i32(what)  # device id
            flag = cur.i32(what)
            if flag not in _MX_DTYPES:
                msg = (f"Cannot read {file!r}: expected an MXNet dtype flag in {sorted(_MX_DTYPES)}, got {flag} for "
                       f"{what}.")
                raise errors.UnknownDTypeError(msg, file=file, expected=sorted(_MX_DTYPES), got=flag)
            dtype = np.dtype(_MX_DTYPES[flag])
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            offset = cur.pos
            cur.take(0, what)
            if cur.pos + nbytes > size:
                msg = f"Cannot read {file!r}: expected {nbytes:,} data bytes for {what}, got {size - cur.pos:,} left."
                raise errors.TruncatedFileError(msg, file=file, expected=nbytes, got=size - cur.pos)
            self._fh.seek(cur.pos + nbytes)
            cur.pos += nbytes
            arrays.append((dtype, shape, offset))
        n_names = cur.u64("the name count")
        if n_names not in (0, count):
            msg = f"Cannot read {file!r}: expected 0 or {count} names, got {n_names}."
            raise errors.HeaderSchemaError(msg, file=file, expected=count, got=n_names)
        names = []
        for i in range(n_names):
            length = cur.u64(f"name {i}")
            raw = cur.take(length, f"name {i}")
            try:
                names.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise errors.HeaderEncodingError(f"Cannot read {file!r}: expected UTF-8 names, got {raw[:40]!r}.",
                                                 file=file, expected="UTF-8", got=raw[:40]) from None
        if cur.pos != size:
            msg = (f"Cannot read {file!r}: expected the file to end at byte {cur.pos:,}, got {size - cur.pos:,} more "
                   "bytes.")
            raise errors.TrailingBytesError(msg, file=file, expected=cur.pos, got=size)
        if not names:
            names = [str(i) for i in range(count)]
        self._where: dict[str, tuple[int, int]] = {}
        for name, (dtype, shape, offset) in zip(names, arrays):
            key = name.split(":", 1)[1] if name.startswith(("arg:", "aux:")) else name
            head_, _, leaf = key.rpartition(".")
            key = f"{head_}.{_MX_LEAVES.get(leaf, leaf)}" if head_ else _MX_LEAVES.get(leaf, leaf)
            check_key(key, file)
            if key in self.entries:
                msg = f"Cannot read {file!r}: expected each name once, got {key!r} twice."
                raise errors.DuplicateKeyError(msg, file=file, path=key, expected="unique", got=key)
            self.entries[key] = Entry(dtype, shape)
            self._where[key] = (offset, self.entries[key].nbytes)
        self.metadata = PolyparamMetadata(backend="mxnet")

    def read(self, key: str, /) -> np.ndarray:
        offset, nbytes = self._where[key]
        entry = self.entries[key]
        self._fh.seek(offset)
        raw = self._fh.read(nbytes)
        if len(raw) != nbytes:
            raise errors.TruncatedFileError(f"Cannot read {key!r} from {self.file!r}: expected {nbytes} bytes, "
                                            f"got {len(raw)}.",
                                            file=self.file, path=key, expected=nbytes, got=len(raw))
        return np.frombuffer(raw, entry.dtype).reshape(entry.shape)

    def close(self) -> None:
        self._fh.close()


# ---- Keras --------------------------------------------------------------------------

MAX_H5_OBJECTS = 100_000
H5_RATIO = 1000


class KerasH5Archive(_InMemory):
    """A Keras 3 ``.weights.h5`` file, read with h5py: no links followed, sizes bounded.

    Keys are the HDF5 paths with ``/`` replaced by ``.`` (``layers.dense.vars.0``);
    values are in Keras's native layout (``kernel (in, out)``), which the metadata says.
    """

    format = "keras"

    def __init__(self, file: str) -> None:
        super().__init__(file)
        with open_regular(file) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise _empty(file, "an HDF5 file")
            head = fh.read(8)
        refuse_other_format(head, "an HDF5 file", file, allowed=("HDF5",))
        if not head.startswith(b"\x89HDF"):
            msg = f"Cannot read {file!r}: expected the HDF5 signature, got {head!r}."
            raise errors.BadMagicError(msg, file=file, expected=b"\x89HDF\r\n\x1a\n", got=head)
        import h5py  # only here: reading .h5 is the one reason to need it

        self._where: dict[str, str] = {}  # key -> the HDF5 path it came from
        try:
            h5 = h5py.File(file, "r")
        except (OSError, ValueError, RuntimeError) as exc:
            msg = f"Cannot read {file!r}: expected a readable HDF5 file, got {exc}."
            raise errors.CorruptArchiveError(msg, file=file, expected="HDF5", got=str(exc)[:200]) from None
        try:
            self._walk(h5py, h5, "", size, [0])
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
            if isinstance(exc, errors.CheckpointError):
                raise
            msg = f"Cannot read {file!r}: expected a readable HDF5 file, got {type(exc).__name__}: {exc}."
            raise errors.CorruptArchiveError(msg, file=file, expected="HDF5", got=str(exc)[:200]) from None
        finally:
            h5.close()
        # a compiled model's file also holds its optimizer's state: not the model's, passed over by loads
        optimizer = [key for key in self.entries if key.startswith("optimizer.")]
        self.metadata = PolyparamMetadata(backend="keras", layout="keras", buffers=optimizer)

    def _walk(self, h5py: Any, group: Any, prefix: str, size: int, count: list[int]) -> None:
        file = self.file
        for name in group:
            count[0] += 1
            if count[0] > MAX_H5_OBJECTS:
                raise errors.TooManyTensorsError(f"Cannot read {file!r}: expected at most {MAX_H5_OBJECTS} objects.",
                                                 file=file, expected=MAX_H5_OBJECTS, got=count[0])
            link = group.get(name, getlink=True)
            where = f"{prefix}/{name}"
            if not isinstance(link, h5py.HardLink):
                msg = (f"Cannot read {file!r}: expected only hard links, got a {type(link).__name__} at {where!r}. "
                       "Links can point outside the file; polyparam does not follow them.")
                raise errors.UnsafeContentError(msg, file=file, path=where, expected="HardLink",
                                                got=type(link).__name__)
            obj = group[name]
            if isinstance(obj, h5py.Group):
                self._walk(h5py, obj, where, size, count)
                continue
            if not isinstance(obj, h5py.Dataset):
                continue
            if obj.is_virtual or obj.external:
                msg = (f"Cannot read {file!r}: expected data stored in the file, got a virtual or external dataset at "
                       f"{where!r}.")
                raise errors.UnsafeContentError(msg, file=file, path=where, expected="internal dataset", got="external")
            dtype = obj.dtype
            if dtype.kind not in "biufc" or dtype.fields is not None:
                msg = f"Cannot read {file!r}: expected numeric datasets, got {dtype} at {where!r}."
                raise errors.UnknownDTypeError(msg, file=file, path=where, expected="numeric", got=str(dtype))
            shape = check_shape(list(obj.shape or ()), where, file)
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if nbytes > H5_RATIO * size:
                msg = (f"Cannot read {file!r}: expected datasets no larger than {H5_RATIO}x the file, got "
                       f"{nbytes:,} bytes declared at {where!r}. Refused as a shape bomb.")
                raise errors.DecompressionBombError(msg, file=file, path=where, expected=H5_RATIO * size, got=nbytes)
            key = check_key(where.strip("/").replace("/", "."), file)
            if key in self._where:
                msg = (f"Cannot read {file!r}: expected each dataset to name its own key, got {self._where[key]!r} "
                       f"and {where!r} both as {key!r}. Rename one of them in the file.")
                raise errors.DuplicateKeyError(msg, file=file, path=key, expected="unique keys",
                                               got=[self._where[key], where])
            self._where[key] = where
            value = np.asarray(obj[()]).astype(dtype.newbyteorder("="), copy=False)
            self._values[key] = value
            self.entries[key] = Entry(value.dtype, tuple(value.shape))
