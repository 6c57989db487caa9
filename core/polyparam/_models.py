"""Standard architectures every backend builds: the seed chapter's models.

The conformance kit and ``polyparam tour`` use them, so a backend's factory is all
either needs to run the chapter on that framework.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Case", "ModelFactory"]


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
