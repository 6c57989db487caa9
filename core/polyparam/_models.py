"""Standard architectures every backend builds: the seed chapter's models.

The conformance kit and ``polyparam tour`` use them, so a backend's factory is all
either needs to run the chapter on that framework.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["LAYER_SPECS", "Case", "LayerSpec", "ModelFactory"]


@dataclass
class Case:
    """A built model and the facts tests need about it.

    Attributes:
        model: The native model.
        in_features: The size of the input's last dimension.
        layers: Canonical paths of the dense layers, in order (``["0", "2"]`` for a
            torch ``Sequential(Linear, ReLU, Linear)``, ``["0", "1"]`` for Gluon's).
        tied: Pairs of layer paths whose parameters are tied.
    """

    model: Any
    in_features: int
    layers: list[str]
    tied: list[tuple[str, str]] = field(default_factory=list)


class ModelFactory(abc.ABC):
    """Builds the seed's architectures in one framework.

    Every model but :meth:`lazy` comes back ready: initialized by the framework's own
    default and with every shape known.
    """

    @abc.abstractmethod
    def mlp(self) -> Case:
        """``Dense(4 -> 8, relu)``, ``Dense(8 -> 1)`` (the chapter's first net)."""

    @abc.abstractmethod
    def rgnet(self) -> Case:
        """The nested net: ``Sequential(block2, Dense(1 or 10))`` with ``block2`` holding
        four ``block1`` of two dense layers each; ``in_features=4``."""

    @abc.abstractmethod
    def shared(self) -> Case:
        """``Dense(in -> 8)``, ``shared = Dense(8 -> 8)`` used twice, ``Dense(8 -> k)``;
        ``tied`` names the two uses of ``shared``."""

    @abc.abstractmethod
    def lazy(self) -> Case:
        """The MLP with unknown input size (deferred shapes) and not yet initialized."""

    @abc.abstractmethod
    def forward(self, model: Any, x: np.ndarray, /) -> np.ndarray:
        """Run ``model`` on ``x`` (float32) and return the output as NumPy."""

    @abc.abstractmethod
    def backward(self, model: Any, x: np.ndarray, /) -> None:
        """Run forward on ``x`` and backpropagate ``sum(output)``, so gradients are populated."""

    def layer(self, kind: str, /) -> Any:
        """A built single-layer model of ``kind`` (a key of :data:`LAYER_SPECS`, or ``"batchnorm"``).

        Its tree has the weight at path ``"weight"`` (BatchNorm: ``weight``, ``bias``,
        ``running_mean``, ``running_var``).
        """
        msg = f"{type(self).__name__} does not build layer kind {kind!r}; implement ModelFactory.layer."
        raise NotImplementedError(msg)


@dataclass(frozen=True)
class LayerSpec:
    """One single-layer model every backend builds for the initializer tests.

    Attributes:
        description: What to build, in words.
        shape: The weight's canonical shape (PyTorch layout).
        axes: The weight's canonical axis roles.
        fans: The textbook ``(fan_in, fan_out)``.
        groups: Convolution groups.
    """

    description: str
    shape: tuple[int, ...]
    axes: tuple[str, ...]
    fans: tuple[int, int]
    groups: int = 1


#: The layers :meth:`ModelFactory.layer` builds, by kind. ``"batchnorm"`` (8 features,
#: parameters ``weight``/``bias``/``running_mean``/``running_var``) is built too.
LAYER_SPECS: dict[str, LayerSpec] = {
    "dense": LayerSpec("dense layer, 300 inputs -> 400 units", (400, 300), ("out", "in"), (300, 400)),
    "conv1d": LayerSpec("1-D convolution, 4 -> 8 channels, kernel 3", (8, 4, 3), ("out", "in", "space"), (12, 24)),
    "conv2d": LayerSpec("2-D convolution, 3 -> 16 channels, kernel 5x5", (16, 3, 5, 5),
                        ("out", "in", "space", "space"), (75, 400)),
    "conv3d": LayerSpec("3-D convolution, 2 -> 4 channels, kernel 3x3x3", (4, 2, 3, 3, 3),
                        ("out", "in", "space", "space", "space"), (54, 108)),
    "conv_transpose2d": LayerSpec("2-D transposed convolution, 6 -> 4 channels, kernel 3x3", (6, 4, 3, 3),
                                  ("in", "out", "space", "space"), (54, 36)),
    "grouped_conv2d": LayerSpec("2-D convolution, 8 -> 16 channels, 4 groups, kernel 3x3", (16, 2, 3, 3),
                                ("out", "in", "space", "space"), (18, 36), groups=4),
    "depthwise_conv2d": LayerSpec("depthwise 2-D convolution, 8 channels (8 groups, multiplier 1), kernel 3x3",
                                  (8, 1, 3, 3), ("out", "in", "space", "space"), (9, 9), groups=8),
    "embedding": LayerSpec("embedding, 50 tokens x 16 dimensions", (50, 16), ("in", "out"), (50, 16)),
}
