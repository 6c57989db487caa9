"""A non-strict load or transfer that matches nothing raises; one that leaves anything out warns with the counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import polyparam as pp
from polyparam import errors


def _tree() -> pp.ParameterTree:
    return pp.tree({"a": {"weight": np.zeros((2, 3), np.float32), "bias": np.zeros(2, np.float32)}})


def test_load_state_that_matches_nothing_raises_and_changes_nothing() -> None:
    tree = _tree()
    with pytest.raises(errors.StateError, match="at least one key"):
        tree.load_state({"module.a.weight": np.ones((2, 3), np.float32)}, strict=False)
    assert not tree["a.weight"].numpy().any()


def test_a_partial_load_state_warns_with_the_counts() -> None:
    tree = _tree()
    with pytest.warns(errors.PolyparamWarning, match=r"Loaded 1 values from state; 1 parameters kept .* 1 keys"):
        tree.load_state({"a.weight": np.ones((2, 3), np.float32), "extra": np.ones(1, np.float32)}, strict=False)
    assert tree["a.weight"].numpy().all()


def test_pp_load_that_matches_nothing_raises(tmp_path: Path) -> None:
    file = tmp_path / "other.safetensors"
    pp.save(pp.tree({"module.a.weight": np.ones((2, 3), np.float32)}), file)
    tree = _tree()
    with pytest.raises(errors.StateError, match="at least one key"):
        pp.load(tree, file, strict=False)
    assert not tree["a.weight"].numpy().any()


def test_a_transfer_that_matches_nothing_raises_and_a_partial_one_warns() -> None:
    dst = _tree()
    with pytest.raises(errors.TransferError, match="at least one path"):
        pp.transfer(pp.tree({"b": {"weight": np.ones((2, 3), np.float32)}}), dst, strict=False)
    assert not dst["a.weight"].numpy().any()
    with pytest.warns(errors.PolyparamWarning, match="Transferring 1 values"):
        pp.transfer(pp.tree({"a": {"weight": np.ones((2, 3), np.float32)}}), dst, strict=False)
    assert dst["a.weight"].numpy().all()


def test_a_complete_non_strict_load_is_silent(recwarn: pytest.WarningsRecorder) -> None:
    tree = _tree()
    tree.load_state(tree.state(copy=True), strict=False)
    assert not [w for w in recwarn if issubclass(w.category, errors.PolyparamWarning)]
