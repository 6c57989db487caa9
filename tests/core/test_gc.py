"""The cycle collector is paused while a bulk operation runs, and left as it was after."""

from __future__ import annotations

import gc
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

import polyparam as pp
from polyparam._gc import collector_paused


@pytest.fixture(autouse=True)
def _collector_enabled() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was else gc.disable)()


def test_the_collector_is_paused_in_the_block_and_enabled_after_even_on_error() -> None:
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(KeyError), collector_paused():
        raise KeyError("x")
    assert gc.isenabled()


def test_a_collector_the_user_disabled_stays_disabled() -> None:
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_nested_and_concurrent_blocks_share_one_pause() -> None:
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with collector_paused():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=other)
    with collector_paused():
        thread.start()
        inside.wait(10)
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert not gc.isenabled()    # the other thread's block still runs
    release.set()
    thread.join(10)
    assert gc.isenabled()


def test_bulk_operations_run_with_the_collector_paused(tmp_path: Path) -> None:
    seen: list[bool] = []

    def record(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        seen.append(gc.isenabled())
        return np.zeros(shape, dtype)

    tree = pp.tree({"w": np.ones((2, 3), np.float32), "b": np.ones(3, np.float32)})
    tree.initialize(record, force_reinit=True)
    assert seen and not any(seen)
    assert gc.isenabled()
    for call in (lambda: pp.save(tree, tmp_path / "m.safetensors"), lambda: pp.load(tree, tmp_path / "m.safetensors"),
                 lambda: tree.load_state(tree.state(copy=True)),
                 lambda: pp.transfer(tree, pp.tree({"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)}))):
        call()
        assert gc.isenabled()
    with pytest.raises(pp.errors.StateError):
        tree.load_state({"w": np.ones((2, 3), np.float32)})    # refused: "b" is missing
    assert gc.isenabled()
