"""What a new user's trial of the Keras adapter found: unnamed weights' paths, channels-first flattens, roles.

* A weight made by ``add_weight`` without a name has a per-process auto-numbered Keras name
  (``variable_7``); its path uses the attribute the layer keeps it under (else ``var<i>``), so two
  builds of one architecture have the same paths.
* A Dense kernel after a ``Flatten`` reads in PyTorch's ``(C, H, W)`` input order whatever the
  Flatten's and the map's data formats (Keras' channels-first Flatten moves axis 1 last).
* SeparableConv kernels read in the layouts of PyTorch's depthwise and pointwise convolutions,
  and a LayerScale ``gamma`` is a scale.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
import polyparam as pp  # noqa: E402 - after the importorskip

L = keras.layers


def _out(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))


def _torch_out(model: Any, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


# ---- BUG 1: a weight made without a name ---------------------------------------------------


class _Scale(keras.layers.Layer):
    def build(self, shape: Any) -> None:
        self.gamma = self.add_weight(shape=(shape[-1],), initializer="ones")

    def call(self, x: Any) -> Any:
        return x * self.gamma


class _Listed(keras.layers.Layer):
    """Unnamed weights kept in a list: no attribute holds them, so their position names them."""

    def build(self, shape: Any) -> None:
        self.ws = [self.add_weight(shape=(shape[-1],), initializer="ones"),
                   self.add_weight(shape=(shape[-1],), initializer="zeros")]

    def call(self, x: Any) -> Any:
        return x * self.ws[0] + self.ws[1]


def _unnamed(seed: int) -> Any:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), L.Dense(3), _Scale(), _Listed()])


def test_unnamed_weights_have_the_same_paths_in_every_build() -> None:
    a, b = _unnamed(0), _unnamed(1)
    assert pp.tree(a).paths() == pp.tree(b).paths() == ["0.weight", "0.bias", "1.gamma", "2.var0", "2.var1"]
    assert pp.tree(a)["1.gamma"].role == "other"       # a custom layer's gamma: only pp.roles can say more


def test_unnamed_weights_save_load_and_transfer() -> None:
    a, b = _unnamed(0), _unnamed(1)
    pp.tree(a)["1.gamma"].set(np.arange(3, dtype=np.float32))
    pp.tree(a)["2.var1"].set(np.full(3, 0.5, np.float32))
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    f = os.path.join(tempfile.mkdtemp(), "a.safetensors")
    pp.save(a, f)
    pp.load(b, f)
    np.testing.assert_array_equal(_out(a, x), _out(b, x))
    c = _unnamed(2)
    pp.transfer(a, c)
    np.testing.assert_array_equal(_out(a, x), _out(c, x))


def test_convnext_layerscale_paths_are_stable_and_scales() -> None:
    """ConvNeXt's LayerScale makes its gamma without a name."""
    def build() -> Any:
        return keras.applications.ConvNeXtTiny(weights=None, include_top=False, input_shape=(32, 32, 3))

    model = build()
    first = pp.tree(model)
    second = pp.tree(build())
    assert first.paths() == second.paths()
    scales = {str(i) for i, layer in enumerate(model.layers) if type(layer).__name__ == "LayerScale"}
    gammas = [path for path in first.paths() if path.split(".")[0] in scales]
    assert scales and gammas == [f"{i}.gamma" for i in sorted(scales, key=int)]
    assert not [path for path in first.paths() if "variable" in path]
    assert {first[path].role for path in gammas} == {"scale"}


# ---- BUG 2: Flatten(data_format=...) --------------------------------------------------------


def _channels_last_input(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _torch_cnn() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 3 * 3, 5), torch.nn.Linear(5, 2)).eval()


def _keras_cnn(conv_format: str | None, flatten_format: str | None) -> tuple[Any, bool]:
    """The torch CNN in Keras; returns the model and whether it takes channels-first input."""
    keras.utils.set_random_seed(1)
    fmt = {} if conv_format is None else {"data_format": conv_format}
    first = (conv_format or keras.config.image_data_format()) == "channels_first"
    shape = (3, 8, 8) if first else (8, 8, 3)
    flatten = L.Flatten() if flatten_format is None else L.Flatten(data_format=flatten_format)
    model = keras.Sequential([keras.Input(shape), L.Conv2D(4, 3, **fmt), L.MaxPooling2D(2, **fmt), flatten,
                              L.Dense(5), L.Dense(2)])
    return model, first


FORMATS = [("channels_last", "channels_first"), ("channels_first", "channels_first"),
           ("channels_first", "channels_last"), ("channels_last", "channels_last")]


@pytest.mark.parametrize(("conv_format", "flatten_format"), FORMATS)
@pytest.mark.parametrize("direction", ["torch->keras", "keras->torch"])
def test_flatten_data_formats_transfer_to_and_from_torch(conv_format: str, flatten_format: str,
                                                         direction: str) -> None:
    t = _torch_cnn()
    k, first = _keras_cnn(conv_format, flatten_format)
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)
    xk = x if first else _channels_last_input(x)
    if direction == "torch->keras":
        pp.transfer(t, k)
    else:
        pp.tree(k).initialize(pp.init.Normal(0.3), seed=3, force_reinit=True)
        pp.transfer(k, t)
    np.testing.assert_allclose(_out(k, xk), _torch_out(t, x), atol=1e-5)
    # Keras -> Keras stays the identity
    k2, _ = _keras_cnn(conv_format, flatten_format)
    pp.transfer(k, k2)
    np.testing.assert_array_equal(_out(k, xk), _out(k2, xk))


@pytest.mark.parametrize("direction", ["torch->keras", "keras->torch"])
def test_channels_first_image_data_format_models(direction: str) -> None:
    """A model built under keras.config.set_image_data_format("channels_first"): every layer's default."""
    old = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        k, first = _keras_cnn(None, None)
    finally:
        keras.config.set_image_data_format(old)
    assert first
    t = _torch_cnn()
    x = np.random.default_rng(1).normal(size=(2, 3, 8, 8)).astype(np.float32)
    if direction == "torch->keras":
        pp.transfer(t, k)
    else:
        pp.tree(k).initialize(pp.init.Normal(0.3), seed=4, force_reinit=True)
        pp.transfer(k, t)
    np.testing.assert_allclose(_out(k, x), _torch_out(t, x), atol=1e-5)


@pytest.mark.parametrize("flatten_format", ["channels_first", "channels_last"])
def test_conv1d_flatten_data_formats(flatten_format: str) -> None:
    torch.manual_seed(0)
    t = torch.nn.Sequential(torch.nn.Conv1d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6, 2)).eval()
    keras.utils.set_random_seed(0)
    k = keras.Sequential([keras.Input((8, 3)), L.Conv1D(4, 3), L.Flatten(data_format=flatten_format), L.Dense(2)])
    pp.transfer(t, k)
    x = np.random.default_rng(0).normal(size=(2, 3, 8)).astype(np.float32)
    np.testing.assert_allclose(_out(k, np.ascontiguousarray(x.transpose(0, 2, 1))), _torch_out(t, x), atol=1e-5)


def test_functional_flatten_channels_first() -> None:
    inp = keras.Input((8, 8, 3))
    h = L.MaxPooling2D(2)(L.Conv2D(4, 3)(inp))
    h = L.Dense(2)(L.Dense(5)(L.Dropout(0.1)(L.Flatten(data_format="channels_first")(h))))
    k = keras.Model(inp, h)
    t = _torch_cnn()
    pp.transfer(t, k, match="order")
    x = np.random.default_rng(2).normal(size=(2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_out(k, _channels_last_input(x)), _torch_out(t, x), atol=1e-5)


# ---- BUG 5: SeparableConv layouts, LayerScale's gamma -----------------------------------------


@pytest.mark.parametrize("dims", [1, 2])
def test_separable_conv_reads_in_torchs_depthwise_and_pointwise_layouts(dims: int) -> None:
    cin, mult, cout, k = 3, 2, 5, 3
    spatial = (7,) * dims
    sep = (L.SeparableConv1D if dims == 1 else L.SeparableConv2D)(cout, k, depth_multiplier=mult)
    model = keras.Sequential([keras.Input((*spatial, cin)), sep])
    tree = pp.tree(model)
    dw, pw = tree["0.depthwise_kernel"], tree["0.pointwise_kernel"]
    assert dw.shape == (cin * mult, 1, *(k,) * dims) and dw.groups == cin
    assert pw.shape == (cout, cin * mult, *(1,) * dims) and pw.groups == 1
    assert dw.role == pw.role == "weight" and tree["0.bias"].role == "bias"
    assert dw.axes == pw.axes == ("out", "in") + ("space",) * dims
    conv = torch.nn.Conv1d if dims == 1 else torch.nn.Conv2d
    torch.manual_seed(0)
    depthwise = conv(cin, cin * mult, k, groups=cin, bias=False)
    pointwise = conv(cin * mult, cout, 1)
    dw.set(depthwise.weight.detach().numpy())
    pw.set(pointwise.weight.detach().numpy())
    tree["0.bias"].set(pointwise.bias.detach().numpy())
    x = np.random.default_rng(0).normal(size=(2, cin, *spatial)).astype(np.float32)
    expected = _torch_out(torch.nn.Sequential(depthwise, pointwise), x)
    got = _out(model, np.ascontiguousarray(np.moveaxis(x, 1, -1)))
    np.testing.assert_allclose(np.moveaxis(got, -1, 1), expected, atol=1e-5)


def test_tree_wide_xavier_reaches_separable_kernels() -> None:
    model = keras.Sequential([keras.Input((7, 7, 3)), L.SeparableConv2D(4, 3, depth_multiplier=2)])
    tree = pp.tree(model)
    before = {path: tree[path].numpy().copy() for path in ("0.depthwise_kernel", "0.pointwise_kernel")}
    tree.initialize(pp.init.Constant(0.25), seed=0, force_reinit=True)
    tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    for path, old in before.items():
        value = tree[path].numpy()
        assert not np.array_equal(value, old) and not np.all(value == 0.25), path
