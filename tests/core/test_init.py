"""Initializers: fans from axis roles, arguments, the three custom styles."""

from __future__ import annotations

import numpy as np
import pytest

import polyparam as pp
from polyparam import errors
from polyparam.init import ParamInfo, as_initializer, generator_for


def info(shape: tuple[int, ...], axes: tuple[str, ...], role: str = "weight") -> ParamInfo:
    return ParamInfo(path="x", native_name="x", role=role, axes=axes, shape=shape, dtype=np.dtype(np.float32))


@pytest.mark.parametrize("shape, axes, fans", [
    ((8, 4), ("out", "in"), (4, 8)),
    ((16, 3, 5, 5), ("out", "in", "space", "space"), (75, 400)),
    ((3, 16, 5, 5), ("in", "out", "space", "space"), (75, 400)),       # transposed conv (torch layout)
    ((5, 5, 3, 16), ("space", "space", "in", "out"), (75, 400)),       # Keras layout, same fans
], ids=["dense", "conv2d", "conv-transpose", "keras-conv"])
def test_fans_come_from_axis_roles(shape, axes, fans) -> None:
    assert (info(shape, axes).fan_in, info(shape, axes).fan_out) == fans


def test_fan_initializers_refuse_vectors() -> None:
    with pytest.raises(errors.InitializerError) as exc:
        pp.init.Xavier().check(info((8,), ("out",)), by_role=False)
    assert exc.value.path == "x"


def test_xavier_bounds_and_gaussian_std() -> None:
    i = info((400, 300), ("out", "in"))
    arr = np.empty(i.shape, np.float32)
    pp.init.Xavier().fill(arr, i, seed=0)
    bound = np.sqrt(3 / ((400 + 300) / 2))
    assert np.abs(arr).max() <= bound and np.abs(arr).max() > 0.99 * bound
    pp.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2).fill(arr, i, seed=0)
    assert abs(arr.std() / np.sqrt(2 / 300) - 1) < 0.02


@pytest.mark.parametrize("make", [lambda: pp.init.Xavier(rnd_type="nope"), lambda: pp.init.Xavier(factor_type="x"),
                                  lambda: pp.init.Normal(-1), lambda: pp.init.Uniform(float("nan")),
                                  lambda: as_initializer("no_such_init"), lambda: as_initializer(3)])
def test_bad_arguments_raise_initializer_error(make) -> None:
    with pytest.raises(errors.InitializerError):
        make()


def test_generator_is_keyed_by_seed_and_path() -> None:
    a = generator_for(1, "0.weight").random(4)
    np.testing.assert_array_equal(a, generator_for(1, "0.weight").random(4))
    assert not np.array_equal(a, generator_for(2, "0.weight").random(4))
    assert not np.array_equal(a, generator_for(1, "1.weight").random(4))


def test_keras_style_call_returns_an_array() -> None:
    out = pp.init.Uniform(0.5)((3, 4), "float32")
    assert out.shape == (3, 4) and out.dtype == np.float32 and np.abs(out).max() <= 0.5


def test_gluon_spelling_of_init_weight() -> None:
    """A subclass that defines Gluon's _init_weight works too."""

    class Legacy(pp.init.Initializer):
        def _init_weight(self, name, arr):
            arr[:] = 3

    assert (Legacy()((2, 2)) == 3).all()


def test_custom_initializer_returning_wrong_dtype() -> None:
    tree = pp.tree({"w": np.zeros((2, 2), np.float32)})
    with pytest.raises(errors.InitializerError) as exc:
        tree.initialize(lambda shape, dtype: np.full(shape, "a"), force_reinit=True)
    assert exc.value.path == "w"
    np.testing.assert_array_equal(tree["w"].numpy(), 0)


def test_callable_may_take_the_generator() -> None:
    tree = pp.tree({"w": np.zeros((2, 3), np.float32)})
    tree.initialize(lambda shape, dtype, rng: rng.uniform(1, 2, shape).astype(dtype), seed=4, force_reinit=True)
    np.testing.assert_array_equal(tree["w"].numpy(), generator_for(4, "w").uniform(1, 2, (2, 3)).astype(np.float32))


def test_report_says_what_happened() -> None:
    tree = pp.tree({"a": {"weight": np.zeros((2, 2), np.float32), "bias": np.zeros(2, np.float32)}})
    report = tree.initialize(force_reinit=True)
    assert report.initialized == ["a.weight", "a.bias"] and str(report) == "initialized 2, skipped 0, deferred 0"


# ---- integer parameters (quantized kernels, counters) are never cast silently --------


def _int_tree() -> dict[str, np.ndarray]:
    return {"weight": np.arange(12, dtype=np.int8).reshape(3, 4), "flag": np.ones(3, bool)}


@pytest.mark.parametrize("init", [pp.init.Xavier(), pp.init.Uniform(), pp.init.Normal(), pp.init.Constant(0.5),
                                  pp.init.Constant(300)])
def test_float_values_into_an_integer_parameter_are_refused(init: pp.init.Initializer) -> None:
    state = _int_tree()
    before = state["weight"].copy()
    with pytest.raises(pp.errors.InitializerError, match=r"'weight' \(int8\).*expected whole numbers from -128 to 127"):
        pp.tree(state).select("weight").initialize(init, seed=0, force_reinit=True)
    np.testing.assert_array_equal(state["weight"], before)


@pytest.mark.parametrize(("init", "value"), [(pp.init.Zero(), 0), (pp.init.One(), 1), (pp.init.Constant(-3), -3)])
def test_whole_numbers_fill_integer_parameters(init: pp.init.Initializer, value: int) -> None:
    state = _int_tree()
    pp.tree(state).select("weight").initialize(init, seed=0, force_reinit=True)
    assert state["weight"].dtype == np.int8 and np.all(state["weight"] == value)


def test_booleans_take_zero_and_one_only() -> None:
    state = _int_tree()
    with pytest.raises(pp.errors.InitializerError, match="from 0 to 1"):
        pp.tree(state).select("flag").initialize(pp.init.Constant(2), seed=0, force_reinit=True)
    pp.tree(state).select("flag").initialize(pp.init.Zero(), seed=0, force_reinit=True)
    assert not state["flag"].any()
