"""``Initializer.fill_slice``: any box of a parameter, bit-identical to the box of a whole fill (NumPy only)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import polyparam as pp
from polyparam.init import ParamInfo, streams


class MyInit(pp.init.Initializer):
    def init_weight(self, name: str, arr: np.ndarray) -> None:
        arr[:] = self.rng.uniform(-10, 10, arr.shape)


INITS = [pp.init.Uniform(), pp.init.Normal(0.5, mean=1.0), pp.init.TruncatedNormal(1.0, a=-0.3, b=0.3),
         pp.init.Xavier(), pp.init.Xavier(rnd_type="gaussian"), pp.init.He(mode="fan_out"), pp.init.LeCun(),
         pp.init.MSRAPrelu(), pp.init.VarianceScaling(distribution="uniform"), pp.init.Orthogonal(),
         pp.init.Constant(np.arange(7.0)), pp.init.One(), MyInit(),
         pp.init.Mixed([("*", pp.init.Normal())]), pp.init.Load({"a.weight": np.arange(91.0).reshape(13, 7)})]
STREAMED = ("Uniform", "Normal", "TruncatedNormal", "Xavier", "He", "LeCun", "MSRAPrelu", "VarianceScaling",
            "Constant", "One")


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "BLOCK", 37)  # boxes cut blocks everywhere; both sides use the same BLOCK


def _info(shape: tuple[int, ...], dtype: str = "float32") -> ParamInfo:
    axes = ("out", "in", "space", "space")[:len(shape)]
    return ParamInfo("a.weight", "w", "weight", axes, shape, np.dtype(dtype))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_box_equals_the_box_of_the_whole(data: st.DataObject) -> None:
    shape = data.draw(st.sampled_from([(13, 7), (5, 6, 7), (3, 1, 7, 2), (40, 3)]))
    init = data.draw(st.sampled_from(INITS))
    dtype = data.draw(st.sampled_from(["float32", "float64", "float16"]))
    info = _info(shape, dtype)
    try:
        init.check(info)
    except pp.errors.InitializerError:
        return
    box = []
    for d in shape:
        a = data.draw(st.integers(0, d))
        box.append(slice(a, data.draw(st.integers(a, d))))
    box = tuple(box)
    whole = np.empty(shape, dtype)
    init.fill(whole, info, seed=3)
    part = np.full(whole[box].shape, np.nan, dtype)
    init.fill_slice(part, info, box, seed=3)
    assert np.array_equal(part, whole[box])


def test_built_in_streams_draw_only_the_overlapping_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[int] = []
    original = streams._stream   # the block generator of the built-in fills
    monkeypatch.setattr(streams, "_stream", lambda key, b: drawn.append(b) or original(key, b))
    monkeypatch.setenv("POLYPARAM_NUM_THREADS", "1")
    info = _info((100, 37))  # 100 rows of one block each
    part = np.empty((10, 37), np.float32)
    pp.init.Xavier().fill_slice(part, info, (slice(20, 30), slice(0, 37)), seed=0)
    assert drawn == list(range(20, 30))


def test_which_initializers_fill_boxes_without_a_full_draw() -> None:
    assert {type(i).__name__ for i in INITS if i._fills_regions()} == set(STREAMED)

    class Tweaked(pp.init.Xavier):  # overrides what it writes without declaring it box-safe: full draw
        def init_weight(self, name: str, arr: np.ndarray) -> None:
            super().init_weight(name, arr)
            arr *= 2

    assert not Tweaked()._fills_regions()


def test_bad_boxes_are_refused() -> None:
    info = _info((4, 3))
    with pytest.raises(pp.errors.InitializerError, match="one slice with step 1"):
        pp.init.Xavier().fill_slice(np.empty((2, 3), np.float32), info, (slice(0, 4, 2), slice(0, 3)), seed=0)
    with pytest.raises(pp.errors.InitializerError, match="box's shape"):
        pp.init.Xavier().fill_slice(np.empty((3, 3), np.float32), info, (slice(0, 2), slice(0, 3)), seed=0)
