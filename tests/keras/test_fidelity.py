"""The tree says what Keras says: ``trainable`` as Keras counts it (frozen layers and models,
non-trainable variables), roles and axis roles from the layer's type for layers beyond
Dense and Conv (MultiHeadAttention/EinsumDense, LSTM/GRU, Normalization) or declared with
``pp.roles``, and every variable of LoRA and int8-quantized layers."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

keras = pytest.importorskip("keras")
import polyparam as pp  # noqa: E402 - after the importorskip
from polyparam import errors  # noqa: E402

L = keras.layers


def _keras_trainable(model: Any) -> int:
    return sum(v.numpy().size for v in model.trainable_weights)


def _tree_trainable(tree: pp.ParameterTree) -> int:
    return sum(p.size or 0 for p in tree.parameters() if p.trainable)


def _assert_trainable_like_keras(model: Any) -> None:
    tree = pp.tree(model)
    assert _tree_trainable(tree) == _keras_trainable(model)
    keras_ids = {id(v) for v in model.trainable_weights}
    for path, p in tree.items():
        assert p.trainable == (id(p.native) in keras_ids), path


# ---- B3: trainable ---------------------------------------------------------------------


def test_frozen_first_dense_is_not_trainable_and_reads_live() -> None:
    model = keras.Sequential([keras.Input((4,)), L.Dense(3), L.Dense(2)])
    model.layers[0].trainable = False
    tree = pp.tree(model)
    assert {path: p.trainable for path, p in tree.items()} == {
        "0.weight": False, "0.bias": False, "1.weight": True, "1.bias": True}
    _assert_trainable_like_keras(model)
    weight = tree["0.weight"]
    model.layers[0].trainable = True
    assert weight.trainable
    _assert_trainable_like_keras(model)


def test_trainable_is_set_as_keras_sets_it() -> None:
    model = keras.Sequential([keras.Input((4,)), L.Dense(3)])
    tree = pp.tree(model)
    tree["0.weight"].trainable = False
    assert not model.layers[0].kernel.trainable and len(model.trainable_weights) == 1
    model.layers[0].trainable = False
    with pytest.raises(pp.errors.UsageError, match="frozen"):
        tree["0.weight"].trainable = True
    assert not model.layers[0].kernel.trainable


def test_normalization_statistics_are_not_trainable() -> None:
    model = keras.Sequential([keras.Input((3,)), L.Normalization(), L.Dense(2)])
    model.layers[0].adapt(np.random.default_rng(0).normal(5, 2, (64, 3)).astype(np.float32))
    tree = pp.tree(model)
    assert [p.trainable for p in tree["0"].parameters()] == [False, False, False]
    _assert_trainable_like_keras(model)


def test_batch_normalization_trainable_like_keras() -> None:
    model = keras.Sequential([keras.Input((5,)), L.Dense(4), L.BatchNormalization(), L.Dense(2)])
    _assert_trainable_like_keras(model)
    model.layers[1].trainable = False     # the usual fine-tuning freeze
    tree = pp.tree(model)
    assert not tree["1.weight"].trainable and not tree["1.bias"].trainable
    _assert_trainable_like_keras(model)


def test_nested_frozen_submodel() -> None:
    inner = keras.Sequential([keras.Input((4,)), L.Dense(3), L.Dense(3)])
    inp = keras.Input((4,))
    model = keras.Model(inp, L.Dense(2)(inner(inp)))
    inner.trainable = False
    _assert_trainable_like_keras(model)
    tree = pp.tree(model)
    assert [p.trainable for p in tree.parameters()] == [False] * 4 + [True] * 2
    # Keras: the layer's variables are trainable again, and only the root's own flag is checked
    inner.layers[0].trainable = True
    assert [p.trainable for p in tree.parameters()] == [True, True, False, False, True, True]
    _assert_trainable_like_keras(model)
    model.trainable = False              # the root itself
    assert _tree_trainable(tree) == 0 == _keras_trainable(model)


def test_frozen_root_and_unbuilt_layers() -> None:
    model = keras.Sequential([L.Dense(3), L.BatchNormalization(), L.Dense(2)])   # not built yet
    model.layers[0].trainable = False
    tree = pp.tree(model)
    assert {path: p.trainable for path, p in tree.items()} == {
        "0.weight": False, "0.bias": False, "1.weight": True, "1.bias": True, "1.running_mean": False,
        "1.running_var": False, "2.weight": True, "2.bias": True}
    model.build((None, 4))
    _assert_trainable_like_keras(model)
    model.trainable = False
    assert not any(p.trainable for p in tree.parameters())


def test_shared_layer_counts_once() -> None:
    shared = L.Dense(4)
    inp = keras.Input((4,))
    model = keras.Model(inp, L.Dense(2)(shared(shared(inp))))
    _assert_trainable_like_keras(model)


# ---- B4: roles from the layer's type -------------------------------------------------


def _zoo() -> Any:
    inp = keras.Input((6,), dtype="int32")
    h = L.Embedding(50, 16)(inp)
    h = L.MultiHeadAttention(num_heads=2, key_dim=8)(h, h)
    h = L.EinsumDense("abc,cd->abd", output_shape=(None, 5), bias_axes="d")(h)
    h = L.GRU(4, return_sequences=True)(h)
    h = L.LSTM(8)(h)
    norm = L.Normalization()
    h = norm(h)
    model = keras.Model(inp, L.Dense(3)(h))
    norm.adapt(np.random.default_rng(1).normal(5, 2, (32, 8)).astype(np.float32))
    return model


def test_roles_and_axes_from_layer_types() -> None:
    tree = pp.tree(_zoo())
    facts = {path: (p.role, p.axes) for path, p in tree.items()}
    assert facts["2._query_dense.kernel"] == ("weight", ("in", "out", "out"))     # abc,cde->abde
    assert facts["2._query_dense.bias"] == ("bias", ("other", "other"))
    assert facts["2._output_dense.kernel"] == ("weight", ("in", "in", "out"))     # abcd,cde->abe
    assert facts["2._output_dense.bias"] == ("bias", ("out",))
    assert facts["3.kernel"] == ("weight", ("in", "out"))
    assert facts["3.bias"] == ("bias", ("out",))
    for rnn in ("4", "5"):    # GRU, LSTM: Keras' layout (in, gates * units), kept as it is
        assert facts[f"{rnn}.cell.kernel"] == ("weight", ("in", "out"))
        assert facts[f"{rnn}.cell.recurrent_kernel"] == ("weight", ("in", "out"))
        assert facts[f"{rnn}.cell.bias"][0] == "bias"
    assert tree["5.cell.kernel"].shape == (4, 32) and tree["5.cell.recurrent_kernel"].shape == (8, 32)
    assert facts["6.mean"][0] == facts["6.variance"][0] == facts["6.count"][0] == "other"  # adapted data


def test_tree_wide_xavier_on_other_layers() -> None:
    model = _zoo()
    tree = pp.tree(model)
    before = tree.state(copy=True)
    tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    for path, p in tree.items():
        if p.role == "bias":
            assert not p.numpy().any(), path
        if p.role == "weight":
            assert not np.array_equal(p.numpy(), before[path]), path
    query = tree["2._query_dense.kernel"].numpy()        # fan_in 16, fan_out 2 * 8: bound sqrt(6 / 32)
    assert np.abs(query).max() <= np.sqrt(6 / 32) and np.abs(query).max() > 0.8 * np.sqrt(6 / 32)


def test_tree_wide_init_leaves_normalization_statistics_as_adapted() -> None:
    """Normalization's adapted mean/variance/count are data, not weights (kind "buffer", role "other"):
    a tree-wide initialize leaves them as adapted and says so; selecting them fills them."""
    model = _zoo()
    tree = pp.tree(model)
    adapted = {name: tree[f"6.{name}"].numpy().copy() for name in ("mean", "variance", "count")}
    assert np.abs(adapted["mean"]).max() > 0 and (adapted["variance"] != 1).all()
    assert {tree[f"6.{name}"].kind for name in adapted} == {"buffer"}
    with pytest.warns(errors.PolyparamWarning, match="buffer"):
        report = tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    assert {f"6.{name}" for name in adapted} <= set(report.skipped)
    for name, value in adapted.items():
        np.testing.assert_array_equal(tree[f"6.{name}"].numpy(), value)
    tree.select("6.variance").initialize(pp.init.One(), force_reinit=True)
    assert (tree["6.variance"].numpy() == 1).all()


def test_efficientnet_tree_wide_xavier_and_trainable_count() -> None:
    model = keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3))
    _assert_trainable_like_keras(model)
    tree = pp.tree(model)
    tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    assert np.isfinite(keras.ops.convert_to_numpy(model(x))).all()


# ---- roles declared with pp.roles ------------------------------------------------------


class _LayerScale(keras.Layer):
    """A custom layer whose 1-D ``gamma`` is a scale, not a weight: only a declaration can say so."""

    def build(self, input_shape: Any) -> None:
        self.gamma = self.add_weight(name="gamma", shape=(input_shape[-1],), initializer="ones")
        self.proj = self.add_weight(name="proj", shape=(input_shape[-1], 3), initializer="glorot_uniform")

    def call(self, x: Any) -> Any:
        return keras.ops.matmul(x * self.gamma, self.proj)


def test_declared_roles_and_axes_win() -> None:
    model = keras.Sequential([keras.Input((4,)), _LayerScale()])
    assert pp.tree(model)["0.gamma"].role == "other"
    pp.roles.register(_LayerScale, {"gamma": "scale", "proj": "weight"}, axes={"proj": ("in", "out")})
    try:
        tree = pp.tree(model)
        assert (tree["0.gamma"].role, tree["0.proj"].role) == ("scale", "weight")
        assert tree["0.proj"].axes == ("in", "out")
        proj = tree["0.proj"].numpy().copy()
        tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
        assert (tree["0.gamma"].numpy() == 1).all()            # a scale: ones, not Xavier
        assert not np.array_equal(tree["0.proj"].numpy(), proj)
        pp.roles.register(keras.layers.Dense, {"kernel": "other"}, axes={"kernel": ("out", "in")})
        dense = pp.tree(keras.Sequential([keras.Input((4,)), L.Dense(3)]))["0.weight"]
        assert dense.role == "other" and dense.axes == ("out", "in")
    finally:
        pp.roles.unregister(_LayerScale)
        pp.roles.unregister(keras.layers.Dense)
    assert pp.tree(model)["0.gamma"].role == "other"


def test_declared_axes_of_the_wrong_length_are_refused() -> None:
    model = keras.Sequential([keras.Input((4,)), _LayerScale()])
    pp.roles.register(_LayerScale, axes={"proj": ("in",)})
    try:
        with pytest.raises(errors.InvalidArgumentError, match="axis roles"):
            pp.tree(model)["0.proj"].axes  # noqa: B018 - the read raises
    finally:
        pp.roles.unregister(_LayerScale)


# ---- LoRA and int8 quantization ----------------------------------------------------------


def _lora_model(seed: int = 0) -> Any:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((6,)), L.Dense(5), L.Dense(4), L.EinsumDense("ab,bc->ac", output_shape=3)])
    model.layers[0].enable_lora(2)
    model.layers[2].enable_lora(2)
    for layer in (model.layers[0], model.layers[2]):     # trained adapters: B no longer zero
        layer.lora_kernel_b.assign(np.random.default_rng(seed).normal(size=layer.lora_kernel_b.shape))
    return model


def _quantized_model(seed: int = 0) -> Any:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((6,)), L.Dense(5), L.Dense(4), L.EinsumDense("ab,bc->ac", output_shape=3)])
    model.quantize("int8")
    return model


def _out(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))


X6 = np.random.default_rng(3).normal(size=(4, 6)).astype(np.float32)


@pytest.mark.parametrize("build", [_lora_model, _quantized_model])
def test_every_variable_is_in_the_tree(build: Callable[..., Any]) -> None:
    model = build()
    tree = pp.tree(model)
    assert {p.native_name for p in tree.parameters()} == {v.path for v in model.weights}
    assert sum(p.size or 0 for p in tree.parameters()) == sum(int(np.prod(v.shape)) for v in model.weights)
    _assert_trainable_like_keras(model)


def test_a_tree_read_before_lora_or_quantize_sees_the_new_variables_after() -> None:
    """The slots a walk finds are kept per layer while it holds the same variables: adding LoRA
    factors or quantizing (new variables, the kernel replaced) is seen by the next walk."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), L.Dense(5), L.EinsumDense("ab,bc->ac", output_shape=3)])
    assert {path for path, _ in pp.tree(model).items()} == {"0.weight", "0.bias", "1.kernel"}
    model.layers[0].enable_lora(2)
    model.layers[1].enable_lora(2)
    assert {p.native_name for p in pp.tree(model).parameters()} == {v.path for v in model.weights}
    assert {"0.lora_kernel_a", "0.lora_kernel_b", "1.lora_kernel_a"} <= {path for path, _ in pp.tree(model).items()}

    keras.utils.set_random_seed(0)
    plain = keras.Sequential([keras.Input((6,)), L.Dense(5)])
    assert pp.tree(plain)["0.weight"].dtype == np.float32
    plain.quantize("int8")
    tree = pp.tree(plain)
    assert {p.native_name for p in tree.parameters()} == {v.path for v in plain.weights}
    assert tree["0.weight"].dtype == np.int8


def test_an_int8_quantized_kernel_is_not_transferred_into_a_float_model() -> None:
    """The int8 codes are not the kernel's values (the scale is another variable): a transfer into a float
    model of another framework refuses, with the hint to dequantize, and writes nothing."""
    torch = pytest.importorskip("torch")
    model = keras.Sequential([keras.Input((8,)), L.Dense(4)])
    model.quantize("int8")
    target = torch.nn.Sequential(torch.nn.Linear(8, 4))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(pp.errors.TransferError, match="0.weight: int8 -> float32.*dequantize"):
        pp.transfer(model, target)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


def test_a_walk_keeps_no_variable_alive_that_quantize_replaced() -> None:
    """The slots a walk keeps hold the layer's variables weakly: a model quantized to save memory frees
    its float kernels at once."""
    model = keras.Sequential([keras.Input((64,)), L.Dense(32)])
    list(pp.tree(model).items())
    kernel = weakref.ref(model.layers[0]._kernel)
    model.quantize("int8")
    gc.collect()
    assert kernel() is None


def test_lora_roles_layouts_and_trainable() -> None:
    model = _lora_model()
    tree = pp.tree(model)
    dense = model.layers[0]
    assert not tree["0.weight"].trainable and tree["0.weight"].role == "weight"   # the frozen base kernel
    a, b = tree["0.lora_kernel_a"], tree["0.lora_kernel_b"]
    assert (a.role, b.role) == ("weight", "bias") and a.trainable and b.trainable
    assert a.kind == b.kind == "parameter"
    assert a.shape == (2, 6) and b.shape == (5, 2)                 # torch's Linear layouts (out, in), as peft's
    np.testing.assert_array_equal(a.numpy(), keras.ops.convert_to_numpy(dense.lora_kernel_a).T)
    np.testing.assert_array_equal(b.numpy(), keras.ops.convert_to_numpy(dense.lora_kernel_b).T)
    assert tree["2.lora_kernel_a"].shape == (4, 2) and tree["2.lora_kernel_b"].shape == (2, 3)   # EinsumDense: native


def test_tree_wide_init_keeps_the_lora_identity() -> None:
    """A tree-wide init is a LoRA start: A drawn, B zero, so the adapter adds nothing."""
    model = _lora_model()
    tree = pp.tree(model)
    tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    for layer in ("0", "2"):
        assert not tree[f"{layer}.lora_kernel_b"].numpy().any()
        assert tree[f"{layer}.lora_kernel_a"].numpy().any()
    dense = model.layers[0]
    base = X6 @ keras.ops.convert_to_numpy(dense._kernel) + dense.bias.numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(dense(X6)), base, rtol=1e-6, atol=1e-6)


def test_int8_kernel_round_trips_bitwise_and_is_left_alone() -> None:
    model = _quantized_model()
    tree = pp.tree(model)
    kernel, scale = tree["0.weight"], tree["0.kernel_scale"]
    assert kernel.dtype == np.int8 and kernel.shape == (5, 6)
    assert (kernel.role, kernel.kind, kernel.trainable) == ("other", "buffer", False)
    assert (scale.role, scale.kind, scale.trainable) == ("other", "buffer", False)
    before = tree.state(copy=True)
    with pytest.warns(errors.PolyparamWarning, match="buffer"):
        report = tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    assert {"0.weight", "0.kernel_scale", "2.kernel", "2.kernel_scale"} <= set(report.skipped)
    for path in ("0.weight", "0.kernel_scale", "1.weight", "2.kernel"):
        np.testing.assert_array_equal(tree[path].numpy(), before[path])
    value = np.arange(-15, 15, dtype=np.int8).reshape(5, 6)
    kernel.set(value)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.layers[0]._kernel), value.T)


@pytest.mark.parametrize("build", [_lora_model, _quantized_model])
def test_save_load_and_transfer_keep_outputs(build: Callable[..., Any], tmp_path: Path) -> None:
    src, dst, other = build(0), build(1), build(2)
    expected = _out(src, X6)
    assert not np.array_equal(_out(dst, X6), expected)
    pp.save(src, tmp_path / "m.safetensors")
    pp.load(dst, tmp_path / "m.safetensors")
    np.testing.assert_array_equal(_out(dst, X6), expected)
    pp.transfer(src, other)
    np.testing.assert_array_equal(_out(other, X6), expected)
