"""Every code cell of the chapter's Keras version (D2L "Parameter Management"), through polyparam.

Each test is one cell (or two that belong together); the comment above it is the chapter's Keras code.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
import polyparam as pp  # noqa: E402 - after the importorskip

X = np.random.default_rng(0).uniform(size=(2, 4)).astype(np.float32)


def _net(*dense):
    net = keras.Sequential([keras.layers.Flatten(), *dense])
    net(X)
    return net, pp.tree(net)


def _mlp():
    return _net(keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1))


def test_cell_mlp() -> None:
    # net = Sequential([Flatten(), Dense(4, relu), Dense(1)]); net(X)
    net, tree = _mlp()
    assert tree.backend == "keras" and tree.native is net
    assert len(tree) == 3 and tree.paths() == ["1.weight", "1.bias", "2.weight", "2.bias"]


def test_cell_parameters_of_one_layer() -> None:
    # print(net.layers[2].weights)
    net, tree = _mlp()
    items = tree[2].items()
    assert [path for path, _ in items] == ["2.weight", "2.bias"]
    assert [p.native for _, p in items] == net.layers[2].weights
    assert items[0][1].shape == (1, 4)          # canonical (out, in); Keras stores (4, 1)
    assert items[0][1].dtype == np.float32
    assert "2.weight" in str(tree[2])


def test_cell_targeted_parameter() -> None:
    # type(net.layers[2].weights[1]); net.layers[2].weights[1]; tf.convert_to_tensor(...)
    net, tree = _mlp()
    bias = tree[2]["bias"]
    assert bias.native is net.layers[2].weights[1]
    assert bias.native_name == net.layers[2].weights[1].path
    np.testing.assert_array_equal(bias.numpy(), [0.0])


def test_cell_all_parameters_at_once() -> None:
    # net.layers[1].weights; net.get_weights(); net.get_weights()[1]
    net, tree = _mlp()
    assert [p.native for _, p in tree[1].items()] == net.layers[1].weights
    state = tree.state()
    native = net.get_weights()
    assert len(state) == len(native)
    for (path, value), keras_value in zip(state.items(), native):
        expected = keras_value.T if path.endswith("weight") else keras_value
        np.testing.assert_array_equal(value, expected, err_msg=path)
    np.testing.assert_array_equal(list(state.values())[1], net.get_weights()[1])
    np.testing.assert_array_equal(tree["1.bias"].numpy(), np.zeros(4))


def _rgnet():
    def block1(name):
        return keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(4, activation="relu")], name=name)

    def block2():
        net = keras.Sequential()
        for i in range(4):
            net.add(block1(name=f"block-{i}"))
        return net

    rgnet = keras.Sequential()
    rgnet.add(block2())
    rgnet.add(keras.layers.Dense(1))
    rgnet(X)
    return rgnet, pp.tree(rgnet)


def test_cell_nested_blocks_and_summary() -> None:
    # rgnet = Sequential(block2(), Dense(1)); rgnet(X); print(rgnet.summary())
    rgnet, tree = _rgnet()
    text = str(tree)
    assert "0.3.1.weight" in text and "1.bias" in text
    assert "10 tensors" in text and f"{rgnet.count_params()} scalars" in text   # 85, as the summary says


def test_cell_nested_indexing() -> None:
    # rgnet.layers[0].layers[1].layers[1].weights[1]
    rgnet, tree = _rgnet()
    p = tree[0][1][1]["bias"]
    assert p.native is rgnet.layers[0].layers[1].layers[1].weights[1]
    assert p.path == "0.1.1.bias" and tree["0.1.1.bias"].is_tied_to(p)


def test_cell_builtin_normal_and_zero_bias() -> None:
    # kernel_initializer=random_normal(0, 0.01), bias_initializer=zeros
    net, tree = _mlp()
    tree.initialize(pp.init.Normal(sigma=0.01), force_reinit=True)
    w = tree["1.weight"].numpy()
    assert w.shape == (4, 4) and 0 < np.abs(w).max() < 0.06
    np.testing.assert_array_equal(tree["1.bias"].numpy(), 0)
    np.testing.assert_array_equal(net.layers[1].kernel.numpy(), w.T)


def test_cell_builtin_constant() -> None:
    # kernel_initializer=Constant(1), bias_initializer=zeros
    net, tree = _mlp()
    tree.initialize(pp.init.Constant(1), force_reinit=True)
    np.testing.assert_array_equal(net.layers[1].kernel.numpy(), 1)
    np.testing.assert_array_equal(net.layers[1].bias.numpy(), 0)


def test_cell_different_initializers_per_block() -> None:
    # layer 1 GlorotUniform, layer 2 Constant(42)
    net, tree = _mlp()
    tree[1].initialize(pp.init.Xavier(), force_reinit=True)
    tree["2.weight"].initialize(pp.init.Constant(42), force_reinit=True)
    assert np.abs(tree["1.weight"].numpy()).max() <= np.sqrt(6 / 8)
    np.testing.assert_array_equal(net.layers[2].kernel.numpy(), np.full((4, 1), 42))


def test_cell_custom_initializer_and_direct_setting() -> None:
    # class MyInit(Initializer): U(-10, 10) * (|w| >= 5); then w[:] += 1 and w[0, 0] = 42
    class MyInit(pp.init.Initializer):
        def init_weight(self, name, arr):
            arr[:] = self.rng.uniform(-10, 10, arr.shape)
            arr *= np.abs(arr) >= 5

    net, tree = _mlp()
    tree[1].initialize(MyInit(), force_reinit=True)
    w = tree["1.weight"]
    values = np.array(w.numpy(), copy=True)   # numpy() may share memory (it does under torch)
    assert ((values == 0) | ((np.abs(values) >= 5) & (np.abs(values) <= 10))).all()
    w.set(w.numpy() + 1)
    w[0, 0] = 42
    expected = values + 1
    expected[0, 0] = 42
    np.testing.assert_array_equal(net.layers[1].kernel.numpy(), expected.T)


def test_cell_tied_parameters() -> None:
    # shared = Dense(4, relu); Sequential([Flatten(), shared, shared, Dense(1)]); net(X)
    shared = keras.layers.Dense(4, activation="relu")
    net = keras.Sequential([keras.layers.Flatten(), shared, shared, keras.layers.Dense(1)])
    net(X)
    tree = pp.tree(net)
    assert len(net.layers) == 4          # Keras 3 keeps both uses (Keras 2 printed True for == 3)
    assert [g.paths for g in tree.ties()] == [["1.weight", "2.weight"], ["1.bias", "2.bias"]]
    assert tree.paths() == ["1.weight", "1.bias", "3.weight", "3.bias"]
    tree["1.weight"][0, 0] = 100
    assert tree["2.weight"].numpy()[0, 0] == 100
