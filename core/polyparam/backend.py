"""Everything a backend author needs, in one public module.

A backend is a plugin package registered under the entry-point group ``polyparam``.
Its ``__init__`` names the backend and answers the three discovery hooks without
importing the framework; its adapter module satisfies :class:`Backend` and subclasses
:class:`Parameter`, :class:`ParameterTree` and :class:`ModelFactory`::

    # polyparam_mybackend/__init__.py
    from polyparam.backend import discovery_hooks

    NAME = "mybackend"
    polyparam_backend_names, polyparam_get_backend, polyparam_backend_for = discovery_hooks(
        NAME, "polyparam_mybackend._backend", owns=[("mybackend", "Module")])

Built-in backends import the core only through this module, :mod:`polyparam.errors`
and the user-facing names of :mod:`polyparam` (a test reads their imports), so a
third-party backend can do everything they do. The hooks a subclass implements are
listed by tier in the docstrings of :class:`Parameter` and :class:`ParameterTree`.
"""

from __future__ import annotations

import abc
import importlib
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from polyparam._copies import own_copy
from polyparam._layout import AXIS_ROLES, KINDS, ROLES, Shape, State, default_axes, format_shape, join_path
from polyparam._params.journal import after_writes
from polyparam._params.parameter import Parameter, byte_bounds
from polyparam._params.tree import ParameterCollection, ParameterSelection, ParameterTree
from polyparam._threads import parallel_copy, parallel_map
from polyparam.hookspecs import hookimpl

__all__ = [
    "AXIS_ROLES",
    "BACKEND_NAMES",
    "KINDS",
    "LAYER_INPUTS",
    "LAYER_SPECS",
    "ROLES",
    "Backend",
    "Case",
    "LayerSpec",
    "ModelFactory",
    "Parameter",
    "ParameterCollection",
    "ParameterSelection",
    "ParameterTree",
    "Shape",
    "State",
    "after_writes",
    "byte_bounds",
    "default_axes",
    "discovery_hooks",
    "format_shape",
    "hookimpl",
    "is_instance_of",
    "join_path",
    "own_copy",
    "parallel_copy",
    "parallel_map",
]


# ---- what a backend module provides -----------------------------------------------------


@runtime_checkable
class Backend(Protocol):
    """A backend module (or object). Every built-in backend defines exactly these names.

    Attributes:
        NAME: The backend name, e.g. ``"torch"``.
        CAPABILITIES: Lowercase capability words, e.g. ``{"tying", "deferred", "devices"}``;
            the conformance kit skips what a backend does not declare.
    """

    NAME: str
    CAPABILITIES: frozenset[str]

    def framework_version(self) -> str:
        """The version of the framework this backend drives."""

    def is_native(self, obj: object, /) -> bool:
        """Whether ``obj`` is a model, layer or block this backend can wrap."""

    def tree(self, obj: object, /) -> ParameterTree:
        """Wrap ``obj`` as a :class:`~polyparam.ParameterTree`."""

    def models(self) -> ModelFactory:
        """Builders of the reference models (the chapter's architectures) in this framework."""


#: The names every backend module must define (checked when a plugin returns one).
BACKEND_NAMES = ("CAPABILITIES", "NAME", "framework_version", "is_native", "models", "tree")


# ---- the reference models every backend builds ------------------------------------------


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
    """Builds the reference models (the chapter's architectures) in one framework.

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

    def sgd_step(self, model: Any, x: np.ndarray, /, *, lr: float = 0.1) -> None:
        """One step of the framework's own plain SGD (no momentum, no weight decay) on ``sum(model(x))``.

        It updates what the framework trains and nothing else, so the kit can check that a
        parameter frozen through polyparam stays as it was. Needed for the ``training``
        capability.
        """
        msg = f"{type(self).__name__} takes no optimizer step; implement ModelFactory.sgd_step."
        raise NotImplementedError(msg)

    def layer(self, kind: str, /) -> Any:
        """A built single-layer model of ``kind`` (a key of :data:`LAYER_SPECS`, ``"batchnorm"`` or ``"layernorm"``).

        Batch norm and layer norm are over 8 features (layer norm: the last axis).

        Its tree has the weight at path ``"weight"`` (BatchNorm: ``weight``, ``bias``,
        ``running_mean``, ``running_var``).
        """
        msg = f"{type(self).__name__} does not build layer kind {kind!r}; implement ModelFactory.layer."
        raise NotImplementedError(msg)

    def forward_kinds(self) -> frozenset[str]:
        """The layer kinds whose forward :meth:`forward_layer` runs; the default is none.

        The kit's layout-meaning tests (values written through polyparam, the framework's
        forward, a NumPy reference) run for these kinds and report the others as not run.
        """
        return frozenset()

    def forward_layer(self, model: Any, kind: str, x: np.ndarray, /) -> np.ndarray:
        """Run a model :meth:`layer` built on ``x`` and return its output, both in PyTorch's layout.

        ``x`` has the shape of :data:`LAYER_INPUTS` for ``kind``: ``(N, C, *spatial)`` for
        convolutions (the adapter moves channels where its framework wants them, and moves
        them back in the output), ``(N, in)`` for dense layers, integer indices for
        embeddings, ``(N, 8)`` for batch norm, which runs in inference mode (running
        statistics). Convolutions: stride 1, no padding.
        """
        msg = f"{type(self).__name__} runs no layer forward; implement ModelFactory.forward_layer."
        raise NotImplementedError(msg)


@dataclass(frozen=True)
class LayerSpec:
    """One single-layer model every backend builds for the initializer and layout tests.

    Shapes are chosen so that no wrong axis can hide: input and output channels differ,
    kernels are not square, groups are not trivial.

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
#: parameters ``weight``/``bias``/``running_mean``/``running_var``) is built too. Every
#: layer but the embedding has a bias at ``"bias"``.
LAYER_SPECS: dict[str, LayerSpec] = {
    "dense": LayerSpec("dense layer, 300 inputs -> 400 units", (400, 300), ("out", "in"), (300, 400)),
    "conv1d": LayerSpec("1-D convolution, 4 -> 8 channels, kernel 3", (8, 4, 3), ("out", "in", "space"), (12, 24)),
    "conv2d": LayerSpec("2-D convolution, 3 -> 16 channels, kernel 5x3 (height x width)", (16, 3, 5, 3),
                        ("out", "in", "space", "space"), (45, 240)),
    "conv3d": LayerSpec("3-D convolution, 2 -> 4 channels, kernel 3x2x4", (4, 2, 3, 2, 4),
                        ("out", "in", "space", "space", "space"), (48, 96)),
    "conv_transpose2d": LayerSpec("2-D transposed convolution, 6 -> 4 channels, kernel 3x2", (6, 4, 3, 2),
                                  ("in", "out", "space", "space"), (36, 24)),
    "grouped_conv2d": LayerSpec("2-D convolution, 8 -> 16 channels, 4 groups, kernel 3x2", (16, 2, 3, 2),
                                ("out", "in", "space", "space"), (12, 24), groups=4),
    "depthwise_conv2d": LayerSpec("depthwise 2-D convolution, 8 -> 16 channels (8 groups, multiplier 2), kernel 3x2",
                                  (16, 1, 3, 2), ("out", "in", "space", "space"), (6, 12), groups=8),
    "embedding": LayerSpec("embedding, 50 tokens x 16 dimensions", (50, 16), ("in", "out"), (50, 16)),
}

#: The input of :meth:`ModelFactory.forward_layer` for each kind, in PyTorch's layout
#: (spatial sizes all differ, so a swapped axis changes the output's shape or values).
LAYER_INPUTS: dict[str, tuple[int, ...]] = {
    "dense": (3, 300),
    "conv1d": (2, 4, 9),
    "conv2d": (2, 3, 9, 7),
    "conv3d": (2, 2, 5, 6, 7),
    "conv_transpose2d": (2, 6, 5, 4),
    "grouped_conv2d": (2, 8, 6, 5),
    "depthwise_conv2d": (2, 8, 6, 5),
    "embedding": (3, 5),
    "batchnorm": (4, 8),
    "layernorm": (4, 8),
}


# ---- plugin discovery ------------------------------------------------------------------------


def is_instance_of(obj: object, module: str, name: str) -> bool:
    """Whether ``obj`` is an instance of ``module.name``, without importing ``module``.

    If ``module`` is not in :data:`sys.modules`, no object of it can exist, so the
    answer is ``False`` at the cost of a dict look-up (array-api-compat's rule).
    """
    mod = sys.modules.get(module)
    cls = getattr(mod, name, None) if mod is not None else None
    return isinstance(cls, type) and isinstance(obj, cls)


def discovery_hooks(name: str, backend_module: str, *,
                    owns: Sequence[tuple[str, str]] | Callable[[object], bool],
                    tryfirst: bool = False) -> tuple[Callable[..., object], ...]:
    """The three discovery hook implementations of a plugin that provides one backend.

    Assign them at the top of the plugin module (pluggy finds hook implementations by
    attribute name)::

        polyparam_backend_names, polyparam_get_backend, polyparam_backend_for = discovery_hooks(
            "torch", "polyparam_torch._backend", owns=[("torch.nn", "Module")])

    Args:
        name: The backend name.
        backend_module: The module satisfying :class:`Backend`, imported (with its
            framework) only when the backend is first asked for.
        owns: ``(module, class)`` pairs whose instances belong to this backend, checked
            with :func:`is_instance_of` (never importing the framework), or a predicate.
        tryfirst: Ask this plugin before the others who owns an object (for objects
            that are also another framework's, like Keras layers under the torch backend).

    Returns:
        ``(polyparam_backend_names, polyparam_get_backend, polyparam_backend_for)``.
    """
    expected = name
    if callable(owns):
        predicate = owns
    else:
        pairs = tuple(owns)

        def predicate(obj: object) -> bool:
            return any(is_instance_of(obj, module, cls) for module, cls in pairs)

    def polyparam_backend_names() -> list[str]:
        return [name]

    def polyparam_get_backend(name: str) -> ModuleType | None:  # noqa: A002 - the hookspec's argument name
        return importlib.import_module(backend_module) if name == expected else None

    def polyparam_backend_for(obj: object) -> str | None:
        return expected if predicate(obj) else None

    return (hookimpl(polyparam_backend_names), hookimpl(polyparam_get_backend),
            hookimpl(tryfirst=tryfirst)(polyparam_backend_for))
