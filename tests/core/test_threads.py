"""The worker pool: parallel maps and the piecewise (transposing) copy."""

from __future__ import annotations

import numpy as np
import pytest

from polyparam._threads import parallel_copy, parallel_map


@pytest.fixture(autouse=True)
def _two_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYPARAM_NUM_THREADS", "2")


@pytest.mark.parametrize(("shape", "perm"), [((1000, 700), (1, 0)), ((40, 30, 5, 7), (2, 3, 1, 0)), ((3,), (0,)),
                                             ((200, 130, 3, 3), (2, 3, 1, 0)), ((300, 257, 1, 1), (2, 3, 1, 0)),
                                             ((150, 140, 7, 7), (2, 3, 1, 0)), ((3, 3, 200, 130), (3, 2, 0, 1))],
                         ids=["dense", "conv", "small", "conv-big", "pointwise-big", "conv-7x7", "conv-to-native"])
@pytest.mark.parametrize("threads", ["1", "2"], ids=["tiles", "runs"])
def test_parallel_copy_into_a_native_layout_view(shape, perm, threads: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Into a transposed view, in runs on two threads and in square tiles on one."""
    monkeypatch.setenv("POLYPARAM_NUM_THREADS", threads)
    src = np.random.default_rng(0).standard_normal(shape)
    storage = np.empty(tuple(shape[i] for i in perm), np.float32)
    view = storage.transpose(np.argsort(perm))
    parallel_copy(view, src, piece=1000)     # many pieces, cut inside rows
    np.testing.assert_array_equal(view, src.astype(np.float32))


def test_parallel_copy_refuses_a_shape_it_would_broadcast() -> None:
    with pytest.raises(ValueError, match="equal shapes"):
        parallel_copy(np.empty((4, 3)), np.empty((1, 3)))


def test_a_worker_that_maps_again_runs_inline_instead_of_waiting_on_its_own_pool() -> None:
    def outer(i: int) -> int:
        return sum(parallel_map(lambda j: i * j, range(50)))

    assert parallel_map(outer, range(8)) == [i * sum(range(50)) for i in range(8)]


@pytest.mark.parametrize("threads", ["1", "2"], ids=["tiles", "runs"])
def test_parallel_copy_of_an_overlapping_source_is_assignment(threads: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``dst[...] = src`` when they share memory: a matrix given its own transpose, rows shifted down by one
    (tiles would read what earlier tiles wrote, runs what earlier runs wrote)."""
    monkeypatch.setenv("POLYPARAM_NUM_THREADS", threads)
    a = np.arange(300 * 300, dtype=np.float32).reshape(300, 300)
    expected = a.T.copy()
    parallel_copy(a, a.T)
    np.testing.assert_array_equal(a, expected)
    base = np.arange(2001 * 300, dtype=np.float64).reshape(2001, 300)
    expected = base.copy()
    expected[1:] = base[:-1]
    parallel_copy(base[1:], base[:-1], piece=1 << 12)
    np.testing.assert_array_equal(base, expected)


@pytest.mark.parametrize(("shape", "perm", "tiled"), [
    ((3, 3, 512, 512), (3, 2, 0, 1), True),       # a conv kernel read canonically: NumPy's loop runs over kw
    ((1024, 1024), (1, 0), True),                 # steps of 4 KiB through the source: few cache sets
    ((768, 30522), (1, 0), False),                # an LM head: long loop, steps of 119 KiB, NumPy is faster
    ((2_000_000, 2), (1, 0), False),              # a thin matrix: tiles would be slivers
    ((200_000, 1), (1, 0), False),                # one row: nothing transposed
])
def test_tiles_are_used_where_numpys_own_loop_is_slow(shape: tuple[int, ...], perm: tuple[int, ...],
                                                       tiled: bool) -> None:
    """Which copies go in tiles (measured in benchmarks/bench_zoo.py and the commit that set the rule)."""
    from polyparam._threads import tiled_copy

    view = np.random.default_rng(0).normal(size=shape).astype(np.float32).transpose(perm)
    out = np.empty(view.shape, np.float32)
    assert tiled_copy(out, view) is tiled
    if tiled:
        np.testing.assert_array_equal(out, view)
