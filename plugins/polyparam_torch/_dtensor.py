"""Sharded parameters: ``torch.distributed`` DTensors (FSDP2 ``fully_shard``, ``distribute_tensor``).

A DTensor parameter is seen with its *global* shape. Reading the whole value
(``numpy()``, ``grad()``, ``state()``, ``pp.save`` to one file) is a collective: every
rank of the mesh must make the same call in the same order. ``local()`` is this
rank's shard, without communication. Writes (``set``, ``load_state``, ``pp.load``)
take the global value and keep this rank's box; ``initialize`` draws only this
rank's box (see :meth:`polyparam.init.Initializer.fill_slice`).

Only placements whose local shard is one box of the global array are supported:
``Shard(d)`` (even or uneven, as FSDP2 pads) and ``Replicate()`` on any mesh
dimensions. ``Partial`` values (pending reductions) can be read but not written.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from polyparam import errors
from polyparam_torch import NAME
from polyparam_torch._convert import torch2np

__all__ = ["agree_seed", "all_succeeded", "barrier", "is_dtensor", "is_primary", "local_box", "local_numpy",
           "placement_text", "rank_world", "read_full", "refuse_partial"]

try:  # torch >= 2.4 has the public module; older ones keep it under _tensor
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard
except ImportError:  # pragma: no cover - torch without distributed
    DTensor = None


def is_dtensor(t: Any) -> bool:
    """Whether ``t`` is a ``DTensor`` (a sharded or replicated tensor of a device mesh)."""
    return DTensor is not None and isinstance(t, DTensor)


def refuse_partial(t: Any, path: str, action: str) -> None:
    """Refuse to ``action`` a DTensor holding a pending reduction (a ``Partial`` placement)."""
    if any(isinstance(p, Partial) for p in t.placements):
        msg = (f"Cannot {action} parameter {path!r}: expected Shard or Replicate placements, got "
               f"{tuple(t.placements)} (a Partial value is a pending reduction, not a stored value). "
               "Call .redistribute(placements=[Replicate()]) first.")
        raise errors.UnsupportedModelError(msg, backend=NAME, expected="Shard/Replicate", got=str(t.placements))


def local_box(t: Any, path: str) -> tuple[slice, ...]:
    """The box of the global array that this rank's local tensor holds."""
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    refuse_partial(t, path, "shard")
    shape, offset = compute_local_shape_and_global_offset(t.shape, t.device_mesh, t.placements)
    return tuple(slice(int(o), int(o) + int(n)) for o, n in zip(offset, shape))


def placement_text(t: Any) -> str:
    """The placements and mesh shape of a DTensor, as ``"Shard(0) mesh (2,)"``."""
    names = []
    for p in t.placements:
        if isinstance(p, Shard):
            names.append(f"Shard({p.dim})")
        elif isinstance(p, Replicate):
            names.append("Replicate()")
        else:
            names.append(type(p).__name__ + "()")
    mesh = tuple(t.device_mesh.shape)
    return f"{', '.join(names)} mesh {mesh}"


def read_full(t: Any) -> torch.Tensor:
    """The global value (a collective: every rank calls it)."""
    return t.detach().full_tensor()


def is_primary(t: Any) -> bool:
    """Whether this rank writes its box in a sharded save: the first of the ranks holding the same box."""
    coords = t.device_mesh.get_coordinate()
    if coords is None:  # not part of the mesh
        return False
    return all(c == 0 for c, p in zip(coords, t.placements) if not isinstance(p, Shard))


# ---- processes -------------------------------------------------------------------------


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def agree_seed(seed: int) -> int:
    """Rank 0's ``seed`` on every rank (a collective), so an unseeded initialize is one draw."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return seed
    box = [seed]
    dist.broadcast_object_list(box, src=0)
    return int(box[0])


def all_succeeded(ok: bool) -> bool:
    """Whether every rank passed ``ok=True`` (a collective: every rank must call it)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return ok
    flag = torch.tensor([1 if ok else 0], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def barrier() -> None:
    """Wait for every rank of the default process group (nothing without one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def local_numpy(t: torch.Tensor) -> np.ndarray:
    """This rank's shard of ``t`` (the whole of a plain tensor) as NumPy, on CPU, without communication."""
    t = t.detach()
    local = t.to_local() if is_dtensor(t) else t
    if local.device.type != "cpu":
        local = local.cpu()
    return torch2np(local)
