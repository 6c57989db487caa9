"""A small module system on NumPy, shaped like Gluon: polyparam's reference backend.

::

    from polyparam import numpy as pnp

    net = pnp.Sequential()
    net.add(pnp.Dense(8, activation="relu"), pnp.Dense(1))   # no in_units: deferred
    net.initialize()                 # recorded; runs at the first forward
    y = net(np.random.rand(2, 4))    # shapes inferred, parameters initialized
    net.backward()                   # gradients of sum(y), tied ones summed

Forward and backward are real, so gradients exist and tied parameters (a block
reused, or ``Dense(..., params=shared.params)``) get the sum of their uses' gradients.
Weights are stored in canonical layout ``(out, in)``.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any, Callable, Iterator

import numpy as np

from polyparam import errors

__all__ = ["Activation", "Block", "Dense", "Param", "Sequential"]

_name_counts: Counter[str] = Counter()


def _auto_prefix(kind: str) -> str:
    n = _name_counts[kind]
    _name_counts[kind] += 1
    return f"{kind}{n}_"


class Param:
    """One parameter: its data, gradient and (possibly unknown) shape.

    Attributes:
        name: The global name, Gluon style (``"dense0_weight"``).
        shape: The shape; unknown dimensions are ``None`` until the first forward.
        data: The value, or ``None`` before initialization.
        grad: The gradient of the last backward pass, or ``None``.
    """

    def __init__(self, name: str, shape: tuple[int | None, ...], *, dtype: Any = "float32", role: str = "weight",
                 axes: tuple[str, ...] | None = None, trainable: bool = True, groups: int = 1) -> None:
        self.name = name
        self.groups = groups
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.role = role
        self.axes = axes
        self.trainable = trainable
        self.data: np.ndarray | None = None
        self.grad: np.ndarray | None = None
        self.pending_init: Callable[[], None] | None = None

    @property
    def deferred(self) -> bool:
        return None in self.shape

    def infer_shape(self, shape: tuple[int, ...]) -> None:
        """Fill unknown dimensions (the first forward pass calls this)."""
        if len(shape) != len(self.shape) or any(d is not None and d != s for d, s in zip(self.shape, shape)):
            msg = (f"Cannot infer the shape of {self.name!r}: expected one compatible with {self.shape}, "
                   f"got {shape}. Check the input's last dimension.")
            raise errors.ShapeMismatchError(msg, path=self.name, expected=self.shape, got=shape)
        self.shape = tuple(shape)

    def ready(self) -> np.ndarray:
        """The data, running a recorded (deferred) initializer first if needed."""
        if self.data is None:
            if self.deferred:
                msg = (f"Cannot run forward with parameter {self.name!r}: expected a known shape, got {self.shape}. "
                       "This is a bug in the layer: it must infer shapes before reading data.")
                raise errors.DeferredInitializationError(msg, path=self.name, got=self.shape)
            if self.pending_init is None:
                msg = (f"Cannot run forward with parameter {self.name!r}: expected an initialized parameter, got one "
                       "never initialized. Call net.initialize() (or pp.tree(net).initialize()) first.")
                raise errors.UninitializedParameterError(msg, path=self.name, expected="initialized",
                                                         got="uninitialized")
            fill, self.pending_init = self.pending_init, None
            fill()
        assert self.data is not None
        return self.data

    def __repr__(self) -> str:
        shape = tuple("?" if d is None else d for d in self.shape)
        return f"Parameter {self.name} (shape={shape}, dtype={self.dtype.name})"


class Block:
    """Base of every layer and container.

    Assigning a :class:`Block` or :class:`Param` to an attribute registers it, as in
    Gluon, so custom blocks need no bookkeeping::

        class MLP(Block):
            def __init__(self):
                super().__init__()
                self.hidden = Dense(256, activation="relu")
                self.out = Dense(10)

            def forward(self, x, tape):
                return self.out.forward(self.hidden.forward(x, tape), tape)
    """

    #: Child blocks and own parameters by attribute name (registered by ``__setattr__``).
    _children: OrderedDict[str, Block]
    params: OrderedDict[str, Param]

    def __init__(self, prefix: str | None = None) -> None:
        object.__setattr__(self, "_children", OrderedDict())
        object.__setattr__(self, "params", OrderedDict())
        self.prefix = prefix if prefix is not None else _auto_prefix(type(self).__name__.lower())
        self._tape: list[tuple[Block, Any]] | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, Block):
            self._children[name] = value
        elif isinstance(value, Param):
            self.params[name] = value
        object.__setattr__(self, name, value)

    # ---- structure -------------------------------------------------------------

    def children(self) -> list[tuple[str, Block]]:
        return list(self._children.items())

    def collect_params(self) -> dict[str, Param]:
        """Every parameter by global name, shared ones once (Gluon's ``collect_params``)."""
        out: dict[str, Param] = {}
        for block in self._walk():
            for param in block.params.values():
                out.setdefault(param.name, param)
        return out

    def _walk(self) -> Iterator[Block]:
        yield self
        for _, child in self._children.items():
            yield from child._walk()

    # ---- computation -----------------------------------------------------------

    def __call__(self, x: Any) -> np.ndarray:
        tape: list[tuple[Block, Any]] = []
        y = self.forward(np.asarray(x, dtype=np.float32), tape)
        self._tape = tape
        self._last_output = y
        return y

    def forward(self, x: np.ndarray, tape: list[tuple[Block, Any]]) -> np.ndarray:
        """Compute the output, appending what backward needs to ``tape``."""
        msg = f"{type(self).__name__} must implement forward(x, tape)."
        raise NotImplementedError(msg)

    def backward_step(self, cache: Any, grad: np.ndarray) -> np.ndarray:
        """Given the cache this block put on the tape and d(loss)/d(output), accumulate
        parameter gradients and return d(loss)/d(input)."""
        msg = f"{type(self).__name__} must implement backward_step(cache, grad)."
        raise NotImplementedError(msg)

    def backward(self, grad: Any = None) -> np.ndarray:
        """Backpropagate through the last forward pass (of ``sum(output)`` when ``grad`` is None).

        Gradients are overwritten (Gluon's ``grad_req="write"``); a parameter used
        several times gets the sum of its uses' gradients.
        """
        if self._tape is None:
            msg = "Cannot run backward: expected a forward pass first, got none. Call net(x) first."
            raise RuntimeError(msg)
        g = np.ones_like(self._last_output) if grad is None else np.asarray(grad, dtype=np.float32)
        for block, _ in self._tape:
            for param in block.params.values():   # frozen parameters get no gradient (Gluon's grad_req "null")
                param.grad = np.zeros_like(param.data) if param.trainable and param.data is not None else None
        for block, cache in reversed(self._tape):
            g = block.backward_step(cache, g)
        return g

    def zero_grad(self) -> None:
        for param in self.collect_params().values():
            param.grad = None

    def initialize(self, init: Any = None, *, force_reinit: bool = False, seed: int | None = None) -> Any:
        """Initialize every parameter; see :meth:`polyparam.ParameterTree.initialize`."""
        from polyparam._manager import tree

        return tree(self).initialize(init, force_reinit=force_reinit, seed=seed)

    def __repr__(self) -> str:
        if not self._children:
            return f"{type(self).__name__}()"
        lines = [f"{type(self).__name__}("]
        for name, child in self._children.items():
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        lines.append(")")
        return "\n".join(lines)


_ACTIVATIONS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray, np.ndarray], np.ndarray]]] = {
    "relu": (lambda z: np.maximum(z, 0), lambda z, g: g * (z > 0)),
    "tanh": (np.tanh, lambda z, g: g * (1 - np.tanh(z) ** 2)),
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda z, g: g * (s := 1 / (1 + np.exp(-z))) * (1 - s)),
}


def _activation(name: str | None) -> Any:
    if name is None:
        return None
    if name not in _ACTIVATIONS:
        msg = (f"Invalid value for argument `activation`: expected one of {sorted(_ACTIVATIONS)}. "
               f"Received: activation={name!r}.")
        raise errors.InvalidArgumentError(msg, argument="activation", expected=sorted(_ACTIVATIONS), got=name)
    return _ACTIVATIONS[name]


class Activation(Block):
    """An element-wise nonlinearity as its own layer (``"relu"``, ``"tanh"``, ``"sigmoid"``)."""

    def __init__(self, activation: str, prefix: str | None = None) -> None:
        super().__init__(prefix)
        self.activation = activation
        self._fns = _activation(activation)

    def forward(self, x: np.ndarray, tape: list[tuple[Block, Any]]) -> np.ndarray:
        tape.append((self, x))
        return self._fns[0](x)

    def backward_step(self, cache: Any, grad: np.ndarray) -> np.ndarray:
        return self._fns[1](cache, grad)

    def __repr__(self) -> str:
        return f"Activation({self.activation})"


class Dense(Block):
    """A fully connected layer ``y = act(x @ weight.T + bias)``; weight is ``(units, in_units)``.

    Args:
        units: Output size.
        activation: ``None``, ``"relu"``, ``"tanh"`` or ``"sigmoid"``.
        in_units: Input size; ``None`` defers the weight's shape to the first forward.
        use_bias: Whether to add a bias.
        params: Another Dense's ``params`` to share (tie) them, as in Gluon.
    """

    def __init__(self, units: int, activation: str | None = None, in_units: int | None = None, *,
                 use_bias: bool = True, dtype: Any = "float32", params: dict[str, Param] | None = None,
                 prefix: str | None = None) -> None:
        super().__init__(prefix)
        self.units, self.activation = units, activation
        self._fns = _activation(activation)
        if params is not None:
            for name, param in params.items():
                self.params[name] = param
        else:
            self.params["weight"] = Param(f"{self.prefix}weight", (units, in_units), dtype=dtype,
                                          role="weight", axes=("out", "in"))
            if use_bias:
                self.params["bias"] = Param(f"{self.prefix}bias", (units,), dtype=dtype, role="bias", axes=("out",))

    def forward(self, x: np.ndarray, tape: list[tuple[Block, Any]]) -> np.ndarray:
        weight = self.params["weight"]
        if weight.deferred:
            weight.infer_shape((self.units, x.shape[-1]))
        w = weight.ready()
        z = x @ w.T
        bias = self.params.get("bias")
        if bias is not None:
            z = z + bias.ready()
        tape.append((self, (x, z)))
        return z if self._fns is None else self._fns[0](z)

    def backward_step(self, cache: Any, grad: np.ndarray) -> np.ndarray:
        x, z = cache
        if self._fns is not None:
            grad = self._fns[1](z, grad)
        weight = self.params["weight"]
        if weight.grad is not None:
            weight.grad += grad.reshape(-1, grad.shape[-1]).T @ x.reshape(-1, x.shape[-1])
        bias = self.params.get("bias")
        if bias is not None and bias.grad is not None:
            bias.grad += grad.reshape(-1, grad.shape[-1]).sum(axis=0)
        return grad @ weight.data

    def __repr__(self) -> str:
        in_units = self.params["weight"].shape[1]
        return f"Dense({'?' if in_units is None else in_units} -> {self.units}, {self.activation or 'linear'})"


class Sequential(Block):
    """Blocks applied in order; ``net[i]`` is the i-th block."""

    def __init__(self, *blocks: Block, prefix: str | None = None) -> None:
        super().__init__(prefix)
        self.add(*blocks)

    def add(self, *blocks: Block) -> Sequential:
        for block in blocks:
            self._children[str(len(self._children))] = block
        return self

    def __getitem__(self, i: int) -> Block:
        return list(self._children.values())[i]

    def __len__(self) -> int:
        return len(self._children)

    def __iter__(self) -> Iterator[Block]:
        return iter(list(self._children.values()))

    def forward(self, x: np.ndarray, tape: list[tuple[Block, Any]]) -> np.ndarray:
        for block in self._children.values():
            x = block.forward(x, tape)
        return x


def _reset_names() -> None:
    """Restart the global name counters (Gluon restarts them per process)."""
    _name_counts.clear()

