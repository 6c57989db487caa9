"""Ties: detection, writes through every member, summed gradients, tie and untie after construction."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

import polyparam as pp
from polyparam import errors
from polyparam.backend import Case, ModelFactory
from polyparam.testing.base.kit import _inputs, _Kit, assert_unchanged, snapshot

__all__ = ["BaseTieTests"]


class BaseTieTests(_Kit):
    """Parameters shared between layers (capability ``"tying"``)."""

    @staticmethod
    def _groups(tree: pp.ParameterTree) -> set[frozenset[str]]:
        return {frozenset(group.paths) for group in tree.ties()}

    def test_ties_are_detected(self, shared: tuple[Case, pp.ParameterTree]) -> None:
        case, tree = shared
        a, b = case.tied[0]
        assert self._groups(tree) == {frozenset({f"{a}.weight", f"{b}.weight"}), frozenset({f"{a}.bias", f"{b}.bias"})}
        assert tree[f"{a}.weight"].is_tied_to(tree[f"{b}.weight"])
        paths = tree.paths()
        assert f"{a}.weight" in paths and f"{b}.weight" not in paths
        assert len(paths) == 2 * len(case.layers) - 2
        assert f"{b}.weight" in str(tree)

    def test_writes_are_visible_through_every_member(self, shared: tuple[Case, pp.ParameterTree]) -> None:
        case, tree = shared
        a, b = case.tied[0]
        tree[f"{a}.weight"][0, 0] = 100
        assert tree[f"{b}.weight"].numpy()[0, 0] == 100
        tree[f"{b}.bias"].set(np.full(8, 7, np.float32))
        np.testing.assert_array_equal(tree[f"{a}.bias"].numpy(), 7)

    def test_gradients_of_a_tied_group_are_summed(self, models: ModelFactory, shared: tuple[Case, pp.ParameterTree],
                                                  require: Callable[[str], None]) -> None:
        """The tied gradient equals the sum of the members' gradients once untied."""
        require("gradients")
        case, tree = shared
        a, b = case.tied[0]
        # seeded values, the same on every backend: the framework's own draw depends on whatever ran before,
        # and some draws leave every ReLU after the tied layer dead (all-zero gradients)
        tree.initialize(pp.init.Mixed([("*.bias", pp.init.Constant(0.1))], default=pp.init.Xavier()), seed=0,
                        force_reinit=True)
        x = _inputs(case, batch=4)
        models.backward(case.model, x)
        tied = np.array(tree[f"{a}.weight"].grad(), copy=True)
        for group in tree.ties():
            group.untie()
        assert tree.ties() == []
        models.backward(case.model, x)
        g1, g2 = tree[f"{a}.weight"].grad(), tree[f"{b}.weight"].grad()
        assert not np.allclose(g1, 0) and not np.allclose(g2, 0)
        np.testing.assert_allclose(tied, g1 + g2, rtol=1e-4, atol=1e-6)

    def test_untie_then_tie_after_construction(self, models: ModelFactory,
                                               shared: tuple[Case, pp.ParameterTree]) -> None:
        """untie() gives members their own copies; pp.tie() ties blocks again, on every backend."""
        case, tree = shared
        a, b = case.tied[0]
        for group in tree.ties():
            group.untie()
        tree[f"{a}.weight"][0, 0] = 1.5
        assert tree[f"{b}.weight"].numpy()[0, 0] != 1.5
        tree[b].initialize(pp.init.Constant(3), force_reinit=True)
        groups = pp.tie(tree[a], tree[b])
        assert {frozenset(g.paths) for g in groups} == self._groups(tree)
        assert self._groups(tree) == {frozenset({f"{a}.weight", f"{b}.weight"}), frozenset({f"{a}.bias", f"{b}.bias"})}
        assert tree[f"{b}.weight"].numpy()[0, 0] == 1.5  # members take the first argument's value
        tree[f"{b}.weight"][1, 1] = -4
        assert tree[f"{a}.weight"].numpy()[1, 1] == -4
        out = models.forward(case.model, _inputs(case))
        assert np.isfinite(out).all()

    def test_tying_parameters_of_different_shapes_is_refused(self, shared: tuple[Case, pp.ParameterTree]) -> None:
        case, tree = shared
        before = self._groups(tree)
        first, last = case.layers[0], case.layers[-1]
        with pytest.raises(errors.TieError) as info:
            pp.tie(tree[f"{first}.weight"], tree[f"{last}.weight"])
        assert info.value.path == f"{last}.weight"
        with pytest.raises(errors.TieError):
            pp.tie(tree[first], tree[last])
        with pytest.raises(errors.TieError):
            pp.tie(tree[f"{first}.weight"])
        assert self._groups(tree) == before

    def test_a_tied_group_is_initialized_once(self, shared: tuple[Case, pp.ParameterTree]) -> None:
        case, tree = shared
        a, b = case.tied[0]
        report = tree.initialize(pp.init.Uniform(), seed=3, force_reinit=True)
        assert f"{a}.weight" in report.initialized and f"{b}.weight" not in report.initialized
        np.testing.assert_array_equal(tree[f"{a}.weight"].numpy(), tree[f"{b}.weight"].numpy())

    def test_load_state_restores_tied_values(self, shared: tuple[Case, pp.ParameterTree]) -> None:
        """A tie group takes one value from a state; conflicting values are refused."""
        case, tree = shared
        a, b = case.tied[0]
        state = tree.state(copy=True)
        state[f"{a}.weight"] = state[f"{a}.weight"] + 1
        tree.load_state(state)
        np.testing.assert_array_equal(tree[f"{b}.weight"].numpy(), state[f"{a}.weight"])
        before = snapshot(tree)
        state[f"{b}.weight"] = state[f"{a}.weight"] + 1
        with pytest.raises(errors.StateError):
            tree.load_state(state)
        assert_unchanged(before, tree)
