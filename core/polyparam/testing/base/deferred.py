"""Deferred parameters: unknown dimensions, reads that teach, initializers that run at the first forward."""

from __future__ import annotations

import numpy as np
import pytest

import polyparam as pp
from polyparam import errors
from polyparam.backend import Case, ModelFactory
from polyparam.testing.base.kit import _inputs, _Kit, reference_values

__all__ = ["BaseDeferredTests"]


class BaseDeferredTests(_Kit):
    """Parameters whose shape is known only at the first forward (capability ``"deferred"``)."""

    def test_unknown_dimensions_show_as_none(self, lazy: tuple[Case, pp.ParameterTree]) -> None:
        case, tree = lazy
        weight = tree[f"{case.layers[0]}.weight"]
        assert weight.shape[0] == 256 and weight.shape[1] is None
        assert weight.state == "deferred"
        assert weight.size is None and weight.nbytes is None
        for _, p in tree.items():   # a deferred bias may know its shape already
            size = p.size
            assert p.nbytes == (None if size is None else size * p.dtype.itemsize), p.path
        assert "?" in str(tree)

    def test_reading_a_deferred_parameter_teaches(self, lazy: tuple[Case, pp.ParameterTree]) -> None:
        case, tree = lazy
        path = f"{case.layers[0]}.weight"
        with pytest.raises(errors.DeferredInitializationError) as info:
            tree[path].numpy()
        assert info.value.path == path and "forward" in str(info.value)

    def test_initializer_runs_at_first_forward_only(self, models: ModelFactory,
                                                    lazy: tuple[Case, pp.ParameterTree]) -> None:
        """initialize() is recorded; the first forward runs it once per weight; the second does not."""
        case, tree = lazy
        calls = []

        class PrintInit(pp.init.Initializer):
            def init_weight(self, name: str, arr: np.ndarray) -> None:
                calls.append((self.param.path, arr.shape))  # type: ignore[union-attr]  # set while filling
                arr[...] = 0.5

        report = tree.initialize(PrintInit())
        assert calls == []
        assert f"{case.layers[0]}.weight" in report.deferred
        x = _inputs(case)
        models.forward(case.model, x)
        assert calls == [(f"{case.layers[0]}.weight", (256, 20)), (f"{case.layers[1]}.weight", (10, 256))]
        np.testing.assert_array_equal(tree[f"{case.layers[0]}.weight"].numpy(), 0.5)
        np.testing.assert_array_equal(tree[f"{case.layers[0]}.bias"].numpy(), 0)
        models.forward(case.model, x)
        assert len(calls) == 2

    def test_deferred_seeded_values_equal_eager_ones(self, models: ModelFactory,
                                                     lazy: tuple[Case, pp.ParameterTree]) -> None:
        """Values drawn at the first forward equal the reference (eager) draw for the same seed."""
        case, tree = lazy
        init = pp.init.Xavier()
        tree.initialize(init, seed=11)
        models.forward(case.model, _inputs(case))
        for p in tree.select("*.weight"):
            np.testing.assert_array_equal(p.numpy(), reference_values(p, init, 11), err_msg=p.path)

    def test_load_state_into_deferred_parameters(self, models: ModelFactory,
                                                 lazy: tuple[Case, pp.ParameterTree]) -> None:
        """Values for deferred parameters: taken (and the shape becomes known) where the backend can, else
        refused with DeferredInitializationError before any write."""
        case, tree = lazy
        shapes = {f"{case.layers[0]}.weight": (256, 20), f"{case.layers[0]}.bias": (256,),
                  f"{case.layers[1]}.weight": (10, 256), f"{case.layers[1]}.bias": (10,)}
        rng = np.random.default_rng(3)
        state = {path: rng.standard_normal(shape).astype(np.float32) for path, shape in shapes.items()}
        accepts = [tree[path]._accepts_deferred_value() for path in shapes]
        if all(accepts):
            tree.load_state(state)
            for path, value in state.items():
                np.testing.assert_array_equal(tree[path].numpy(), value)
            return
        before = {path: tree[path].state for path in shapes}
        with pytest.raises(errors.DeferredInitializationError):
            tree.load_state(state)
        assert {path: tree[path].state for path in shapes} == before
