"""The MXNet "Parameter Management" chapter (D2L) and the Gluon "Initialization"
tutorial, every cell through polyparam.

    python examples/mxnet_chapter.py

Each section quotes the Gluon code, then does the same with polyparam. The same
polyparam lines run unchanged on a PyTorch or Keras model.
"""

from __future__ import annotations

import numpy as np

import polyparam as pp  # first: lets TensorFlow and MXNet share this process in any order

# isort: split
from mxnet import autograd, nd  # noqa: E402
from mxnet.gluon import nn  # noqa: E402


def section(title: str) -> None:
    print(f"\n## {title}\n")


np.set_printoptions(precision=4, suppress=True)


class MyInit(pp.init.Initializer):
    """The chapter's strange distribution, on NumPy arrays."""

    def init_weight(self, name, arr):
        print("Init", name, arr.shape)
        arr[:] = self.rng.uniform(-10, 10, arr.shape)
        arr *= np.abs(arr) >= 5


section("An MLP with one hidden layer (deferred shapes)")
# net = nn.Sequential(); net.add(nn.Dense(8, activation='relu')); net.add(nn.Dense(1)); net.initialize()
net = nn.Sequential()
net.add(nn.Dense(8, activation="relu"))
net.add(nn.Dense(1))
tree = pp.tree(net)
print(tree.initialize())          # biases now, weights at the first forward
print(tree)                       # unknown input dims show as '?'
X = nd.random.uniform(shape=(2, 4))
net(X)
print(tree)

section("Parameter access")
# print(net[1].params); net[1].bias.data(); net[1].weight.grad()
print(tree[1].state())
bias = tree[1]["bias"]
print(type(bias.native).__name__, bias.native_name, bias.numpy())
print("grad before backward:", tree["1.weight"].grad())
# net.collect_params()['dense1_bias'].data()
print(tree.get(bias.native_name).numpy(), tree.get("1.bias").path)

section("Nested blocks")


def block1():
    b = nn.Sequential()
    b.add(nn.Dense(32, activation="relu"))
    b.add(nn.Dense(16, activation="relu"))
    return b


def block2():
    b = nn.Sequential()
    for _ in range(4):
        b.add(block1())
    return b


rgnet = nn.Sequential()
rgnet.add(block2())
rgnet.add(nn.Dense(10))
rg = pp.tree(rgnet)
rg.initialize()
rgnet(X)
print(rg)
# rgnet[0][1][0].bias.data()
print(rg[0][1][0]["bias"].path, rg[0][1][0]["bias"].numpy()[:4])

section("Built-in initialization")
tree.initialize(pp.init.Normal(sigma=0.01), force_reinit=True)
print(tree["0.weight"].numpy()[0])
tree.initialize(pp.init.Constant(1), force_reinit=True)
print(tree["0.weight"].numpy()[0])
tree[0]["weight"].initialize(pp.init.Xavier(), force_reinit=True)
tree[1].initialize(pp.init.Constant(42), force_reinit=True)
print(tree["0.weight"].numpy()[0], tree["1.weight"].numpy())
tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)   # the same values on every backend
print("seeded:", tree["0.weight"].numpy()[0])

section("Custom initialization")
tree.initialize(MyInit(), force_reinit=True)
print(tree["0.weight"].numpy()[:2])
w = tree["0.weight"]
w[:] = w.numpy() + 1
w[0, 0] = 42
print(w.numpy()[0], net[0].weight.data()[0].asnumpy())

section("Deferred initialization: prints at the first forward, once")
lazy = nn.Sequential()
lazy.add(nn.Dense(256, activation="relu"))
lazy.add(nn.Dense(10))
lazy_tree = pp.tree(lazy)
lazy_tree.initialize(MyInit())
print("initialize() printed nothing; reading now says what to do:")
try:
    lazy_tree["0.weight"].numpy()
except pp.errors.DeferredInitializationError as exc:
    print(" ", exc)
x = nd.random.uniform(shape=(2, 20))
print("first forward:")
lazy(x)
print("second forward:")
lazy(x)

section("Tied parameters")
net = nn.Sequential()
shared = nn.Dense(8, activation="relu")
net.add(nn.Dense(8, activation="relu"), shared, nn.Dense(8, activation="relu", params=shared.params), nn.Dense(10))
tree = pp.tree(net)
tree.initialize()
net(x)
print(tree.ties())
tree[1]["weight"][0, 0] = 100
print(tree[1]["weight"].numpy()[0] == tree[2]["weight"].numpy()[0])
with autograd.record():
    y = net(x)
y.backward()
print("tied gradient (sum of both uses):", tree["1.weight"].grad()[0, :3])
for group in tree.ties():
    group.untie()
print("after untie:", tree.ties())
print("tie again after construction:", pp.tie(tree[1], tree[2]))
