"""Cross-framework transfer: one set of trained values moves PyTorch -> Keras -> MXNet -> JAX.

    python examples/transfer.py

The same architecture in each framework gets the same canonical paths; ``pp.transfer``
converts the layouts (Keras kernels are (in, out), PyTorch's (out, in)) and the
forward outputs match.
"""

from __future__ import annotations

import ctypes.util

ctypes.CDLL(ctypes.util.find_library("stdc++"))  # before TensorFlow, so MXNet can load after it

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mxnet import nd  # noqa: E402
from mxnet.gluon import nn as gnn  # noqa: E402

import polyparam as pp  # noqa: E402

x = np.random.default_rng(0).uniform(-1, 1, (3, 4)).astype(np.float32)

torch_net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
# ReLU as a layer of its own in every framework, so positions (and paths) agree: 0, 2
keras_net = keras.Sequential([keras.layers.Dense(8), keras.layers.ReLU(), keras.layers.Dense(2)])
keras_net(x)
gluon_net = gnn.Sequential()
gluon_net.add(gnn.Dense(8), gnn.Activation("relu"), gnn.Dense(2))
gluon_net.initialize()
gluon_net(nd.array(x))

pp.tree(torch_net).initialize(pp.init.Xavier(), seed=7, force_reinit=True)
expected = torch_net(torch.from_numpy(x)).detach().numpy()
print("torch:", expected.ravel())

for name, net, run in [
    ("keras", keras_net, lambda: np.asarray(keras_net(x))),
    ("mxnet", gluon_net, lambda: gluon_net(nd.array(x)).asnumpy()),
]:
    report = pp.transfer(torch_net, net)
    out = run()
    print(f"{name}:", out.ravel(), "| same outputs:", np.allclose(out, expected, atol=1e-5), "|", report)

try:
    from polyparam_jax.model import Dense, Model, Relu, Sequential
except ImportError:
    print("jax: polyparam_jax not installed (pip install -e examples/polyparam_jax)")
else:
    jax_net = Model(Sequential(Dense(8), Relu, Dense(2)), (-1, 4))
    pp.transfer(torch_net, jax_net)
    out = np.asarray(jax_net(x))
    print("jax:", out.ravel(), "| same outputs:", np.allclose(out, expected, atol=1e-5))
