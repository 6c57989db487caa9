""":class:`GluonTree`: a Gluon ``Block`` as a polyparam parameter tree."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from polyparam import errors
from polyparam.backend import Parameter, ParameterTree, join_path
from polyparam_mxnet import NAME
from polyparam_mxnet._convert import from_numpy, gluon, parse_devices, to_numpy
from polyparam_mxnet._parameter import GluonParameter, clear_cached_graphs

__all__ = ["GluonTree"]

#: BatchNorm-style names shown under the names every backend uses (roles scale, shift).
_RENAMES = {"gamma": "weight", "beta": "bias"}
#: Group options ``pp.param_groups`` turns into a Gluon Parameter's multipliers.
_GROUP_OPTIONS = ("lr_mult", "wd_mult", "lr", "weight_decay")


def _optimizer_rates(optimizer: Any) -> tuple[float | None, float | None]:
    """``(lr, wd)`` of what ``pp.param_groups(optimizer=...)`` got: a ``gluon.Trainer``, an
    ``mx.optimizer.Optimizer``, or the ``optimizer_params`` mapping a Trainer will be given."""
    if optimizer is None:
        return None, None
    if isinstance(optimizer, gluon.Trainer):
        optimizer = optimizer._optimizer
    if isinstance(optimizer, Mapping):
        lr, wd = optimizer.get("learning_rate", optimizer.get("lr")), optimizer.get("wd")
        return (None if lr is None else float(lr)), (0.0 if wd is None else float(wd))  # Trainer's wd default: 0
    lr, wd = getattr(optimizer, "lr", None), getattr(optimizer, "wd", None)
    if lr is None and wd is None:
        msg = (f"Invalid value for argument `optimizer`: expected a gluon.Trainer, an mx.optimizer.Optimizer or "
               f"its optimizer_params mapping, got {type(optimizer).__name__}. Pass the Trainer or its options.")
        raise errors.InvalidArgumentError(msg, argument="optimizer", expected="a Trainer", got=type(optimizer).__name__)
    return (None if lr is None else float(lr)), (None if wd is None else float(wd))


def _multipliers(options: Mapping[str, Any], lr: float | None, wd: float | None) -> tuple[float, float]:
    """``(lr_mult, wd_mult)`` of one group's options; 1.0 (the optimizer's own rate) where not given."""
    unknown = sorted(set(options) - set(_GROUP_OPTIONS))
    if unknown:
        msg = (f"Invalid option {unknown[0]!r} for a Gluon parameter group: expected {', '.join(_GROUP_OPTIONS)} "
               f"(a gluon.Parameter carries only lr_mult and wd_mult), got {unknown}. Set the others on the "
               "Trainer's optimizer.")
        raise errors.InvalidArgumentError(msg, argument="rules", expected=_GROUP_OPTIONS, got=unknown)
    mults = []
    for mult, rate, base in (("lr_mult", "lr", lr), ("wd_mult", "weight_decay", wd)):
        if mult in options:
            mults.append(float(options[mult]))
        elif rate in options and float(options[rate]) == 0.0:
            mults.append(0.0)
        elif rate in options:
            if not base:
                name = "wd" if rate == "weight_decay" else "learning_rate"
                msg = (f"Cannot express {rate}={options[rate]!r} for a Gluon parameter group: expected the "
                       f"optimizer's {name} (a Gluon Parameter holds a multiplier of it), got "
                       f"{'no optimizer=' if base is None else f'{name}=0'}. Pass optimizer= (the Trainer or its "
                       f"optimizer_params) with {name} > 0, or give {mult} directly.")
                raise errors.InvalidArgumentError(msg, argument="optimizer", expected=f"{name} > 0", got=base)
            mults.append(float(options[rate]) / base)
        else:
            mults.append(1.0)
    return mults[0], mults[1]


def _leaves_of(block: gluon.Block, path: str, root: gluon.Block) -> list[tuple[str, Parameter]]:
    """``(leaf name, parameter)`` of ``block``'s own parameters (``gamma``/``beta`` named ``weight``/``bias``)."""
    attrs = block._reg_params
    out: list[tuple[str, Parameter]] = []
    for attr in attrs:
        leaf = _RENAMES.get(attr, attr)
        if leaf != attr and leaf in attrs:
            leaf = attr  # a custom block with both names: keep Gluon's
        out.append((leaf, GluonParameter(join_path(path, leaf), block, attr, root)))
    return out


def _walk(block: gluon.Block, path: str, root: gluon.Block, out: list[tuple[str, Parameter]]) -> None:
    out.extend((p.path, p) for _, p in _leaves_of(block, path, root))
    for name, child in block._children.items():
        _walk(child, join_path(path, name), root, out)


class GluonTree(ParameterTree):
    """A Gluon ``Block`` as a parameter tree (children from ``block._children``)."""

    backend = NAME

    def __init__(self, native: gluon.Block, /, *, path: str = "", root: gluon.Block | None = None) -> None:
        super().__init__(native, path=path)
        self._root = native if root is None else root

    def _children(self) -> list[tuple[str, ParameterTree]]:
        return [(name, GluonTree(child, path=join_path(self.path, name), root=self._root))
                for name, child in self.native._children.items()]

    def _leaves(self) -> list[tuple[str, Parameter]]:
        return _leaves_of(self.native, self.path, self._root)

    def _occurrences(self) -> list[tuple[str, Parameter]]:
        """The base class's walk (leaves first, then children, in order) without a tree per block."""
        out: list[tuple[str, Parameter]] = []
        _walk(self.native, self.path, self._root, out)
        return out

    def _param_groups(self, groups: list[tuple[dict[str, Any], list[tuple[str, Parameter]]]], optimizer: Any,
                      /) -> dict[str, gluon.Parameter]:
        """Set ``lr_mult``/``wd_mult`` on each group's Parameters; the ``{name: Parameter}`` a ``Trainer`` takes.

        Options: ``lr_mult`` and ``wd_mult`` as Gluon names them, or ``lr``/``weight_decay``
        as rates, divided by the optimizer's (``optimizer=`` a Trainer, an ``mx.optimizer``
        or the Trainer's ``optimizer_params``); ``weight_decay: 0`` is ``wd_mult`` 0 without
        one. A multiplier a group does not give is set to 1.0 (the optimizer's own rate).
        Every group is checked before any Parameter changes. Gluon's optimizers read the
        multipliers at every update, so a Trainer made before the call sees them too.
        """
        lr, wd = _optimizer_rates(optimizer)
        planned = [(_multipliers(options, lr, wd), members) for options, members in groups]
        out: dict[str, gluon.Parameter] = {}
        for (lr_mult, wd_mult), members in planned:
            for _, p in members:
                param = p.native
                param.lr_mult, param.wd_mult = lr_mult, wd_mult
                out[param.name] = param
        return out

    def _to(self, device: str) -> None:
        contexts = parse_devices(device)
        for param in self.native.collect_params().values():
            if param._data is not None or param._deferred_init:
                param.reset_ctx(contexts)
            else:
                param._ctx_list = list(contexts)  # not initialized yet: where initialize will put it
        clear_cached_graphs(self._root)

    def _forward(self, inputs: Any, /) -> Any:
        """The block on ``inputs`` in predict mode (running statistics, no dropout), on its parameters' context."""
        from mxnet import autograd

        contexts = [c for p in self.native.collect_params().values() if p._data is not None for c in p.list_ctx()]

        def as_input(x: Any) -> Any:
            if isinstance(x, (list, tuple)):
                return type(x)(as_input(v) for v in x)
            if isinstance(x, np.ndarray) or np.isscalar(x):
                x = np.asarray(x)
                x = from_numpy(x, x.dtype if x.dtype.kind == "f" else "float32")  # Gluon takes indices as floats
            return x.as_in_context(contexts[0]) if contexts and hasattr(x, "as_in_context") else x

        def as_output(y: Any) -> Any:
            return type(y)(as_output(v) for v in y) if isinstance(y, (list, tuple)) else to_numpy(y)

        with autograd.predict_mode():
            return as_output(self.native(as_input(inputs)))
