"""Save/load round trips, atomic saves (also under SIGKILL), no unpickling, native readers and the CLI."""

from __future__ import annotations

import ast
import hashlib
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import polyparam as pp
from polyparam import errors
from polyparam.checkpoint.formats import open_archive

ROOT = Path(__file__).resolve().parents[2]
DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
          np.uint32, np.uint64, np.bool_, np.complex64]


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrays=st.lists(hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=4, min_side=0,
                                                                             max_side=5)), min_size=1, max_size=6),
       ext=st.sampled_from(["safetensors", "npz"]), transpose=st.booleans())
def test_round_trip_is_bitwise(tmp_path: Path, arrays: list[np.ndarray], ext: str, transpose: bool) -> None:
    """Any dtype, 0-d and zero-size shapes, non-contiguous views: save then load is bitwise equal."""
    state = {f"t{i}": (a.T if transpose else a) for i, a in enumerate(arrays)}
    tree = pp.tree({k: np.array(v, copy=True) for k, v in state.items()})
    src = pp.tree(state)
    path = tmp_path / f"p.{ext}"
    pp.save(src, path)
    for p in tree.parameters():
        p.set(np.zeros(p.shape, p.dtype))
    pp.load(tree, path)
    for key, value in state.items():
        got = tree[key].numpy()
        assert got.dtype == value.dtype and got.shape == value.shape
        assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(value).tobytes()


LARGE_VIEWS = [
    ((3, 3, 64, 128), lambda a: a.transpose(3, 2, 0, 1)),           # Keras conv kernel read as canonical
    ((1, 1, 300, 257), lambda a: a.transpose(3, 2, 0, 1)),          # 1x1 conv: one plane, ragged tiles
    ((3, 3, 3, 40, 50), lambda a: a.transpose(4, 3, 0, 1, 2)),      # Conv3D: 27 planes
    ((513, 300), lambda a: a.T),                                      # Dense kernel
    ((2, 300, 400), lambda a: a[:, ::-2, 1::3]),                      # strided and reversed, not a transpose
    ((400, 300), lambda a: np.broadcast_to(a[:1], (400, 300))),       # zero strides
    ((100, 700, 3), lambda a: a.transpose(2, 1, 0)),                  # short axis first
    ((70, 70, 70), lambda a: a.transpose(2, 0, 1)),                   # 70 planes: NumPy's own loop
]


@pytest.mark.parametrize(("shape", "view"), LARGE_VIEWS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64, np.complex64, np.bool_, np.int8])
@pytest.mark.parametrize("threads", ["1", "2"], ids=["tiles", "runs"])
def test_c_order_copy_of_a_large_view_is_numpys_copy(shape: tuple[int, ...], view: Any, dtype: type, threads: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The copy ``pp.save`` makes of a large view (a transposed one in tiles, others in runs on one
    thread or two) holds exactly NumPy's C-order copy."""
    from polyparam.checkpoint.io import c_order_copy

    monkeypatch.setenv("POLYPARAM_NUM_THREADS", threads)

    base = np.random.default_rng(0).normal(size=shape).astype(dtype)
    array = view(base)
    got = c_order_copy(array)
    assert got.flags.c_contiguous and got.dtype == array.dtype and got.shape == array.shape
    assert not np.shares_memory(got, base)
    assert got.tobytes() == np.ascontiguousarray(array).tobytes()


@pytest.mark.parametrize(("shape", "view"), LARGE_VIEWS[:5] + [((300, 7), lambda a: a[::-1, ::2])])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.complex128, np.bool_])
@pytest.mark.parametrize("piece", [1 << 22, 4096, 1000], ids=["one-piece", "row-blocks", "within-rows"])
def test_a_view_is_written_as_its_c_order_bytes_with_their_checksum(shape: tuple[int, ...], view: Any, dtype: type,
                                                                    piece: int,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``pp.save`` writes a transposed or strided view (a kernel read canonically) piece by piece, copying each
    piece into one buffer: the file holds NumPy's C-order bytes, and the checksum is theirs, wherever a piece
    ends (whole rows, or within one, at byte counts that are not whole 8-byte words)."""
    import io

    from polyparam.checkpoint.formats import base as formats_base

    monkeypatch.setattr(formats_base, "SNAPSHOT_BYTES", piece)
    array = view(np.random.default_rng(0).normal(size=shape).astype(dtype))
    fh = io.BytesIO()
    checksum = formats_base.write_snapshot(fh, array)
    expected = np.ascontiguousarray(array)
    assert fh.getvalue() == expected.tobytes()
    assert checksum == formats_base.fingerprint(expected)


@pytest.mark.parametrize("dtype", [np.float32, np.complex128, np.int8])
@pytest.mark.parametrize("size", [0, 1, 13, 5000])
def test_an_own_copy_is_written_as_it_is_and_any_other_array_through_a_snapshot_copy(
        dtype: type, size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """An array a backend marks as its own copy (``own_copy``: Gluon's ``asnumpy``) is summed and written without
    the snapshot copy; one that is not marked (a view of live storage), and a view of a marked one, are copied
    first. Both ways write the same bytes with the same checksum, whatever the pieces."""
    import io

    from polyparam.backend import own_copy
    from polyparam.checkpoint.formats import base as formats_base

    copies: list[int] = []
    copy_whole = formats_base.copy_whole
    monkeypatch.setattr(formats_base, "copy_whole", lambda out, source: copies.append(1) or copy_whole(out, source))
    monkeypatch.setattr(formats_base, "SNAPSHOT_BYTES", 1000)   # several pieces, not whole 8-byte words apart
    values = np.random.default_rng(0).normal(size=size * 2).astype(dtype)
    for array, copied in [(own_copy(values.copy()), False), (values.copy(), True), (own_copy(values.copy())[1:], True)]:
        copies.clear()
        fh = io.BytesIO()
        checksum = formats_base.write_snapshot(fh, array)
        assert fh.getvalue() == array.tobytes()
        assert checksum == formats_base.fingerprint(array)
        assert bool(copies) == (copied and array.size > 0)


def test_safetensors_file_reads_with_the_safetensors_library(tmp_path: Path) -> None:
    """Our files are plain safetensors: the reference reader loads them; foreign files load into trees."""
    from safetensors.numpy import load_file, save_file

    tree = pp.tree({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.int32)})
    path = tmp_path / "m.safetensors"
    pp.save(tree, path)
    loaded = load_file(str(path))
    np.testing.assert_array_equal(loaded["a"], tree["a"].numpy())
    foreign = tmp_path / "foreign.safetensors"
    save_file({"a": np.full((2, 3), 9, np.float32), "b": np.full(2, 4, np.int32)}, str(foreign))
    pp.load(tree, foreign)
    assert (tree["a"].numpy() == 9).all() and (tree["b"].numpy() == 4).all()


def test_unknown_extension_and_bad_arguments(tmp_path: Path) -> None:
    tree = pp.tree({"a": np.zeros(2, np.float32)})
    with pytest.raises(errors.UnsupportedFormatError):
        pp.save(tree, tmp_path / "m.pkl")
    with pytest.raises(errors.UnsupportedFormatError):
        pp.save(tree, tmp_path / "m.pt")  # native formats are read-only
    with pytest.raises(ValueError):
        pp.save(tree, tmp_path / "m.npz", aliases="copy")
    assert list(tmp_path.iterdir()) == []


# ---- atomic save ------------------------------------------------------------------------


def test_failed_save_keeps_the_previous_file_and_leaves_no_temporary(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception (here: KeyboardInterrupt inside the writer) leaves the target byte-identical."""
    import polyparam.checkpoint.formats.safetensors as st_mod

    path = tmp_path / "m.safetensors"
    pp.save(pp.tree({"a": np.ones(10, np.float32)}), path)
    os.chmod(path, 0o640)
    before = path.read_bytes()

    def interrupted(target: str, tensors: dict, metadata: dict) -> None:
        Path(target).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(st_mod, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pp.save(pp.tree({"a": np.zeros(10, np.float32)}), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    monkeypatch.undo()
    pp.save(pp.tree({"a": np.zeros(10, np.float32)}), path)
    assert path.stat().st_mode & 0o777 == 0o640  # the target's permissions survive the replace


def test_save_fsyncs_the_file_and_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else str(fd))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    pp.save(pp.tree({"a": np.ones(3, np.float32)}), tmp_path / "m.npz")
    assert len(synced) == 2
    assert Path(synced[0]).parent.name.endswith(".tmp") and synced[1] == str(tmp_path)


KILLED_SAVER = textwrap.dedent("""
    import sys, numpy as np, polyparam as pp
    rng = np.random.default_rng(int(sys.argv[2]))
    state = {f"layer{i}": rng.standard_normal((1024, 1024), dtype=np.float32) for i in range(24)}
    tree = pp.tree(state)
    print("ready", flush=True)
    sys.stdin.readline()
    import time
    t0 = time.perf_counter()
    pp.save(tree, sys.argv[1])
    print("done", time.perf_counter() - t0, flush=True)
""")


@pytest.mark.slow
@pytest.mark.parametrize("ext", ["safetensors"])
def test_sigkill_at_any_point_of_a_large_save_keeps_the_previous_file(tmp_path: Path, ext: str) -> None:
    """SIGKILL at 20+ points spread over a ~100 MB save: the previous file stays byte-identical and loads.

    Kill times are spread over the first 90% of a save's measured duration (the fastest of
    three warm saves). A kill that lands after the rename leaves the complete new file, which is
    checked too but does not count, and makes the next kills aim earlier (saves get quicker as
    the page cache warms): the test goes on until 20 kills have landed mid-save.
    """
    path = tmp_path / f"big.{ext}"
    script = tmp_path / "saver.py"
    script.write_text(KILLED_SAVER)

    def start(seed: int) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, str(script), str(path), str(seed)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        proc.stdin.write("go\n")
        proc.stdin.flush()
        return proc

    durations = []
    for _ in range(3):  # the previous file, and how long one save takes
        proc = start(0)
        durations.append(float(proc.stdout.readline().split()[1]))
        proc.wait()
    duration = min(durations)   # disk writeback makes saves vary 4x here: aim inside the fastest
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    points, mid_save, last_seed = 24, 0, 0
    for attempt in range(3 * points):
        if mid_save == 20:
            break
        seed = attempt + 1
        proc = start(seed)
        time.sleep(duration * 0.9 * ((attempt * 7) % points + 0.5) / points)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        now = hashlib.sha256(path.read_bytes()).hexdigest()
        if now == digest:
            mid_save += 1
            continue
        # the kill came after the rename: the file must then be the complete new one
        check = pp.tree({f"layer{j}": np.zeros((1024, 1024), np.float32) for j in range(24)})
        pp.load(check, path)
        expected = np.random.default_rng(seed).standard_normal((1024, 1024), dtype=np.float32)
        np.testing.assert_array_equal(check["layer0"].numpy(), expected, err_msg=f"kill at attempt {attempt}")
        digest, last_seed = now, seed
        duration *= 0.85   # this save was quicker than the measured ones: aim earlier (the page cache warms up)
    assert mid_save == 20, f"only {mid_save} of {attempt + 1} kills landed during a save (durations {durations})"
    tree = pp.tree({f"layer{i}": np.zeros((1024, 1024), np.float32) for i in range(24)})
    pp.load(tree, path)
    expected = np.random.default_rng(last_seed).standard_normal((1024, 1024), dtype=np.float32)
    np.testing.assert_array_equal(tree["layer0"].numpy(), expected)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["big.safetensors", "saver.py"]
    pp.save(tree, path)   # the next save removes what the killed ones left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.safetensors", "saver.py"]


def test_the_next_save_removes_temporaries_of_killed_saves_only(tmp_path: Path) -> None:
    """A killed save's temporary file goes at the next save to that target; one of a running
    process, of another host or of another target stays."""
    from polyparam.checkpoint.io import _HOST

    path = tmp_path / "m.safetensors"
    killed = textwrap.dedent("""
        import os, signal, sys
        from polyparam.checkpoint.io import atomic_write
        with atomic_write(sys.argv[1]) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"partial" * 1000)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", killed, str(path)], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(f".m.safetensors.{_HOST}-") and left[0].endswith(".tmp")
    assert (tmp_path / left[0] / "m.safetensors").stat().st_size == 7000
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        kept = [f".m.safetensors.{_HOST}-{sleeper.pid}.abc.tmp", ".m.safetensors.otherhost-1.abc.tmp",
                f".other.safetensors.{_HOST}-1.abc.tmp"]
        for name in kept:
            (tmp_path / name).mkdir()
            (tmp_path / name / "m.safetensors").write_bytes(b"in progress")
        pp.save(pp.tree({"w": np.ones(3, np.float32)}), path)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, "m.safetensors"])
    finally:
        sleeper.kill()
        sleeper.wait()


# ---- no unpickling ----------------------------------------------------------------------

LOADER_FILES = [*sorted((ROOT / "core/polyparam/checkpoint").rglob("*.py")), ROOT / "core/polyparam/_transfer.py",
                ROOT / "core/polyparam/_cli.py", ROOT / "core/polyparam/init/composite.py"]
FORBIDDEN_MODULES = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "joblib", "copyreg"}


def test_no_loader_path_can_unpickle() -> None:
    """Static proof: loader modules import no pickle-like module, never call np.load or numpy's
    read_array (which takes allow_pickle), and call torch.load only with weights_only=True."""
    for file in LOADER_FILES:
        tree = ast.parse(file.read_text(), filename=str(file))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & FORBIDDEN_MODULES, (file, node.lineno)
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] not in FORBIDDEN_MODULES, (file, node.lineno)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                name = node.func.attr
                owner = ast.unparse(node.func.value)
                assert not (name == "load" and owner in ("np", "numpy")), (file, node.lineno)
                assert name not in ("read_array", "Unpickler", "load_pickle"), (file, node.lineno)
                assert name != "loads" or owner == "json", (file, node.lineno)
                if name == "load" and owner == "torch":
                    kw = {k.arg: k.value for k in node.keywords}
                    assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, \
                        (file, node.lineno)
                for k in node.keywords:
                    if k.arg == "allow_pickle":
                        assert isinstance(k.value, ast.Constant) and k.value.value is False, (file, node.lineno)


class _Sentinel:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))  # unpickling would create the file


@pytest.mark.parametrize("ext", ["safetensors", "npz", "pt", "pth", "params", "weights.h5"])
def test_a_malicious_pickle_renamed_is_refused_without_side_effects(tmp_path: Path, ext: str) -> None:
    sentinel = tmp_path / "pwned"
    path = tmp_path / f"evil.{ext}"
    path.write_bytes(pickle.dumps(_Sentinel(str(sentinel)), protocol=2))
    with pytest.raises(errors.UnsafeContentError):
        open_archive(path)
    result = subprocess.run([sys.executable, "-m", "polyparam", "inspect", str(path)], capture_output=True, text=True)
    assert result.returncode == 2 and "pickle" in result.stderr
    assert not sentinel.exists()


def test_a_malicious_torch_zip_checkpoint_is_refused_without_side_effects(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "x": _Sentinel(str(sentinel))}, path)
    assert path.read_bytes()[:2] == b"PK" and not sentinel.exists()
    with pytest.raises(errors.UnsafeContentError):
        open_archive(path)
    assert not sentinel.exists()


# ---- native readers and the CLI -----------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polyparam", *args], capture_output=True, text=True, cwd=ROOT)


def test_torch_state_dict_inspect_and_convert_keep_ties(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from torch import nn

    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 8), nn.BatchNorm1d(8))
    net[3] = net[2]
    src = tmp_path / "net.pt"
    torch.save(net.state_dict(), src)
    out = _cli("inspect", str(src))
    assert out.returncode == 0, out.stderr
    assert "2.weight" in out.stdout and "3.weight" in out.stdout and "tie groups" in out.stdout
    dst = tmp_path / "net.safetensors"
    assert _cli("convert", str(src), str(dst)).returncode == 0
    other = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 8), nn.BatchNorm1d(8))
    report = pp.load(other, dst)
    assert other[2].weight is other[3].weight and report.tied
    for key, value in net.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(other.state_dict()[key], value), key


MXNET_SAVER = textwrap.dedent("""
    import sys, numpy as np, mxnet as mx
    from mxnet.gluon import nn
    net = nn.Sequential(); net.add(nn.Dense(8, in_units=4), nn.BatchNorm(in_channels=8), nn.Dense(3, in_units=8))
    net.initialize(mx.init.Xavier())
    net.save_parameters(sys.argv[1])
    arrays = {k: v.data().asnumpy() for k, v in net._collect_params_with_prefix().items()}
    np.savez(sys.argv[2], **arrays)
""")


def test_mxnet_params_are_parsed_without_libmxnet(tmp_path: Path) -> None:
    pytest.importorskip("mxnet")
    src, expected = tmp_path / "net.params", tmp_path / "expected.npz"
    script = tmp_path / "save.py"
    script.write_text(MXNET_SAVER)
    subprocess.run([sys.executable, str(script), str(src), str(expected)], check=True, capture_output=True)
    code = (f"import sys; from polyparam.checkpoint.formats import open_archive; a = open_archive({str(src)!r}); "
            "print(sorted(a.entries)); print('mxnet' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[1] == "False"
    with open_archive(src) as archive, np.load(expected) as ref:
        names = {"gamma": "weight", "beta": "bias", "running_mean": "running_mean", "running_var": "running_var"}
        for key in ref.files:
            head, _, leaf = key.rpartition(".")
            ours = f"{head}.{names.get(leaf, leaf)}"
            np.testing.assert_array_equal(archive.read(ours), ref[key])
    dst = tmp_path / "net.npz"
    assert _cli("convert", str(src), str(dst)).returncode == 0
    assert "1.running_var" in _cli("inspect", str(dst)).stdout
    data = bytearray(src.read_bytes())
    (tmp_path / "cut.params").write_bytes(bytes(data[:-20]))
    with pytest.raises(errors.TruncatedFileError):
        open_archive(tmp_path / "cut.params")
    (tmp_path / "long.params").write_bytes(bytes(data) + b"xx")
    with pytest.raises(errors.TrailingBytesError):
        open_archive(tmp_path / "long.params")


KERAS_SAVER = textwrap.dedent("""
    import sys, keras
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)])
    model.save_weights(sys.argv[1])
""")


def test_keras_weights_h5_inspect_and_link_refusal(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    pytest.importorskip("keras")
    src = tmp_path / "m.weights.h5"
    script = tmp_path / "save.py"
    script.write_text(KERAS_SAVER)
    subprocess.run([sys.executable, str(script), str(src)], check=True, capture_output=True)
    out = _cli("inspect", str(src))
    assert out.returncode == 0, out.stderr
    assert "(4, 8)" in out.stdout and "layout keras" in out.stdout
    linked = tmp_path / "linked.weights.h5"
    with h5py.File(linked, "w") as f:
        f["a"] = np.zeros(3, np.float32)
        f["b"] = h5py.ExternalLink("/etc/passwd", "/x")
    with pytest.raises(errors.UnsafeContentError):
        open_archive(linked)
    soft = tmp_path / "soft.weights.h5"
    with h5py.File(soft, "w") as f:
        f["a"] = np.zeros(3, np.float32)
        f["b"] = h5py.SoftLink("/a")
    with pytest.raises(errors.UnsafeContentError):
        open_archive(soft)
    with pytest.raises(errors.MetadataError):  # native Keras layout: not loadable into a tree as canonical
        dst = tmp_path / "k.safetensors"
        assert _cli("convert", str(src), str(dst)).returncode == 0
        pp.load(pp.tree({"x": np.zeros(1, np.float32)}), dst)


def test_inspect_of_a_malformed_file_exits_2_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    out = _cli("inspect", str(path))
    assert out.returncode == 2 and "Cannot read" in out.stderr and "Traceback" not in out.stderr
