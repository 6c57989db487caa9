"""PyTorch backend. See :class:`polyparam.Backend` for the contract; only deviations are documented here.

* **Paths.** Children of ``nn.Sequential`` and ``nn.ModuleList`` are numbered by
  position, activations included (``tree[2]`` is ``net[2]``); other children keep
  their attribute names. A ``Sequential`` filled with ``add_module('block 0', ...)``
  therefore gives ``"0.1.0.bias"`` where torch's ``state_dict`` key (the
  :attr:`~polyparam.Parameter.native_name`) is ``"0.block 1.0.bias"``.
* **Buffers.** Persistent buffers (BatchNorm running statistics, masks) are non-trainable
  parameters of kind ``"buffer"``; the tree's native names are the ``state_dict`` keys.
  BatchNorm's step counter ``num_batches_tracked`` is a buffer of role ``"other"``: saved,
  loaded and transferred, left alone by a tree-wide ``initialize``, and passed over where
  a model or file of another framework lacks it.
* **Declared layers.** ``pp.roles`` declarations win over what a module's type shows;
  Hugging Face GPT-2's ``Conv1D`` is declared when the backend loads (weight ``(in, out)``).
* **Deferred shapes.** ``nn.Lazy*`` modules hold ``UninitializedParameter``: unknown
  dimensions are ``None``, initializers are recorded and run right after torch
  materializes the module (a forward pre-hook that runs after torch's own).
* **Meta device.** Meta tensors have a shape but no data: their state is
  ``"uninitialized"``, ``initialize``/``set``/``load_state`` are recorded, and
  ``TorchTree.materialize`` allocates them (``to_empty``) and runs what was recorded.
  See :mod:`polyparam_torch._deferred`.
* **Sharded parameters** (``torch.distributed`` DTensors: FSDP2 ``fully_shard``,
  ``distribute_tensor``) show their global shape; ``numpy()`` and ``grad()`` gather
  (collectives), ``TorchParameter.local`` is this rank's shard, and
  ``initialize`` draws only the local box. See :mod:`polyparam_torch._dtensor`.
* **Ties** are Parameter identity: a reused module or ``nn.Parameter``. ``untie`` of
  a reused module gives the untied path its own shallow copy of the module.

The parts: ``_convert`` (dtypes), ``_parameter`` (TorchParameter), ``_tree``
(TorchTree), ``_models`` (the reference models), ``_deferred`` and ``_dtensor``.
"""

from __future__ import annotations

import torch
from torch import nn

from polyparam import errors
from polyparam_torch import NAME
from polyparam_torch._models import TorchModels
from polyparam_torch._tree import TorchTree

__all__ = ["CAPABILITIES", "NAME", "framework_version", "is_native", "models", "tree"]

CAPABILITIES = frozenset({"casting", "deferred", "devices", "forward", "gradients", "training", "tying"})


def framework_version() -> str:
    """The installed torch version."""
    return str(torch.__version__)


def is_native(obj: object, /) -> bool:
    """Whether ``obj`` is a ``torch.nn.Module``."""
    return isinstance(obj, nn.Module)


def tree(obj: object, /) -> TorchTree:
    """``obj``, a ``torch.nn.Module``, as a parameter tree."""
    if isinstance(obj, nn.Module):
        return TorchTree(obj)
    msg = (f"Cannot wrap {type(obj).__name__} with the torch backend: expected a torch.nn.Module, "
           f"got {type(obj).__name__!r}. Wrap tensors in a module (nn.ParameterDict) first.")
    raise errors.UnsupportedModelError(msg, backend=NAME, expected="torch.nn.Module", got=type(obj).__name__)


def models() -> TorchModels:
    """Builders of the reference models in PyTorch."""
    return TorchModels()
