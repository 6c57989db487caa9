"""The NumPy reference backend beyond the kit: its module system and dicts of arrays."""

from __future__ import annotations

import numpy as np
import pytest

import polyparam as pp
from polyparam import errors
from polyparam import numpy as pnp


def numeric_grad(f, x: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    g = np.zeros_like(x, dtype=np.float64)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f()
        x[i] = old - eps
        down = f()
        x[i] = old
        g[i] = (up - down) / (2 * eps)
    return g


def test_backward_matches_finite_differences() -> None:
    """The module system's gradients are real: they match central differences."""
    net = pnp.Sequential(pnp.Dense(5, activation="tanh", in_units=3), pnp.Dense(2, activation="sigmoid"), pnp.Dense(1))
    tree = pp.tree(net)
    tree.initialize(pp.init.Normal(0.5), seed=0)
    for p in tree.select("*.bias"):
        p.set(np.random.default_rng(1).normal(size=p.shape))
    x = np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32)
    net(x)
    net.backward()
    for path, p in tree.items():
        data = p.native.data
        expected = numeric_grad(lambda: float(net(x).astype(np.float64).sum()), data)
        np.testing.assert_allclose(p.grad(), expected, rtol=2e-2, atol=2e-3, err_msg=path)


def test_custom_block_registers_attributes() -> None:
    """Blocks assigned as attributes become children named after the attribute."""

    class MLP(pnp.Block):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = pnp.Dense(6, activation="relu", in_units=4)
            self.out = pnp.Dense(2, in_units=6)

        def forward(self, x, tape):
            return self.out.forward(self.hidden.forward(x, tape), tape)

    net = MLP()
    tree = pp.tree(net)
    assert tree.paths() == ["hidden.weight", "hidden.bias", "out.weight", "out.bias"]
    assert tree[0].path == "hidden" and tree["out"]["weight"].shape == (2, 6)
    tree.initialize(seed=0)
    assert net(np.ones((1, 4))).shape == (1, 2)


def test_forward_before_initialize_teaches() -> None:
    net = pnp.Sequential(pnp.Dense(2, in_units=3))
    with pytest.raises(errors.UninitializedParameterError) as info:
        net(np.ones((1, 3)))
    assert "initialize" in str(info.value)
    with pytest.raises(errors.UninitializedParameterError) as info:
        pp.tree(net)["0.weight"].numpy()
    assert info.value.path == "0.weight"


def test_load_state_materializes_deferred_parameters() -> None:
    """A deferred parameter takes a state value whose shape fits its known dimensions."""
    net = pnp.Sequential(pnp.Dense(3))
    tree = pp.tree(net)
    tree.load_state({"0.weight": np.ones((3, 5)), "0.bias": np.zeros(3)})
    assert tree["0.weight"].shape == (3, 5) and tree["0.weight"].state == "initialized"
    np.testing.assert_array_equal(net(np.ones((1, 5))), [[5, 5, 5]])
    other = pp.tree(pnp.Sequential(pnp.Dense(3)))
    with pytest.raises(errors.ShapeMismatchError):
        other.load_state({"0.weight": np.ones((4, 5)), "0.bias": np.zeros(3)})
    assert other["0.weight"].state == "deferred"


def test_shape_error_message_follows_the_house_sentence() -> None:
    tree = pp.tree(pnp.Sequential(pnp.Dense(8, in_units=4)))
    tree.initialize()
    with pytest.raises(errors.ShapeMismatchError) as info:
        tree["0.weight"].set(np.zeros((4, 8)))
    assert str(info.value).startswith("Cannot set parameter '0.weight': expected shape (8, 4), got (4, 8). ")
    assert str(info.value).endswith(".")


# ---- nested dicts of arrays ---------------------------------------------------------


def make_state() -> dict:
    rng = np.random.default_rng(0)
    return {
        "encoder": {"weight": rng.normal(size=(3, 4)).astype(np.float32), "bias": np.zeros(3, np.float32)},
        "norm": {"weight": np.ones(3, np.float32), "running_mean": np.zeros(3, np.float32)},
        "decoder": {"weight": rng.normal(size=(4, 3)).astype(np.float32)},
    }


def test_dict_paths_roles_and_in_place_writes() -> None:
    model = make_state()
    tree = pp.tree(model)
    assert tree.backend == "numpy"
    assert tree.paths() == ["encoder.weight", "encoder.bias", "norm.weight", "norm.running_mean", "decoder.weight"]
    assert [p.role for p in tree.parameters()] == ["weight", "bias", "scale", "running_mean", "weight"]
    tree["encoder.bias"].set([1, 2, 3])
    np.testing.assert_array_equal(model["encoder"]["bias"], [1, 2, 3])
    tree.initialize(pp.init.Constant(7), force_reinit=True)
    np.testing.assert_array_equal(model["norm"]["weight"], 1)       # scale: conventional 1
    np.testing.assert_array_equal(model["encoder"]["bias"], 0)
    np.testing.assert_array_equal(model["decoder"]["weight"], 7)
    assert tree["decoder.weight"].grad() is None


def test_dict_ties_by_identity_and_after_construction() -> None:
    model = make_state()
    model["tied_decoder"] = {"weight": model["encoder"]["weight"]}
    tree = pp.tree(model)
    assert tree.ties() == [["encoder.weight", "tied_decoder.weight"]]
    model.pop("tied_decoder")
    with pytest.raises(errors.TieError):
        pp.tie(tree["encoder.weight"], tree["decoder.weight"])   # (3, 4) vs (4, 3)
    model["decoder"]["weight"] = np.zeros((3, 4), np.float32)
    (group,) = pp.tie(tree["encoder.weight"], tree["decoder.weight"])
    assert model["decoder"]["weight"] is model["encoder"]["weight"]
    group.untie()
    assert model["decoder"]["weight"] is not model["encoder"]["weight"]
    np.testing.assert_array_equal(model["decoder"]["weight"], model["encoder"]["weight"])


def test_dict_with_a_non_array_leaf_is_refused() -> None:
    with pytest.raises(errors.UnsupportedModelError) as info:
        pp.tree({"layer": {"weight": [[1.0, 2.0]]}})
    assert info.value.path == "layer.weight"


def test_two_dict_entries_with_one_path_are_refused_before_a_save_drops_one(tmp_path) -> None:
    """``{"a.b": x, "a": {"b": y}}`` gives two arrays the path ``a.b``: a save would keep one, a load write both."""
    model = {"a.b": np.zeros(2, np.float32), "a": {"b": np.ones(2, np.float32)}, "c": np.ones(1, np.float32)}
    with pytest.raises(errors.AmbiguousNameError, match="'a.b': key 'a.b' at the top and key 'b' under 'a'"):
        pp.save(model, tmp_path / "m.safetensors")
    assert not list(tmp_path.iterdir())
    with pytest.raises(errors.AmbiguousNameError):
        pp.tree(model).load_state({"a.b": np.full(2, 7, np.float32), "c": np.zeros(1, np.float32)})
    assert (model["a.b"] == 0).all() and (model["a"]["b"] == 1).all() and model["c"][0] == 1
    with pytest.raises(errors.AmbiguousNameError, match="key 0 at the top and key '0' at the top"):
        pp.tree({0: np.zeros(1), "0": np.ones(1)}).items()
    flat = {"0.weight": np.ones((2, 2), np.float32), "0.bias": np.zeros(2, np.float32)}   # dotted keys alone: paths
    assert pp.tree(flat).paths() == ["0.weight", "0.bias"]


def test_zoo_dense_is_a_real_layer_and_other_kinds_hold_a_bias() -> None:
    """layer("dense") is a Dense whose forward runs; the other kinds hold the LAYER_SPECS weight and a bias."""
    from polyparam.backend import LAYER_INPUTS, LAYER_SPECS

    models = pp.get_backend("numpy").models()
    assert models.forward_kinds() == {"dense"}
    dense = models.layer("dense")
    assert isinstance(dense, pnp.Dense)
    tree = pp.tree(dense)
    assert sorted(tree.paths()) == ["bias", "weight"]
    assert tree["weight"].shape == LAYER_SPECS["dense"].shape
    x = np.random.default_rng(0).normal(size=LAYER_INPUTS["dense"]).astype(np.float32)
    expected = x @ tree["weight"].numpy().T + tree["bias"].numpy()
    np.testing.assert_allclose(models.forward_layer(dense, "dense", x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(errors.InvalidArgumentError):
        models.forward_layer(models.layer("conv2d"), "conv2d", np.zeros(LAYER_INPUTS["conv2d"], np.float32))
    bias_sizes = {"conv1d": 8, "conv2d": 16, "conv3d": 4, "conv_transpose2d": 4, "grouped_conv2d": 16,
                  "depthwise_conv2d": 16}
    for kind, size in bias_sizes.items():
        layer = pp.tree(models.layer(kind))
        assert layer["weight"].shape == LAYER_SPECS[kind].shape, kind
        assert layer["bias"].shape == (size,), kind
    assert [path for path, _ in pp.tree(models.layer("embedding")).items()] == ["weight"]
