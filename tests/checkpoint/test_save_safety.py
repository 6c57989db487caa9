"""Saves that lose nothing: what save writes, load reads; disk errors typed; temporary folders exact.

Findings F2, F3, F11, F20, F21 and F22 of the reliability trial (issue #14).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import polyparam as pp
from polyparam import errors

FORMATS = ["safetensors", "npz"]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def good_file(tmp_path: Path, ext: str) -> tuple[Path, str]:
    path = tmp_path / f"m.{ext}"
    pp.save(pp.tree({"w": np.arange(6, dtype=np.float32)}), path)
    return path, digest(path)


# ---- F2: a save during in-place updates writes a file load reads -------------------------------------------


@pytest.mark.parametrize("ext", FORMATS)
def test_a_save_while_another_thread_updates_in_place_loads_back(tmp_path: Path, ext: str) -> None:
    """A background save during training steps: each checksum is that of the bytes written, so load accepts it."""
    tree = pp.tree({f"l{i}": np.zeros((256, 1024), np.float32) for i in range(8)})
    stop = threading.Event()

    def train() -> None:
        while not stop.is_set():
            for _, p in tree.items():
                p.numpy()[...] += 1.0

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    try:
        paths = [tmp_path / f"live{i}.{ext}" for i in range(4)]
        for path in paths:
            pp.save(tree, path)
    finally:
        stop.set()
        thread.join()
    for path in paths:
        other = pp.tree({f"l{i}": np.zeros((256, 1024), np.float32) for i in range(8)})
        pp.load(other, path)        # verify=True: every checksum matches
        for _, p in other.items():  # each element holds some step's value (no torn float)
            assert float(p.numpy().min()) >= 0 and np.all(p.numpy() == np.round(p.numpy()))


def test_the_checksum_is_that_of_the_bytes_written_even_if_the_array_changes_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An update that lands after the save read the array, before the writer ran, cannot break the file."""
    import polyparam.checkpoint.formats.safetensors as st

    live = np.zeros(1000, np.float32)
    real = st.write

    def update_then_write(path: str, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> dict[str, str]:
        live[...] += 1          # another thread's optimizer step, in the worst place
        return real(path, tensors, metadata)

    monkeypatch.setattr(st, "write", update_then_write)
    path = tmp_path / "m.safetensors"
    pp.save(pp.tree({"w": live}), path)
    out = pp.tree({"w": np.zeros(1000, np.float32)})
    pp.load(out, path)
    np.testing.assert_array_equal(out["w"].numpy(), np.ones(1000, np.float32))


def test_materialized_members_hold_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With aliases='materialize' every member of a tie group is written from one copy: they always agree."""
    import polyparam.checkpoint.formats.safetensors as st

    a = np.zeros(64, np.float32)
    tree = pp.tree({"a": a, "b": np.zeros(64, np.float32)})
    pp.tie(tree["a"], tree["b"])
    live = tree["a"].numpy()
    real = st.write

    def write_changing(path: str, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> dict[str, str]:
        live[...] += 1
        return real(path, tensors, metadata)

    monkeypatch.setattr(st, "write", write_changing)
    path = tmp_path / "m.safetensors"
    pp.save(tree, path, aliases="materialize")
    monkeypatch.setattr(st, "write", real)
    out = pp.tree({"a": np.ones(64, np.float32), "b": np.ones(64, np.float32)})
    pp.tie(out["a"], out["b"])
    pp.load(out, path)
    np.testing.assert_array_equal(out["a"].numpy(), np.zeros(64, np.float32))


# ---- F3: what save would write, load reads; anything else is refused before the first byte -----------------

BAD_KEYS = {"empty": "", "reserved '__x'": "__x", "NUL": "a\x00b", "4097 characters": "k" * 4097,
            "lone surrogate": "a\udc80"}
NPZ_BAD_DTYPES = {"datetime64": np.array(["2020-01-01"], "datetime64[D]"), "unicode": np.array(["ab"]),
                  "void": np.zeros(2, "V4"), "structured": np.zeros(2, [("a", "f4")]),
                  "object": np.array([1, None], object), "timedelta64": np.ones(2, "m8[s]")}


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("label", sorted(BAD_KEYS))
def test_a_key_load_refuses_is_refused_before_writing(tmp_path: Path, ext: str, label: str) -> None:
    path, before = good_file(tmp_path, ext)
    with pytest.raises(errors.InvalidKeyError) as info:
        pp.save(pp.tree({BAD_KEYS[label]: np.ones(2, np.float32)}), path)
    assert len(str(info.value)) < 600
    assert digest(path) == before and leftovers(tmp_path) == []


@pytest.mark.parametrize("ext", FORMATS)
def test_the_longest_key_load_reads_is_saved(tmp_path: Path, ext: str) -> None:
    key = "k" * 4096
    path = tmp_path / f"m.{ext}"
    pp.save(pp.tree({key: np.ones(2, np.float32)}), path)
    out = pp.tree({key: np.zeros(2, np.float32)})
    pp.load(out, path)
    np.testing.assert_array_equal(out[key].numpy(), np.ones(2, np.float32))


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("label", sorted(NPZ_BAD_DTYPES))
def test_a_dtype_load_refuses_is_refused_before_writing(tmp_path: Path, ext: str, label: str) -> None:
    path, before = good_file(tmp_path, ext)
    with pytest.raises(errors.UnknownDTypeError) as info:
        pp.save(pp.tree({"w": NPZ_BAD_DTYPES[label]}), path)
    assert info.value.path == "w"
    assert digest(path) == before and leftovers(tmp_path) == []


def test_every_dtype_save_accepts_loads_back(tmp_path: Path) -> None:
    """Numeric dtypes each format stores round-trip bitwise (npz also takes complex and long double)."""
    cases = {"npz": [np.float16, np.float32, np.float64, np.longdouble, np.complex64, np.complex128, np.clongdouble,
                     np.int8, np.uint64, np.bool_],
             "safetensors": [np.float16, np.float32, np.float64, np.complex64, np.int8, np.uint64, np.bool_]}
    for ext, dtypes in cases.items():
        for dtype in dtypes:
            value = (np.arange(6) % 2).astype(dtype)
            path = tmp_path / f"d.{ext}"
            pp.save(pp.tree({"w": value}), path)
            out = pp.tree({"w": np.zeros(6, dtype)})
            pp.load(out, path)
            assert out["w"].numpy().tobytes() == value.tobytes(), (ext, dtype)


def test_convert_refuses_a_dtype_the_target_format_cannot_give_back(tmp_path: Path) -> None:
    """bfloat16 goes into safetensors, not npz (whose reader refuses it): refused before writing."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from polyparam.checkpoint import convert

    src = tmp_path / "b.safetensors"
    pp.save(pp.tree({"w": np.ones(2, ml_dtypes.bfloat16)}), src)
    with pytest.raises(errors.UnknownDTypeError):
        convert(src, tmp_path / "b.npz")
    assert not (tmp_path / "b.npz").exists() and leftovers(tmp_path) == []


# ---- F11: a full disk or a file size limit is a typed OSError with its errno --------------------------------

_LIMITED = textwrap.dedent("""
    import resource, signal, sys
    import numpy as np, polyparam as pp
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
    try:
        pp.save(pp.tree({"w": np.ones(200_000, np.float32)}), sys.argv[1])
    except pp.errors.CheckpointWriteError as exc:
        assert isinstance(exc, OSError) and isinstance(exc, pp.errors.CheckpointError), type(exc).__mro__
        print("ERRNO", exc.errno, exc.filename == sys.argv[1], sys.argv[1] in str(exc), ".tmp" not in str(exc))
    except BaseException as exc:
        print("OTHER", type(exc).__module__, type(exc).__name__, exc)
""")


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE (POSIX)")
@pytest.mark.parametrize("ext", FORMATS)
def test_a_file_too_large_raises_a_typed_oserror_keeping_errno(tmp_path: Path, ext: str) -> None:
    path, before = good_file(tmp_path, ext)
    proc = subprocess.run([sys.executable, "-c", _LIMITED, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == f"ERRNO {errno.EFBIG} True True True", proc.stdout + proc.stderr
    assert digest(path) == before and leftovers(tmp_path) == []


def test_a_safetensors_error_keeps_the_errno_in_its_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The safetensors writer reports a full disk as SafetensorError; it arrives as CheckpointWriteError(ENOSPC)."""
    from safetensors import SafetensorError

    import polyparam.checkpoint.formats.safetensors as st

    def full(path: str, tensors: Any, metadata: Any) -> None:
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    path, before = good_file(tmp_path, "safetensors")
    monkeypatch.setattr(st, "write", full)
    with pytest.raises(errors.CheckpointWriteError) as info:
        pp.save(pp.tree({"w": np.ones(3, np.float32)}), path)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert isinstance(info.value.__cause__, SafetensorError)
    assert "No space left on device" in str(info.value) and str(path) in str(info.value)
    assert digest(path) == before and leftovers(tmp_path) == []


# ---- F20: a legal long name is saved ---------------------------------------------------------------------------


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("length", [242, 255])
def test_a_legal_long_file_name_is_saved(tmp_path: Path, ext: str, length: int) -> None:
    name = "a" * (length - len(ext) - 1) + f".{ext}"
    tree = pp.tree({"w": np.arange(3, dtype=np.float32)})
    pp.save(tree, tmp_path / name)
    pp.save(tree, tmp_path / name)          # and again over it
    out = pp.tree({"w": np.zeros(3, np.float32)})
    pp.load(out, tmp_path / name)
    np.testing.assert_array_equal(out["w"].numpy(), np.arange(3, dtype=np.float32))
    assert leftovers(tmp_path) == []


def test_a_killed_save_to_a_long_name_is_cleaned_up_and_only_its_own(tmp_path: Path) -> None:
    from polyparam.checkpoint.io import _HOST, _running, _temp_tag

    if _running(3999999):
        pytest.skip("pid 3999999 is running here")
    long_a = "a" * 240 + ".safetensors"
    long_b = "a" * 240 + "X.safetensors"    # the same first bytes: the hash tells them apart
    tag_a, tag_b = _temp_tag(long_a), _temp_tag(long_b)
    assert tag_a != tag_b and len(os.fsencode(f".{tag_a}.{_HOST}-4194304.abcdefgh.tmp")) <= 255
    dead = tmp_path / f".{tag_a}.{_HOST}-3999999.abcdefgh.tmp"
    other = tmp_path / f".{tag_b}.{_HOST}-3999999.abcdefgh.tmp"
    dead.mkdir()
    other.mkdir()
    pp.save(pp.tree({"w": np.ones(2, np.float32)}), tmp_path / long_a)
    assert not dead.exists() and other.exists()


# ---- F21: temporary folders of another target are never taken for a killed save's --------------------------


def test_cleanup_leaves_a_live_save_to_a_name_that_starts_like_the_target(tmp_path: Path) -> None:
    """'m.safetensors' must not take '.m.safetensors.<host>-3999999.safetensors.<host>-<pid>...' as its own."""
    from polyparam.checkpoint.io import _HOST, _running

    if _running(3999999):
        pytest.skip("pid 3999999 is running here")
    live = tmp_path / f".m.safetensors.{_HOST}-3999999.safetensors.{_HOST}-{os.getpid()}.abcdefgh.tmp"
    live.mkdir()
    (live / f"m.safetensors.{_HOST}-3999999.safetensors").write_bytes(b"in progress")
    pp.save(pp.tree({"w": np.ones(2, np.float32)}), tmp_path / "m.safetensors")
    assert live.exists() and len(list(live.iterdir())) == 1


def test_concurrent_saves_to_names_sharing_a_prefix_all_succeed(tmp_path: Path) -> None:
    """The trial's race: 30 saves to the longer name while saves to the shorter one run; none fails."""
    from polyparam.checkpoint.io import _HOST

    other = tmp_path / f"m.safetensors.{_HOST}-3999999.safetensors"
    code = textwrap.dedent(f"""
        import numpy as np, polyparam as pp
        t = pp.tree({{"w": np.ones((512, 512), np.float32)}})
        fails = 0
        for i in range(30):
            try:
                pp.save(t, {str(other)!r})
            except Exception as exc:
                fails += 1
                print(type(exc).__name__, exc)
        print("FAILS", fails)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    small = pp.tree({"w": np.ones(3, np.float32)})
    try:
        while proc.poll() is None:
            pp.save(small, tmp_path / "m.safetensors")
    finally:
        out = proc.communicate(timeout=120)[0]
    assert out.strip().endswith("FAILS 0"), out


# ---- F22: a refused write names the target, not the temporary path ------------------------------------------


@pytest.mark.parametrize("ext", FORMATS)
def test_a_read_only_target_is_refused_naming_it(tmp_path: Path, ext: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file the caller may not write is refused before anything is written (as open(path, 'w') would)."""
    path, before = good_file(tmp_path, ext)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == path else real(p, mode, **kw))
    with pytest.raises(errors.CheckpointWriteError) as info:
        pp.save(pp.tree({"w": np.ones(3, np.float32)}), path)
    assert info.value.errno == errno.EACCES and info.value.filename == str(path)
    assert str(path) in str(info.value) and ".tmp" not in str(info.value)
    assert digest(path) == before and leftovers(tmp_path) == []


def test_a_file_on_a_read_only_mount_is_refused_as_such(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a file system mounted read-only, os.access says no file is writable: the refusal said "Permission
    denied" and advised making the file writable; it names the read-only file system (EROFS) and its fix."""
    path, before = good_file(tmp_path, ".safetensors")
    real_access, real_statvfs = os.access, os.statvfs

    class ReadOnly:
        def __init__(self, real: os.statvfs_result) -> None:
            self.real = real

        def __getattr__(self, name: str) -> int:
            return getattr(self.real, name) | (os.ST_RDONLY if name == "f_flag" else 0)

    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == path else real_access(p, mode, **kw))
    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly(real_statvfs(p)) if Path(p) == tmp_path else real_statvfs(p))
    with pytest.raises(errors.CheckpointWriteError) as info:
        pp.save(pp.tree({"w": np.ones(3, np.float32)}), path)
    assert info.value.errno == errno.EROFS and "writable file system" in str(info.value)
    assert digest(path) == before and leftovers(tmp_path) == []


def test_a_directory_that_refuses_the_temporary_folder_names_the_target(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path, before = good_file(tmp_path, "safetensors")

    def refuse(prefix: str = "", suffix: str = "", dir: str | None = None) -> str:
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir or "", prefix + "x" + suffix))

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(errors.CheckpointWriteError) as info:
        pp.save(pp.tree({"w": np.ones(3, np.float32)}), path)
    assert info.value.errno == errno.EACCES and info.value.filename == str(path)
    assert ".tmp" not in str(info.value)
    assert digest(path) == before


_AS_NOBODY = textwrap.dedent("""
    import sys, numpy as np, polyparam as pp
    try:
        pp.save(pp.tree({"w": np.ones(3, np.float32)}), sys.argv[1])
        print("SAVED")
    except pp.errors.CheckpointWriteError as exc:
        print("REFUSED", exc.errno, exc.filename == sys.argv[1], ".tmp" not in str(exc))
""")


def _nobody_can_run_polyparam() -> bool:
    """Whether user nobody can import this interpreter's numpy and polyparam (the checkout may sit in a
    folder only root can enter)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("setpriv") is None:
        return False
    probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                            "import numpy, polyparam"], capture_output=True, text=True, timeout=120)
    return probe.returncode == 0


def test_a_0444_file_is_refused_for_a_user_who_may_not_write_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """As user nobody where it can run polyparam; elsewhere as a user the file system says may not write it."""
    work = Path(tempfile.mkdtemp(prefix="pp-ro-"))
    try:
        work.chmod(0o777)
        path = work / "ro.safetensors"
        pp.save(pp.tree({"w": np.arange(3, dtype=np.float32)}), path)
        path.chmod(0o444)
        before = digest(path)
        if _nobody_can_run_polyparam():
            proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                                   "-c", _AS_NOBODY, str(path)], capture_output=True, text=True, timeout=120,
                                  env={**os.environ, "HOME": str(work)})
            out = proc.stdout.strip()
            assert out == f"REFUSED {errno.EACCES} True True", proc.stdout + proc.stderr
        else:
            from polyparam.checkpoint import io as checkpoint_io

            real_access = os.access
            monkeypatch.setattr(checkpoint_io.os, "access",
                                lambda p, mode, **kw: False if os.fspath(p) == str(path) and mode == os.W_OK
                                else real_access(p, mode, **kw))
            with pytest.raises(errors.CheckpointWriteError) as info:
                pp.save(pp.tree({"w": np.ones(3, np.float32)}), path)
            assert (info.value.errno, info.value.filename, ".tmp" in str(info.value)) == (errno.EACCES, str(path),
                                                                                         False)
        assert digest(path) == before and leftovers(work) == []
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("dtypes", [("float32", "float16", "int64", "bool", "uint8"), ("complex64", "float64", "int8")])
def test_the_writer_lays_out_a_file_as_the_safetensors_library_does(tmp_path: Path, dtypes: tuple[str, ...]) -> None:
    """polyparam copies tensors itself, but the header and data are those ``safetensors.numpy.save_file`` writes."""
    import json
    import struct

    from safetensors.numpy import load_file, save_file

    import polyparam.checkpoint.formats.safetensors as st
    from polyparam.checkpoint.formats import fingerprint

    rng = np.random.default_rng(0)
    tensors = {f"t.{i}.é": (rng.standard_normal((3, 5 + i)) * 9).astype(dtype) for i, dtype in enumerate(dtypes)}
    tensors["empty"] = np.zeros((0, 4), np.float32)
    tensors["scalar"] = np.array(2.5, np.float64)
    if "complex64" in dtypes and st.st_dtype_name(np.dtype("complex64")) is None:
        tensors = {k: v for k, v in tensors.items() if v.dtype != np.complex64}
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    sums = st.write(str(ours), tensors, {"format": "np", "note": "ü"})
    save_file(tensors, str(theirs), metadata={"format": "np", "note": "ü"})

    def parts(path: Path) -> tuple[dict, bytes]:
        raw = path.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        return json.loads(raw[8:8 + n]), raw[8 + n:]

    assert parts(ours) == parts(theirs)
    back = load_file(str(ours))
    assert sums.keys() == tensors.keys()
    for key, value in tensors.items():
        np.testing.assert_array_equal(back[key], value)
        assert sums[key] == fingerprint(value)


@pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="POSIX symbolic links")
def test_a_save_over_a_symbolic_link_replaces_the_link_and_keeps_the_file_it_pointed_to(tmp_path: Path) -> None:
    """As docs/checkpoints.md says: a 'latest' link to a kept checkpoint never overwrites that checkpoint."""
    kept = {"w": np.zeros(3, np.float32)}
    pp.save(kept, tmp_path / "step-100.safetensors")
    before = (tmp_path / "step-100.safetensors").read_bytes()
    os.symlink("step-100.safetensors", tmp_path / "latest.safetensors")
    pp.save({"w": np.ones(3, np.float32)}, tmp_path / "latest.safetensors")
    assert not (tmp_path / "latest.safetensors").is_symlink()
    assert (tmp_path / "step-100.safetensors").read_bytes() == before
    model = {"w": np.zeros(3, np.float32)}
    pp.load(model, tmp_path / "latest.safetensors")
    assert (model["w"] == 1).all()
