"""Hostile arguments get typed errors: initializer JSON and arguments, seeds, item writes, the thread count.

Each case was found by the reliability trial (issue #14: F15-F18), where it raised an
untyped ``TypeError``, ``ValueError``, ``AttributeError``, ``re.error`` or
``MemoryError``, or was accepted silently.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import polyparam as pp
import polyparam._threads as threads_module
from polyparam import errors
from polyparam._threads import count, parallel_map
from polyparam.backend import ParameterTree
from polyparam.init import ParamInfo, generator_for, stream_key


def small_tree() -> ParameterTree:
    return pp.tree({"l1": {"weight": np.zeros((4, 3), np.float32), "bias": np.zeros(4, np.float32)},
                    "l2": {"weight": np.zeros((2, 4), np.float32)}})


def weight_info(shape: tuple[int, ...] = (4, 3)) -> ParamInfo:
    return ParamInfo("w", "w", "weight", ("out", "in"), shape, np.dtype(np.float32))


# ---- F15: initializer JSON and arguments ---------------------------------------------------


MALFORMED_JSON = {
    "kwargs not an object": '["xavier", 5]',
    "kwargs a list": '["xavier", [1]]',
    "name not a string": '[5, {}]',
    "null": "null",
    "three items": '["zero", {}, 1]',
    "sigma a string": '["normal", {"sigma": "x"}]',
    "sigma infinite": '["normal", {"sigma": 1e999}]',
    "sigma a 400-digit int": '["normal", {"sigma": 1' + "0" * 400 + "}]",
    "huge void dtype": '["constant", {"value": {"__array__": [1], "dtype": "V1000000000000"}}]',
    "string dtype": '["constant", {"value": {"__array__": ["a"], "dtype": "<U1"}}]',
    "dtype not a name": '["constant", {"value": {"__array__": [1], "dtype": 5}}]',
    "array without dtype": '["constant", {"value": {"__array__": [1]}}]',
    "ragged array": '["constant", {"value": {"__array__": [[1], [1, 2]], "dtype": "float32"}}]',
    "constant a string": '["constant", {"value": "x"}]',
    "bad regex": '["mixed", {"rules": [[{"__regex__": "("}, {"__initializer__": ["zero", {}]}]]}]',
    "regex not a string": '["mixed", {"rules": [[{"__regex__": 5}, {"__initializer__": ["zero", {}]}]]}]',
    "rules a number": '["mixed", {"rules": 5}]',
    "rule of three": '["mixed", {"rules": [[1, 2, 3]]}]',
    "rule a number": '["mixed", {"rules": [[5, {"__initializer__": ["zero", {}]}]]}]',
    "mixed default a number": '["mixed", {"rules": [], "default": 5}]',
    "load source a number": '["load", {"source": 5}]',
    "dirac groups a string": '["dirac", {"groups": "x"}]',
    "dirac groups zero": '["dirac", {"groups": 0}]',
    "nested initializer not a pair": '["mixed", {"rules": [["*", {"__initializer__": 5}]]}]',
    "deeply nested": "[" * 100_000 + "]" * 100_000,
    "deeply nested kwargs": '["constant", {"value": ' + "[" * 50_000 + "]" * 50_000 + "}]",
}


@pytest.mark.parametrize("text", list(MALFORMED_JSON.values()), ids=list(MALFORMED_JSON))
def test_loads_refuses_malformed_json_with_an_initializer_error(text: str) -> None:
    with pytest.raises(errors.InitializerError) as info:
        pp.init.loads(text)
    assert len(str(info.value)) < 1000


@pytest.mark.parametrize("text", [5, None, b"\xff"], ids=["int", "none", "bytes"])
def test_loads_refuses_what_is_not_text(text: Any) -> None:
    with pytest.raises(errors.InitializerError):
        pp.init.loads(text)


def test_loads_still_reads_what_dumps_writes() -> None:
    import re

    init = pp.init.Mixed([("*.bias", pp.init.Constant(np.array([1.0, 2.0], np.float32))),
                          (re.compile(r"^l2\."), pp.init.TruncatedNormal(0.1, a=-math.inf, b=3.0))],
                         default=pp.init.Xavier())
    text = pp.init.dumps(init)
    assert pp.init.dumps(pp.init.loads(text)) == text


@pytest.mark.parametrize("kind", ["object npz", "truncated safetensors"])
def test_load_reads_files_with_the_validating_readers(kind: str, tmp_path: Path) -> None:
    """``pp.init.Load`` refuses a bad file as ``pp.load`` does: a typed format error, nothing written."""
    if kind == "object npz":
        path = tmp_path / "bad.npz"
        np.savez(path, **{"l1.weight": np.array([object()], dtype=object)})
    else:
        path = tmp_path / "bad.safetensors"
        pp.save(small_tree(), path)
        path.write_bytes(path.read_bytes()[:-8])
    tree = small_tree()
    with pytest.raises(errors.CheckpointFormatError):
        tree.initialize(pp.init.Load(path), force_reinit=True, seed=0)
    assert not any(v.any() for v in tree.state().values())


BAD_ARGUMENTS: dict[str, Callable[[], object]] = {
    "Normal(sigma='x')": lambda: pp.init.Normal(sigma="x"),
    "Normal(sigma=nan)": lambda: pp.init.Normal(sigma=math.nan),
    "Normal(sigma=inf)": lambda: pp.init.Normal(sigma=math.inf),
    "Normal(mean=inf)": lambda: pp.init.Normal(mean=math.inf),
    "Normal(mean=[1])": lambda: pp.init.Normal(mean=[1]),
    "Normal(sigma=True)": lambda: pp.init.Normal(sigma=True),
    "Uniform(scale=inf)": lambda: pp.init.Uniform(scale=math.inf),
    "Uniform(scale='0.1')": lambda: pp.init.Uniform(scale="0.1"),
    "Uniform(scale=None)": lambda: pp.init.Uniform(scale=None),
    "Uniform(scale=10**400)": lambda: pp.init.Uniform(scale=10**400),
    "TruncatedNormal(sigma=inf)": lambda: pp.init.TruncatedNormal(sigma=math.inf),
    "TruncatedNormal(mean=nan)": lambda: pp.init.TruncatedNormal(mean=math.nan),
    "TruncatedNormal(a='x')": lambda: pp.init.TruncatedNormal(a="x"),
    "TruncatedNormal(b=nan)": lambda: pp.init.TruncatedNormal(b=math.nan),
    "VarianceScaling(scale=inf)": lambda: pp.init.VarianceScaling(scale=math.inf),
    "Xavier(magnitude='x')": lambda: pp.init.Xavier(magnitude="x"),
    "Xavier(magnitude=inf)": lambda: pp.init.Xavier(magnitude=math.inf),
    "MSRAPrelu(slope='x')": lambda: pp.init.MSRAPrelu(slope="x"),
    "MSRAPrelu(slope=inf)": lambda: pp.init.MSRAPrelu(slope=math.inf),
    "He(a='x')": lambda: pp.init.He(a="x"),
    "He(a=nan)": lambda: pp.init.He(a=math.nan),
    "Orthogonal(gain='x')": lambda: pp.init.Orthogonal(gain="x"),
    "Orthogonal(gain=inf)": lambda: pp.init.Orthogonal(gain=math.inf),
    "Identity(gain=nan)": lambda: pp.init.Identity(gain=math.nan),
    "Dirac(groups='x')": lambda: pp.init.Dirac(groups="x"),
    "Dirac(groups=0)": lambda: pp.init.Dirac(groups=0),
    "Dirac(groups=1.5)": lambda: pp.init.Dirac(groups=1.5),
    "Constant(value='x')": lambda: pp.init.Constant("x"),
    "Constant(value=None)": lambda: pp.init.Constant(None),
    "Constant(value=object())": lambda: pp.init.Constant(object()),
    "calculate_gain(param='x')": lambda: pp.init.calculate_gain("leaky_relu", "x"),
    "calculate_gain(param=nan)": lambda: pp.init.calculate_gain("leaky_relu", math.nan),
    "Mixed(default=5)": lambda: pp.init.Mixed([], default=5),
    "Mixed(rules=5)": lambda: pp.init.Mixed(5),
    "Mixed(rule of 3)": lambda: pp.init.Mixed([("*", pp.init.Zero(), 1)]),
    "Mixed(rule 5)": lambda: pp.init.Mixed([(5, pp.init.Zero())]),
    "Load(source=5)": lambda: pp.init.Load(5),
    "Load(default=5)": lambda: pp.init.Load({}, default=5),
}


@pytest.mark.parametrize("build", list(BAD_ARGUMENTS.values()), ids=list(BAD_ARGUMENTS))
def test_built_ins_refuse_bad_arguments_when_built(build: Callable[[], object]) -> None:
    """Refused at construction with a typed error (never later, with NaN values or an AttributeError)."""
    with pytest.raises(errors.InitializerError):
        build()


def test_numbers_of_every_kind_are_still_accepted() -> None:
    assert pp.init.Normal(np.float32(0.5), mean=np.int64(1)).sigma == 0.5
    assert pp.init.Uniform(1).scale == 1.0
    assert pp.init.Dirac(groups=np.int64(2)).groups == 2
    assert pp.init.TruncatedNormal(a=-math.inf, b=math.inf).b == math.inf  # untruncated: a valid choice
    assert pp.init.Constant(-math.inf).value == -math.inf                  # written as given (masks)


def test_uniform_with_infinite_scale_never_fills_nan() -> None:
    tree = small_tree()
    with pytest.raises(errors.InitializerError):
        tree.initialize(pp.init.Uniform(math.inf), force_reinit=True, seed=1)
    assert not any(np.isnan(v).any() for v in tree.state().values())


@pytest.mark.parametrize("which", ["mixed", "load"])
def test_a_callable_default_is_accepted_as_initialize_accepts_it(which: str) -> None:
    def threes(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return np.full(shape, 3, dtype)

    if which == "mixed":
        init: pp.init.Initializer = pp.init.Mixed([("l1.*", pp.init.One())], default=threes)
    else:
        init = pp.init.Load({"l1.weight": np.ones((4, 3), np.float32), "l1.bias": np.ones(4, np.float32)},
                            default=threes)
    tree = small_tree()
    tree.initialize(init, force_reinit=True, seed=0)
    np.testing.assert_array_equal(tree["l1.weight"].numpy(), np.ones((4, 3)))
    np.testing.assert_array_equal(tree["l2.weight"].numpy(), np.full((2, 4), 3))


# ---- F16: seeds ----------------------------------------------------------------------------


BAD_SEEDS = {"'7'": "7", "'abc'": "abc", "1.9": 1.9, "1.0": 1.0, "True": True, "np.True_": np.True_,
             "nan": math.nan, "inf": math.inf, "[1]": [1], "5000 digits": 10**4999, "2**64": 2**64,
             "-2**63 - 1": -(2**63) - 1, "np.float64": np.float64(3), "object": object()}


def _entry_points() -> dict[str, Callable[[Any], object]]:
    return {
        "tree.initialize": lambda seed: small_tree().initialize(pp.init.Normal(), force_reinit=True, seed=seed),
        "Parameter.initialize": lambda seed: small_tree()["l1.weight"].initialize(pp.init.Normal(),
                                                                                  force_reinit=True, seed=seed),
        "Initializer.fill": lambda seed: pp.init.Normal().fill(np.empty((4, 3), np.float32), weight_info(),
                                                               seed=seed),
        "Initializer.fill_slice": lambda seed: pp.init.Normal().fill_slice(
            np.empty((2, 3), np.float32), weight_info(), (slice(0, 2), slice(0, 3)), seed=seed),
        "Orthogonal.fill_slice": lambda seed: pp.init.Orthogonal().fill_slice(
            np.empty((2, 3), np.float32), weight_info(), (slice(0, 2), slice(0, 3)), seed=seed),
        "Mixed.fill": lambda seed: pp.init.Mixed([("w", pp.init.Zero())]).fill(
            np.empty((4, 3), np.float32), weight_info(), seed=seed),
        "Load.fill": lambda seed: pp.init.Load({"w": np.zeros((4, 3), np.float32)}).fill(
            np.empty((4, 3), np.float32), weight_info(), seed=seed),
        "generator_for": lambda seed: generator_for(seed, "w"),
        "stream_key": lambda seed: stream_key(seed, "w"),
    }


@pytest.mark.parametrize("where", list(_entry_points()))
@pytest.mark.parametrize("seed", list(BAD_SEEDS.values()), ids=list(BAD_SEEDS))
def test_a_seed_that_is_not_a_64_bit_int_is_refused_everywhere(where: str, seed: Any) -> None:
    with pytest.raises(errors.InvalidArgumentError) as info:
        _entry_points()[where](seed)
    assert info.value.argument == "seed"
    assert "seed" in str(info.value) and len(str(info.value)) < 600


def test_a_refused_seed_changes_nothing() -> None:
    tree = small_tree()
    with pytest.raises(errors.InvalidArgumentError):
        tree.initialize(pp.init.Normal(), force_reinit=True, seed="7")
    assert not any(v.any() for v in tree.state().values())


@pytest.mark.parametrize("seed", [0, 7, -5, -(2**63), 2**63, 2**64 - 1, np.int64(7), np.uint64(2**64 - 1),
                                  np.int8(-3)], ids=str)
def test_every_64_bit_int_is_a_seed_and_numpy_ints_are_ints(seed: Any) -> None:
    tree = small_tree()
    report = tree.initialize(pp.init.Normal(), force_reinit=True, seed=seed)
    assert type(report.seed) is int and report.seed == int(seed)
    again = small_tree()
    again.initialize(pp.init.Normal(), force_reinit=True, seed=int(seed))
    np.testing.assert_array_equal(tree["l1.weight"].numpy(), again["l1.weight"].numpy())
    assert stream_key(seed, "w") == stream_key(int(seed), "w")


# ---- F17: item writes ------------------------------------------------------------------------


@pytest.fixture(params=["view", "copy"])
def weight(request: pytest.FixtureRequest) -> pp.Parameter:
    """A (4, 3) weight written in place (a NumPy view) or by read-modify-write (backends without one)."""
    tree = small_tree()
    tree["l1.weight"].set(np.arange(12, dtype=np.float32).reshape(4, 3))
    p = tree["l1.weight"]
    if request.param == "copy":
        p._writable_view = lambda: None  # type: ignore[method-assign]
    return p


@pytest.mark.parametrize(("key", "value"), [((10, 10), 1), ((0, 3), 1), ((-5, 0), 1), ("a", 1), (1.5, 1),
                                            ((0, 0, 0), 1), ([0, 10], 1), ((slice(None), [0, 7]), 1),
                                            (np.ones((4, 5), bool), 1), ({"a": 1}, 1)],
                         ids=["(10,10)", "(0,3)", "(-5,0)", "'a'", "1.5", "3 axes", "[0,10]", "fancy col",
                              "mask shape", "dict"])
def test_an_index_outside_the_parameter_is_a_typed_index_error(weight: pp.Parameter, key: Any, value: Any) -> None:
    before = weight.numpy().copy()
    with pytest.raises(errors.InvalidIndexError) as info:
        weight[key] = value
    assert isinstance(info.value, IndexError) and isinstance(info.value, errors.ParameterError)
    assert info.value.path == "l1.weight" and "'l1.weight'" in str(info.value)
    np.testing.assert_array_equal(weight.numpy(), before)


@pytest.mark.parametrize(("key", "value"), [((0, 0), [1, 2]), (0, np.ones(4)), ([0, 1], np.ones((3, 3))),
                                            (slice(None), np.ones((2, 4, 3)))],
                         ids=["scalar<-pair", "row<-4", "2 rows<-3", "extra axis"])
def test_a_value_that_does_not_fit_the_selection_is_a_shape_mismatch(weight: pp.Parameter, key: Any,
                                                                     value: Any) -> None:
    before = weight.numpy().copy()
    with pytest.raises(errors.ShapeMismatchError) as info:
        weight[key] = value
    assert isinstance(info.value, ValueError) and info.value.path == "l1.weight"
    np.testing.assert_array_equal(weight.numpy(), before)


def test_item_writes_numpy_accepts_still_work(weight: pp.Parameter) -> None:
    expected = np.arange(12, dtype=np.float32).reshape(4, 3)
    for key, value in [((0, 0), 42), (-1, [7, 8, 9]), (1, np.ones((1, 3))), ((..., 1), 5),
                       (expected > 9, 0), ([0, 2], np.zeros(3)), ((slice(None), None, 0), 3)]:
        weight[key] = value
        expected[key] = value
        np.testing.assert_array_equal(weight.numpy(), expected)


# ---- F18: POLYPARAM_NUM_THREADS --------------------------------------------------------------


@pytest.mark.parametrize("text", ["abc", "1e3", "-2", "2.5", "٤"])
def test_a_bad_thread_count_warns_once_and_uses_one_thread_per_cpu(text: str, monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    monkeypatch.setenv("POLYPARAM_NUM_THREADS", text)
    monkeypatch.setattr(threads_module, "_warned", set())
    with pytest.warns(errors.PolyparamWarning, match="POLYPARAM_NUM_THREADS") as record:
        assert count() == (os.cpu_count() or 1)
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # once per value: no second warning
        assert parallel_map(lambda x: x * 2, range(5)) == [0, 2, 4, 6, 8]
        tree = pp.tree({"w": np.ones((2048, 1024), np.float32)})   # 8 MiB: the paths that use the pool
        pp.save(tree, tmp_path / "big.safetensors")
        pp.load(tree, tmp_path / "big.safetensors")


@pytest.mark.parametrize(("text", "threads"), [("3", 3), (" 2 ", 2), ("1", 1), ("", None), ("0", None)])
def test_valid_thread_counts(text: str, threads: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYPARAM_NUM_THREADS", text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert count() == (threads or os.cpu_count() or 1)


def test_select_with_a_bad_regex_and_count_with_a_bad_flag_are_invalid_arguments() -> None:
    tree = pp.tree({"layer": {"weight": np.ones((2, 2), np.float32), "bias": np.ones(2, np.float32)}})
    with pytest.raises(errors.InvalidArgumentError, match=r"`regex`.*'\(\['.*re.escape"):
        tree.select(regex="([")
    assert tree.select(regex=r"\.bias$").paths() == ["layer.bias"]
    with pytest.raises(errors.InvalidArgumentError, match="`trainable`.*str 'yes'"):
        tree.count(trainable="yes")   # type: ignore[arg-type]
    assert tree.count(trainable=True) == 6 and tree.count(trainable=np.bool_(False)) == 0


def test_norm_types_and_a_cast_filter_of_the_wrong_type_are_invalid_arguments() -> None:
    """``grad_norm(None)``, ``grad_norm("abc")``, ``clip_grads(1.0, "fro")`` and ``cast(where="0.*")`` raised
    NumPy's and Python's untyped errors; nothing is cast by a refused call."""
    tree = small_tree()
    for bad in (None, "abc", "fro", True):
        with pytest.raises(errors.InvalidArgumentError, match="`norm_type`"):
            tree.grad_norm(bad)  # type: ignore[arg-type]
        with pytest.raises(errors.InvalidArgumentError, match="`norm_type`"):
            tree.clip_grads(1.0, bad)  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgumentError, match=r"`where` of cast.*str 'l1\.\*'.*tree\.select\('l1\.\*'\)"):
        tree.cast("float16", where="l1.*")
    assert all(p.dtype == np.float32 for p in tree.parameters())
