"""The PyTorch "Parameter Management" chapter (D2L), every cell through polyparam.

    python examples/torch_chapter.py

Each section quotes the torch code of the chapter, then does the same with polyparam.
The same polyparam lines run unchanged on a Keras or Gluon model.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import polyparam as pp


def section(title: str) -> None:
    print(f"\n## {title}\n")


torch.manual_seed(0)
np.set_printoptions(precision=4, suppress=True)

section("An MLP with one hidden layer")
# net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)); net(X)
net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
X = torch.rand(size=(2, 4))
net(X)
tree = pp.tree(net)
print(tree)

section("Parameter access")
# print(net[2].state_dict())
print(tree[2].state())
# type(net[2].bias), net[2].bias, net[2].bias.data
bias = tree[2]["bias"]
print(type(bias.native), bias, bias.numpy())
# net[2].weight.grad == None
print("grad is None:", tree["2.weight"].grad() is None)

section("All parameters at once")
# named_parameters() of net[0], then of net
print(*[(path, p.shape) for path, p in tree[0].items()])
print(*[(path, p.shape) for path, p in tree.items()])
# net.state_dict()['2.bias'].data
print(tree.state()["2.bias"])

section("Nested blocks")


def block1() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU())


def block2() -> nn.Module:
    net = nn.Sequential()
    for i in range(4):
        net.add_module(f"block {i}", block1())
    return net


rgnet = nn.Sequential(block2(), nn.Linear(4, 1))
rgnet(X)
rgtree = pp.tree(rgnet)
print(rgtree)
# rgnet[0][1][0].bias.data
first = rgtree[0][1][0]["bias"]
print(first.path, "(torch:", first.native_name + ")", first.numpy())

section("Built-in initialization")
# net.apply(init_normal): weights N(0, 0.01), biases 0
tree.initialize(pp.init.Normal(sigma=0.01), force_reinit=True)
print(tree["0.weight"].numpy()[0], tree["0.bias"].numpy()[0])
# net.apply(init_constant): weights 1, biases 0
tree.initialize(pp.init.Constant(1), force_reinit=True)
print(tree["0.weight"].numpy()[0], tree["0.bias"].numpy()[0])
# net[0].apply(xavier); net[2].apply(init_42)
tree["0.weight"].initialize(pp.init.Xavier(), force_reinit=True)
tree[2].initialize(pp.init.Constant(42), force_reinit=True)
print(tree["0.weight"].numpy()[0])
print(tree["2.weight"].numpy())

section("Custom initialization")


class MyInit(pp.init.Initializer):
    def init_weight(self, name: str, arr: np.ndarray) -> None:
        print("Init", name, arr.shape)
        arr[:] = self.rng.uniform(-10, 10, arr.shape)
        arr *= np.abs(arr) >= 5


tree.initialize(MyInit(), force_reinit=True)
print(tree["0.weight"].numpy()[:2])
# net[0].weight.data[:] += 1; net[0].weight.data[0, 0] = 42
w = tree["0.weight"]
w.set(w.numpy() + 1)
w[0, 0] = 42
print(w.numpy()[0], "torch sees", net[0].weight.data[0])

section("Seeded: the same values on every backend and device")
tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
with torch.device("meta"):
    ghost = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
ghost_tree = pp.tree(ghost)
print(ghost_tree.initialize(pp.init.Xavier(), seed=0))  # recorded: meta tensors have no data
ghost_tree.materialize("cpu")
print("meta model materialized with the same values:",
      all(np.array_equal(v, ghost_tree[k].numpy()) for k, v in tree.state().items()))

section("Deferred initialization (nn.LazyLinear)")
lazy = nn.Sequential(nn.LazyLinear(256), nn.ReLU(), nn.LazyLinear(10))
lazy_tree = pp.tree(lazy)
print(lazy_tree.initialize(MyInit()))  # recorded; nothing printed yet
lazy(torch.rand(2, 20))                # torch infers the shapes, then MyInit runs
print(lazy_tree["0.weight"].shape)

section("Tied parameters")
shared = nn.Linear(8, 8)
net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), shared, nn.ReLU(), shared, nn.ReLU(), nn.Linear(8, 1))
net(X)
stree = pp.tree(net)
print(stree.ties())
print(stree["2.weight"].numpy()[0] == stree["4.weight"].numpy()[0])
stree["2.weight"][0, 0] = 100
print(stree["2.weight"].numpy()[0] == stree["4.weight"].numpy()[0])
net(X).sum().backward()
tied = stree["2.weight"].grad()
for group in stree.ties():
    group.untie()
net.zero_grad()
net(X).sum().backward()
print("tied gradient == sum of the two uses:",
      np.allclose(tied, stree["2.weight"].grad() + stree["4.weight"].grad(), atol=1e-6))
print(pp.tie(stree[2], stree[4]))  # tie again, after construction
