"""Training-loop operations: freezing, counts, gradient norms, clipping, casts, flat vectors, averages."""

from __future__ import annotations

import math
from typing import Any, Callable, cast

import numpy as np
import pytest

import polyparam as pp
from polyparam import errors
from polyparam.backend import Case, ModelFactory
from polyparam.testing.base.kit import _Kit, assert_unchanged, snapshot

__all__ = ["BaseTrainingTests"]


def _x(case: Case, n: int = 3) -> np.ndarray:
    return np.random.default_rng(5).uniform(-1, 1, (n, case.in_features)).astype(np.float32)


class BaseTrainingTests(_Kit):
    """freeze/unfreeze, count, grad_norm/clip_grads/zero_grads, cast, vector/load_vector, pp.average."""

    def test_training_freeze_holds_through_the_frameworks_own_step(self, models: ModelFactory,
                                                                   require: Callable[[str], None]) -> None:
        """Freeze the first layer; one step of the framework's SGD leaves it bitwise and moves the rest."""
        require("training")
        case = models.mlp()
        tree = pp.tree(case.model)
        first = tree.select(f"{case.layers[0]}.*")
        first.freeze()
        assert all(not p.trainable for p in first)
        before = snapshot(tree)
        models.sgd_step(case.model, _x(case))
        after = snapshot(tree)
        for path in before:
            moved = not np.array_equal(before[path], after[path])
            frozen = path.startswith(f"{case.layers[0]}.")
            assert moved != frozen, f"{path}: frozen={frozen} but moved={moved} after one SGD step"
        first.unfreeze()
        assert all(p.trainable for p in first)

    def test_training_count_splits_trainable_and_frozen(self, mlp: tuple[Case, pp.ParameterTree],
                                                        require: Callable[[str], None]) -> None:
        require("training")
        case, tree = mlp
        sizes = {path: p.size or 0 for path, p in tree.items()}
        assert tree.count() == sum(sizes.values())
        tree[f"{case.layers[0]}.weight"].trainable = False
        frozen = sizes[f"{case.layers[0]}.weight"]
        assert tree.count(trainable=False) == frozen
        assert tree.count(trainable=True) == tree.count() - frozen
        assert f"({tree.count() - frozen:,} trainable, {frozen:,} non-trainable)" in str(tree)

    def test_training_tied_parameters_freeze_together(self, shared: tuple[Case, pp.ParameterTree],
                                                      require: Callable[[str], None]) -> None:
        require("training")
        case, tree = shared
        a, b = case.tied[0]
        tree[f"{a}.weight"].trainable = False
        assert not tree[f"{b}.weight"].trainable
        tree.select(f"{b}.*").unfreeze()
        assert tree[f"{a}.weight"].trainable

    def test_training_trainable_accepts_only_bools(self, mlp: tuple[Case, pp.ParameterTree],
                                                   require: Callable[[str], None]) -> None:
        require("training")
        case, tree = mlp
        with pytest.raises(errors.InvalidArgumentError, match="expected True or False"):
            tree[f"{case.layers[0]}.weight"].trainable = cast(bool, "no")

    def test_training_grad_norm_clip_and_zero(self, models: ModelFactory, require: Callable[[str], None]) -> None:
        require("training")
        require("gradients")
        case = models.mlp()
        tree = pp.tree(case.model)
        models.backward(case.model, _x(case))
        grads = [g for g in (p.grad() for p in tree.parameters()) if g is not None]
        expected = math.sqrt(sum(float(np.sum(np.asarray(g, np.float64) ** 2)) for g in grads))
        assert tree.grad_norm() == pytest.approx(expected, rel=1e-6)
        assert tree.clip_grads(expected / 2) == pytest.approx(expected, rel=1e-6)
        assert tree.grad_norm() == pytest.approx(expected / 2, rel=1e-4)
        assert tree.clip_grads(expected) == pytest.approx(expected / 2, rel=1e-4)   # under the limit: unchanged
        tree.zero_grads()
        assert tree.grad_norm() == 0.0
        assert all(not np.any(g) for g in (p.grad() for p in tree.parameters()) if g is not None)

    def test_training_clip_grads_of_a_nan_norm_spreads_it_as_torch(self, models: ModelFactory,
                                                                    require: Callable[[str], None]) -> None:
        """torch's ``clip_grad_norm_``: a NaN norm makes every gradient NaN (the step shows it), an infinite one
        scales every gradient by 0 (the infinite element becomes NaN); neither is left unclipped."""
        require("training")
        require("gradients")
        for bad, norm_type, where in ((math.nan, 2.0, 0), (math.inf, 2.0, 0), (math.nan, math.inf, -1)):
            case = models.mlp()
            tree = pp.tree(case.model)
            models.backward(case.model, _x(case))
            chosen = [p for p in tree.parameters() if p.grad() is not None][where]   # NaN last: max() keeps 5.0
            g = np.array(chosen.grad(), copy=True)
            g[(0,) * g.ndim] = bad
            chosen._write_grad(g)
            assert math.isnan(tree.grad_norm(norm_type)) == math.isnan(bad)
            norm = tree.clip_grads(1.0, norm_type)
            grads = [np.asarray(q.grad(), np.float64) for q in tree.parameters() if q.grad() is not None]
            if math.isnan(bad):
                assert math.isnan(norm) and all(np.isnan(q).all() for q in grads)
            else:
                assert norm == math.inf
                assert all(not np.any(q[np.isfinite(q)]) for q in grads) and np.isnan(grads[0][(0,) * grads[0].ndim])

    def test_training_param_groups_hold_every_trainable_parameter_once(self, mlp: tuple[Case, pp.ParameterTree]
                                                                       ) -> None:
        """pp.param_groups gives the framework's optimizer form (through ParameterTree._param_groups), warns on a
        rule that matches nothing, and refuses a malformed rule."""
        case, tree = mlp
        groups = pp.param_groups(tree, [("role:bias", {"weight_decay": 0.0})])   # what every framework can express
        assert groups is not None and len(groups) > 0
        with pytest.warns(errors.PolyparamWarning, match="matched no trainable parameter"):
            pp.param_groups(tree, [("no.such.*", {"weight_decay": 0.0})])
        with pytest.raises(errors.InvalidArgumentError, match="rule, options"):
            pp.param_groups(tree, [("role:bias",)])  # type: ignore[list-item]

    def test_training_vector_round_trip(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        _, tree = mlp
        v = tree.vector()
        assert v.ndim == 1 and v.size == tree.count()
        tree.load_vector(np.ones_like(v))
        assert np.all(tree.vector() == 1)
        tree.load_vector(v)
        np.testing.assert_array_equal(tree.vector(), v)
        before = snapshot(tree)
        with pytest.raises(errors.ShapeMismatchError, match="tree.count"):
            tree.load_vector(v[:-1])
        assert_unchanged(before, tree)

    def test_training_average_ema_and_mean(self, models: ModelFactory) -> None:
        cases = [models.mlp() for _ in range(4)]
        trees = [pp.tree(c.model) for c in cases]
        for i, t in enumerate(trees):
            t.initialize(pp.init.Normal(1.0), seed=i, force_reinit=True)
        dst, a, b, c = trees
        start = dst.vector().astype(np.float64)
        pp.average(dst, a, decay=1.0)
        np.testing.assert_array_equal(dst.vector(), start.astype(dst.vector().dtype))
        pp.average(dst, a, decay=0.0)
        np.testing.assert_array_equal(dst.vector(), a.vector())
        pp.average(dst, a, decay=0.25)
        np.testing.assert_allclose(dst.vector(), 0.25 * a.vector() + 0.75 * a.vector(), rtol=1e-6)
        pp.average(dst, a, b, c)
        mean = (a.vector().astype(np.float64) + b.vector() + c.vector()) / 3
        np.testing.assert_allclose(dst.vector(), mean, rtol=1e-6, atol=1e-7)
        with pytest.raises(errors.InvalidArgumentError, match="one source"):
            pp.average(dst, a, b, decay=0.5)

    def test_training_cast_round_trip_keeps_values_and_ties(self, models: ModelFactory, backend: Any) -> None:
        """``tree.cast`` in place (capability ``casting``), or a typed refusal that changes nothing."""
        case = models.shared() if "tying" in backend.CAPABILITIES else models.mlp()
        tree = pp.tree(case.model)
        before = snapshot(tree)
        if "casting" not in backend.CAPABILITIES:
            with pytest.raises(errors.PolyparamError, match="float64"):
                tree.cast("float64")
            assert_unchanged(before, tree)
            assert {p.dtype.name for p in tree.parameters()} == {"float32"}
            return
        ties = [sorted(g.paths) for g in tree.ties()]
        tree.cast("float64")
        assert {p.dtype.name for p in tree.parameters()} == {"float64"}
        for path, value in before.items():
            np.testing.assert_array_equal(tree[path].numpy(), value.astype(np.float64))
        assert [sorted(g.paths) for g in tree.ties()] == ties
        y = models.forward(case.model, _x(case).astype(np.float64))
        assert np.all(np.isfinite(y))
        tree.cast(np.float32)
        after = snapshot(tree)
        assert all(after[k].dtype == np.float32 and np.array_equal(after[k], v) for k, v in before.items())
