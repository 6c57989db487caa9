"""The NumPy reference backend: :mod:`polyparam.numpy` models and nested dicts of arrays.

Registered by the plugin manager like any plugin (it is also the hook implementation
module). Every other backend is tested against its behaviour by the conformance kit.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from polyparam import errors, roles
from polyparam.backend import (
    LAYER_SPECS,
    Case,
    ModelFactory,
    Parameter,
    ParameterTree,
    Shape,
    State,
    discovery_hooks,
    join_path,
)
from polyparam.numpy import Block, Dense, Param, Sequential

__all__ = ["CAPABILITIES", "NAME", "framework_version", "is_native", "models", "tree"]

NAME = "numpy"
CAPABILITIES = frozenset({"tying", "deferred", "gradients", "forward", "training", "casting"})


def framework_version() -> str:
    return np.__version__


def is_native(obj: object, /) -> bool:
    return isinstance(obj, (Block, dict))


def tree(obj: object, /) -> ParameterTree:
    if isinstance(obj, Block):
        return BlockTree(obj)
    if isinstance(obj, dict):
        _check_arrays(obj, "")
        return DictTree(obj)
    msg = (f"Cannot wrap {type(obj).__name__} with the numpy backend: expected a polyparam.numpy Block "
           "or a nested dict of NumPy arrays. Build the model with polyparam.numpy.")
    raise errors.UnsupportedModelError(msg, backend=NAME, expected="Block or dict", got=type(obj).__name__)


def models() -> ModelFactory:
    return NumpyModels()


# ---- polyparam.numpy blocks --------------------------------------------------------


class NumpyParameter(Parameter):
    """A :class:`polyparam.numpy.Param`, found live through its owning block."""

    backend = NAME

    def __init__(self, path: str, owner: Block, attr: str) -> None:
        param = owner.params[attr]
        role, axes = roles.lookup(owner, attr, ndim=len(param.shape))   # a declaration wins over the block's
        super().__init__(path, role=role or param.role, axes=axes or param.axes, trainable=param.trainable,
                         groups=param.groups)
        self._owner, self._attr = owner, attr

    @property
    def _param(self) -> Param:
        return self._owner.params[self._attr]

    def _shape(self) -> Shape:
        return self._param.shape

    def _dtype(self) -> Any:
        return self._param.dtype

    def _device(self) -> str:
        return "cpu"

    def _native(self) -> Param:
        return self._param

    def _native_name(self) -> str:
        return self._param.name

    def _state(self) -> State:
        param = self._param
        if param.deferred:
            return "deferred"
        return "uninitialized" if param.data is None else "initialized"

    def _read(self) -> np.ndarray:
        return self._param.data  # type: ignore[return-value]  # the base class reads initialized parameters only

    def _write(self, array: np.ndarray, /) -> None:
        param = self._param
        if param.data is None:
            param.data = np.array(array, dtype=param.dtype, copy=True)
        else:
            param.data[...] = array
        param.pending_init = None

    def _grad(self) -> np.ndarray | None:
        return self._param.grad

    def _write_grad(self, array: np.ndarray | None, /) -> None:
        self._param.grad = None if array is None else np.array(array, dtype=self._param.dtype, copy=True)

    def _trainable(self) -> bool:
        return self._param.trainable

    def _set_trainable(self, value: bool, /) -> None:
        self._param.trainable = value

    def _cast(self, dtype: np.dtype, /) -> None:
        param = self._param
        param.dtype = np.dtype(dtype)
        if param.data is not None:
            param.data = param.data.astype(dtype)
        if param.grad is not None:
            param.grad = param.grad.astype(dtype)

    def _identity(self) -> Any:
        return id(self._param)

    def _writable_view(self) -> np.ndarray | None:
        return self._param.data

    def _write_refusal(self) -> str | None:
        data = self._param.data
        return None if data is None or data.flags.writeable else "a read-only array (flags.writeable is False)"

    def _accepts_deferred_value(self) -> bool:
        return True

    def _write_deferred(self, array: np.ndarray, /) -> None:
        param = self._param
        param.infer_shape(array.shape)
        param.data = np.array(array, dtype=param.dtype, copy=True)
        param.pending_init = None

    def _defer(self, fill: Any, /) -> None:
        self._param.pending_init = fill

    def _share(self, anchor: Parameter, /) -> None:
        self._owner.params[self._attr] = anchor._native()

    def _unshare(self) -> None:
        old = self._param
        own = Param(f"{self._owner.prefix}{self._attr}", old.shape, dtype=old.dtype, role=old.role,
                    axes=old.axes, trainable=old.trainable, groups=old.groups)
        own.data = None if old.data is None else old.data.copy()
        own.pending_init = old.pending_init
        self._owner.params[self._attr] = own


class BlockTree(ParameterTree):
    """A :class:`polyparam.numpy.Block` as a parameter tree."""

    backend = NAME

    def _children(self) -> list[tuple[str, ParameterTree]]:
        return [(name, BlockTree(child, path=join_path(self.path, name))) for name, child in self.native.children()]

    def _leaves(self) -> list[tuple[str, Parameter]]:
        return [(attr, NumpyParameter(join_path(self.path, attr), self.native, attr)) for attr in self.native.params]

    def _forward(self, inputs: Any, /) -> Any:
        # forward with a throwaway tape, not __call__: the block's recorded tape for backward stays as it was
        return self.native.forward(np.asarray(inputs, dtype=np.float32), [])


# ---- nested dicts of arrays ----------------------------------------------------------


def _role(leaf: str, ndim: int) -> str:
    if leaf == "weight":
        return "weight" if ndim >= 2 else "scale"
    if leaf == "bias":
        return "bias"
    if leaf in ("running_mean", "running_var"):
        return leaf
    return "other"


def _check_arrays(container: dict, prefix: str) -> None:
    for key, value in container.items():
        path = join_path(prefix, str(key))
        if isinstance(value, dict):
            _check_arrays(value, path)
        elif not isinstance(value, np.ndarray):
            msg = (f"Cannot wrap dict entry {path!r}: expected a NumPy array or a nested dict, got "
                   f"{type(value).__name__}. Convert it with np.asarray.")
            raise errors.UnsupportedModelError(msg, backend=NAME, path=path, expected="ndarray",
                                               got=type(value).__name__)


class ArrayParameter(Parameter):
    """One array of a nested dict; writes go into the array in place."""

    backend = NAME

    def __init__(self, path: str, owner: dict, key: str) -> None:
        super().__init__(path, role=_role(key, owner[key].ndim), trainable=True)
        self._owner, self._key = owner, key

    @property
    def _array(self) -> np.ndarray:
        return self._owner[self._key]

    def _shape(self) -> Shape:
        return self._array.shape

    def _dtype(self) -> Any:
        return self._array.dtype

    def _device(self) -> str:
        return "cpu"

    def _native(self) -> np.ndarray:
        return self._array

    def _native_name(self) -> str:
        return self.path

    def _state(self) -> State:
        return "initialized"

    def _read(self) -> np.ndarray:
        return self._array

    def _write(self, array: np.ndarray, /) -> None:
        self._array[...] = array

    def _grad(self) -> np.ndarray | None:
        return None

    def _identity(self) -> Any:
        return id(self._array)

    def _writable_view(self) -> np.ndarray | None:
        return self._array if self._array.flags.writeable else None

    def _write_refusal(self) -> str | None:
        return None if self._array.flags.writeable else "a read-only array (flags.writeable is False)"

    def _share(self, anchor: Parameter, /) -> None:
        self._owner[self._key] = anchor._native()

    def _unshare(self) -> None:
        self._owner[self._key] = self._array.copy()


class DictTree(ParameterTree):
    """A nested dict of arrays as a parameter tree (keys are path segments)."""

    backend = NAME

    def _children(self) -> list[tuple[str, ParameterTree]]:
        return [(str(k), DictTree(v, path=join_path(self.path, str(k)))) for k, v in self.native.items()
                if isinstance(v, dict)]

    def _leaves(self) -> list[tuple[str, Parameter]]:
        return [(str(k), ArrayParameter(join_path(self.path, str(k)), self.native, k)) for k, v in self.native.items()
                if isinstance(v, np.ndarray)]

    def _occurrences(self) -> list[tuple[str, Parameter]]:
        """As the base class's, refusing two entries with one path (``{"a.b": x, "a": {"b": y}}``): a save would
        keep one of them, a load write both."""
        found = super()._occurrences()
        if len({path for path, _ in found}) < len(found):
            seen: dict[str, str] = {}
            for path, p in found:
                raw = cast("ArrayParameter", p)._key
                parent = path[:len(path) - len(str(raw))].rstrip(".")
                entry = f"key {raw!r} " + (f"under {parent!r}" if parent else "at the top")   # (0 and '0' differ)
                if path in seen:
                    msg = (f"Cannot make a tree of this dict: expected one entry per path, got two at {path!r}: "
                           f"{seen[path]} and {entry}. Rename one of the keys (a key with a dot is a path).")
                    raise errors.AmbiguousNameError(msg, path=path, expected="one entry per path",
                                                    got=[seen[path], entry])
                seen[path] = entry
        return found


# ---- the reference models ---------------------------------------------------------------


class NumpyModels(ModelFactory):
    """The chapter's models in :mod:`polyparam.numpy`, laid out as in the MXNet seed."""

    def mlp(self) -> Case:
        net = Sequential(Dense(8, activation="relu", in_units=4), Dense(1, in_units=8))
        net.initialize()
        return Case(net, in_features=4, layers=["0", "1"])

    def rgnet(self) -> Case:
        def block1() -> Sequential:
            return Sequential(Dense(32, activation="relu"), Dense(16, activation="relu"))

        def block2() -> Sequential:
            return Sequential(*[block1() for _ in range(4)])

        net = Sequential(block2(), Dense(10))
        net.initialize()
        net(np.zeros((1, 4), np.float32))
        layers = [f"0.{i}.{j}" for i in range(4) for j in range(2)] + ["1"]
        return Case(net, in_features=4, layers=layers)

    def shared(self) -> Case:
        shared = Dense(8, activation="relu")
        net = Sequential(Dense(8, activation="relu"), shared, Dense(8, activation="relu", params=shared.params),
                         Dense(10))
        net.initialize()
        net(np.zeros((1, 20), np.float32))
        return Case(net, in_features=20, layers=["0", "1", "2", "3"], tied=[("1", "2")])

    def lazy(self) -> Case:
        return Case(Sequential(Dense(256, activation="relu"), Dense(10)), in_features=20, layers=["0", "1"])

    def forward(self, model: Block, x: np.ndarray, /) -> np.ndarray:
        return model(x)

    def layer(self, kind: str, /) -> Block:
        """A real :class:`~polyparam.numpy.Dense` for ``"dense"``; the module system has no other layers, so the
        other kinds are parameter holders with their layout (and a bias, but for the embedding)."""
        if kind == "dense":
            units, in_units = LAYER_SPECS[kind].shape
            dense = Dense(units, in_units=in_units, prefix="dense0_")
            dense.initialize()
            return dense
        block = Block(prefix=f"{kind}0_")
        if kind == "batchnorm":
            for name, role in (("weight", "scale"), ("bias", "shift"), ("running_mean", "running_mean"),
                               ("running_var", "running_var")):
                block.params[name] = Param(f"{block.prefix}{name}", (8,), role=role, axes=("out",),
                                           trainable=role in ("scale", "shift"))
        else:
            spec = LAYER_SPECS[kind]
            block.params["weight"] = Param(f"{block.prefix}weight", spec.shape, axes=spec.axes, groups=spec.groups)
            if kind != "embedding":
                transposed = spec.axes[:2] == ("in", "out")  # (in, out / groups, *kernel)
                out = spec.shape[1] * spec.groups if transposed else spec.shape[0]
                block.params["bias"] = Param(f"{block.prefix}bias", (out,), role="bias", axes=("out",))
        block.initialize()
        return block

    def forward_kinds(self) -> frozenset[str]:
        return frozenset({"dense"})

    def forward_layer(self, model: Block, kind: str, x: np.ndarray, /) -> np.ndarray:
        """Run the dense layer built by :meth:`layer`; the other kinds have no forward here."""
        kinds = sorted(self.forward_kinds())
        if kind not in kinds:
            msg = (f"Cannot run a {kind!r} layer with the numpy backend: expected one of {kinds}, got {kind!r}. "
                   "Use a framework backend: this module system has dense layers only.")
            raise errors.InvalidArgumentError(msg, argument="kind", expected=kinds, got=kind)
        return model(x)

    def backward(self, model: Block, x: np.ndarray, /) -> None:
        model(x)
        model.backward()

    def sgd_step(self, model: Block, x: np.ndarray, /, *, lr: float = 0.1) -> None:
        """The reference has no optimizer: ``data -= lr * grad`` for every trainable parameter, as SGD does."""
        self.backward(model, x)
        for param in {id(p): p for p in model.collect_params().values()}.values():
            if param.trainable and param.grad is not None and param.data is not None:
                param.data -= lr * param.grad


# ---- hooks (this module is registered as the numpy plugin by the plugin manager itself) -----

polyparam_backend_names, polyparam_get_backend, polyparam_backend_for = discovery_hooks(
    NAME, __name__, owns=is_native)
