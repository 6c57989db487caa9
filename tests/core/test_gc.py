"""Automatic cycle collection is paused while a bulk operation runs, and left as it was after."""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

import polyparam as pp
from polyparam._gc import collector_paused


@pytest.fixture(autouse=True)
def _collector_as_usual() -> Iterator[None]:
    was, thresholds = gc.isenabled(), gc.get_threshold()
    gc.enable()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*thresholds)
    (gc.enable if was else gc.disable)()


def _paused() -> bool:
    return gc.get_threshold()[0] == 0


def test_collection_is_paused_in_the_block_and_resumed_after_even_on_error() -> None:
    with collector_paused():
        assert _paused() and gc.isenabled()
    assert gc.get_threshold() == (700, 10, 10)
    with pytest.raises(KeyError), collector_paused():
        raise KeyError("x")
    assert gc.get_threshold() == (700, 10, 10)


def test_the_programs_own_disable_holds_before_and_during_a_call() -> None:
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()
    gc.enable()
    with collector_paused():
        gc.disable()     # an initializer callable, or another thread
    assert not gc.isenabled() and gc.get_threshold() == (700, 10, 10)


@contextlib.contextmanager
def _paused_in_another_thread() -> Iterator[None]:
    """Another thread inside a paused block for the duration of the ``with``."""
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with collector_paused():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    inside.wait(10)
    try:
        yield
    finally:
        release.set()
        thread.join(10)


def test_nested_and_concurrent_blocks_share_one_pause() -> None:
    with _paused_in_another_thread():
        with collector_paused():
            with collector_paused():
                assert _paused()
            assert _paused()
        assert _paused()    # the other thread's block still runs
    assert gc.get_threshold() == (700, 10, 10)


def test_a_child_forked_during_another_threads_pause_collects_again() -> None:
    """The thread whose block would end the pause does not exist in the child."""
    with _paused_in_another_thread():
        pid = os.fork()
        if pid == 0:   # the child: report through the exit status, run nothing of pytest's
            with collector_paused():
                pass
            os._exit(0 if gc.get_threshold() == (700, 10, 10) else 1)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert gc.get_threshold() == (700, 10, 10)


def test_bulk_operations_run_with_collection_paused(tmp_path: Path) -> None:
    seen: list[bool] = []

    def record(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        seen.append(_paused())
        return np.zeros(shape, dtype)

    tree = pp.tree({"w": np.ones((2, 3), np.float32), "b": np.ones(3, np.float32)})
    tree.initialize(record, force_reinit=True)
    assert seen and all(seen)
    assert not _paused()
    for call in (lambda: pp.save(tree, tmp_path / "m.safetensors"), lambda: pp.load(tree, tmp_path / "m.safetensors"),
                 lambda: tree.load_state(tree.state(copy=True)),
                 lambda: pp.transfer(tree, pp.tree({"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)}))):
        call()
        assert not _paused()
    with pytest.raises(pp.errors.StateError):
        tree.load_state({"w": np.ones((2, 3), np.float32)})    # refused: "b" is missing
    assert gc.get_threshold() == (700, 10, 10)
