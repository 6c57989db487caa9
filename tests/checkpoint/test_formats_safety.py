"""Hostile files the readers must refuse cheaply and with a typed error: FIFOs, bombs, odd tensor types, key clashes."""

from __future__ import annotations

import errno
import io
import json
import os
import struct
import subprocess
import sys
import threading
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import polyparam as pp
from polyparam import errors
from polyparam.checkpoint.formats import open_archive
from polyparam.checkpoint.formats.safetensors import SafetensorsArchive

ROOT = Path(__file__).resolve().parents[2]


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _npz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


# ---- F9: a FIFO (or any non-regular file) is refused before it is opened for reading -------------------


def _open_with_watchdog(open_: object, path: Path) -> BaseException | None:
    """Run ``open_(path)`` in a thread; if it blocks, unblock it by opening the FIFO's write end and fail."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            open_(path).close()  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 - the test inspects whatever was raised
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # a writer that closes at once: the reader sees EOF
        thread.join(10)
        pytest.fail(f"opening the FIFO {path.name} blocked")
    return outcome[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX-only")
@pytest.mark.parametrize("ext", ["safetensors", "npz", "pt", "params", "weights.h5"])
def test_a_fifo_is_refused_without_blocking(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"x.{ext}"
    os.mkfifo(path)
    raised = _open_with_watchdog(open_archive, path)
    assert type(raised) is errors.UnsupportedFormatError, repr(raised)
    assert raised.file == str(path) and "FIFO" in str(raised) and "regular file" in str(raised)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX-only")
def test_a_fifo_is_refused_by_every_path_that_opens_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    os.mkfifo(path)
    assert type(_open_with_watchdog(SafetensorsArchive, path)) is errors.UnsupportedFormatError  # the sharded reader
    tree = pp.tree({"w": np.zeros(2, np.float32)})
    assert type(_open_with_watchdog(lambda p: (pp.load(tree, p), io.BytesIO())[1], path)) is (
        errors.UnsupportedFormatError)


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs a character device")
def test_a_device_is_refused(tmp_path: Path) -> None:
    with pytest.raises(errors.UnsupportedFormatError, match="character device"):
        open_archive("/dev/null", format="safetensors")


def test_a_directory_is_still_an_os_error(tmp_path: Path) -> None:
    folder = tmp_path / "d.npz"
    folder.mkdir()
    with pytest.raises(IsADirectoryError if os.name != "nt" else OSError):
        open_archive(folder)


def test_a_missing_file_is_a_typed_error_that_is_still_a_file_not_found_error(tmp_path: Path) -> None:
    """Caught as FileNotFoundError (what open raises) or as a polyparam CheckpointError; the message names the
    path and the checkpoints that are in that folder."""
    model = {"layer": {"weight": np.ones((2, 2), np.float32)}}
    pp.save(model, tmp_path / "model.safetensors")
    with pytest.raises(FileNotFoundError) as info:
        pp.load(model, tmp_path / "modle.safetensors")
    assert isinstance(info.value, errors.CheckpointNotFoundError) and info.value.errno == errno.ENOENT
    assert info.value.filename == str(tmp_path / "modle.safetensors")
    assert "['model.safetensors']" in str(info.value)
    with pytest.raises(errors.CheckpointNotFoundError, match="no folder"):
        open_archive(tmp_path / "gone" / "model.safetensors")


# ---- F10: decompression bombs, lying zip directories, header floods -----------------------------------


def _zip64_lie(member: bytes, declared: int, others: dict[str, bytes]) -> bytes:
    """A STORED zip whose central directory declares ``declared`` bytes for ``w.npy`` through a zip64 extra field."""
    out, directory = bytearray(), bytearray()
    for name, data, lie in [("w.npy", member, declared), *((k, v, None) for k, v in others.items())]:
        offset, crc, raw = len(out), zlib.crc32(data), name.encode()
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0, crc, len(data), len(data), len(raw), 0)
        out += raw + data
        if lie is None:
            directory += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0, crc, len(data), len(data),
                                     len(raw), 0, 0, 0, 0, 0, offset) + raw
        else:
            extra = struct.pack("<HHQQ", 1, 16, lie, lie)
            directory += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF,
                                     0xFFFFFFFF, len(raw), len(extra), 0, 0, 0, 0, offset) + raw + extra
    start = len(out)
    out += directory
    n = 1 + len(others)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(directory), start, 0)
    return bytes(out)


def test_an_npz_directory_declaring_a_tebibyte_member_is_refused_at_open(tmp_path: Path) -> None:
    """A 1 KB file whose zip64 directory declares 1 TiB: refused before anything is allocated (was MemoryError)."""
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (137438953472,), }"  # 2**37 float64 = 1 TiB
    raw = b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + header.encode().ljust(117) + b"\n"
    path = tmp_path / "lie.npz"
    path.write_bytes(_zip64_lie(raw + np.ones(4).tobytes(), 128 + 2**37 * 8, {"b.npy": _npy(np.ones(3))}))
    assert path.stat().st_size < 2000
    with pytest.raises(errors.TruncatedFileError) as info:
        open_archive(path)
    assert info.value.path == "w.npy" and info.value.file == str(path)
    with pytest.raises(errors.TruncatedFileError):
        pp.load(pp.tree({"w": np.zeros(1), "b": np.zeros(3)}), path)


def test_an_npz_whose_members_together_expand_too_far_is_a_bomb(tmp_path: Path) -> None:
    """Many members each under the per-member floor (1 MiB) still add up to a bomb."""
    member = _npy(np.zeros((1 << 20) // 8 - 16, np.float64))  # just under 1 MiB each, about 100 bytes in bzip2
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_BZIP2) as zf:
        for i in range(40):
            zf.writestr(f"t{i}.npy", member)
    path = tmp_path / "many.npz"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(errors.DecompressionBombError):
        open_archive(path)


def _deflated_pt(tmp_path: Path, numel: int) -> Path:
    """A torch.save checkpoint whose one storage record is re-packed with DEFLATE (torch's reader inflates it)."""
    torch = pytest.importorskip("torch")
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(numel)}, plain)
    packed = tmp_path / "bomb.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(packed, "w") as dst:
        for info in src.infolist():
            deflate = info.filename.endswith("/data/0")
            dst.writestr(info.filename, src.read(info), compresslevel=9,
                         compress_type=zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED)
    plain.unlink()
    return packed


def test_a_deflated_pt_storage_record_is_a_decompression_bomb(tmp_path: Path) -> None:
    """16 MiB of zeros in a ~17 KB file: refused before torch inflates it (was: read, 1000x the file in memory)."""
    path = _deflated_pt(tmp_path, 4 << 20)
    assert path.stat().st_size < 64_000
    with pytest.raises(errors.DecompressionBombError) as info:
        open_archive(path)
    assert info.value.file == str(path) and info.value.path.endswith("/data/0")


def test_a_pt_directory_declaring_more_than_the_file_is_refused(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "lie.pt"
    torch.save({"w": torch.ones(4)}, path)
    data = bytearray(path.read_bytes())
    at = data.rindex(b"PK\x01\x02")  # the last directory entry: patch its compressed and uncompressed sizes
    struct.pack_into("<II", data, at + 20, 0x7FFFFFFF, 0x7FFFFFFF)
    path.write_bytes(bytes(data))
    with pytest.raises(errors.TruncatedFileError):
        open_archive(path)


def test_a_lightly_deflated_pt_still_reads(tmp_path: Path) -> None:
    """Compression itself is not refused: a small deflated record within the ratio reads as before."""
    path = _deflated_pt(tmp_path, 1000)
    with open_archive(path) as archive:
        assert archive.read("w").shape == (1000,)


def _empty_tensors_header(n: int, *, data: int = 0) -> bytes:
    entries = {f"k{i}": {"dtype": "F32", "shape": [0], "data_offsets": [data, data]} for i in range(n)}
    if data:
        entries["d"] = {"dtype": "U8", "shape": [data], "data_offsets": [0, data]}
    raw = json.dumps(entries, separators=(",", ":")).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\x00" * data


def test_a_flood_of_empty_tensors_is_refused_before_the_header_is_parsed(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """F10: a header of zero-size tensors (no data to back them) costs no JSON parse at all."""
    import polyparam.checkpoint.formats.safetensors as st_mod

    path = tmp_path / "flood.safetensors"
    path.write_bytes(_empty_tensors_header(st_mod.MAX_EMPTY_TENSORS + 1))

    def no_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the header was parsed")

    monkeypatch.setattr(st_mod.json, "loads", no_parse)
    with pytest.raises(errors.TooManyTensorsError) as info:
        open_archive(path)
    assert info.value.file == str(path)


def test_too_many_empty_tensors_next_to_real_data_are_refused(tmp_path: Path) -> None:
    import polyparam.checkpoint.formats.safetensors as st_mod

    n = st_mod.MAX_EMPTY_TENSORS + 1
    path = tmp_path / "mixed.safetensors"
    path.write_bytes(_empty_tensors_header(n, data=n + 10))  # enough data bytes to pass the cheap bound
    with pytest.raises(errors.TooManyTensorsError, match="no bytes"):
        open_archive(path)


def test_a_few_empty_tensors_still_read(tmp_path: Path) -> None:
    path = tmp_path / "few.safetensors"
    path.write_bytes(_empty_tensors_header(100, data=8))
    with open_archive(path) as archive:
        assert len(archive.entries) == 101 and archive.read("k7").shape == (0,)


# ---- F13: .pt tensors numpy cannot hold -------------------------------------------------------------------


def _odd_tensor(label: str) -> object:
    torch = pytest.importorskip("torch")
    if label == "float8_e4m3fn":
        return torch.zeros(4, dtype=torch.float8_e4m3fn)
    if label == "complex32":
        return torch.zeros(4, dtype=torch.complex32)
    if label == "quint8":
        return torch.quantize_per_tensor(torch.zeros(4), 0.1, 0, torch.quint8)
    return torch.zeros(4).to_sparse()


@pytest.mark.parametrize(("label", "error"), [("float8_e4m3fn", errors.UnknownDTypeError),
                                              ("complex32", errors.UnknownDTypeError),
                                              ("quint8", errors.UnknownDTypeError),
                                              ("sparse COO", errors.HeaderSchemaError)])
@pytest.mark.filterwarnings("ignore::UserWarning")  # torch: complex32 is experimental, quantization deprecated
def test_pt_tensors_numpy_cannot_hold_are_typed_errors_naming_the_key(tmp_path: Path, label: str,
                                                                     error: type[Exception]) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "odd.pt"
    torch.save({"good": torch.ones(2), "layer.odd": _odd_tensor(label)}, path)
    with pytest.raises(error) as info:
        open_archive(path)
    assert type(info.value) is error, label
    assert info.value.path == "layer.odd" and info.value.file == str(path)


def test_convert_of_a_float8_pt_exits_2_without_a_traceback(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "f8.pt"
    torch.save({"w": torch.zeros(4, dtype=torch.float8_e4m3fn)}, path)
    out = subprocess.run([sys.executable, "-m", "polyparam", "convert", str(path), str(tmp_path / "o.safetensors")],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "float8" in out.stderr and "Traceback" not in out.stderr, out.stderr


# ---- F19: byte order is storage, not dtype ------------------------------------------------------------------


def test_a_big_endian_npz_member_loads_without_cast(tmp_path: Path) -> None:
    w = np.arange(24, dtype=np.float32).reshape(4, 6) + 1
    path = tmp_path / "be.npz"
    path.write_bytes(_npz({"w.npy": _npy(w.astype(">f4")), "b.npy": _npy(np.arange(3, dtype=">i8"))}))
    with open_archive(path) as archive:
        assert archive.entries["w"].dtype == np.float32 and archive.entries["w"].dtype.isnative
        value = archive.read("w")
        assert value.dtype.isnative and not value.flags.writeable
        np.testing.assert_array_equal(value, w)
    tree = pp.tree({"w": np.zeros((4, 6), np.float32), "b": np.zeros(3, np.int64)})
    pp.load(tree, path)  # no cast=True needed
    np.testing.assert_array_equal(tree["w"].numpy(), w)
    np.testing.assert_array_equal(tree["b"].numpy(), np.arange(3))


def test_a_big_endian_fortran_member_and_its_checksum(tmp_path: Path) -> None:
    """A polyparam-written npz whose member is big-endian: values swapped to native, checksum still verified."""
    w = np.asfortranarray(np.arange(6, dtype=">f8").reshape(2, 3))
    path = tmp_path / "m.npz"
    from polyparam.checkpoint.formats.base import PolyparamMetadata, fingerprint
    from polyparam.checkpoint.formats.npz import write

    meta = PolyparamMetadata(checksums={"w": fingerprint(w)})
    with open(path, "wb") as fh:
        write(fh, {"w": w}, meta.to_strings())
    with open_archive(path) as archive:
        value = archive.read("w")
        assert value.dtype == np.dtype("=f8")
        archive.verify("w", value)
        np.testing.assert_array_equal(value, w)
        with pytest.raises(errors.ChecksumError):
            archive.verify("w", value + 1)


# ---- F23: two HDF5 paths that map to one key ----------------------------------------------------------


def test_h5_paths_that_map_to_one_key_are_a_duplicate_key_error(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "m.weights.h5"
    with h5py.File(path, "w") as f:
        f["a.b/c"] = np.ones(2, np.float32)
        f["a/b.c"] = np.zeros(2, np.float32)
    with pytest.raises(errors.DuplicateKeyError) as info:
        open_archive(path)
    assert info.value.path == "a.b.c" and info.value.file == str(path)


# ---- F31: a .pt tensor whose elements share memory (zero strides) is a bomb, refused before it is copied -------


@pytest.mark.parametrize("ext", ["pt", "bin"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_pt_tensor_whose_elements_share_memory_is_refused_before_it_is_copied(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ext: str, dtype: str) -> None:
    """One stored element seen as 1024 x 1024 (strides 0): a 1 KB file that was read as 4 MiB (any size, by its
    shape); refused, naming the key, before torch or NumPy makes the copy."""
    torch = pytest.importorskip("torch")
    path = tmp_path / f"bomb.{ext}"
    bomb = torch.zeros(1, dtype=getattr(torch, dtype)).as_strided((1024, 1024), (0, 0))
    torch.save({"good": torch.ones(2), "layer.bomb": bomb}, path)
    assert path.stat().st_size < 4096

    def no_copy(name: str) -> object:
        real = getattr(torch.Tensor, name)

        def copy(self: Any, *args: object, **kwargs: object) -> object:
            assert self.numel() <= 2, f"the bomb was copied by Tensor.{name}"
            return real(self, *args, **kwargs)
        return copy

    for name in ("contiguous", "float", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, no_copy(name))
    with pytest.raises(errors.DecompressionBombError) as info:
        open_archive(path)
    assert info.value.path == "layer.bomb" and info.value.file == str(path)
    assert info.value.got == 1024 * 1024 * bomb.element_size() and "1024" in str(info.value)
    model = {"good": np.zeros(2, np.float32), "layer.bomb": np.zeros((1024, 1024), np.float32)}
    monkeypatch.undo()
    with pytest.raises(errors.DecompressionBombError):
        pp.load(pp.tree(model), path)
    assert not model["good"].any()


def test_pt_views_that_share_a_storage_without_overlapping_still_read(tmp_path: Path) -> None:
    """Slices of one storage, a transposed view and a tensor saved under two names (a tie) read as before."""
    torch = pytest.importorskip("torch")
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    path = tmp_path / "views.pt"
    torch.save({"top": base[:2], "bottom": base[2:], "t": base.t(), "tied": base, "tied2": base,
                "step": torch.zeros(3).as_strided((1,), (0,))}, path)
    with open_archive(path) as archive:
        np.testing.assert_array_equal(archive.read("top"), base[:2].numpy())
        np.testing.assert_array_equal(archive.read("bottom"), base[2:].numpy())
        np.testing.assert_array_equal(archive.read("t"), base.t().numpy())
        assert archive.metadata.ties == [["tied", "tied2"]] and "tied2" not in archive.entries
        assert archive.read("step").shape == (1,)


def test_many_pt_views_of_one_storage_expanding_past_the_ratio_are_refused(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Each view within its storage, but together far more than the file: refused as a bomb before any copy."""
    torch = pytest.importorskip("torch")
    from polyparam.checkpoint.formats import native

    base = torch.arange(1000, dtype=torch.float32)
    path = tmp_path / "views.pt"
    torch.save({f"v{i}": base[i:i + 900] for i in range(50)}, path)   # 50 x 3.6 KB from one 4 KB storage
    monkeypatch.setattr(native, "MAX_RATIO", 2)
    monkeypatch.setattr(native, "BOMB_FLOOR", 0)
    with pytest.raises(errors.DecompressionBombError) as info:
        open_archive(path)
    assert info.value.file == str(path) and info.value.path is not None
    monkeypatch.undo()
    with open_archive(path) as archive:
        np.testing.assert_array_equal(archive.read("v49"), base[49:949].numpy())


def test_running_out_of_memory_reading_a_pt_tensor_is_a_memory_error_not_a_dtype_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "m.pt"
    torch.save({"w": torch.ones(2, 3).t()}, path)   # not contiguous: reading it makes a copy

    def out_of_memory(self: object, *args: object, **kwargs: object) -> None:
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 24 bytes.")

    monkeypatch.setattr(torch.Tensor, "contiguous", out_of_memory)
    with pytest.raises(MemoryError, match="'w'") as info:
        open_archive(path)
    assert not isinstance(info.value, errors.UnknownDTypeError)


def test_a_small_broadcast_in_a_pt_file_still_reads(tmp_path: Path) -> None:
    """``torch.arange(3.).expand(4, 3)`` shares memory too, but 48 bytes from a 12-byte storage is no bomb: it
    reads as the broadcast values (refusing it broke files that loaded before)."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "broadcast.pt"
    torch.save({"m": torch.arange(3.0).expand(4, 3), "s": torch.tensor(3.0).expand(8)}, path)
    model = {"m": np.zeros((4, 3), np.float32), "s": np.zeros(8, np.float32)}
    pp.load(pp.tree(model), path)
    np.testing.assert_array_equal(model["m"], np.tile(np.arange(3.0), (4, 1)))
    np.testing.assert_array_equal(model["s"], 3.0)


def test_a_bfloat16_pt_file_reads_as_bfloat16(tmp_path: Path) -> None:
    """torch's own save of a bfloat16 model read as float32: loading it back into that model asked for cast=True,
    and into a float32 one it loaded without. It reads as bfloat16 now, as a safetensors BF16 tensor does."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("ml_dtypes")
    torch.manual_seed(0)
    source = torch.nn.Linear(4, 4, bias=False).to(torch.bfloat16)
    torch.save(source.state_dict(), tmp_path / "bf16.pt")
    with open_archive(tmp_path / "bf16.pt") as archive:
        assert archive.entries["weight"].dtype.name == "bfloat16"
    target = torch.nn.Linear(4, 4, bias=False).to(torch.bfloat16)
    pp.load(target, tmp_path / "bf16.pt")
    assert torch.equal(target.weight, source.weight)
    wide = torch.nn.Linear(4, 4, bias=False)
    with pytest.raises(errors.DTypeMismatchError, match="cast=True"):
        pp.load(wide, tmp_path / "bf16.pt")
    pp.load(wide, tmp_path / "bf16.pt", cast=True)
    assert torch.equal(wide.weight, source.weight.float())
