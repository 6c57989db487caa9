"""pp.load(cast=True) reads bfloat16 files into float32 models; pp.load(dtype="saved") adopts the file's dtypes."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

import polyparam as pp
from polyparam import errors
from polyparam.numpy import Dense, Sequential

BF16 = np.dtype(ml_dtypes.bfloat16)


def mlp(seed: int = 0) -> Sequential:
    net = Sequential(Dense(8, "relu", in_units=4), Dense(3, in_units=8))
    net.initialize(seed=seed)
    return net


def test_a_bfloat16_file_loads_into_float32_with_cast(tmp_path: Path) -> None:
    src = pp.tree(mlp(0)).state(copy=True)
    save_file({k: v.astype(BF16) for k, v in src.items()}, str(tmp_path / "bf16.safetensors"))
    dst = mlp(1)
    with pytest.raises(errors.DTypeMismatchError, match="Pass cast=True"):
        pp.load(dst, tmp_path / "bf16.safetensors")
    pp.load(dst, tmp_path / "bf16.safetensors", cast=True)
    for path, value in pp.tree(dst).state().items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, src[path].astype(BF16).astype(np.float32))


@pytest.mark.parametrize("saved", [np.float64, BF16], ids=["float64", "bfloat16"])
def test_dtype_saved_adopts_the_files_dtypes(saved: np.dtype, tmp_path: Path) -> None:
    src = pp.tree(mlp(0)).state(copy=True)
    file = tmp_path / "m.safetensors"
    save_file({k: v.astype(saved) for k, v in src.items()}, str(file))
    dst = mlp(1)
    pp.load(dst, file, dtype="saved")
    for path, value in pp.tree(dst).state().items():
        assert value.dtype == np.dtype(saved)
        np.testing.assert_array_equal(value, src[path].astype(saved))
    assert dst(np.ones((2, 4), np.float32)).shape == (2, 3)


def test_dtype_saved_that_fails_changes_nothing(tmp_path: Path) -> None:
    """A nested dict cannot cast in place: the typed refusal leaves dtypes and values as they were."""
    state = {"a": {"weight": np.ones((2, 2), np.float32), "bias": np.zeros(2, np.float32)}}
    file = tmp_path / "f64.safetensors"
    save_file({"a.weight": np.full((2, 2), 3.0), "a.bias": np.full(2, 4.0)}, str(file))
    with pytest.raises(errors.UnsupportedModelError, match="float64"):
        pp.load(state, file, dtype="saved")
    assert state["a"]["weight"].dtype == np.float32 and np.all(state["a"]["weight"] == 1)
    with pytest.raises(errors.InvalidArgumentError, match="'model' or 'saved'"):
        pp.load(state, file, dtype="float64")  # type: ignore[arg-type]


@pytest.mark.parametrize("write", ["set", "item", "load_state", "load"])
def test_integers_a_narrower_dtype_cannot_hold_are_refused_and_nothing_changes(write: str, tmp_path: Path) -> None:
    """int64 300 into int8 would wrap to 44 (NumPy's cast): refused with the range, before or undone after the
    other writes; values that fit still cast."""
    model = {"a": np.zeros(3, np.float32), "q": np.zeros(3, np.int8)}
    tree = pp.tree(model)
    wide = np.array([1, 300, -200], np.int64)
    with pytest.raises(errors.DTypeMismatchError, match=r"'q'.*int8 holds \(-128 to 127\), got -200 to 300"):
        if write == "set":
            tree["q"].set(wide)
        elif write == "item":
            tree["q"][:] = wide
        elif write == "load_state":
            tree.load_state({"a": np.ones(3, np.float32), "q": wide})
        else:
            save_file({"a": np.ones(3, np.float32), "q": wide}, str(tmp_path / "wide.safetensors"))
            pp.load(model, tmp_path / "wide.safetensors", cast=True)
    assert (model["a"] == 0).all() and (model["q"] == 0).all()
    tree["q"].set(np.array([1, 127, -128], np.int64))
    np.testing.assert_array_equal(model["q"], [1, 127, -128])


@pytest.mark.parametrize("write", ["set", "item", "load_state", "load", "load_vector"])
def test_floats_a_narrower_dtype_cannot_hold_are_refused_and_nothing_changes(write: str, tmp_path: Path) -> None:
    """float64 1e300 into float32, float32 1e5 into float16: the cast makes them inf, silently, before. Refused with
    the range, before or undone after the other writes; an inf or NaN given stays one, and values that fit cast."""
    model = {"a": np.zeros(3, np.float32), "h": np.zeros(3, np.float16), "s": np.zeros(3, np.float32)}
    tree = pp.tree(model)
    cases = (("s", np.array([1.0, -1e300, 2.0]), r"float32 holds \(-3\.4\d*e\+38 to 3\.4\d*e\+38\), got a "
              r"largest magnitude of 1e\+300"),
             ("h", np.array([1.0, 1e5, 2.0], np.float32), r"float16 holds \(-65504\.0 to 65504\.0\), got a largest "
              r"magnitude of 100000\.0"))
    for path, wide, message in cases:
        given = "float64" if write == "load_vector" else wide.dtype.name      # one vector of every value
        with pytest.raises(errors.DTypeMismatchError, match=rf"'{path}'.*{message} in a {given} value"):
            if write == "set":
                tree[path].set(wide)
            elif write == "item":
                tree[path][:] = wide
            elif write == "load_state":
                tree.load_state({"a": np.ones(3, np.float32), path: wide}, strict=False)
            elif write == "load":
                save_file({"a": np.ones(3, np.float32), path: wide}, str(tmp_path / "wide.safetensors"))
                pp.load(model, tmp_path / "wide.safetensors", cast=True, strict=False)
            else:
                rest = {"a": np.ones(3), "h": np.zeros(3), "s": np.zeros(3)} | {path: wide}
                tree.load_vector(np.concatenate([rest[q] for q, _ in tree.items()]))
        assert all((v == 0).all() for v in model.values()), path
    tree["h"].set(np.array([np.inf, np.nan, 65504.0]))
    assert np.isinf(model["h"][0]) and np.isnan(model["h"][1]) and model["h"][2] == 65504


@pytest.mark.parametrize("write", ["set", "item", "load_state", "load_vector"])
def test_every_float_kind_refuses_what_a_cast_would_make_inf_or_nan(write: str) -> None:
    """Beyond float16/32/64: bfloat16 (kind "V", not checked), float8_e4m3fn (1000.0 became NaN), float8_e5m2 (a
    raw ValueError from np.finfo), integers into float16 (70000 became inf) and complex128 into complex64. What
    the cast only rounds to the largest finite value (float32 65519.0 into float16: 65504.0) is written."""
    f8, e5m2 = np.dtype(ml_dtypes.float8_e4m3fn), np.dtype(ml_dtypes.float8_e5m2)
    model = {"b": np.zeros(2, BF16), "e": np.zeros(2, f8), "m": np.zeros(2, e5m2), "h": np.zeros(2, np.float16),
             "c": np.zeros(2, np.complex64)}
    tree = pp.tree(model)

    def write_to(path: str, value: np.ndarray) -> None:
        if write == "set":
            tree[path].set(value)
        elif write == "item":
            tree[path][:] = value
        elif write == "load_state":
            tree.load_state({path: value}, strict=False)
        else:
            tree.load_vector(np.concatenate([value if q == path else np.zeros(2, value.dtype)
                                             for q, _ in tree.items()]))

    cases = (("b", np.array([1.0, 1e39])), ("e", np.array([1.0, 1000.0])), ("m", np.array([1.0, 1e6])),
             ("h", np.array([1, 70000], np.int64)), ("c", np.array([1.0, 1e300 + 0j])))
    for path, value in cases:
        if write == "load_vector" and path == "c":
            continue          # one vector of one dtype for every parameter: a complex one does not go into floats
        with pytest.raises(errors.DTypeMismatchError, match=rf"'{path}'.*largest magnitude of .*inf"):
            write_to(path, value)
        assert all(not v.astype(np.complex128).any() for v in model.values()), path
    write_to("m", np.array([1.0, 2.0]))
    np.testing.assert_array_equal(model["m"].astype(np.float32), [1.0, 2.0])
    write_to("h", np.array([65519.0, -1.0], np.float32))
    np.testing.assert_array_equal(model["h"], [65504.0, -1.0])


def test_load_vector_refuses_integers_an_integer_tensor_cannot_hold() -> None:
    model = {"c": np.zeros(3, np.int8), "u": np.zeros(2, np.uint8)}
    tree = pp.tree(model)
    for vector, path in (([1, 2, 300, 4, 5], "c"), ([1, 2, 3, 4, 300], "u"), ([1, 2, 3, -1, 5], "u")):
        with pytest.raises(errors.DTypeMismatchError, match=f"parameter '{path}'.*holds"):
            tree.load_vector(np.array(vector, np.int64))
        assert not model["c"].any() and not model["u"].any()
    tree.load_vector(np.array([1, -2, 127, 0, 255], np.int64))
    np.testing.assert_array_equal(model["c"], [1, -2, 127])
    np.testing.assert_array_equal(model["u"], [0, 255])


def test_signed_and_unsigned_integers_write_into_each_other_when_the_values_fit(tmp_path: Path) -> None:
    """torch's buf[0] = 5 into a uint8 buffer works; so do polyparam's writes of int64 values that fit."""
    model = {"u": np.zeros(2, np.uint8), "i": np.zeros(2, np.int8)}
    tree = pp.tree(model)
    tree["u"][0] = 5
    tree["u"].set(np.array([1, 2]))
    tree.load_state({"u": np.array([3, 4]), "i": np.array([5, 6], np.uint64)})
    np.testing.assert_array_equal(model["u"], [3, 4])
    np.testing.assert_array_equal(model["i"], [5, 6])
    save_file({"u": np.array([7, 8], np.int32), "i": np.array([9, 10], np.uint16)}, str(tmp_path / "w.safetensors"))
    pp.load(model, tmp_path / "w.safetensors", cast=True)
    np.testing.assert_array_equal(model["u"], [7, 8])
    with pytest.raises(errors.DTypeMismatchError, match="uint8 holds"):
        tree["u"].set(np.array([-1, 2]))
    np.testing.assert_array_equal(model["u"], [7, 8])
