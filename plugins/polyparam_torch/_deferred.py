"""Deferred values: fills recorded for ``nn.Lazy*`` and meta-device tensors, run once torch gives them storage.

A fill is recorded per module, by attribute name, in a :class:`Pending` dict kept in the
module's ``__dict__``. For a lazy (``Uninitialized*``) tensor it runs from a forward
pre-hook registered after torch's own, so it sees the inferred shape. For a meta tensor
it runs in ``TorchTree.materialize``, or, after a plain ``module.to_empty``, at the
first forward or read unless the tensor was written since (:class:`AfterToEmpty`).
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.parameter import UninitializedTensorMixin  # type: ignore[attr-defined]  # missing from torch's stubs

from polyparam.backend import Shape

__all__ = ["PENDING", "AfterToEmpty", "Pending", "forget", "lazy_shape", "pending", "record", "run_pending", "settle",
           "settle_tensor"]

#: The module attribute holding its :class:`Pending` fills.
PENDING = "_polyparam_pending"

#: Every module a fill was ever recorded on (held weakly): where :func:`settle_tensor` looks.
_RECORDED: weakref.WeakSet[nn.Module] = weakref.WeakSet()


class Pending(dict):
    """Initializers recorded on a module, by attribute: run at materialization. Not copied or pickled."""

    def __deepcopy__(self, memo: dict) -> Pending:
        return Pending()

    def __reduce__(self) -> tuple:
        return (Pending, ())


class AfterToEmpty:
    """A fill recorded for a meta tensor. ``tree.materialize`` runs it; after a plain
    ``module.to_empty`` it runs at the first forward or read, unless the tensor was
    written since (``load_state_dict``, ``reset_parameters``): the latest write wins."""

    def __init__(self, fill: Callable[[], None]) -> None:
        self.fill = fill

    def __call__(self) -> None:
        self.fill()


def pending(module: nn.Module) -> Pending | None:
    """The fills recorded on ``module``, or ``None`` if none ever were."""
    return module.__dict__.get(PENDING)


def record(module: nn.Module, attr: str, fill: Callable[[], None], *, lazy: bool) -> None:
    """Record ``fill`` for ``module.<attr>``, replacing an earlier one; ``lazy`` for an ``Uninitialized*`` tensor."""
    fills = module.__dict__.get(PENDING)
    if fills is None:
        fills = module.__dict__[PENDING] = Pending()
    fills[attr] = fill if lazy else AfterToEmpty(fill)
    _RECORDED.add(module)
    if run_pending not in module._forward_pre_hooks.values():
        module.register_forward_pre_hook(run_pending)  # after torch's own lazy hook, so it sees the shapes


def forget(module: nn.Module, attr: str) -> None:
    """Drop the fill recorded for ``module.<attr>``: a value was written since, and the latest write wins."""
    fills = pending(module)
    if fills:
        fills.pop(attr, None)


def settle(module: nn.Module, attr: str) -> None:
    """Run (or drop) the fill recorded for ``attr`` if torch has given the tensor storage since."""
    fills = pending(module)
    if not fills or attr not in fills:
        return
    tensor = module._parameters.get(attr, module._buffers.get(attr))
    if tensor is None or isinstance(tensor, UninitializedTensorMixin) or tensor.is_meta:
        return
    fill = fills.pop(attr)
    if isinstance(fill, AfterToEmpty) and tensor._version != 0:
        return      # written after module.to_empty made it: keep what was written
    fill()


def settle_tensor(tensor: torch.Tensor) -> None:
    """Run the fills recorded for ``tensor`` under any module (a tie's is recorded under its first path only),
    before a write through another path counts as a write since ``to_empty`` (:func:`settle` drops them then)."""
    for module in list(_RECORDED):
        fills = pending(module)
        if not fills:
            _RECORDED.discard(module)   # all run or dropped: the set keeps only modules with fills waiting
            continue
        for attr in list(fills):
            if module._parameters.get(attr, module._buffers.get(attr)) is tensor:
                settle(module, attr)


def run_pending(module: nn.Module, args: Any) -> None:
    """Forward pre-hook: run recorded initializers of tensors torch has just materialized."""
    fills = pending(module)
    for attr in list(fills or ()):
        settle(module, attr)
    if not fills:
        for key, hook in list(module._forward_pre_hooks.items()):
            if hook is run_pending:
                del module._forward_pre_hooks[key]


def lazy_shape(module: nn.Module, attr: str) -> Shape:
    """The shape of an ``UninitializedParameter``, unknown dimensions as ``None``."""
    if isinstance(module, nn.modules.conv._ConvNd):
        if attr == "bias":
            return (module.out_channels,)
        lead = (None, module.out_channels // module.groups) if module.transposed else (module.out_channels, None)
        return lead + tuple(module.kernel_size)
    if isinstance(module, nn.Linear):
        return (module.out_features,) if attr == "bias" else (module.out_features, None)
    return (None,)
