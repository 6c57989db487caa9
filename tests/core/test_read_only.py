"""F4: a read-only destination is refused before the first write, with a typed error, on every write path."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import polyparam as pp
from polyparam import errors


def _model() -> tuple[dict[str, np.ndarray], pp.ParameterTree]:
    w = np.arange(24, dtype=np.float32).reshape(4, 6) + 1
    b = np.arange(6, dtype=np.float32) - 3
    b.flags.writeable = False  # e.g. np.load(..., mmap_mode="r"), or a frozen buffer
    model = {"w": w, "b": b}   # "b" comes after "w": a write in model order reaches "w" first
    return model, pp.tree(model)


def _other() -> pp.ParameterTree:
    return pp.tree({"w": np.full((4, 6), 5, np.float32), "b": np.full(6, 5, np.float32)})


@pytest.mark.parametrize("operation", ["load_state", "load", "transfer", "initialize"])
def test_a_read_only_array_is_refused_before_any_write(operation: str, tmp_path: Path) -> None:
    model, tree = _model()
    before = {k: v.copy() for k, v in model.items()}
    file = tmp_path / "other.safetensors"
    pp.save(_other(), file)
    run: dict[str, Callable[[], object]] = {
        "load_state": lambda: tree.load_state(_other().state()),
        "load": lambda: pp.load(tree, file),
        "transfer": lambda: pp.transfer(_other(), tree),
        "initialize": lambda: tree.initialize(pp.init.Constant(2.0), force_reinit=True),
    }
    with pytest.raises(errors.WriteFailedError) as info:
        run[operation]()
    assert info.value.path == "b" and "read-only" in str(info.value)
    for key, value in before.items():
        np.testing.assert_array_equal(model[key], value)


def test_set_on_a_read_only_array_is_typed() -> None:
    model, tree = _model()
    with pytest.raises(errors.WriteFailedError, match="read-only"):
        tree["b"].set(np.zeros(6, np.float32))
    np.testing.assert_array_equal(model["b"], np.arange(6, dtype=np.float32) - 3)
