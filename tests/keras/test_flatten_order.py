"""A Dense kernel after a Flatten of a feature map reads in canonical (PyTorch's, channels-first) input order.

Keras flattens ``(H, W, C)`` channels-last, PyTorch flattens ``(C, H, W)``; the tree shows the
kernel's input axis in PyTorch's order where the model's graph shows the Flatten, writes convert
back, and Keras -> Keras round trips stay bitwise. Where the structure does not show the order
(a subclassed model, a Reshape), the parameter says so with ``_layout_doubt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")
import polyparam as pp  # noqa: E402 - after the importorskip

L = keras.layers
H, W, C = 4, 3, 2
X = np.random.default_rng(0).normal(size=(3, H, W, 3)).astype(np.float32)


def _sequential(seed: int = 0) -> Any:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((H, W, 3)), L.Conv2D(C, 3, padding="same"), L.Flatten(), L.Dense(5),
                             L.Dense(2)])


def _functional(seed: int = 0) -> Any:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((H, W, 3))
    h = L.Flatten()(L.Conv2D(C, 3, padding="same")(inp))
    h = L.Dense(5)(L.Activation("relu")(L.Dropout(0.5)(h)))
    return keras.Model(inp, h)


def _native(layer: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(layer.kernel))


def _torch_order(kernel: np.ndarray, h: int, w: int, c: int) -> np.ndarray:
    """Keras kernel (in, out), in = (h, w, c) row-major, as torch's Linear weight (out, in), in = (c, h, w)."""
    out = np.empty((kernel.shape[1], kernel.shape[0]), kernel.dtype)
    for ci in range(c):
        for hi in range(h):
            for wi in range(w):
                out[:, ci * h * w + hi * w + wi] = kernel[(hi * w + wi) * c + ci, :]
    return out


def _out(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))


@pytest.mark.parametrize(("build", "dense"), [(_sequential, "2"), (_functional, "5")])
def test_canonical_value_is_torch_order(build: Any, dense: str) -> None:
    model = build()
    tree = pp.tree(model)
    layer = tree[dense].native
    expected = _torch_order(_native(layer), H, W, C)
    np.testing.assert_array_equal(tree[f"{dense}.weight"].numpy(), expected)
    assert tree[f"{dense}.weight"]._layout_doubt() is None
    if dense == "2":                 # the next Dense is not after a Flatten: a plain transpose
        np.testing.assert_array_equal(tree["3.weight"].numpy(), _native(model.layers[3]).T)


def test_canonical_weight_computes_the_output_on_channels_first_features() -> None:
    """Independent of the permutation code: torch's flatten of the NCHW map times the canonical weight."""
    model = _sequential()
    tree = pp.tree(model)
    feature_map = _out(keras.Sequential(model.layers[:1]), X)                 # (N, H, W, C)
    torch_flat = feature_map.transpose(0, 3, 1, 2).reshape(len(X), -1)      # (N, C * H * W)
    hidden = torch_flat @ tree["2.weight"].numpy().T + tree["2.bias"].numpy()
    np.testing.assert_allclose(_out(keras.Sequential(model.layers[:3]), X), hidden, rtol=1e-5, atol=1e-5)


def test_writes_convert_back_and_keras_round_trips_are_bitwise(tmp_path: Path) -> None:
    src, dst, other = _sequential(0), _sequential(1), _sequential(2)
    tree = pp.tree(src)
    canonical = np.random.default_rng(1).normal(size=(5, H * W * C)).astype(np.float32)
    tree["2.weight"].set(canonical)
    np.testing.assert_array_equal(tree["2.weight"].numpy(), canonical)
    np.testing.assert_array_equal(_torch_order(_native(src.layers[2]), H, W, C), canonical)
    pp.save(src, tmp_path / "m.safetensors")
    pp.load(dst, tmp_path / "m.safetensors")
    pp.transfer(src, other)
    for model in (dst, other):
        np.testing.assert_array_equal(_native(model.layers[2]), _native(src.layers[2]))
        np.testing.assert_array_equal(_out(model, X), _out(src, X))
    tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)       # in-place fills take the same path
    again = pp.tree(dst)
    again.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    np.testing.assert_array_equal(_native(dst.layers[2]), _native(src.layers[2]))


def test_lora_a_of_a_flattened_dense_is_permuted_too() -> None:
    model = _sequential()
    model.layers[2].enable_lora(2)
    tree = pp.tree(model)
    a = np.asarray(keras.ops.convert_to_numpy(model.layers[2].lora_kernel_a))
    np.testing.assert_array_equal(tree["2.lora_kernel_a"].numpy(), _torch_order(a, H, W, C))
    assert tree["2.lora_kernel_b"].shape == (5, 2)


def test_channels_first_flatten_is_permuted_as_well() -> None:
    """Keras' channels_first Flatten transposes to channels-last before flattening."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((C, H, W)), L.Flatten(data_format="channels_first"), L.Dense(4)])
    x = np.random.default_rng(2).normal(size=(3, C, H, W)).astype(np.float32)
    tree = pp.tree(model)
    torch_like = x.reshape(3, -1) @ tree["1.weight"].numpy().T + tree["1.bias"].numpy()
    np.testing.assert_allclose(_out(model, x), torch_like, rtol=1e-5, atol=1e-5)


def test_conv1d_map_is_permuted_and_a_sequence_is_not() -> None:
    conv = keras.Sequential([keras.Input((5, 3)), L.Conv1D(2, 3, padding="same"), L.Flatten(), L.Dense(4)])
    np.testing.assert_array_equal(pp.tree(conv)["2.weight"].numpy(), _torch_order(_native(conv.layers[2]), 5, 1, 2))
    seq = keras.Sequential([keras.Input((5,), dtype="int32"), L.Embedding(10, 3), L.Flatten(), L.Dense(4)])
    np.testing.assert_array_equal(pp.tree(seq)["2.weight"].numpy(), _native(seq.layers[2]).T)  # (N, L, D): same order


@pytest.mark.parametrize("shape", [(H, W, 1), (1, 1, 6), (6,)])
def test_nothing_to_permute(shape: tuple[int, ...]) -> None:
    model = keras.Sequential([keras.Input(shape), L.Flatten(), L.Dense(3)])
    p = pp.tree(model)["1.weight"]
    np.testing.assert_array_equal(p.numpy(), _native(model.layers[1]).T)
    assert p._layout_doubt() is None


class _Subclassed(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.conv = L.Conv2D(C, 3, padding="same")
        self.flat = L.Flatten()
        self.head = L.Dense(5)

    def call(self, x: Any) -> Any:
        return self.head(self.flat(self.conv(x)))


class _Mlp(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = L.Dense(5)
        self.head = L.Dense(2)

    def call(self, x: Any) -> Any:
        return self.head(self.hidden(x))


def test_subclassed_model_with_a_flatten_says_it_is_in_doubt() -> None:
    model = _Subclassed()
    model(X)
    tree = pp.tree(model)
    doubt = tree["head.weight"]._layout_doubt()
    assert doubt is not None and "flat" in doubt and "subclassed" in doubt
    np.testing.assert_array_equal(tree["head.weight"].numpy(), _native(model.head).T)    # native order, as is
    assert tree["head.bias"]._layout_doubt() is None and tree["conv.weight"]._layout_doubt() is None
    mlp = _Mlp()
    mlp(np.zeros((1, 4), np.float32))
    assert all(p._layout_doubt() is None for p in pp.tree(mlp).parameters())


def test_subclassed_round_trip_stays_bitwise(tmp_path: Path) -> None:
    src, dst = _Subclassed(), _Subclassed()
    src(X)
    dst(X)
    pp.transfer(src, dst)            # one framework: the native order moves as it is
    np.testing.assert_array_equal(_out(dst, X), _out(src, X))


def _torch_twin() -> Any:
    """_Subclassed in torch: the same paths, its Linear reading the map flattened (C, H, W)."""
    torch = pytest.importorskip("torch")

    class Twin(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, C, 3, padding=1)
            self.head = torch.nn.Linear(H * W * C, 5)

    return Twin()


def _values(model: Any) -> dict[str, np.ndarray]:
    return {path: np.array(value, copy=True) for path, value in pp.tree(model).state().items()}


def _unchanged(model: Any, before: dict[str, np.ndarray]) -> None:
    for path, value in pp.tree(model).state().items():
        np.testing.assert_array_equal(value, before[path], err_msg=path)


@pytest.mark.parametrize("sharded", [False, True])
def test_a_file_another_framework_saved_is_refused_where_the_layout_is_in_doubt(tmp_path: Path,
                                                                                sharded: bool) -> None:
    """pp.load refuses as pp.transfer does: a torch file into a Keras Dense whose input order is in doubt, and
    a Keras file whose saving model recorded a doubt into torch; within Keras the native order round-trips."""
    model = _Subclassed()
    model(X)
    twin = _torch_twin()
    torch_file, keras_file = tmp_path / "torch.safetensors", tmp_path / ("keras" if sharded else "keras.safetensors")
    pp.save(twin, torch_file)
    pp.save(model, keras_file, sharded=sharded)

    before = _values(model)
    with pytest.raises(pp.errors.TransferError, match="head.weight") as refused:
        pp.load(model, torch_file)
    assert "saved from torch" in str(refused.value) and "flat" in str(refused.value)
    _unchanged(model, before)

    before = _values(twin)
    with pytest.raises(pp.errors.TransferError, match="head.weight") as refused:
        pp.load(twin, keras_file)
    assert "saved from keras" in str(refused.value) and "subclassed" in str(refused.value)
    _unchanged(twin, before)

    other = _Subclassed()
    other(X)
    pp.load(other, keras_file)                  # one framework: loads, the outputs agree
    np.testing.assert_array_equal(_out(other, X), _out(model, X))


def test_convert_and_consolidate_keep_the_recorded_doubts(tmp_path: Path) -> None:
    """A copy of a file keeps the doubts the saving model recorded: convert (another format) and consolidate
    (a sharded directory into one file) dropped them, and torch then loaded the doubtful kernel silently."""
    from polyparam.checkpoint import convert

    model = _Subclassed()
    model(X)
    twin = _torch_twin()
    pp.save(model, tmp_path / "keras.safetensors")
    pp.save(model, tmp_path / "sharded", sharded=True)
    convert(tmp_path / "keras.safetensors", tmp_path / "converted.npz")
    pp.consolidate(tmp_path / "sharded", tmp_path / "consolidated.safetensors")
    before = _values(twin)
    for copy in ("converted.npz", "consolidated.safetensors"):
        with pytest.raises(pp.errors.TransferError, match="head.weight"):
            pp.load(twin, tmp_path / copy)
        _unchanged(twin, before)


def test_a_file_from_no_polyparam_model_is_refused_where_the_layout_is_in_doubt(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    model = _Subclassed()
    model(X)
    save_file({k: np.array(v) for k, v in pp.tree(_torch_twin()).state().items()}, str(tmp_path / "hub.safetensors"))
    before = _values(model)
    with pytest.raises(pp.errors.TransferError, match="not saved by a polyparam model"):
        pp.load(model, tmp_path / "hub.safetensors")
    _unchanged(model, before)


class _ReshapeInCall(keras.Model):
    """The map flattened by keras.ops.reshape inside call: no layer shows it."""

    def __init__(self, pooled: bool = False) -> None:
        super().__init__()
        self.conv = L.Conv2D(C, 3, padding="same")
        self.pool = L.GlobalAveragePooling2D() if pooled else None
        self.hidden = L.Dense(2 * C)
        self.head = L.Dense(2)

    def call(self, x: Any) -> Any:
        x = self.conv(x)
        x = self.pool(x) if self.pool is not None else keras.ops.reshape(x, (keras.ops.shape(x)[0], -1))
        return self.head(self.hidden(x))


class _PooledHead(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.conv = L.Conv2D(C, 3, padding="same")
        self.pool = L.GlobalAveragePooling2D()
        self.hidden = L.Dense(H * W * C)
        self.head = L.Dense(2)

    def call(self, x: Any) -> Any:
        return self.head(self.hidden(self.pool(self.conv(x))))


def test_a_reshape_inside_call_or_a_lambda_that_flattens_a_map_is_a_doubt_and_transfer_refuses() -> None:
    flat = _ReshapeInCall()
    flat(X)
    tree = pp.tree(flat)
    assert "conv" in (tree["hidden.weight"]._layout_doubt() or "")     # conv's map holds exactly its inputs
    assert tree["head.weight"]._layout_doubt() is None                  # 2C inputs: no map has that many
    pooled = _ReshapeInCall(pooled=True)                                # one value per channel: no order to doubt
    pooled(X)
    assert all(p._layout_doubt() is None for p in pp.tree(pooled).parameters())
    head = _PooledHead()            # its second Dense has as many inputs as the conv's map, but reads the first
    head(X)
    assert all(p._layout_doubt() is None for p in pp.tree(head).parameters())

    wrapped = keras.Sequential([keras.Input((H, W, 3)), L.Conv2D(C, 3, padding="same"),
                                L.Lambda(lambda t: keras.ops.reshape(t, (-1, H * W * C))), L.Dense(3)])
    assert "Lambda" in (pp.tree(wrapped)["2.weight"]._layout_doubt() or "")
    inputs = keras.Input((H, W, 3))
    functional = keras.Model(inputs, L.Dense(3)(keras.ops.reshape(L.Conv2D(C, 3, padding="same")(inputs),
                                                                  (-1, H * W * C))))
    assert "flattened" in (pp.tree(functional)["2.weight"]._layout_doubt() or "")   # (0: the input, 1: the conv)
    pooled_functional = keras.Model(inputs, L.Dense(3)(L.GlobalMaxPooling2D()(L.Conv2D(C, 3)(inputs))))
    assert all(p._layout_doubt() is None for p in pp.tree(pooled_functional).parameters())

    torch = pytest.importorskip("torch")
    source = torch.nn.Sequential(torch.nn.Conv2d(3, C, 3, padding=1), torch.nn.Flatten(),
                                 torch.nn.Linear(H * W * C, 2 * C), torch.nn.Linear(2 * C, 2))
    before = {path: np.array(value) for path, value in pp.tree(flat).state().items()}
    with pytest.raises(pp.errors.TransferError, match="hidden.weight"):
        pp.transfer(source, flat, rename=[(r"^0\.", "conv."), (r"^2\.", "hidden."), (r"^3\.", "head.")])
    for path, value in pp.tree(flat).state().items():
        np.testing.assert_array_equal(value, before[path], err_msg=path)


def test_reshape_of_a_map_and_per_feature_layers_are_doubts() -> None:
    reshaped = keras.Sequential([keras.Input((H, W, 3)), L.Conv2D(C, 3, padding="same"), L.Reshape((H * W * C,)),
                                 L.Dense(3)])
    assert "Reshape" in (pp.tree(reshaped)["2.weight"]._layout_doubt() or "")
    normed = keras.Sequential([keras.Input((H, W, 3)), L.Conv2D(C, 3, padding="same"), L.Flatten(),
                               L.BatchNormalization(), L.Dense(3)])
    assert "per-feature" in (pp.tree(normed)["3.weight"]._layout_doubt() or "")


def test_a_permute_before_the_flatten_is_a_doubt() -> None:
    """``Permute((3, 1, 2))`` already puts the channels first: no layer says where they are, so the kernel is in
    doubt (it was permuted as a channels-last map's, 0.9 off torch's outputs)."""
    model = keras.Sequential([keras.Input((H, W, 3)), L.Conv2D(C, 3, padding="same"), L.Permute((3, 1, 2)),
                              L.Flatten(), L.Dense(3)])
    doubt = pp.tree(model)["3.weight"]._layout_doubt() or ""
    assert "Permute" in doubt and "flattened" in doubt


@pytest.mark.parametrize("via", ["add", "nested"])
def test_a_channels_first_map_is_found_through_an_add_or_a_nested_model(via: str) -> None:
    """The layout of the map a Flatten reads comes from the layer that made it, past a residual ``Add`` (its
    inputs' layout) or from inside a nested model: a channels-first map flattens as PyTorch's, unpermuted (it was
    permuted as the Flatten's default, channels last, 1.2-5.5 off torch's outputs)."""
    for data_format, permuted in (("channels_first", False), ("channels_last", True)):
        shape = (3, H, W) if data_format == "channels_first" else (H, W, 3)
        inputs = keras.Input(shape)
        conv = L.Conv2D(C, 3, padding="same", data_format=data_format)
        if via == "add":
            x = conv(inputs)
            x = L.Add()([x, L.Conv2D(C, 1, data_format=data_format)(x)])
        else:
            x = keras.Sequential([keras.Input(shape), conv, L.ReLU()])(inputs)
        dense = L.Dense(3)
        model = keras.Model(inputs, dense(L.Flatten()(x)))
        p = next(q for _, q in pp.tree(model).items() if q.native is dense.kernel)
        assert p._layout_doubt() is None
        expected = _torch_order(_native(dense), H, W, C) if permuted else _native(dense).T
        np.testing.assert_array_equal(p.numpy(), expected, err_msg=data_format)


def test_a_dense_whose_outputs_a_reshape_makes_a_channels_last_map_is_a_doubt() -> None:
    """A generator's ``Dense -> Reshape((h, w, C)) -> Conv2DTranspose``: torch's ``Unflatten`` makes ``(C, h, w)``
    of the same outputs, so the kernel's output rows and the bias are in another order (1.27 off torch's outputs,
    silently, before): in doubt, and a transfer from torch refuses and changes nothing. Into a channels-first
    map, the order is PyTorch's: no doubt."""
    torch = pytest.importorskip("torch")
    z = 6
    model = keras.Sequential([keras.Input((z,)), L.Dense(C * H * W), L.Reshape((H, W, C)),
                              L.Conv2DTranspose(2, 2, strides=2)])
    tree = pp.tree(model)
    for leaf in ("weight", "bias"):
        assert "(H, W, C)" in (tree[f"0.{leaf}"]._layout_doubt() or ""), leaf
    assert tree["2.weight"]._layout_doubt() is None
    source = torch.nn.Sequential(torch.nn.Linear(z, C * H * W), torch.nn.Unflatten(1, (C, H, W)),
                                 torch.nn.ConvTranspose2d(C, 2, 2, stride=2))
    before = _values(model)
    with pytest.raises(pp.errors.TransferError, match=r"0\.weight"):
        pp.transfer(source, model)
    _unchanged(model, before)

    first = keras.Sequential([keras.Input((z,)), L.Dense(C * H * W), L.Reshape((C, H, W)),
                              L.Conv2DTranspose(2, 2, strides=2, data_format="channels_first")])
    assert all(p._layout_doubt() is None for p in pp.tree(first).parameters())
    sequence = keras.Sequential([keras.Input((z,)), L.Dense(4 * 5), L.Reshape((4, 5)), L.LSTM(3)])
    assert all(p._layout_doubt() is None for p in pp.tree(sequence).parameters())


def test_a_layer_norm_over_several_axes_of_a_channels_last_map_is_a_doubt() -> None:
    """``LayerNormalization(axis=[1, 2, 3])`` on a channels-last map holds ``(H, W, C)`` values where torch's
    ``LayerNorm([C, H, W])`` holds ``(C, H, W)``: with C == H == W the shapes agree and a transfer moved them
    unpermuted (6.9 off torch's outputs). In doubt now; over a sequence or one axis, or a channels-first map, not."""
    torch = pytest.importorskip("torch")
    cube = keras.Sequential([keras.Input((C, C, C)), L.LayerNormalization(axis=[1, 2, 3])])
    tree = pp.tree(cube)
    for leaf in ("weight", "bias"):
        assert "(H, W, C)" in (tree[f"0.{leaf}"]._layout_doubt() or ""), leaf
    before = _values(cube)
    with pytest.raises(pp.errors.TransferError, match=r"0\.(weight|bias)"):
        pp.transfer(torch.nn.Sequential(torch.nn.LayerNorm([C, C, C])), cube)
    _unchanged(cube, before)
    after_conv = keras.Sequential([keras.Input((H, W, 3)), L.Conv2D(C, 3, padding="same"),
                                   L.LayerNormalization(axis=[1, 2, 3])])
    assert pp.tree(after_conv)["1.weight"]._layout_doubt() is not None
    fine = [keras.Sequential([keras.Input((5, 6)), L.LayerNormalization(axis=[1, 2])]),      # a sequence (L, D)
            keras.Sequential([keras.Input((H, W, 3)), L.LayerNormalization()]),               # the channels only
            keras.Sequential([keras.Input((3, H, W)), L.Conv2D(C, 3, data_format="channels_first"),
                              L.LayerNormalization(axis=[1, 2, 3])])]                          # (C, H, W) already
    for model in fine:
        assert all(p._layout_doubt() is None for p in pp.tree(model).parameters()), model.layers


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_a_flatten_inside_a_nested_head_reads_the_layout_of_the_outer_map(data_format: str) -> None:
    """A nested ``Sequential([Input, Flatten(), Dense])`` head fed by the outer model's conv: the map's layout is
    the outer conv's (it was the Flatten's own, channels last: a channels-first map was permuted, 0.45 off)."""
    shape = (3, H, W) if data_format == "channels_first" else (H, W, 3)
    conv_out = (C, H, W) if data_format == "channels_first" else (H, W, C)
    head = keras.Sequential([keras.Input(conv_out), L.Flatten(), L.Dense(3)])
    model = keras.Sequential([keras.Input(shape), L.Conv2D(C, 3, padding="same", data_format=data_format), head])
    dense = head.layers[-1]
    p = next(q for _, q in pp.tree(model).items() if q.native is dense.kernel)
    assert p._layout_doubt() is None
    permuted = data_format == "channels_last"
    np.testing.assert_array_equal(p.numpy(), _torch_order(_native(dense), H, W, C) if permuted else _native(dense).T)


@pytest.mark.parametrize("between", ["add", "concatenate", "rescaling"])
def test_a_dense_reshaped_into_a_map_is_in_doubt_past_merges_and_shape_keeping_layers(between: str) -> None:
    """Dense -> Reshape((h, w, C)) -> Add / Concatenate / Rescaling -> Conv2D: the conv that says the map is
    channels last comes after a layer with no layout of its own (0.47-0.50 off after a transfer, before)."""
    z = 6
    inputs = keras.Input((z,))
    x = L.Reshape((H, W, C))(L.Dense(C * H * W)(inputs))
    if between == "add":
        x = L.Add()([x, x])
    elif between == "concatenate":
        x = L.Concatenate()([x, x])
    else:
        x = L.Rescaling(0.5)(x)
    model = keras.Model(inputs, L.Conv2D(2, 3)(x))
    doubts = [p._layout_doubt() for p in pp.tree(model).parameters()]
    assert sum("(H, W, C)" in (d or "") for d in doubts) == 2, doubts       # the Dense's kernel and bias


def _dense_doubts(model: Any) -> list[str]:
    return [d for p in pp.tree(model).parameters() if "(H, W, C)" in (d := p._layout_doubt() or "")]


@pytest.mark.parametrize("where", ["reader inside", "reshape inside", "generator inside", "functional"])
def test_a_dense_reshaped_into_a_map_is_in_doubt_across_nested_models(where: str) -> None:
    """Dense -> Reshape((h, w, C)) -> Conv2D with a nested model's edge on the way: the conv inside a nested model
    that reads the outer Reshape, or the Dense (and Reshape) inside a nested generator whose output the outer conv
    reads. No doubt was found and a transfer from torch came out 5.7-16 off (silently)."""
    z = 6
    if where == "reader inside":
        reader = keras.Sequential([keras.Input((H, W, C)), L.Conv2D(2, 3)])
        model = keras.Sequential([keras.Input((z,)), L.Dense(C * H * W), L.Reshape((H, W, C)), reader])
    elif where == "reshape inside":
        generator = keras.Sequential([keras.Input((z,)), L.Dense(C * H * W), L.Reshape((H, W, C))])
        model = keras.Sequential([keras.Input((z,)), generator, L.Conv2D(2, 3)])
    elif where == "generator inside":
        generator = keras.Sequential([keras.Input((z,)), L.Dense(C * H * W), L.ReLU()])
        model = keras.Sequential([keras.Input((z,)), generator, L.Reshape((H, W, C)), L.Conv2D(2, 3)])
    else:
        inner_in = keras.Input((z,))
        generator = keras.Model(inner_in, L.Reshape((H, W, C))(L.Dense(C * H * W)(inner_in)))
        inputs = keras.Input((z,))
        model = keras.Model(inputs, L.Conv2D(2, 3)(L.Add()([generator(inputs), generator(inputs)])))
    assert len(_dense_doubts(model)) == 2, where           # the Dense's kernel and bias


def test_a_nested_model_called_twice_on_maps_of_one_layout_reads_that_layout() -> None:
    """A nested ``[Input, Flatten, Dense]`` head called on two channels-first maps (a siamese pair): both calls
    agree, so its kernel reads in that layout; it was a doubt (refused) because the head had two calls."""
    head = keras.Sequential([keras.Input((C, H, W)), L.Flatten(), L.Dense(3)])
    inputs = keras.Input((3, H, W))
    conv = L.Conv2D(C, 3, padding="same", data_format="channels_first")
    model = keras.Model(inputs, L.Add()([head(conv(inputs)), head(L.ReLU()(conv(inputs)))]))
    dense = head.layers[-1]
    p = next(q for _, q in pp.tree(model).items() if q.native is dense.kernel)
    assert p._layout_doubt() is None
    np.testing.assert_array_equal(p.numpy(), _native(dense).T)
    mixed = keras.Sequential([keras.Input((H, W, C)), L.Flatten(), L.Dense(3)])
    first, last = keras.Input((3, W, C)), keras.Input((H, W, 3))
    both = keras.Model([first, last], L.Add()([
        mixed(L.Conv2D(H, 3, padding="same", data_format="channels_first")(first)),     # (H, W, C) channels first
        mixed(L.Conv2D(C, 3, padding="same")(last))]))                                  # (H, W, C) channels last
    doubt = next(q for _, q in pp.tree(both).items() if q.native is mixed.layers[-1].kernel)._layout_doubt()
    assert "a mix of channels-first and channels-last maps" in (doubt or ""), doubt


def test_a_layer_norm_in_a_nested_model_reads_the_outer_layout_and_spatial_axes_are_no_doubt() -> None:
    """``LayerNormalization(axis=[1, 2, 3])`` inside a nested model after an outer channels-first conv holds
    ``(C, H, W)`` values, PyTorch's order (it was a doubt: the nested model's input was taken as channels last);
    ``axis=[1, 2]`` over the spatial axes of a channels-last map holds ``(H, W)``, as ``LayerNorm([H, W])`` of a
    ``(C, H, W)`` map does (it was a doubt too). Over ``[2, 3]`` (W and the channels) it stays one."""
    inner = keras.Sequential([keras.Input((C, H, W)), L.LayerNormalization(axis=[1, 2, 3])])
    model = keras.Sequential([keras.Input((3, H, W)), L.Conv2D(C, 3, padding="same", data_format="channels_first"),
                              inner])
    assert all(p._layout_doubt() is None for p in pp.tree(model).parameters())
    spatial = keras.Sequential([keras.Input((H, W, 3)), L.Conv2D(C, 3, padding="same"),
                                L.LayerNormalization(axis=[1, 2])])
    assert all(p._layout_doubt() is None for p in pp.tree(spatial).parameters())
    with_channels = keras.Sequential([keras.Input((H, W, 3)), L.Conv2D(C, 3, padding="same"),
                                      L.LayerNormalization(axis=[2, -1])])
    assert pp.tree(with_channels)["1.weight"]._layout_doubt() is not None


def _kernel(model: Any, dense: Any) -> Any:
    return next(q for _, q in pp.tree(model).items() if q.native is dense.kernel)


@pytest.mark.parametrize("where", ["flatten outside", "flatten inside", "second output"])
def test_a_flatten_and_its_dense_on_two_sides_of_a_nested_model_edge_read_the_map_layout(where: str) -> None:
    """An outer Flatten feeding a nested head that starts with its Dense; a nested backbone ending in a Flatten
    before an outer Dense; a Flatten of a nested model's second output. No doubt was found and nothing was
    permuted: a transfer from torch came out 1.3-4.5 off (silently). The layout is read across the edge now,
    from the output the outer model uses (the first one was taken, whichever was used)."""
    dense = L.Dense(5)
    if where == "flatten outside":
        model = keras.Sequential([keras.Input((H, W, 3)), L.Conv2D(C, 3, padding="same"), L.Flatten(),
                                  keras.Sequential([keras.Input((H * W * C,)), dense])])
    elif where == "flatten inside":
        backbone = keras.Sequential([keras.Input((H, W, 3)), L.Conv2D(C, 3, padding="same"), L.Flatten()])
        model = keras.Sequential([keras.Input((H, W, 3)), backbone, dense])
    else:
        inner_in = keras.Input((H, W, 3))
        two = keras.Model(inner_in, [L.Conv2D(H, 1, data_format="channels_first")(inner_in),
                                     L.Conv2D(C, 3, padding="same")(inner_in)])
        inputs = keras.Input((H, W, 3))
        model = keras.Model(inputs, dense(L.Flatten()(two(inputs)[1])))
    p = _kernel(model, dense)
    assert p._layout_doubt() is None
    np.testing.assert_array_equal(p.numpy(), _torch_order(_native(dense), H, W, C))


def test_a_layer_norm_of_a_nested_models_second_output_reads_that_outputs_layout() -> None:
    """LayerNormalization(axis=[1, 2, 3]) of a nested model's second output, channels last, where its first is
    channels first: in doubt (it was not, and came out 1.9 off); the other way round, not in doubt."""
    s = 4
    for formats, doubted in ((("channels_first", "channels_last"), True), (("channels_last", "channels_first"), False)):
        inner_in = keras.Input((s, s, s))
        two = keras.Model(inner_in, [L.Conv2D(s, 1, data_format=f)(inner_in) for f in formats])
        inputs, norm = keras.Input((s, s, s)), L.LayerNormalization(axis=[1, 2, 3])
        model = keras.Model(inputs, norm(two(inputs)[1]))
        p = next(q for _, q in pp.tree(model).items() if q.native is norm.gamma)
        assert (p._layout_doubt() is not None) == doubted, formats


def test_a_head_reused_by_another_model_reads_the_calls_of_the_tree_model_only() -> None:
    """A nested head called on a channels-first map in model A and on a channels-last one in model B: A's tree
    counts A's call only (B's call made A's kernel a doubt, refused)."""
    head = keras.Sequential([keras.Input((C, H, W)), L.Flatten(), L.Dense(5)])
    first = keras.Sequential([keras.Input((3, H, W)), L.Conv2D(C, 3, padding="same", data_format="channels_first"),
                              head])
    last = keras.Sequential([keras.Input((C, H, 3)), L.Conv2D(W, 3, padding="same"), head])
    dense = head.layers[-1]
    assert _kernel(first, dense)._layout_doubt() is None
    np.testing.assert_array_equal(_kernel(first, dense).numpy(), _native(dense).T)
    assert _kernel(last, dense)._layout_doubt() is None
    np.testing.assert_array_equal(_kernel(last, dense).numpy(), _torch_order(_native(dense), C, H, W))


@pytest.mark.parametrize("shape", ["block called on its own outputs", "chain of gates"])
def test_graphs_that_meet_themselves_are_traced_once_per_tensor(shape: str) -> None:
    """A nested block called on its own output three times (blk(blk(blk(h)))) sent the trace round in a cycle
    and never finished; a chain of 30 swish gates (Multiply([h, sigmoid(h)])) took time doubling per gate (about
    2 minutes at 24). Each tensor is traced once now, and the layout is the conv's."""
    inputs = keras.Input((H, W, 3))
    x = L.Conv2D(C, 3, padding="same")(inputs)
    if shape == "block called on its own outputs":
        block_in = keras.Input((H, W, C))
        block = keras.Model(block_in, L.ReLU()(block_in))
        x = block(block(block(x)))
    else:
        for _ in range(30):
            x = L.Multiply()([x, L.Activation("sigmoid")(x)])
    dense = L.Dense(4)
    model = keras.Model(inputs, dense(L.Flatten()(x)))
    p = _kernel(model, dense)
    assert p._layout_doubt() is None
    np.testing.assert_array_equal(p.numpy(), _torch_order(_native(dense), H, W, C))
