"""The "Parameter Management" chapter on the NumPy reference backend, no framework needed.

    python examples/numpy_chapter.py

polyparam.numpy is shaped like Gluon, so this follows the MXNet version of the chapter.
The polyparam lines are the same on a PyTorch, Keras or Gluon model.
"""

from __future__ import annotations

import numpy as np

import polyparam as pp
from polyparam import numpy as pnp


def section(title: str) -> None:
    print(f"\n## {title}\n")


np.set_printoptions(precision=4, suppress=True)
X = np.random.default_rng(0).uniform(size=(2, 4)).astype(np.float32)

section("An MLP with one hidden layer")
net = pnp.Sequential(pnp.Dense(8, activation="relu"), pnp.Dense(1))
tree = pp.tree(net)
print(tree.initialize(seed=0))    # biases now; weights deferred to the first forward
print(net(X))

section("Parameter access")
print(tree[1])
bias = tree[1]["bias"]
print(type(bias.native).__name__, bias.native_name, bias.numpy())
print("grad before backward:", tree["1.weight"].grad())
print(*[(path, p.shape) for path, p in tree[0].items()])
print(*[(path, p.shape) for path, p in tree.items()])
print(tree.get("dense1_bias").numpy())

section("Nested blocks")


def block1() -> pnp.Sequential:
    return pnp.Sequential(pnp.Dense(32, activation="relu"), pnp.Dense(16, activation="relu"))


def block2() -> pnp.Sequential:
    return pnp.Sequential(*[block1() for _ in range(4)])


rgnet = pnp.Sequential(block2(), pnp.Dense(10))
rgtree = pp.tree(rgnet)
rgtree.initialize()
rgnet(X)
print(rgnet)
print(rgtree)
print(rgtree[0][1][0]["bias"].numpy())

section("Built-in initialization")
tree.initialize(pp.init.Normal(sigma=0.01), force_reinit=True)
print(tree["0.weight"].numpy()[0], tree["0.bias"].numpy()[0])
tree.initialize(pp.init.Constant(1), force_reinit=True)
print(tree["0.weight"].numpy()[0])
tree["0.weight"].initialize(pp.init.Xavier(), force_reinit=True)
tree[1].initialize(pp.init.Constant(42), force_reinit=True)
print(tree["0.weight"].numpy()[0])
print(tree["1.weight"].numpy())

section("Custom initialization")


class MyInit(pp.init.Initializer):
    def init_weight(self, name, arr):
        print("Init", name, arr.shape)
        arr[:] = self.rng.uniform(-10, 10, arr.shape)
        arr *= np.abs(arr) >= 5


tree.initialize(MyInit(), force_reinit=True)
print(tree["0.weight"].numpy()[:2])
w = tree["0.weight"]
w.set(w.numpy() + 1)
w[0, 0] = 42
print(w.numpy()[0])

section("Deferred initialization")
lazy = pnp.Sequential(pnp.Dense(256, activation="relu"), pnp.Dense(10))
ltree = pp.tree(lazy)
print(ltree.initialize(MyInit()))          # prints no "Init" line: shapes are unknown
x20 = np.random.default_rng(1).uniform(size=(2, 20)).astype(np.float32)
lazy(x20)                                   # "Init dense..." lines, once
lazy(x20)                                   # nothing: already initialized

section("Tied parameters")
shared = pnp.Dense(8, activation="relu")
net = pnp.Sequential(pnp.Dense(8, activation="relu"), shared,
                     pnp.Dense(8, activation="relu", params=shared.params), pnp.Dense(10))
stree = pp.tree(net)
stree.initialize()
net(np.random.default_rng(2).uniform(size=(2, 20)).astype(np.float32))
print(stree.ties())
print(stree["1.weight"].numpy()[0] == stree["2.weight"].numpy()[0])
stree["1.weight"][0, 0] = 100
print(stree["1.weight"].numpy()[0] == stree["2.weight"].numpy()[0])
net.backward()
print("tied gradient (sum of both uses):", stree["1.bias"].grad())
