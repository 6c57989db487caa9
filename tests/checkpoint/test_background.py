"""Background saves: the snapshot is taken at the call, the file written while training goes on (issue #22).

The writer is the real one; tests that need it to be still running hold it at a gate
(a wrapper of the per-tensor write that waits for the test), so "the training loop ran
while the writer was writing" is a fact of the test, not a matter of timing.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import tracemalloc
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import polyparam as pp
from polyparam import errors
from polyparam.checkpoint import background, io
from polyparam.checkpoint.formats import base, safetensors
from tests.checkpoint import _zoo

FORMATS = ["safetensors", "npz"]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def patch_write(monkeypatch: pytest.MonkeyPatch, wrapper: Callable[[Any, Any], str]) -> None:
    """Put ``wrapper(fh, array)`` in place of the per-tensor write of both formats."""
    monkeypatch.setattr(safetensors, "write_snapshot", wrapper)
    monkeypatch.setattr(io, "write_snapshot", wrapper)


class Gate:
    """Holds the writer before it writes tensor number ``at`` (its copy already taken) until ``open()``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, at: int) -> None:
        self.at, self.calls = at, 0
        self.reached, self.opened = threading.Event(), threading.Event()

        def wrapper(fh: Any, array: Any) -> str:
            value = np.asarray(array)   # the writer takes the staged copy first
            if self.calls == self.at:
                self.reached.set()
                assert self.opened.wait(60), "the test never opened the gate"
            self.calls += 1
            return base.write_snapshot(fh, value)

        patch_write(monkeypatch, wrapper)

    def open(self) -> None:
        self.opened.set()


# ---- models and a training step per backend ------------------------------------------------------------------


def model_and_step(backend: str) -> tuple[Any, Callable[[], None]]:
    """A small real model of ``backend`` and one training step that writes every parameter in place."""
    if backend == "torch":
        torch = pytest.importorskip("torch")
        net, _ = _zoo.BUILDERS["torch"]("cnn")
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        x = torch.from_numpy(_zoo.inputs("cnn"))

        def step() -> None:
            opt.zero_grad()
            (net(x) ** 2).sum().backward()
            opt.step()   # in place: the storage the save's views point to

        return net, step
    if backend == "numpy":
        net = {f"layer{i}.weight": np.random.default_rng(i).standard_normal((16, 8)).astype(np.float32)
               for i in range(4)}
        net["layer0.bias"] = np.zeros(16, np.float64)

        def numpy_step() -> None:
            for value in net.values():
                value += 1   # the arrays the tree holds, written in place
        return net, numpy_step
    if backend == "keras":
        pytest.importorskip("keras")
    if backend == "mxnet":
        pytest.importorskip("mxnet")
    net, _ = _zoo.BUILDERS[backend]("cnn")
    tree = pp.tree(net)

    def framework_step() -> None:
        for _, p in tree.items():
            p.set((p.numpy() * 0.5 + 1).astype(p.dtype))

    return net, framework_step


def snapshot(tree: Any) -> dict[str, np.ndarray]:
    return {key: np.array(value, copy=True) for key, value in tree.state().items()}


def reference_save(tree: Any, state: dict[str, np.ndarray], path: Path, **options: Any) -> bytes:
    """The bytes a blocking save writes of ``state``: the tree is set back to it first."""
    tree.load_state(state)
    pp.save(tree, path, **options)
    return path.read_bytes()


# ---- the snapshot: the file holds the values of the call, bit for bit -------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "torch", "keras", "mxnet"])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("staging", [None, "small"])
def test_the_file_is_the_snapshot_while_training_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         backend: str, fmt: str, staging: str | None) -> None:
    """Many steps run after save returns, while the writer is still writing; the file equals the snapshot."""
    net, step = model_and_step(backend)
    tree = pp.tree(net)
    step()
    before = snapshot(tree)
    sizes = sorted(p.nbytes for _, p in tree.items())
    # small: two tensors' worth, so the caller waits for the writer while it copies
    limit = None if staging is None else sizes[-1] + sizes[-2]
    count = len(before)
    gate = Gate(monkeypatch, at=0 if staging is None else count - 1)
    path = tmp_path / f"m.{fmt}"
    handle = pp.save(tree, path, background=True, staging=limit)
    assert isinstance(handle, background.SaveHandle) and handle.path == str(path)
    assert gate.reached.wait(60)
    for _ in range(25):
        step()
        assert not handle.done()
    changed = snapshot(tree)
    assert sum(not np.array_equal(changed[k], before[k]) for k in before) >= count // 2   # BN statistics stay
    gate.open()
    assert handle.wait(60) and handle.done()
    assert handle.snapshot_seconds > 0
    monkeypatch.undo()
    written = path.read_bytes()
    assert written == reference_save(tree, before, tmp_path / f"ref.{fmt}")
    copy = pp.tree(model_and_step(backend)[0])
    pp.load(copy, path)
    assert all(np.array_equal(copy.state()[k], before[k]) for k in before)
    assert leftovers(tmp_path) == []


def test_tied_materialized_native_keys_are_one_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tie group's members (one array, several keys) are copied once and all written from that copy."""
    torch = pytest.importorskip("torch")
    net, _ = _zoo.BUILDERS["torch"]("embed")
    tree = pp.tree(net)
    before = snapshot(tree)
    gate = Gate(monkeypatch, at=0)
    path = tmp_path / "tied.safetensors"
    handle = pp.save(tree, path, background=True, aliases="materialize", keys="native", staging=1)
    assert gate.reached.wait(60)
    with torch.no_grad():
        net[0].weight.add_(1.0)
    gate.open()
    handle.wait()
    monkeypatch.undo()
    assert path.read_bytes() == reference_save(tree, before, tmp_path / "ref.safetensors", aliases="materialize",
                                               keys="native")
    from safetensors.torch import load_file

    state = load_file(str(path))
    assert torch.equal(state["0.weight"], state["1.weight"])


def test_used_as_a_context_manager_it_waits_and_keeps_the_body_error(tmp_path: Path) -> None:
    tree = pp.tree({"w": np.arange(6, dtype=np.float32)})
    path = tmp_path / "m.safetensors"
    with pp.save(tree, path, background=True) as handle:
        tree["w"].set(np.zeros(6, np.float32))
    assert handle.done() and path.exists()
    with pytest.raises(KeyError), pp.save(tree, tmp_path / "n.safetensors", background=True) as second:
        raise KeyError("the body's own error")
    assert second.done() and (tmp_path / "n.safetensors").exists()
    assert "done" in repr(second)


# ---- refused at the call, nothing written ------------------------------------------------------------------


@pytest.mark.parametrize(("tree", "name", "options", "error"), [
    ({"w": np.ones(2, np.float32)}, "m.txt", {}, errors.UnsupportedFormatError),
    ({"w": np.ones(2, np.longdouble)}, "m.safetensors", {}, errors.UnknownDTypeError),
    ({"w": np.array(["a"])}, "m.npz", {}, errors.UnknownDTypeError),
    ({"w": np.ones(2, np.float32)}, "m.safetensors", {"staging": "lots"}, errors.InvalidArgumentError),
    ({"w": np.ones(2, np.float32)}, "m.safetensors", {"staging": -1}, errors.InvalidArgumentError),
    ({"w": np.ones(2, np.float32)}, "m.safetensors", {"keys": "other"}, errors.InvalidArgumentError),
    ({"w": np.ones(2, np.float32)}, "hub", {"max_shard_size": "1MB", "format": "npz"}, errors.InvalidArgumentError),
], ids=["format", "dtype-safetensors", "dtype-npz", "staging-text", "staging-negative", "keys", "hub-format"])
def test_what_a_blocking_save_refuses_is_refused_at_the_call(tmp_path: Path, tree: dict[str, np.ndarray], name: str,
                                                             options: dict[str, Any], error: type) -> None:
    threads = threading.active_count()
    with pytest.raises(error) as info:
        pp.save(pp.tree(tree), tmp_path / name, background=True, **options)
    assert str(tmp_path / name) in str(info.value) or "Invalid value" in str(info.value)
    assert list(tmp_path.iterdir()) == [] and threading.active_count() == threads


def test_a_name_the_readers_refuse_is_refused_at_the_call(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    net = torch.nn.Module()
    net.register_buffer("__reserved", torch.ones(2))
    with pytest.raises(errors.InvalidKeyError):
        pp.save(net, tmp_path / "m.safetensors", background=True, keys="native")
    assert list(tmp_path.iterdir()) == []


def test_the_snapshot_copies_0d_complex_and_strided_values_whole(tmp_path: Path) -> None:
    """The staging copy views values as 8-byte words: a 0-d complex128 (NumPy views it so only flat), a
    transposed complex128 (16-byte items: copied element by element) and a transposed float32 view."""
    rng = np.random.default_rng(0)
    state = {"scalar": np.array(1 + 2j), "matrix": (rng.normal(size=(5, 3)) + 1j).T,
             "kernel": rng.normal(size=(3, 3, 4, 5)).astype(np.float32).transpose(3, 2, 0, 1)}
    pp.save(pp.tree(state), tmp_path / "m.npz", background=True).wait()
    target = pp.tree({key: np.zeros_like(value) for key, value in state.items()})
    pp.load(target, tmp_path / "m.npz")
    for key, value in state.items():
        assert target[key].numpy().tobytes() == np.ascontiguousarray(value).tobytes(), key


def test_staging_sizes_are_read_as_the_hub_reads_them() -> None:
    from polyparam.checkpoint.hub import parse_size

    assert parse_size("2GB", argument="staging") == 2 * 10**9
    assert parse_size("500MB", argument="staging") == 500 * 10**6
    assert parse_size("1.5GiB", argument="staging") == 3 * 2**29
    assert parse_size(4096, argument="staging") == 4096


# ---- the writer's errors: raised on wait, typed, the previous file kept ------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_full_disk_is_raised_on_wait_and_the_previous_file_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     fmt: str) -> None:
    path = tmp_path / f"m.{fmt}"
    pp.save(pp.tree({"a": np.zeros(1000, np.float32), "b": np.zeros(1000, np.float32)}), path)
    before = digest(path)

    def full_disk(fh: Any, array: Any) -> str:
        value = np.asarray(array)
        fh.write(value.tobytes()[: value.nbytes // 2])   # part of it went to disk, then the disk was full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    patch_write(monkeypatch, full_disk)
    handle = pp.save(pp.tree({"a": np.ones(1000, np.float32), "b": np.ones(1000, np.float32)}), path,
                     background=True, staging=1)
    for _ in range(2):   # raised again on every wait
        with pytest.raises(errors.CheckpointWriteError) as info:
            handle.wait()
        assert info.value.errno == errno.ENOSPC and str(path) in str(info.value) and ".tmp" not in str(info.value)
    assert handle.done() and "failed" in repr(handle)
    assert digest(path) == before and leftovers(tmp_path) == []


def test_a_file_size_limit_is_raised_on_wait(tmp_path: Path) -> None:
    """A real write failure (RLIMIT_FSIZE), in a subprocess: typed as a blocking save raises it."""
    path = tmp_path / "m.safetensors"
    pp.save(pp.tree({"w": np.zeros(8, np.float32)}), path)
    before = digest(path)
    code = textwrap.dedent("""
        import resource, signal, sys
        import numpy as np, polyparam as pp
        from polyparam import errors
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        handle = pp.save(pp.tree({"w": np.ones(1 << 20, np.float32)}), sys.argv[1], background=True, staging="1MB")
        try:
            handle.wait()
        except errors.CheckpointWriteError as exc:
            print("ERRNO", exc.errno)
    """)
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert f"ERRNO {errno.EFBIG}" in proc.stdout, proc.stdout + proc.stderr
    assert digest(path) == before and leftovers(tmp_path) == []


# ---- atomicity and exit: a killed process keeps the previous file, a normal exit completes the save -------------

_SLOW_WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np, polyparam as pp
    from polyparam.checkpoint import io
    from polyparam.checkpoint.formats import base, safetensors
    calls = []
    def slow(fh, array):
        value = np.asarray(array)
        calls.append(1)
        if len(calls) == 2:
            print("WRITING", flush=True)
        time.sleep(0.05)
        return base.write_snapshot(fh, value)
    safetensors.write_snapshot = io.write_snapshot = slow
    tree = pp.tree({f"w{i:02d}": np.full(1000, i, np.float32) for i in range(40)})
    handle = pp.save(tree, sys.argv[1], background=True, staging="64KB")   # 16 of 40 left at return
    print("RETURNED", flush=True)
    for _, p in tree.items():
        p.set(np.full(1000, -1, np.float32))
    if sys.argv[2] == "wait":
        handle.wait()
    print("END", flush=True)
""")


def test_a_process_killed_mid_write_leaves_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    pp.save(pp.tree({"old": np.arange(4, dtype=np.float32)}), path)
    before = digest(path)
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(path), "wait"], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "WRITING"
        assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())   # the writer is midway
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert digest(path) == before
    pp.save(pp.tree({"old": np.arange(4, dtype=np.float32)}), path, background=True).wait()
    assert leftovers(tmp_path) == []   # the next save removed the killed one's temporary folder


def test_a_normal_exit_without_wait_completes_the_save(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    proc = subprocess.run([sys.executable, "-c", _SLOW_WRITER, str(path), "exit"], capture_output=True, text=True,
                          timeout=120)
    # the writer was writing before save returned (a small staging pool), and the script ended without wait()
    assert proc.returncode == 0 and proc.stdout.split() == ["WRITING", "RETURNED", "END"], proc.stdout + proc.stderr
    expected = {f"w{i:02d}": np.full(1000, i, np.float32) for i in range(40)}
    tree = pp.tree({key: np.zeros(1000, np.float32) for key in expected})
    pp.load(tree, path)
    assert all(np.array_equal(tree[key].numpy(), value) for key, value in expected.items())
    assert leftovers(tmp_path) == []


# ---- two saves to one file ------------------------------------------------------------------------------------


def test_a_second_save_to_the_same_file_writes_after_the_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.safetensors"
    values = np.arange(1000, dtype=np.float32)
    tree = pp.tree({"w": values})
    gate = Gate(monkeypatch, at=0)
    first = pp.save(tree, path, background=True)
    assert gate.reached.wait(60)
    values += 1000
    second = pp.save(tree, path, background=True)   # the snapshot is taken now; the writer waits for the first
    values += 1000
    assert not first.done() and not second.done()
    gate.open()
    assert first.wait(60) and second.wait(60)
    assert gate.calls == 2   # two writes, one after the other
    out = pp.tree({"w": np.zeros(1000, np.float32)})
    pp.load(out, path)
    np.testing.assert_array_equal(out["w"].numpy(), np.arange(1000, dtype=np.float32) + 1000)
    assert leftovers(tmp_path) == []


def test_a_blocking_save_after_a_background_one_is_the_file_kept(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.safetensors"
    values = np.zeros(1000, np.float32)
    tree = pp.tree({"w": values})
    gate = Gate(monkeypatch, at=0)
    first = pp.save(tree, path, background=True)
    assert gate.reached.wait(60)
    values += 7
    blocking = threading.Thread(target=pp.save, args=(tree, path))
    blocking.start()
    blocking.join(0.2)
    assert blocking.is_alive()          # it waits for the background save instead of racing it
    gate.open()
    blocking.join(60)
    assert first.wait(60) and not blocking.is_alive()
    out = pp.tree({"w": np.zeros(1000, np.float32)})
    pp.load(out, path)
    np.testing.assert_array_equal(out["w"].numpy(), np.full(1000, 7, np.float32))


def test_sharded_is_refused_with_background_or_max_shard_size(tmp_path: Path) -> None:
    tree = pp.tree({"w": np.ones(3, np.float32)})
    for extra in ({"background": True}, {"max_shard_size": "1GB"}):
        with pytest.raises(pp.errors.InvalidArgumentError, match="sharded"):
            pp.save(tree, tmp_path / "d", sharded=True, **extra)
    assert not (tmp_path / "d").exists()


def test_wait_for_returns_once_the_saves_to_a_file_are_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a blocking save to the same file waits on, so that the later save's file is the one kept."""
    path = tmp_path / "m.safetensors"
    gate = Gate(monkeypatch, at=0)
    handle = pp.save(pp.tree({"w": np.ones(10, np.float32)}), path, background=True)
    assert gate.reached.wait(60)
    waiter = threading.Thread(target=background.wait_for, args=(path,))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and not handle.done()   # still held at the gate: wait_for cannot have returned
    gate.open()
    waiter.join(60)
    assert not waiter.is_alive() and handle.done() and path.exists()
    background.wait_for(tmp_path / "other.safetensors")   # nothing running: returns at once


@pytest.mark.parametrize("fmt", FORMATS)
def test_tensors_are_copied_in_the_order_the_file_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             fmt: str) -> None:
    """So that a small pool never holds a copy the writer does not want next (safetensors sorts by dtype)."""
    dtypes = [np.float16, np.float64, np.int8, np.float32, np.int64, np.uint8]
    tree = pp.tree({f"t{i}": np.full(8, i, dtype) for i, dtype in enumerate(dtypes)})
    copied: list[int] = []
    written: list[int] = []
    real = background._copy

    def copy(source: np.ndarray) -> np.ndarray:
        copied.append(int(source[0]))
        return real(source)

    def write(fh: Any, array: Any) -> str:
        value = np.asarray(array)
        written.append(int(value[0]))
        return base.write_snapshot(fh, value)

    monkeypatch.setattr(background, "_copy", copy)
    patch_write(monkeypatch, write)
    pp.save(tree, tmp_path / f"m.{fmt}", background=True, staging=1).wait()
    assert copied == written and sorted(written) == list(range(len(dtypes)))
    assert fmt == "npz" or written != sorted(written)   # safetensors' order is not the tree's


# ---- memory: the staging bound -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_extra_memory_stays_under_staging_plus_the_largest_tensor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  fmt: str) -> None:
    """Traced peak during the save and its wait; without a bound the same measure sees the whole copy."""
    tensor = 256 * 1024
    tree = pp.tree({f"w{i:02d}": np.full(tensor // 4, i, np.float32) for i in range(24)})   # 6 MiB
    total = 24 * tensor
    pp.save(tree, tmp_path / f"warm.{fmt}")   # the writer's first call imports modules: not the save's memory

    def peak(staging: int | None, gate: Gate | None = None) -> int:
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            handle = pp.save(tree, tmp_path / f"m.{fmt}", background=True, staging=staging)
            if gate is not None:
                gate.open()
            handle.wait()
            return tracemalloc.get_traced_memory()[1] - start
        finally:
            tracemalloc.stop()

    limit = 3 * tensor
    # the bound, one tensor over it, the writer's own piece buffer (at most a tensor) and headers/metadata
    assert peak(limit) <= limit + tensor + tensor + 256 * 1024
    # unbounded, with the writer held before its first tensor: every copy is held at once
    assert peak(None, Gate(monkeypatch, at=0)) >= total


# ---- the Hub's sharded layout ----------------------------------------------------------------------------------


def test_a_hub_layout_save_in_the_background_equals_a_blocking_one(tmp_path: Path) -> None:
    values = {f"w{i}": np.full(1000, i, np.float32) for i in range(6)}
    tree = pp.tree(values)
    handle = pp.save(tree, tmp_path / "bg", background=True, max_shard_size="10KB")
    for value in values.values():
        value += 1
    handle.wait()
    for value in values.values():
        value -= 1
    pp.save(tree, tmp_path / "blocking", max_shard_size="10KB")
    names = sorted(p.name for p in (tmp_path / "blocking").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "bg").iterdir()) and len(names) > 2
    assert all((tmp_path / "bg" / n).read_bytes() == (tmp_path / "blocking" / n).read_bytes() for n in names)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_dtype_and_shape_is_copied_exactly(tmp_path: Path, fmt: str) -> None:
    """Scalars, empty tensors, bool, complex, half and (safetensors) bfloat16: the bytes of a blocking save."""
    rng = np.random.default_rng(0)
    values: dict[str, np.ndarray] = {
        "scalar": np.array(3.5, np.float64), "empty": np.zeros((0, 4), np.float32),
        "flags": rng.integers(0, 2, 7).astype(bool), "c": (rng.standard_normal(5) + 1j).astype(np.complex64),
        "h": rng.standard_normal((3, 3)).astype(np.float16), "i": rng.integers(-100, 100, 9).astype(np.int8),
        "nan": np.array([np.nan, -0.0, np.inf], np.float32)}
    if fmt == "safetensors":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        values["bf"] = rng.standard_normal(6).astype(ml_dtypes.bfloat16)
    tree = pp.tree(values)
    pp.save(tree, tmp_path / f"ref.{fmt}")
    pp.save(tree, tmp_path / f"bg.{fmt}", background=True, staging=1).wait()
    assert (tmp_path / f"bg.{fmt}").read_bytes() == (tmp_path / f"ref.{fmt}").read_bytes()


@pytest.mark.parametrize("staging", [None, 1])
def test_an_interrupt_during_the_snapshot_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         staging: int | None) -> None:
    """Ctrl-C while the caller copies: raised from save, the writer stops, the previous file stays."""
    path = tmp_path / "m.safetensors"
    pp.save(pp.tree({"w": np.zeros(4, np.float32)}), path)
    before = digest(path)
    copies: list[int] = []
    real = background._copy

    def interrupted(source: np.ndarray) -> np.ndarray:
        copies.append(1)
        if len(copies) == 3:
            raise KeyboardInterrupt
        return real(source)

    monkeypatch.setattr(background, "_copy", interrupted)
    threads = threading.active_count()
    tree = pp.tree({f"w{i}": np.full(100, i, np.float32) for i in range(6)})
    with pytest.raises(KeyboardInterrupt):
        pp.save(tree, path, background=True, staging=staging)
    assert threading.active_count() == threads
    assert digest(path) == before and leftovers(tmp_path) == []
    assert background._LATEST == {}


def test_a_copy_the_read_made_already_is_staged_as_it_is() -> None:
    """The snapshot copies memory a training step may write; an array a backend marks as its own C-ordered copy
    (``own_copy``: Gluon's ``asnumpy``) is staged as it is, and a strided one is copied into C order."""
    from polyparam.backend import own_copy
    from polyparam.checkpoint.background import _copy

    value = np.arange(12.0).reshape(3, 4)
    assert _copy(own_copy(value)) is value
    for other in (value.copy(), own_copy(value.copy().T)):
        copy = _copy(other)
        assert copy is not other and copy.flags.c_contiguous and copy.tobytes() == np.ascontiguousarray(other).tobytes()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("staging", [None, 1])
def test_each_tensor_is_copied_once_by_a_background_save(tmp_path: Path, fmt: str, staging: int | None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot's copy is private: the writer writes it without the copy it makes of live memory, so a
    background save copies each tensor once, as a blocking save does, and writes the same bytes."""
    copies: list[int] = []
    copy_whole = base.copy_whole
    monkeypatch.setattr(base, "copy_whole", lambda out, source: copies.append(1) or copy_whole(out, source))
    monkeypatch.setattr(background, "copy_whole", base.copy_whole)
    rng = np.random.default_rng(0)
    values = {f"w{i}": rng.standard_normal((i + 2, 3)).astype(np.float32) for i in range(5)}
    tree = pp.tree(values)
    pp.save(tree, tmp_path / f"ref.{fmt}")
    assert len(copies) == len(values)
    copies.clear()
    pp.save(tree, tmp_path / f"bg.{fmt}", background=True, staging=staging).wait()
    assert len(copies) == len(values)
    assert (tmp_path / f"bg.{fmt}").read_bytes() == (tmp_path / f"ref.{fmt}").read_bytes()
