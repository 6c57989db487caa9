"""pp.transfer(src, dst, check=x): both models run on x after the move; differing outputs undo it (NumPy backend)."""

from __future__ import annotations

import numpy as np
import pytest

import polyparam as pp
from polyparam.numpy import Dense, Sequential

X = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)


def mlp(activation: str | None = "relu", seed: int = 0) -> Sequential:
    net = Sequential(Dense(8, activation, in_units=4), Dense(3, in_units=8))
    net.initialize(seed=seed)
    return net


def snapshot(net: Sequential) -> dict[str, np.ndarray]:
    return pp.tree(net).state(copy=True)


def test_equal_outputs_pass_and_the_report_says_so() -> None:
    src, dst = mlp(seed=1), mlp(seed=2)
    report = pp.transfer(src, dst, check=X)
    assert report.checked == 0.0
    assert "outputs agree (max difference 0)" in str(report)
    np.testing.assert_array_equal(dst(X), src(X))


def test_different_functions_are_refused_and_nothing_changes() -> None:
    src, dst = mlp("relu", seed=1), mlp("tanh", seed=2)   # same parameters, another function
    before = snapshot(dst)
    with pytest.raises(pp.errors.TransferError, match=r"expected equal outputs.*max difference.*Nothing was changed"):
        pp.transfer(src, dst, check=X)
    after = snapshot(dst)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_the_tolerance_bounds_the_difference() -> None:
    src, dst = mlp(seed=1), mlp(seed=2)
    nearby = X + np.float32(1e-2)
    report = pp.transfer(src, dst, check=(X, nearby), tolerance=0.5)
    assert 1e-6 < report.checked < 0.5
    with pytest.raises(pp.errors.TransferError, match=r"within 1e-06"):
        pp.transfer(src, mlp(seed=3), check=(X, nearby), tolerance=1e-6)


def test_a_pair_gives_each_side_its_own_input() -> None:
    src, dst = mlp(seed=1), mlp(seed=2)
    with pytest.raises(pp.errors.TransferError, match="expected equal outputs"):
        pp.transfer(src, dst, check=(X, X[::-1].copy()))
    pp.transfer(src, dst, check=(X, X.copy()))


def test_an_input_the_model_refuses_is_a_typed_error_and_nothing_changes() -> None:
    src, dst = mlp(seed=1), mlp(seed=2)
    before = snapshot(dst)
    with pytest.raises(pp.errors.TransferError, match="expected the source numpy model to run on the check input"):
        pp.transfer(src, dst, check=np.ones((2, 7), np.float32))
    after = snapshot(dst)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_an_input_giving_no_finite_output_verifies_nothing_and_is_refused() -> None:
    """NaN in the same place agree, so an all-NaN output would pass any destination: refused before any write."""
    src, dst = mlp(seed=1), mlp("tanh", seed=2)
    before = snapshot(dst)
    with pytest.raises(pp.errors.TransferError, match=r"no finite value.*Nothing was changed.*finite") as info:
        pp.transfer(src, dst, check=np.full((2, 4), np.nan, np.float32))
    assert info.value.expected == "a finite output"
    after = snapshot(dst)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    partly = X.copy()
    partly[0, 0] = np.nan                        # one NaN row: the finite rows still tell the functions apart
    with pytest.raises(pp.errors.TransferError, match="expected equal outputs"):
        pp.transfer(src, dst, check=partly)


def test_outputs_of_different_shapes_cannot_be_compared() -> None:
    src, dst = mlp(seed=1), mlp(seed=2)
    with pytest.raises(pp.errors.TransferError, match="expected outputs of the same structure and shapes"):
        pp.transfer(src, dst, check=(X, X[:2]))


def test_a_backend_that_cannot_run_models_says_so() -> None:
    src = {"w": np.ones((2, 2), np.float32)}
    dst = {"w": np.zeros((2, 2), np.float32)}
    with pytest.raises(pp.errors.UnsupportedModelError, match="does not implement running a model"):
        pp.transfer(src, dst, check=X)
    assert not dst["w"].any()


def test_the_check_leaves_the_tape_for_backward() -> None:
    src, dst = mlp(seed=1), mlp(seed=2)
    dst(X[:2])
    tape = dst._tape
    pp.transfer(src, dst, check=X)
    assert dst._tape is tape


def test_a_transfer_between_models_sharing_layers_reads_every_source_before_writing() -> None:
    """src and dst hold the same two layers in swapped order: a transfer swaps their values, as
    load_state(src.state(copy=True)) does, instead of writing one layer's value into both."""
    first, second = Dense(4, in_units=4), Dense(4, in_units=4)
    src, dst = Sequential(first, second), Sequential(second, first)
    src.initialize(seed=3)
    a, b = snapshot(Sequential(first)), snapshot(Sequential(second))
    pp.transfer(src, dst)
    assert all(np.array_equal(v, a[k]) for k, v in snapshot(Sequential(second)).items())
    assert all(np.array_equal(v, b[k]) for k, v in snapshot(Sequential(first)).items())
