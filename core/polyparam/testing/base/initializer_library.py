"""The initializer library: canonical layouts and fans per layer kind, distributions,
conventional values by role, Mixed and Load."""

from __future__ import annotations

import warnings
from typing import Any, Callable, cast

import numpy as np
import pytest

import polyparam as pp
from polyparam.backend import LAYER_SPECS, ModelFactory
from polyparam.testing.base.kit import _Kit, info_of, reference_values

__all__ = ["BaseInitializerLibraryTests"]


def _distributions() -> list[tuple[str, pp.Initializer, Callable[[int, int], Any]]]:
    """(id, initializer, target distribution from (fan_in, fan_out)) for the dense layer."""
    from scipy import stats

    def uniform(bound: float) -> Any:
        return stats.uniform(-bound, 2 * bound)

    return [
        ("xavier-uniform", pp.init.Xavier(), lambda i, o: uniform(np.sqrt(6 / (i + o)))),
        ("xavier-gaussian", pp.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2),
         lambda i, o: stats.norm(0, np.sqrt(2 / i))),
        ("he-uniform", pp.init.He(nonlinearity="relu"), lambda i, o: uniform(np.sqrt(6 / i))),
        ("he-normal-fan-out", pp.init.He(mode="fan_out", nonlinearity="relu", distribution="normal"),
         lambda i, o: stats.norm(0, np.sqrt(2 / o))),
        ("lecun-normal", pp.init.LeCun(), lambda i, o: stats.truncnorm(-2, 2, 0, np.sqrt(1 / i) / 0.87962566103423978)),
        ("truncated-normal", pp.init.TruncatedNormal(sigma=0.02), lambda i, o: stats.truncnorm(-2, 2, 0, 0.02)),
        ("normal", pp.init.Normal(sigma=0.5, mean=1.0), lambda i, o: stats.norm(1.0, 0.5)),
        ("uniform", pp.init.Uniform(0.3), lambda i, o: uniform(0.3)),
        ("msraprelu", pp.init.MSRAPrelu(), lambda i, o: stats.norm(0, np.sqrt(2 / 1.0625 / ((i + o) / 2)))),
        ("variance-scaling-avg-uniform", pp.init.VarianceScaling(2.0, "fan_avg", "uniform"),
         lambda i, o: uniform(np.sqrt(3 * 2.0 / ((i + o) / 2)))),
    ]


DISTRIBUTION_IDS = ["xavier-uniform", "xavier-gaussian", "he-uniform", "he-normal-fan-out", "lecun-normal",
                    "truncated-normal", "normal", "uniform", "msraprelu", "variance-scaling-avg-uniform"]


class BaseInitializerLibraryTests(_Kit):
    """Every built-in initializer on every layer kind of `polyparam.backend.LAYER_SPECS`."""

    @pytest.mark.parametrize("kind", sorted(LAYER_SPECS))
    def test_layer_layout_and_fans(self, models: ModelFactory, kind: str) -> None:
        """Canonical shape, axis roles, groups, and the textbook fans for every layer kind."""
        spec = LAYER_SPECS[kind]
        p = pp.tree(models.layer(kind))["weight"]
        where = f"{kind} ({spec.description}): parameter 'weight'"
        assert p.shape == spec.shape, (f"{where}: expected canonical shape {spec.shape} (PyTorch layout), got "
                                       f"{p.shape}. Convert the framework's layout in the adapter's "
                                       "_shape/_read/_write.")
        assert p.axes == spec.axes, (f"{where}: expected axis roles {spec.axes}, got {p.axes}. Pass axes= to the "
                                     "Parameter constructor (initializers compute fans from them).")
        assert p.groups == spec.groups, (f"{where}: expected groups={spec.groups}, got {p.groups}. Pass groups= to "
                                         "the Parameter constructor for grouped convolution kernels.")
        info = info_of(p)
        assert (info.fan_in, info.fan_out) == spec.fans, (f"{where}: expected (fan_in, fan_out) {spec.fans}, got "
                                                          f"{(info.fan_in, info.fan_out)}. Check axes and groups.")

    @pytest.mark.parametrize("kind", sorted(LAYER_SPECS))
    def test_seeded_he_is_the_reference_draw_for_every_kind(self, models: ModelFactory, kind: str) -> None:
        """Layouts are converted exactly: the seeded draw is the reference on every layer kind."""
        tree = pp.tree(models.layer(kind))
        init = pp.init.He(nonlinearity="relu")
        tree.initialize(init, seed=99, force_reinit=True)
        p = tree["weight"]
        np.testing.assert_array_equal(p.numpy(), reference_values(p, init, 99))

    @pytest.mark.parametrize("index", range(len(DISTRIBUTION_IDS)), ids=DISTRIBUTION_IDS)
    def test_distribution(self, models: ModelFactory, index: int) -> None:
        """Kolmogorov-Smirnov p > 1e-4 against the target, std within 5%, on 120,000 weights."""
        stats = pytest.importorskip("scipy.stats")
        name, init, target = _distributions()[index]
        assert name == DISTRIBUTION_IDS[index]
        tree = pp.tree(models.layer("dense"))
        tree.initialize(init, seed=2024, force_reinit=True)
        w = tree["weight"].numpy().astype(np.float64).ravel()
        dist = target(300, 400)
        assert stats.kstest(w, dist.cdf).pvalue > 1e-4, name
        assert abs(w.std() / dist.std() - 1) < 0.05, name

    def test_batchnorm_gets_conventional_values(self, models: ModelFactory) -> None:
        """Scale 1, shift 0, running mean 0, running variance 1, whatever the initializer."""
        tree = pp.tree(models.layer("batchnorm"))
        # a framework's own bookkeeping buffers (torch's step counter num_batches_tracked) aside
        own = {path: p for path, p in tree.items() if not (p.kind == "buffer" and p.role == "other")}
        assert {p.role for p in own.values()} == {"scale", "shift", "running_mean", "running_var"}
        shapes = {path: p.shape for path, p in own.items()}
        assert set(shapes.values()) == {(8,)}, (f"batchnorm over 8 features: expected every parameter of shape (8,), "
                                                f"got {shapes}. Give vectors their canonical 1-D shape.")
        for p in own.values():
            p.set(np.full(cast("tuple[int, ...]", p.shape), 7, p.dtype))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pp.errors.PolyparamWarning)   # "left N buffers of unknown role"
            tree.initialize(pp.init.Xavier(), force_reinit=True)
        expected = {"weight": 1, "bias": 0, "running_mean": 0, "running_var": 1}
        for path, value in expected.items():
            np.testing.assert_array_equal(tree[path].numpy(), value, err_msg=path)

    def test_mixed_rules(self, models: ModelFactory) -> None:
        """Mixed: first matching rule wins; a rule that matches nothing warns with its name."""
        case = models.mlp()
        tree = pp.tree(case.model)
        init = pp.init.Mixed([("*.bias", pp.init.Constant(0.5)), (f"{case.layers[-1]}.*", pp.init.Zero()),
                              ("role:weight", pp.init.Xavier()), ("no.such.*", pp.init.One())])
        with pytest.warns(pp.errors.PolyparamWarning, match="no.such"):
            tree.initialize(init, seed=8, force_reinit=True)
        for p in tree.select("*.bias"):
            np.testing.assert_array_equal(p.numpy(), 0.5)
        np.testing.assert_array_equal(tree[f"{case.layers[-1]}.weight"].numpy(), 0)
        first = tree[f"{case.layers[0]}.weight"]
        np.testing.assert_array_equal(first.numpy(), reference_values(first, pp.init.Xavier(), 8))

    def test_load_initializer(self, models: ModelFactory) -> None:
        """Load takes values by canonical path; missing ones need a default."""
        source_case, target_case = models.mlp(), models.mlp()
        source, target = pp.tree(source_case.model), pp.tree(target_case.model)
        source.initialize(pp.init.Normal(1.0), seed=1, force_reinit=True)
        state = source.state(copy=True)
        target.initialize(pp.init.Load(state), force_reinit=True)
        for path, value in state.items():
            np.testing.assert_array_equal(target[path].numpy(), value)
        partial = {k: v for k, v in state.items() if k.endswith("weight")}
        before = {path: np.array(p.numpy(), copy=True) for path, p in target.items()}
        with pytest.raises(pp.errors.InitializerError):
            target.initialize(pp.init.Load(partial), force_reinit=True)
        for path, p in target.items():
            np.testing.assert_array_equal(p.numpy(), before[path])
        target.initialize(pp.init.Load(partial, default=pp.init.Constant(3)), force_reinit=True)
        for p in target.select("*.bias"):
            np.testing.assert_array_equal(p.numpy(), 0)
