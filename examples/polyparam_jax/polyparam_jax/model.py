"""Stax-style layers and :class:`Model`, the mutable holder of a JAX network's parameters.

JAX is functional: ``jax.example_libraries.stax`` gives each layer as a pair
``(init_fun, apply_fun)`` and leaves the parameter pytree to the caller. A
:class:`Model` keeps that pytree (nested lists, mutable) next to the functions, builds
it on the first call when no input shape was given (deferred shapes), records
gradients from ``jax.grad``, and ties parameters by using one leaf in several places
of the function, so JAX sums a tied group's gradients by itself.

::

    from polyparam_jax.model import Dense, Model, Relu, Sequential

    net = Model(Sequential(Dense(8), Relu, Dense(1)))     # shapes unknown until the first call
    net(jnp.ones((2, 4)))
    net.backward(jnp.ones((2, 4)))                         # gradients of sum(output)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.example_libraries import stax

__all__ = ["BatchNorm", "Conv", "ConvTranspose", "Dense", "Embedding", "Layer", "Leaf", "Model", "Relu", "Sequential"]

Address = tuple[int, ...]


@dataclass(frozen=True)
class Leaf:
    """One parameter of a layer: its canonical name, role, axis roles, and the
    permutation from the native layout to the canonical one (``None``: the same)."""

    name: str
    role: str = "weight"
    axes: tuple[str, ...] | None = None
    to_canonical: tuple[int, ...] | None = None
    trainable: bool = True
    groups: int = 1


@dataclass(eq=False)
class Layer:
    """A stax layer with what polyparam needs to know about its parameters.

    ``params`` built by ``init_fun`` are a list with one entry per leaf (a
    :class:`Sequential`'s, one entry per child).
    """

    init_fun: Callable[..., Any]
    apply_fun: Callable[..., Any]
    kind: str
    leaves: tuple[Leaf, ...] = ()
    children: tuple[Layer, ...] = field(default_factory=tuple)


def Dense(units: int) -> Layer:  # noqa: N802 - stax's layer names
    """``stax.Dense``: kernel stored ``(in, out)``; canonical ``(out, in)``."""
    init, apply = stax.Dense(units)
    return Layer(init, apply, "dense", (Leaf("weight", axes=("out", "in"), to_canonical=(1, 0)), Leaf("bias", "bias")))


def _relu() -> Layer:
    init, apply = stax.Relu
    return Layer(init, apply, "relu")


Relu = _relu()


def Conv(out_channels: int, kernel: Sequence[int], *, groups: int = 1) -> Layer:  # noqa: N802 - stax's layer names
    """1-, 2- or 3-d convolution, channels first, kernel stored ``(out, in/groups, *kernel)`` (already canonical)."""
    n = len(kernel)
    if not 1 <= n <= 3:
        msg = f"Invalid value for argument `kernel`: expected 1 to 3 sizes. Received: kernel={tuple(kernel)!r}."
        raise ValueError(msg)
    spatial = "DHW"[-n:]
    dims = ("NC" + spatial, "OI" + spatial, "NC" + spatial)

    def init_fun(rng: Any, input_shape: tuple[int, ...]) -> tuple[tuple[int, ...], list[Any]]:
        in_channels = input_shape[1]
        shape = (out_channels, in_channels // groups, *kernel)
        w = jax.nn.initializers.he_uniform(in_axis=1, out_axis=0)(rng, shape, jnp.float32)
        b = jnp.zeros((out_channels,), jnp.float32)
        out_space = tuple(-1 if d == -1 else d - k + 1 for d, k in zip(input_shape[2:], kernel))
        return (input_shape[0], out_channels, *out_space), [w, b]

    def apply_fun(params: Sequence[Any], x: Any, **_: Any) -> Any:
        w, b = params
        y = lax.conv_general_dilated(x, w, (1,) * n, "VALID", dimension_numbers=dims, feature_group_count=groups)
        return y + b.reshape((1, -1) + (1,) * n)

    leaves = (Leaf("weight", axes=("out", "in") + ("space",) * n, groups=groups), Leaf("bias", "bias"))
    return Layer(init_fun, apply_fun, f"conv{n}d", leaves)


def ConvTranspose(out_channels: int, kernel: Sequence[int], *, groups: int = 1) -> Layer:  # noqa: N802 - stax's names
    """1-, 2- or 3-d transposed convolution, channels first, kernel stored ``(in, out/groups, *kernel)`` as PyTorch
    does (canonical): the adjoint of :func:`Conv` with the same kernel."""
    n = len(kernel)
    if not 1 <= n <= 3:
        msg = f"Invalid value for argument `kernel`: expected 1 to 3 sizes. Received: kernel={tuple(kernel)!r}."
        raise ValueError(msg)
    spatial = "DHW"[-n:]
    dims = ("NC" + spatial, "OI" + spatial, "NC" + spatial)

    def init_fun(rng: Any, input_shape: tuple[int, ...]) -> tuple[tuple[int, ...], list[Any]]:
        in_channels = input_shape[1]
        init = jax.nn.initializers.he_uniform(in_axis=0, out_axis=1)
        w = init(rng, (in_channels, out_channels // groups, *kernel), jnp.float32)
        out_space = tuple(-1 if d == -1 else d + k - 1 for d, k in zip(input_shape[2:], kernel))
        return (input_shape[0], out_channels, *out_space), [w, jnp.zeros((out_channels,), jnp.float32)]

    def apply_fun(params: Sequence[Any], x: Any, **_: Any) -> Any:
        w, b = params
        # The adjoint of a cross-correlation is a full cross-correlation with the kernel flipped in space and
        # in/out swapped within each group: (in, out/g, k...) -> (g, out/g, in/g, k...) -> (out, in/g, k...).
        in_channels, per_group_out = w.shape[:2]
        grouped = w.reshape((groups, in_channels // groups, per_group_out, *kernel))
        kernel_oi = jnp.swapaxes(grouped, 1, 2).reshape((per_group_out * groups, in_channels // groups, *kernel))
        kernel_oi = jnp.flip(kernel_oi, axis=tuple(range(2, 2 + n)))
        pad = [(k - 1, k - 1) for k in kernel]
        y = lax.conv_general_dilated(x, kernel_oi, (1,) * n, pad, dimension_numbers=dims, feature_group_count=groups)
        return y + b.reshape((1, -1) + (1,) * n)

    leaves = (Leaf("weight", axes=("in", "out") + ("space",) * n, groups=groups), Leaf("bias", "bias"))
    return Layer(init_fun, apply_fun, "conv_transpose", leaves)


def Embedding(tokens: int, dim: int) -> Layer:  # noqa: N802 - stax's layer names
    """A lookup table ``(tokens, dim)``; integer inputs."""

    def init_fun(rng: Any, input_shape: tuple[int, ...]) -> tuple[tuple[int, ...], list[Any]]:
        return (*input_shape, dim), [jax.random.normal(rng, (tokens, dim), jnp.float32)]

    def apply_fun(params: Sequence[Any], x: Any, **_: Any) -> Any:
        return jnp.take(params[0], x, axis=0)

    return Layer(init_fun, apply_fun, "embedding", (Leaf("weight", axes=("in", "out")),))


def BatchNorm(features: int, *, epsilon: float = 1e-5) -> Layer:  # noqa: N802 - stax's layer names
    """Inference-mode batch normalization over axis 1, with running statistics as buffers."""

    def init_fun(rng: Any, input_shape: tuple[int, ...]) -> tuple[tuple[int, ...], list[Any]]:
        ones, zeros = jnp.ones((features,), jnp.float32), jnp.zeros((features,), jnp.float32)
        return input_shape, [ones, zeros, zeros, ones]

    def apply_fun(params: Sequence[Any], x: Any, **_: Any) -> Any:
        scale, shift, mean, var = (p.reshape((1, -1) + (1,) * (x.ndim - 2)) for p in params)
        return (x - mean) / jnp.sqrt(var + epsilon) * scale + shift

    leaves = (Leaf("weight", "scale", ("out",)), Leaf("bias", "shift", ("out",)),
              Leaf("running_mean", "running_mean", ("out",), trainable=False),
              Leaf("running_var", "running_var", ("out",), trainable=False))
    return Layer(init_fun, apply_fun, "batchnorm", leaves)


def Sequential(*layers: Layer) -> Layer:  # noqa: N802 - stax's layer names
    """``stax.serial``; a layer object given twice shares its parameters (a tie)."""
    init, apply = stax.serial(*[(layer.init_fun, layer.apply_fun) for layer in layers])
    return Layer(init, apply, "sequential", children=tuple(layers))


def _mutable(tree: Any) -> Any:
    """Nested tuples/lists of arrays as nested lists, so one leaf can be replaced in place."""
    if isinstance(tree, (list, tuple)):
        return [_mutable(t) for t in tree]
    return tree


def _get(tree: Any, address: Address) -> Any:
    for i in address:
        tree = tree[i]
    return tree


def _set(tree: Any, address: Address, value: Any) -> None:
    _get(tree, address[:-1])[address[-1]] = value


class Model:
    """A stax network and its parameters.

    Args:
        layer: The network (usually a :func:`Sequential`).
        input_shape: Build now for this input shape (``-1`` for the batch); ``None``
            defers building to the first call, like a lazy module.
        seed: Key of JAX's own default initialization.
        input_rank: Rank of the inputs, to describe parameters before they exist.
    """

    def __init__(self, layer: Layer, input_shape: tuple[int, ...] | None = None, *, seed: int = 0,
                 input_rank: int = 2) -> None:
        self.layer = layer
        self.seed = seed
        self.input_rank = input_rank
        self.params: Any = None
        self.grads: Any = None
        self.pending: dict[Address, Callable[[], None]] = {}
        self.ties: dict[Address, Address] = {}
        self.frozen: set[Address] = set()   # anchors an optimizer step leaves alone (no gradient either)
        self._abstract: Any = None
        self._native_ties(layer, ())
        if input_shape is not None:
            self.build(input_shape)

    def _native_ties(self, layer: Layer, address: Address, first: dict[int, Address] | None = None) -> None:
        first = {} if first is None else first
        for i, child in enumerate(layer.children):
            where = (*address, i)
            if id(child) in first and child.leaves:
                for j in range(len(child.leaves)):
                    member: Address = (*where, j)
                    self.ties[member] = (*first[id(child)], j)
            first.setdefault(id(child), where)
            self._native_ties(child, where, first)

    # ---- parameters ----------------------------------------------------------------

    def anchor(self, address: Address) -> Address:
        """The address that holds the value for ``address`` (itself unless tied)."""
        seen = set()
        while address in self.ties:
            if address in seen:  # pragma: no cover - ties never form cycles
                raise RuntimeError(address)
            seen.add(address)
            address = self.ties[address]
        return address

    def abstract_shape(self, address: Address) -> tuple[int | None, ...]:
        """A leaf's native shape before building; dimensions that depend on the input are ``None``."""
        if self._abstract is None:
            shapes = []
            for features in (3, 5):
                shape = (-1,) * (self.input_rank - 1) + (features,)
                _, params = jax.eval_shape(lambda k, s=shape: self.layer.init_fun(k, s), jax.random.PRNGKey(0))
                shapes.append(_mutable(params))
            self._abstract = jax.tree_util.tree_map(
                lambda a, b: tuple(x if x == y else None for x, y in zip(a.shape, b.shape)), shapes[0], shapes[1],
                is_leaf=lambda x: hasattr(x, "shape"))
        return _get(self._abstract, address)

    def build(self, input_shape: tuple[int, ...]) -> None:
        """Create the parameters for inputs of ``input_shape``, then run deferred initializations."""
        _, params = self.layer.init_fun(jax.random.PRNGKey(self.seed), tuple(input_shape))
        self.params = _mutable(params)
        pending, self.pending = self.pending, {}
        for fill in pending.values():
            fill()

    def resolved(self, params: Any) -> Any:
        """``params`` with every tied leaf replaced by its anchor's (the tree ``apply_fun`` sees)."""
        if not self.ties:
            return params
        out = jax.tree_util.tree_map(lambda x: x, params)
        out = _mutable(out)
        for member in self.ties:
            _set(out, member, _get(params, self.anchor(member)))
        return out

    # ---- running -------------------------------------------------------------------

    def __call__(self, x: Any) -> Any:
        x = jnp.asarray(x)
        if self.params is None:
            self.build(tuple(x.shape))
        return self.layer.apply_fun(self.resolved(self.params), x)

    def backward(self, x: Any, loss: Callable[[Any], Any] = jnp.sum) -> None:
        """Store in :attr:`grads` the gradient of ``loss(self(x))`` with respect to every parameter."""
        x = jnp.asarray(x)
        if self.params is None:
            self.build(tuple(x.shape))
        grads = jax.grad(lambda p: loss(self.layer.apply_fun(self.resolved(p), x)))(self.params)
        self.grads = _mutable(grads)

    def sgd_step(self, x: Any, lr: float, loss: Callable[[Any], Any] = jnp.sum) -> None:
        """One plain SGD step on ``loss(self(x))`` for every leaf that is not frozen."""
        self.backward(x, loss)
        for address in addresses(self.layer):
            if address in self.ties or address in self.frozen:
                continue
            _set(self.params, address, _get(self.params, address) - lr * _get(self.grads, address))

    def __repr__(self) -> str:
        state = "deferred" if self.params is None else "built"
        return f"Model({self.layer.kind}, {state})"


def addresses(layer: Layer, prefix: Address = ()) -> list[Address]:
    """Every leaf address of ``layer``, in order."""
    out = [(*prefix, j) for j in range(len(layer.leaves))]
    for i, child in enumerate(layer.children):
        out.extend(addresses(child, (*prefix, i)))
    return out

