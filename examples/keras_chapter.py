"""The Keras "Parameter Management" chapter (D2L, TensorFlow tab), every cell through polyparam.

    python examples/keras_chapter.py
    KERAS_BACKEND=torch python examples/keras_chapter.py

Each section quotes the Keras code of the chapter, then does the same with polyparam.
The same polyparam lines run unchanged on a PyTorch or Gluon model.
"""

from __future__ import annotations

import os
import tempfile

import keras
import numpy as np

import polyparam as pp
import polyparam_keras


def section(title: str) -> None:
    print(f"\n## {title}\n")


keras.utils.set_random_seed(0)
np.set_printoptions(precision=4, suppress=True)
X = np.random.default_rng(0).uniform(size=(2, 4)).astype(np.float32)

section(f"An MLP with one hidden layer (Keras {keras.__version__} on {keras.backend.backend()})")
# net = Sequential([Flatten(), Dense(4, activation=relu), Dense(1)]); net(X)
net = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])
net(X)
tree = pp.tree(net)
print(tree)

section("Parameter access")
# print(net.layers[2].weights)
print(tree[2].state())
# type(net.layers[2].weights[1]); net.layers[2].weights[1]; tf.convert_to_tensor(...)
bias = tree[2]["bias"]
print(type(bias.native).__name__, bias, bias.native_name, bias.numpy())
print("grad before any backward:", tree["2.weight"].grad())
# Keras stores no gradients: polyparam computes them with the backend's own autodiff.
polyparam_keras.backward(net, X)
print("grad of sum(output) w.r.t. 2.weight (out, in):", tree["2.weight"].grad())

section("All parameters at once")
# net.layers[1].weights; net.get_weights(); net.get_weights()[1]
print(tree[1].state())
print(tree.state())
print(tree["1.bias"].numpy())
print("canonical layout: 1.weight is (out, in) =", tree["1.weight"].shape,
      "while Keras stores", tuple(net.layers[1].kernel.shape))


def block1(name):
    return keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(4, activation="relu")], name=name)


def block2():
    net = keras.Sequential()
    for i in range(4):
        net.add(block1(name=f"block-{i}"))
    return net


section("Parameters of nested blocks")
# rgnet = Sequential([block2(), Dense(1)]); rgnet(X); print(rgnet.summary())
rgnet = keras.Sequential([block2(), keras.layers.Dense(1)])
rgnet(X)
rtree = pp.tree(rgnet)
print(rtree)
# rgnet.layers[0].layers[1].layers[1].weights[1]
print(rtree[0][1][1]["bias"], rtree["0.1.1.bias"].numpy())

section("Built-in initialization")
# kernel_initializer=random_normal_initializer(0, 0.01), bias_initializer=zeros
tree.initialize(pp.init.Normal(sigma=0.01), force_reinit=True)
print(tree["1.weight"].numpy(), tree["1.bias"].numpy())
# kernel_initializer=Constant(1)
tree.initialize(pp.init.Constant(1), force_reinit=True)
print(tree["1.weight"].numpy(), tree["1.bias"].numpy())
# layer 1 GlorotUniform, layer 2 Constant(42)
tree[1].initialize(pp.init.Xavier(), force_reinit=True)
tree[2].initialize(pp.init.Constant(42), force_reinit=True)
print(tree["1.weight"].numpy())
print(tree["2.weight"].numpy())
# seeded: bit-identical values on every backend
tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
print("seeded 1.weight[0]:", tree["1.weight"].numpy()[0])

section("Custom initialization")


class MyInit(pp.init.Initializer):
    def init_weight(self, name, arr):
        print("Init", name, arr.shape)
        arr[:] = self.rng.uniform(-10, 10, arr.shape)
        arr *= np.abs(arr) >= 5


tree[1].initialize(MyInit(), force_reinit=True)
print(tree["1.weight"].numpy())
# net.layers[1].weights[0][:].assign(w + 1); net.layers[1].weights[0][0, 0].assign(42)
w = tree["1.weight"]
w.set(w.numpy() + 1)
w[0, 0] = 42
print(w.numpy())

section("Deferred initialization (an unbuilt model)")
lazy = keras.Sequential([keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)])
ltree = pp.tree(lazy)
print(ltree)
print(ltree.initialize(MyInit()))
lazy(np.zeros((2, 20), np.float32))     # Keras builds the layers; the recorded MyInit runs
print(ltree["0.weight"].shape, ltree["0.weight"].state)

section("Tied parameters")
# shared = Dense(4, activation=relu); Sequential([Flatten(), shared, shared, Dense(1)])
shared = keras.layers.Dense(4, activation="relu")
snet = keras.Sequential([keras.layers.Flatten(), shared, shared, keras.layers.Dense(1)])
snet(X)
stree = pp.tree(snet)
print(len(snet.layers), stree.ties())
stree["1.weight"][0, 0] = 100
print("through 2.weight:", stree["2.weight"].numpy()[0, 0])
polyparam_keras.backward(snet, X)
print("tied gradient (sum of both uses):", stree["1.weight"].grad()[0])

# Tie after construction, which Keras itself cannot do; it survives save/load_weights.
mlp = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, activation="tanh"),
                        keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)])
mtree = pp.tree(mlp)
groups = pp.tie(mtree[0], mtree[1])
print(mtree.ties())
with tempfile.TemporaryDirectory() as tmp:
    file = os.path.join(tmp, "tied.weights.h5")
    mlp.save_weights(file)
    mlp.load_weights(file)
print("after save/load_weights:", mtree.ties())
for group in groups:
    group.untie()
print("after untie:", mtree.ties())
