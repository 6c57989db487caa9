"""The transfer test models, built the same way in each framework (not part of any adapter).

Each builder returns ``(model, forward)`` where ``forward(x)`` takes NumPy input in
PyTorch's layout (NCHW images, int token ids) and returns NumPy output in PyTorch's layout.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

import polyparam as pp

V, D, T = 11, 6, 5  # vocabulary, embedding width, tokens


def _torch(kind: str) -> tuple[Any, Callable[[np.ndarray], np.ndarray]]:
    import torch
    from torch import nn

    if kind == "mlp":
        net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    elif kind == "cnn":
        net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    elif kind == "flatten":   # the dense layer reads a flattened (4, 3, 3) map: the channel order matters
        net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                            nn.Dropout(0.5), nn.Linear(36, 8), nn.ReLU(), nn.Linear(8, 5))
    else:
        net = nn.Sequential(nn.Embedding(V, D), nn.Linear(D, V, bias=False))
        net[1].weight = net[0].weight  # the tied output head
    net.eval()

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(x)).numpy()

    return net, forward


def _keras(kind: str) -> tuple[Any, Callable[[np.ndarray], np.ndarray]]:
    import keras
    from keras import layers as L  # noqa: N812  reads as the Keras examples do

    if kind == "mlp":
        model = keras.Sequential([keras.Input((4,)), L.Dense(8), L.ReLU(), L.Dense(3)])
    elif kind == "cnn":
        model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3), L.BatchNormalization(epsilon=1e-5),
                                  L.ReLU(), L.MaxPooling2D(2), L.GlobalAveragePooling2D(), L.Flatten(), L.Dense(5)])
    elif kind == "flatten":
        model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3), L.BatchNormalization(epsilon=1e-5),
                                  L.ReLU(), L.MaxPooling2D(2), L.Flatten(), L.Dropout(0.5), L.Dense(8), L.ReLU(),
                                  L.Dense(5)])
    else:
        # Keras cannot share one variable between Embedding (V, D) and a Dense kernel stored (D, V):
        # pp.tie refuses, so the Keras model keeps two variables (equal values after a transfer).
        model = keras.Sequential([keras.Input((T,), dtype="int32"), L.Embedding(V, D), L.Dense(V, use_bias=False)])

    def forward(x: np.ndarray) -> np.ndarray:
        if kind in ("cnn", "flatten"):
            x = x.transpose(0, 2, 3, 1)
        return keras.ops.convert_to_numpy(model(x, training=False))

    return model, forward


def _mxnet(kind: str) -> tuple[Any, Callable[[np.ndarray], np.ndarray]]:
    import mxnet as mx
    from mxnet.gluon import nn

    net = nn.Sequential()
    if kind == "mlp":
        net.add(nn.Dense(8, in_units=4), nn.Activation("relu"), nn.Dense(3, in_units=8))
    elif kind == "cnn":
        net.add(nn.Conv2D(4, 3, in_channels=3), nn.BatchNorm(in_channels=4, epsilon=1e-5), nn.Activation("relu"),
                nn.MaxPool2D(2), nn.GlobalAvgPool2D(), nn.Flatten(), nn.Dense(5, in_units=4))
    elif kind == "flatten":
        net.add(nn.Conv2D(4, 3, in_channels=3), nn.BatchNorm(in_channels=4, epsilon=1e-5), nn.Activation("relu"),
                nn.MaxPool2D(2), nn.Flatten(), nn.Dropout(0.5), nn.Dense(8, in_units=36), nn.Activation("relu"),
                nn.Dense(5, in_units=8))
    else:
        net.add(nn.Embedding(V, D), nn.Dense(V, in_units=D, use_bias=False, flatten=False))
    net.initialize(mx.init.Xavier())
    if kind == "embed":
        pp.tie(pp.tree(net)["0.weight"], pp.tree(net)["1.weight"])

    def forward(x: np.ndarray) -> np.ndarray:
        return net(mx.nd.array(x, dtype=x.dtype)).asnumpy()

    return net, forward


def _numpy(kind: str) -> tuple[Any, Callable[[np.ndarray], np.ndarray]]:
    import polyparam.numpy as pnp

    if kind != "mlp":
        raise NotImplementedError(kind)
    net = pnp.Sequential(pnp.Dense(8, in_units=4), pnp.Activation("relu"), pnp.Dense(3, in_units=8))
    pp.tree(net).initialize(pp.init.Xavier(), seed=0)
    return net, lambda x: np.asarray(net(x))


BUILDERS = {"torch": _torch, "keras": _keras, "mxnet": _mxnet, "numpy": _numpy}
KINDS = {"mlp": ("torch", "keras", "mxnet", "numpy"), "cnn": ("torch", "keras", "mxnet"),
         "flatten": ("torch", "keras", "mxnet"), "embed": ("torch", "keras", "mxnet")}


def inputs(kind: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    if kind == "mlp":
        return rng.uniform(-1, 1, (3, 4)).astype(np.float32)
    if kind in ("cnn", "flatten"):
        return rng.uniform(-1, 1, (2, 3, 8, 8)).astype(np.float32)
    return rng.integers(0, V, (2, T)).astype(np.int32)


def randomize(model: Any) -> None:
    """Distinct values everywhere, running statistics included (positive variances)."""
    tree = pp.tree(model)
    rng = np.random.default_rng(3)
    for _, p in tree.items():
        value = rng.uniform(0.5, 1.5, p.shape) if p.role == "running_var" else rng.uniform(-1, 1, p.shape)
        p.set(value.astype(p.dtype))
