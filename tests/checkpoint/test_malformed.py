"""Malformed files: each class is refused with its own typed error; fuzzing finds no untyped exception."""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import polyparam as pp
from polyparam import errors
from polyparam.checkpoint.formats import open_archive

F32 = np.arange(4, dtype=np.float32).tobytes()  # 16 bytes


def st_bytes(header: dict | None = None, data: bytes = F32, *, raw: bytes | None = None, n: int | None = None,
             trailing: bytes = b"") -> bytes:
    """A safetensors file from a header dict (or raw header bytes) and a data section."""
    if raw is None:
        header = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}} if header is None else header
        raw = json.dumps(header).encode()
    length = len(raw) if n is None else n
    return struct.pack("<Q", length) + raw + data + trailing


def one(**entry: object) -> dict:
    base = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
    base.update(entry)
    return {"a": base}


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("pwned",))


PICKLE = pickle.dumps(_Evil(), protocol=4)

SAFETENSORS_CASES: list[tuple[str, bytes, type[Exception]]] = [
    ("empty file", b"", errors.EmptyFileError),
    ("shorter than the length prefix", b"\x05\x00\x00", errors.TruncatedFileError),
    ("header length beyond file", st_bytes(n=10_000), errors.HeaderLengthError),
    ("header over 100 MB", struct.pack("<Q", 100_000_001) + b"{}", errors.HeaderTooLargeError),
    ("header length 2**64-1", b"\xff" * 8 + b"{}", errors.HeaderTooLargeError),
    ("header not UTF-8", st_bytes(raw=b'{"\xff\xfe": 1}'), errors.HeaderEncodingError),
    ("bad JSON", st_bytes(raw=b'{"a": {"dtype": "F32",'), errors.HeaderJSONError),
    ("header not an object (wrong magic)", st_bytes(raw=b"[1, 2, 3]   "), errors.BadMagicError),
    ("duplicate keys", st_bytes(raw=b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
                                    b'"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}'),
     errors.DuplicateKeyError),
    ("unknown dtype", st_bytes(one(dtype="F8_E9M9")), errors.UnknownDTypeError),
    ("shape x dtype not the byte range", st_bytes(one(shape=[5])), errors.TensorSizeError),
    ("overlapping offsets", st_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                      "b": {"dtype": "F32", "shape": [3], "data_offsets": [4, 16]}}),
     errors.OverlappingOffsetsError),
    ("out-of-range offsets", st_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                       "b": {"dtype": "F32", "shape": [2], "data_offsets": [1000, 1008]}}),
     errors.OffsetOutOfRangeError),
    ("hole between tensors", st_bytes({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                                       "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}),
     errors.OffsetGapError),
    ("trailing bytes (polyglot)", st_bytes(trailing=b"<script>"), errors.TrailingBytesError),
    ("truncated data", st_bytes(data=F32[:10]), errors.TruncatedFileError),
    ("reversed offsets", st_bytes(one(data_offsets=[16, 0])), errors.InvalidOffsetError),
    ("non-integer offsets", st_bytes(one(data_offsets=[0.0, 16])), errors.InvalidOffsetError),
    ("negative dimension", st_bytes(one(shape=[-4])), errors.ShapeOverflowError),
    ("dimension overflow", st_bytes(one(shape=[2**63, 2**63])), errors.ShapeOverflowError),
    ("missing field", st_bytes({"a": {"dtype": "F32", "shape": [4]}}), errors.HeaderSchemaError),
    ("unknown field", st_bytes(one(extra=1)), errors.HeaderSchemaError),
    ("metadata not strings", st_bytes({**one(), "__metadata__": {"x": 1}}), errors.HeaderSchemaError),
    ("empty tensor name", st_bytes({"": one()["a"]}), errors.InvalidKeyError),
    ("newer polyparam format", st_bytes({**one(), "__metadata__": {"format": "polyparam", "polyparam.version": "99"}}),
     errors.UnsupportedVersionError),
    ("tie group of unknown tensors", st_bytes({**one(), "__metadata__": {
        "format": "polyparam", "polyparam.version": "1", "polyparam.ties": '[["x", "y"]]'}}), errors.MetadataError),
    ("checksums not JSON", st_bytes({**one(), "__metadata__": {
        "format": "polyparam", "polyparam.version": "1", "polyparam.checksums": "{"}}), errors.MetadataError),
    ("version a superscript digit", st_bytes({**one(), "__metadata__": {"format": "polyparam",
                                                                        "polyparam.version": "\u00b2"}}),
     errors.MetadataError),
    ("version in Arabic-Indic digits", st_bytes({**one(), "__metadata__": {"format": "polyparam",
                                                                           "polyparam.version": "\u0661"}}),
     errors.MetadataError),
    ("version of 5000 digits", st_bytes({**one(), "__metadata__": {"format": "polyparam",
                                                                   "polyparam.version": "1" * 5000}}),
     errors.MetadataError),
    ("zero-size tensors with no data to back them", st_bytes(
        {f"k{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(10_001)}, b""),
     errors.TooManyTensorsError),
    ("a pickle renamed", PICKLE, errors.UnsafeContentError),
    ("a zip renamed", b"PK\x03\x04" + b"\x00" * 40, errors.BadMagicError),
]


def _npz(members: dict[str, bytes], *, compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _npy_header(text: str, data: bytes = b"", version: int = 1) -> bytes:
    raw = text.encode("latin1")
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(raw)) + raw + data
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack("<I", len(raw)) + raw + data


GOOD_NPY = _npy(np.arange(4, dtype=np.float32))


def _duplicate_members() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf, pytest.warns(UserWarning):
        zf.writestr("a.npy", GOOD_NPY)
        zf.writestr("a.npy", GOOD_NPY)
    return buffer.getvalue()


def _crc_corrupt() -> bytes:
    data = bytearray(_npz({"a.npy": GOOD_NPY}))
    at = data.index(GOOD_NPY[-16:])  # inside the stored data
    data[at] ^= 0xFF
    return bytes(data)


NPZ_CASES: list[tuple[str, bytes, type[Exception]]] = [
    ("empty file", b"", errors.EmptyFileError),
    ("wrong magic", b"GIF89a" + b"\x00" * 30, errors.BadMagicError),
    ("a pickle renamed", PICKLE, errors.UnsafeContentError),
    ("truncated zip", _npz({"a.npy": GOOD_NPY})[:50], errors.CorruptArchiveError),
    ("object dtype", _npz({"a.npy": _npy_header("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }",
                                                PICKLE)}), errors.UnknownDTypeError),
    ("npy header over 10,000 bytes", _npz({"a.npy": _npy_header("{" + " " * 20_000 + "}", version=2)}),
     errors.HeaderTooLargeError),
    ("npy header beyond member", _npz({"a.npy": b"\x93NUMPY\x01\x00" + struct.pack("<H", 5000) + b"{}"}),
     errors.HeaderLengthError),
    ("npy header not a literal", _npz({"a.npy": _npy_header("{'descr': __import__('os')}")}), errors.HeaderJSONError),
    ("npy header wrong keys", _npz({"a.npy": _npy_header("{'descr': '<f4', 'shape': (1,)}", F32[:4])}),
     errors.HeaderSchemaError),
    ("npy data shorter than shape", _npz({"a.npy": _npy_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1000,), }", F32)}), errors.TensorSizeError),
    ("npy trailing bytes", _npz({"a.npy": GOOD_NPY + b"junk"}), errors.TrailingBytesError),
    ("npy shape overflow", _npz({"a.npy": _npy_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1180591620717411303424,), }", F32)}),
     errors.ShapeOverflowError),
    ("npy bad version", _npz({"a.npy": _npy_header("{}", version=9)}), errors.UnsupportedVersionError),
    ("member not .npy", _npz({"a.txt": b"hello"}), errors.InvalidKeyError),
    ("member with another signature", _npz({"a.npy": PICKLE}), errors.UnsafeContentError),
    ("duplicate members", _duplicate_members(), errors.DuplicateKeyError),
    ("decompression bomb", _npz({"a.npy": _npy(np.zeros(4 << 20, np.float32))}, compression=zipfile.ZIP_BZIP2),
     errors.DecompressionBombError),
    ("directory declares more bytes than the file", _npz({"a.npy": GOOD_NPY}).replace(
        struct.pack("<II", len(GOOD_NPY), len(GOOD_NPY)), struct.pack("<II", 1 << 31, 1 << 31)),
     errors.TruncatedFileError),
    ("metadata member not JSON",
     _npz({"a.npy": GOOD_NPY, "__polyparam__.npy": _npy(np.frombuffer(b"{oops", np.uint8))}),
     errors.MetadataError),
]


def _load_everything(path: Path) -> None:
    with open_archive(path) as archive:
        for key in archive.entries:
            archive.verify(key, archive.read(key))


@pytest.mark.parametrize(("name", "data", "error"), SAFETENSORS_CASES, ids=[c[0] for c in SAFETENSORS_CASES])
def test_malformed_safetensors_is_refused_with_its_own_error(tmp_path: Path, name: str, data: bytes,
                                                             error: type[Exception]) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    with pytest.raises(error) as info:
        _load_everything(path)
    assert type(info.value) is error, f"{name}: {type(info.value).__name__}"
    assert isinstance(info.value, ValueError) and info.value.file == str(path)


@pytest.mark.parametrize(("name", "data", "error"), NPZ_CASES, ids=[c[0] for c in NPZ_CASES])
def test_malformed_npz_is_refused_with_its_own_error(tmp_path: Path, name: str, data: bytes,
                                                     error: type[Exception]) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(data)
    with pytest.raises(error) as info:
        _load_everything(path)
    assert type(info.value) is error, f"{name}: {type(info.value).__name__}"


def test_the_corpus_covers_twenty_classes() -> None:
    assert len({c[2] for c in SAFETENSORS_CASES}) >= 20
    # + ChecksumError and TooManyTensorsError below
    assert len({c[2] for c in SAFETENSORS_CASES} | {c[2] for c in NPZ_CASES}) >= 23


def test_npz_crc_corruption_is_a_checksum_error(tmp_path: Path) -> None:
    path = tmp_path / "crc.npz"
    path.write_bytes(_crc_corrupt())
    with pytest.raises(errors.ChecksumError):
        _load_everything(path)


def test_too_many_tensors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import polyparam.checkpoint.formats.safetensors as st_mod

    monkeypatch.setattr(st_mod, "MAX_TENSORS", 3)
    header = {f"t{i}": {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i in range(4)}
    path = tmp_path / "many.safetensors"
    path.write_bytes(st_bytes(header))
    with pytest.raises(errors.TooManyTensorsError):
        _load_everything(path)


@pytest.mark.parametrize("corrupt", ["a", "b", "c"])
def test_a_flipped_data_bit_is_a_checksum_error_and_changes_nothing(tmp_path: Path, corrupt: str) -> None:
    """Corrupt data in any tensor, the last one written included: the writes before it are undone."""
    tree = pp.tree({"a": np.ones((3, 4), np.float32), "b": np.zeros(5, np.float32), "c": np.ones(2, np.float64)})
    path = tmp_path / "m.safetensors"
    pp.save(tree, path)
    data = bytearray(path.read_bytes())
    size = int.from_bytes(data[:8], "little")
    start = 8 + size + json.loads(data[8:8 + size])[corrupt]["data_offsets"][0]
    data[start + 1] ^= 0x01
    path.write_bytes(bytes(data))
    target = pp.tree({"a": np.full((3, 4), 7, np.float32), "b": np.full(5, 7, np.float32), "c": np.full(2, 7.0)})
    with pytest.raises(errors.ChecksumError, match=repr(corrupt)) as info:
        pp.load(target, path)
    assert info.value.path == corrupt
    assert all((target[k].numpy() == 7).all() for k in "abc")


# ---- fuzzing --------------------------------------------------------------------------


def _seed_files() -> dict[str, bytes]:
    tree = pp.tree({"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.arange(3, dtype=np.int64),
                    "s": np.array(2.5, np.float64)})
    out = {}
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for ext in ("safetensors", "npz"):
            path = Path(d) / f"seed.{ext}"
            pp.save(tree, path)
            out[ext] = path.read_bytes()
    return out


SEEDS = _seed_files()


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    ext = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[ext])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[at] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[at:at + draw(st.integers(1, 16))]
    return ext, bytes(data)


@settings(max_examples=300, deadline=2000, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=mutated())
def test_fuzzed_files_give_only_typed_errors(tmp_path: Path, case: tuple[str, bytes]) -> None:
    """Mutated valid files either read or raise a CheckpointFormatError, never anything else."""
    ext, data = case
    path = tmp_path / f"fuzz.{ext}"
    path.write_bytes(data)
    with contextlib.suppress(errors.CheckpointFormatError):
        _load_everything(path)


@settings(max_examples=200, deadline=2000, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=256), ext=st.sampled_from(["safetensors", "npz"]))
def test_random_bytes_give_only_typed_errors(tmp_path: Path, data: bytes, ext: str) -> None:
    path = tmp_path / f"rand.{ext}"
    path.write_bytes(data)
    with contextlib.suppress(errors.CheckpointFormatError):
        _load_everything(path)
