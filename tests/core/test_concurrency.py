"""Writes from several threads: multi-parameter writes run one at a time in a process (issue #14, F26).

Two threads that initialize (or load into) one tree at once used to interleave their
writes, leaving arrays that mix both draws. Every multi-parameter write (``initialize``,
``load_state``, ``pp.load``, ``pp.transfer``) now holds one process-wide re-entrant lock
for its write phase, so the result is always one whole operation after another.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import polyparam as pp
from polyparam._params.journal import exclusive_writes
from polyparam.backend import ParameterTree

SHAPES = {f"l{i}": (256, 256) for i in range(4)}


def fresh() -> ParameterTree:
    return pp.tree({name: np.zeros(shape, np.float32) for name, shape in SHAPES.items()})


def drawn(seed: int) -> dict[str, np.ndarray]:
    tree = fresh()
    tree.initialize(pp.init.Normal(), force_reinit=True, seed=seed)
    return tree.state(copy=True)


def test_two_threads_initializing_one_tree_give_one_whole_draw() -> None:
    """Each thread's initialize is one whole draw: the tree ends as seed 1's or seed 2's, never a mix."""
    one, two = drawn(1), drawn(2)
    for _ in range(6):
        tree = fresh()
        threads = [threading.Thread(target=tree.initialize, args=(pp.init.Normal(),),
                                    kwargs={"force_reinit": True, "seed": seed}) for seed in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        state = tree.state()
        assert any(all(np.array_equal(state[k], ref[k]) for k in SHAPES) for ref in (one, two))


class _Pausing(pp.init.Initializer):
    """Writes ones; stops at the last parameter until ``release`` is set."""

    def __init__(self, entered: threading.Event, release: threading.Event) -> None:
        self.entered, self.release = entered, release

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        if self.param is not None and self.param.path == "l3":
            self.entered.set()
            self.release.wait(30)
        arr[...] = 1


def _second_writes(tmp_path: Path) -> dict[str, Callable[[ParameterTree], object]]:
    twos = {name: np.full(shape, 2, np.float32) for name, shape in SHAPES.items()}
    source = pp.tree({name: value.copy() for name, value in twos.items()})
    file = tmp_path / "twos.safetensors"
    pp.save(source, file)
    return {
        "load_state": lambda tree: tree.load_state(twos),
        "pp.load": lambda tree: pp.load(tree, file),
        "pp.transfer": lambda tree: pp.transfer(source, tree),
        "initialize": lambda tree: tree.initialize(pp.init.Constant(2), force_reinit=True, seed=0),
    }


@pytest.mark.parametrize("second", ["load_state", "pp.load", "pp.transfer", "initialize"])
def test_a_write_waits_for_the_one_in_progress_then_runs_whole(second: str, tmp_path: Path) -> None:
    tree = fresh()
    write = _second_writes(tmp_path)[second]
    entered, release, done = threading.Event(), threading.Event(), threading.Event()
    first = threading.Thread(target=tree.initialize, args=(_Pausing(entered, release),),
                             kwargs={"force_reinit": True, "seed": 0})
    first.start()
    try:
        assert entered.wait(30), "the first initialize never reached its last parameter"

        def run() -> None:
            write(tree)
            done.set()

        other = threading.Thread(target=run)
        other.start()
        assert not done.wait(0.5), f"{second} ran while initialize was writing"
    finally:
        release.set()
    first.join(30)
    other.join(30)
    assert done.is_set()
    for name, value in tree.state().items():   # the second write ran after the first, whole
        np.testing.assert_array_equal(value, np.full(SHAPES[name], 2, np.float32), err_msg=name)


def test_the_lock_is_re_entrant_and_held_per_process() -> None:
    """A write made while the lock is held in the same thread runs (no deadlock); another thread waits."""
    tree = fresh()
    finished = threading.Event()

    def nested() -> None:
        with exclusive_writes():
            tree.initialize(pp.init.One(), force_reinit=True, seed=0)
            tree.load_state({name: np.full(shape, 3, np.float32) for name, shape in SHAPES.items()})
        finished.set()

    worker = threading.Thread(target=nested)
    worker.start()
    worker.join(30)
    assert finished.is_set()
    assert all((value == 3).all() for value in tree.state().values())

    waited = threading.Event()
    with exclusive_writes():
        other = threading.Thread(target=lambda: (tree.initialize(pp.init.Zero(), force_reinit=True, seed=0),
                                                 waited.set()))
        other.start()
        assert not waited.wait(0.3)
    other.join(30)
    assert waited.is_set() and not any(value.any() for value in tree.state().values())


def test_a_failed_write_releases_the_lock() -> None:
    tree = fresh()

    def boom(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        tree.initialize(boom, force_reinit=True, seed=0)
    done = threading.Event()
    worker = threading.Thread(target=lambda: (tree.initialize(pp.init.One(), force_reinit=True, seed=0), done.set()))
    worker.start()
    worker.join(30)
    assert done.is_set()


def test_after_writes_runs_once_the_outermost_write_succeeded_and_never_after_a_failure() -> None:
    """A backend's irreversible bookkeeping (``polyparam.backend.after_writes``) waits for the whole
    multi-parameter write: run once per key after it succeeded, dropped when it failed (and was undone),
    run at once outside one."""
    from polyparam.backend import after_writes

    calls: list[str] = []
    after_writes("now", lambda: calls.append("now"))
    assert calls == ["now"]
    tree = fresh()
    p = tree.parameters()[0]

    class Recording(pp.init.Uniform):
        def init_weight(self, name: str, arr: np.ndarray) -> None:
            super().init_weight(name, arr)
            after_writes("drop", lambda: calls.append("drop"))   # the same key each time: runs once
            assert calls == ["now"]                                # not while the write runs

    tree.initialize(Recording(), force_reinit=True)
    assert calls == ["now", "drop"]

    class Failing(Recording):
        def init_weight(self, name: str, arr: np.ndarray) -> None:
            super().init_weight(name, arr)
            raise ValueError("refused")

    before = p.numpy().copy()
    with pytest.raises(pp.errors.WriteFailedError):
        tree.initialize(Failing(), force_reinit=True)
    assert calls == ["now", "drop"] and np.array_equal(p.numpy(), before)
