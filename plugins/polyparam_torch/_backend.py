"""PyTorch backend. See :class:`polyparam.Backend` for the contract; only deviations are documented here.

* **Paths.** Children of ``nn.Sequential`` and ``nn.ModuleList`` are numbered by
  position, activations included (``tree[2]`` is ``net[2]``); other children keep
  their attribute names. A ``Sequential`` filled with ``add_module('block 0', ...)``
  therefore gives ``"0.1.0.bias"`` where torch's ``state_dict`` key (the
  :attr:`~polyparam.Parameter.native_name`) is ``"0.block 1.0.bias"``.
* **Buffers.** Persistent buffers (BatchNorm running statistics) are non-trainable
  parameters. ``num_batches_tracked`` is left out: it is a step counter, not a
  parameter, and other frameworks have no counterpart.
* **Deferred shapes.** ``nn.Lazy*`` modules hold ``UninitializedParameter``: unknown
  dimensions are ``None``, initializers are recorded and run right after torch
  materializes the module (a forward pre-hook that runs after torch's own).
* **Meta device.** Meta tensors have a shape but no data: their state is
  ``"uninitialized"``, ``initialize``/``set``/``load_state`` are recorded, and
  :meth:`TorchTree.materialize` allocates them (``to_empty``) and runs what was recorded.
* **Sharded parameters** (``torch.distributed`` DTensors: FSDP2 ``fully_shard``,
  ``distribute_tensor``) show their global shape; ``numpy()`` and ``grad()`` gather
  (collectives), :meth:`TorchParameter.local` is this rank's shard, and
  ``initialize`` draws only the local box. See :mod:`polyparam_torch._dtensor`.
* **Ties** are Parameter identity: a reused module or ``nn.Parameter``. ``untie`` of
  a reused module gives the untied path its own shallow copy of the module.
"""

from __future__ import annotations

import warnings
from collections import Counter
from functools import cached_property
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter, UninitializedTensorMixin

from polyparam import errors
from polyparam._models import Case, ModelFactory
from polyparam._parameter import Parameter, Shape
from polyparam._tree import ParameterTree, join_path
from polyparam_torch import _dtensor
from polyparam_torch._dtensor import is_dtensor

__all__ = ["CAPABILITIES", "NAME", "framework_version", "is_native", "models", "tree"]

NAME = "torch"
CAPABILITIES = frozenset({"deferred", "devices", "gradients", "tying"})


def framework_version() -> str:
    return str(torch.__version__)


def is_native(obj: object, /) -> bool:
    return isinstance(obj, nn.Module)


def tree(obj: object, /) -> TorchTree:
    if isinstance(obj, nn.Module):
        return TorchTree(obj)
    msg = (f"Cannot wrap {type(obj).__name__} with the torch backend: expected a torch.nn.Module, "
           f"got {type(obj).__name__!r}. Wrap tensors in a module (nn.ParameterDict) first.")
    raise errors.UnsupportedModelError(msg, backend=NAME, expected="torch.nn.Module", got=type(obj).__name__)


def models() -> TorchModels:
    return TorchModels()


# ---- conversions ----------------------------------------------------------------------

_TORCH2NP: dict[torch.dtype, np.dtype] = {
    torch.float16: np.dtype(np.float16), torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64),
    torch.complex64: np.dtype(np.complex64), torch.complex128: np.dtype(np.complex128),
    torch.int8: np.dtype(np.int8), torch.int16: np.dtype(np.int16), torch.int32: np.dtype(np.int32),
    torch.int64: np.dtype(np.int64), torch.uint8: np.dtype(np.uint8), torch.bool: np.dtype(np.bool_),
}


_NP2TORCH = frozenset(_TORCH2NP.values())
_REAL_DTYPES = frozenset(d for d in _TORCH2NP if not d.is_complex)  # no conjugate bit to resolve
_PLAIN = frozenset({nn.Parameter, torch.Tensor})


def _np_dtype(dtype: torch.dtype) -> np.dtype:
    found = _TORCH2NP.get(dtype)
    if found is not None:
        return found
    if dtype == torch.bfloat16:
        try:
            import ml_dtypes
        except ImportError:
            pass
        else:
            _TORCH2NP[dtype] = np.dtype(ml_dtypes.bfloat16)
            return _TORCH2NP[dtype]
    msg = (f"Cannot represent torch dtype {dtype} in NumPy: expected one of "
           f"{sorted(str(d) for d in _TORCH2NP)}, got {dtype}. Cast the module first, e.g. module.float().")
    raise errors.DTypeMismatchError(msg, expected=sorted(str(d) for d in _TORCH2NP), got=str(dtype))


def _torch2np(t: torch.Tensor) -> np.ndarray:
    """A NumPy view of a detached CPU tensor (zero-copy; bfloat16 through ml_dtypes)."""
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(_np_dtype(torch.bfloat16))
    return t.numpy()


def _np2torch(a: np.ndarray) -> torch.Tensor:
    """A CPU tensor with ``a``'s values (shares memory where torch can)."""
    if a.dtype.kind == "V" and torch.bfloat16 in _TORCH2NP and a.dtype == _TORCH2NP[torch.bfloat16]:
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16)
    if not a.flags.writeable or any(s < 0 for s in a.strides):
        a = np.array(a, copy=True)
    return torch.from_numpy(a)


# ---- parameters -----------------------------------------------------------------------

_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
_SKIPPED_BUFFERS = frozenset({"num_batches_tracked"})
_PENDING = "_polyparam_pending"


def _role(module: nn.Module, attr: str, tensor: torch.Tensor) -> str:
    if attr in ("running_mean", "running_var"):
        return attr
    if isinstance(module, _NORMS):
        return {"weight": "scale", "bias": "shift"}.get(attr, "other")
    if attr.startswith("bias"):
        return "bias"
    if isinstance(tensor, UninitializedTensorMixin) or tensor.ndim >= 2:
        return "weight"
    return "other"


def _axes_of(module: nn.Module, attr: str, role: str) -> tuple[str, ...] | None:
    if role != "weight" or attr != "weight":
        return None
    if isinstance(module, nn.modules.conv._ConvNd) and module.transposed:
        return ("in", "out") + ("space",) * len(module.kernel_size)
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return ("in", "out")  # (num_embeddings, embedding_dim): one row per input token
    return None


def _lazy_shape(module: nn.Module, attr: str) -> Shape:
    """The shape of an ``UninitializedParameter``, unknown dimensions as ``None``."""
    if isinstance(module, nn.modules.conv._ConvNd):
        if attr == "bias":
            return (module.out_channels,)
        lead = (None, module.out_channels // module.groups) if module.transposed else (module.out_channels, None)
        return lead + tuple(module.kernel_size)
    if isinstance(module, nn.Linear):
        return (module.out_features,) if attr == "bias" else (module.out_features, None)
    return (None,)


class _Pending(dict):
    """Initializers recorded on a module, by attribute: run at materialization. Not copied or pickled."""

    def __deepcopy__(self, memo: dict) -> _Pending:
        return _Pending()

    def __reduce__(self) -> tuple:
        return (_Pending, ())


def _pending(module: nn.Module, *, create: bool = False) -> _Pending | None:
    pending = module.__dict__.get(_PENDING)
    if pending is None and create:
        pending = module.__dict__[_PENDING] = _Pending()
    return pending


class _AfterToEmpty:
    """A fill recorded for a meta tensor. ``tree.materialize`` runs it; after a plain
    ``module.to_empty`` it runs at the first forward or read, unless the tensor was
    written since (``load_state_dict``, ``reset_parameters``): the latest write wins."""

    def __init__(self, fill: Callable[[], None]) -> None:
        self.fill = fill

    def __call__(self) -> None:
        self.fill()


def _settle(module: nn.Module, attr: str) -> None:
    """Run (or drop) the fill recorded for ``attr`` if torch has given the tensor storage since."""
    pending = _pending(module)
    if not pending or attr not in pending:
        return
    tensor = module._parameters.get(attr, module._buffers.get(attr))
    if tensor is None or isinstance(tensor, UninitializedTensorMixin) or tensor.is_meta:
        return
    fill = pending.pop(attr)
    if isinstance(fill, _AfterToEmpty) and tensor._version != 0:
        return      # written after module.to_empty made it: keep what was written
    fill()


def _run_pending(module: nn.Module, args: Any) -> None:
    """Forward pre-hook: run recorded initializers of tensors torch has just materialized."""
    pending = _pending(module)
    for attr in list(pending or ()):
        _settle(module, attr)
    if not pending:
        for key, hook in list(module._forward_pre_hooks.items()):
            if hook is _run_pending:
                del module._forward_pre_hooks[key]


def _shallow_clone(module: nn.Module) -> nn.Module:
    """A new module object holding the same tensors and children in its own containers."""
    clone = module.__class__.__new__(module.__class__)
    state = {}
    for key, value in module.__dict__.items():
        if isinstance(value, _Pending):
            value = _Pending(value)
        elif isinstance(value, (dict, set)):
            value = value.copy()
        state[key] = value
    clone.__dict__.update(state)
    return clone


class TorchParameter(Parameter):
    """One ``nn.Parameter`` or persistent buffer of a module, read live from the module.

    The tensor is looked up in its module at every use, so the object follows ties,
    untie and device moves that replace the tensor. It also knows the chain of child
    names from the root, which untie of a reused module needs. After replacing modules
    by hand (``net[2] = nn.Linear(...)``), take a fresh ``pp.tree(net)``.
    """

    backend = NAME

    def __init__(self, path: str, root: nn.Module, keys: tuple[str, ...], attr: str, is_buffer: bool,
                 module: nn.Module) -> None:
        # Parameter.__init__ is not called on purpose: role, axes and trainable are
        # computed on first use, which keeps building a tree of 1,000 layers cheap.
        self._path, self._root, self._keys, self._attr = path, root, keys, attr
        self._is_buffer, self._module = is_buffer, module

    @cached_property
    def role(self) -> str:  # type: ignore[override]
        return _role(self._module, self._attr, self._tensor())

    @property
    def _axes(self) -> tuple[str, ...] | None:  # type: ignore[override]
        return _axes_of(self._module, self._attr, self.role)

    @property
    def groups(self) -> int:  # type: ignore[override]
        """The groups of a convolution kernel (its module's ``groups``), else 1."""
        module = self._module
        if self._attr == "weight" and isinstance(module, nn.modules.conv._ConvNd):
            return int(module.groups)
        return 1

    @property
    def trainable(self) -> bool:  # type: ignore[override]
        """Whether an optimizer updates it: a parameter with ``requires_grad`` (buffers never)."""
        return not self._is_buffer and self._tensor().requires_grad

    # ---- location ---------------------------------------------------------------------

    def _owner(self) -> nn.Module:
        return self._module

    def _store(self, owner: nn.Module) -> dict:
        return owner._buffers if self._is_buffer else owner._parameters

    def _tensor(self) -> torch.Tensor:
        module = self._module
        return (module._buffers if self._is_buffer else module._parameters)[self._attr]

    # ---- facts ------------------------------------------------------------------------

    def _shape(self) -> Shape:
        t = self._tensor()
        if isinstance(t, UninitializedTensorMixin):
            return _lazy_shape(self._owner(), self._attr)
        return tuple(t.shape)

    def _dtype(self) -> Any:
        return _np_dtype(self._tensor().dtype)

    def _device(self) -> str:
        return str(self._tensor().device)

    def _native(self) -> torch.Tensor:
        return self._tensor()

    def _native_name(self) -> str:
        return ".".join(self._keys + (self._attr,))

    def _state(self) -> str:
        t = self._tensor()
        if isinstance(t, UninitializedTensorMixin):
            return "deferred"
        return "uninitialized" if t.is_meta else "initialized"

    def _identity(self) -> Any:
        return id(self._tensor())

    def _require_data(self, action: str) -> None:
        if self._tensor().is_meta:  # the core's advice (initialize) is not enough on meta
            msg = (f"Cannot {action} parameter {self.path!r}: expected a parameter with data, got one on the "
                   "'meta' device (shape only). Call tree.initialize(...) and then tree.materialize('cpu').")
            raise errors.UninitializedParameterError(msg, path=self.path, expected="initialized", got="uninitialized")
        super()._require_data(action)

    # ---- values -----------------------------------------------------------------------

    def local(self) -> np.ndarray:
        """This rank's shard of a sharded (DTensor) parameter as NumPy, without communication.

        A view of the local storage on CPU (writes go through). For a parameter that is
        not sharded, the whole value (as :meth:`numpy`).
        """
        self._require_data("read")
        return _dtensor.local_numpy(self)

    @property
    def placements(self) -> tuple[Any, ...] | None:
        """The DTensor placements (``(Shard(dim=0),)``), or ``None`` for a plain tensor."""
        t = self._tensor()
        return tuple(t.placements) if is_dtensor(t) else None

    def _placement(self) -> str | None:
        t = self._tensor()
        return _dtensor.placement_text(t) if is_dtensor(t) else None

    def _agree_seed(self, seed: int, /) -> int:
        return _dtensor.agree_seed(seed) if is_dtensor(self._tensor()) else seed

    def _local_box(self) -> tuple[slice, ...] | None:
        t = self._tensor()
        return _dtensor.local_box(t, self.path) if is_dtensor(t) else None

    def _read_local(self) -> np.ndarray:
        return _dtensor.local_numpy(self)

    def _shard_writer(self) -> bool:
        t = self._tensor()
        return _dtensor.is_primary(t) if is_dtensor(t) else _dtensor.rank_world()[0] == 0

    def _local_view(self) -> np.ndarray | None:
        t = self._tensor()
        if not is_dtensor(t) or t.is_meta:
            return None
        local = t.to_local().detach()
        if local.device.type != "cpu" or local.is_conj() or local.is_neg():
            return None
        torch.autograd.graph.increment_version(local)  # the caller writes into it
        return _torch2np(local)

    def _write_local(self, array: np.ndarray, /) -> None:
        local = self._tensor().to_local()
        if local.device.type == "cpu":
            np.copyto(_torch2np(local.detach()), array, casting="unsafe")
            torch.autograd.graph.increment_version(local)
        else:
            with torch.no_grad():
                local.copy_(_np2torch(np.ascontiguousarray(array)))
        pending = _pending(self._owner())
        if pending:
            pending.pop(self._attr, None)

    def _read(self) -> np.ndarray:
        _settle(self._owner(), self._attr)      # a fill recorded on meta, after a plain module.to_empty
        t = self._tensor().detach()
        if is_dtensor(t):
            t = _dtensor.read_full(t)  # a collective: every rank reads the same parameter
        if t.device.type != "cpu":
            t = t.cpu()
        return _torch2np(t.resolve_conj().resolve_neg())

    def _writable_view(self) -> np.ndarray | None:
        t = self._tensor()
        if is_dtensor(t):
            return None  # no global storage: writes go through _write to the local box
        if t.device.type != "cpu" or isinstance(t, UninitializedTensorMixin) or t.is_conj() or t.is_neg():
            return None
        return _torch2np(t.detach())

    def _write(self, array: np.ndarray, /) -> None:
        t = self._tensor()
        if t.is_meta:  # no storage yet: the value is applied by TorchTree.materialize
            value = np.array(array, copy=True)
            self._defer(lambda: self._write(value))
            return
        if is_dtensor(t):
            _dtensor._refuse_partial(t, self.path, "write")
            self._write_local(array[_dtensor.local_box(t, self.path)])
            return
        if t.device.type == "cpu":
            if array.dtype.kind in "fiub" and array.dtype.isbuiltin and min(array.strides, default=0) >= 0:
                # torch's copy_ is parallel: about twice np.copyto here, from 0.1 MB to 64 MB
                with torch.no_grad(), warnings.catch_warnings():
                    # a read-only array (a mapped checkpoint) is only read here: torch's
                    # "not writable" warning does not apply to a copy source
                    warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
                    t.detach().copy_(torch.from_numpy(array))   # bumps the version counter, as copy_ does
            else:   # bfloat16 (ml_dtypes) or negatively strided arrays: through NumPy
                np.copyto(_torch2np(t.detach()), array, casting="unsafe")
                torch.autograd.graph.increment_version(t)
        else:
            with torch.no_grad():
                t.copy_(_np2torch(array))
        pending = _pending(self._owner())
        if pending:
            pending.pop(self._attr, None)

    def _grad(self) -> np.ndarray | None:
        g = self._tensor().grad
        if g is None:
            return None
        g = g.detach()
        if is_dtensor(g):
            g = _dtensor.read_full(g)  # a collective, as _read
        if g.is_sparse:
            g = g.to_dense()
        return np.array(_torch2np(g.cpu()), copy=True)

    # ---- deferred initialization --------------------------------------------------------

    def _defers_init(self) -> bool:
        return self._tensor().is_meta

    def _defer(self, fill: Callable[[], None], /) -> None:
        owner = self._owner()
        pending = _pending(owner, create=True)
        lazy = isinstance(self._store(owner)[self._attr], UninitializedTensorMixin)
        pending[self._attr] = fill if lazy else _AfterToEmpty(fill)
        if _run_pending not in owner._forward_pre_hooks.values():
            owner.register_forward_pre_hook(_run_pending)  # after torch's own lazy hook, so it sees the shapes

    # ---- ties -------------------------------------------------------------------------

    def _share(self, anchor: Parameter, /) -> None:
        source = anchor._native()
        owner = self._owner()
        if not self._is_buffer and not isinstance(source, nn.Parameter):
            msg = (f"Cannot tie parameter {self.path!r} to buffer {anchor.path!r}: expected an nn.Parameter, "
                   f"got {type(source).__name__}. Tie parameters with parameters and buffers with buffers.")
            raise errors.TieError(msg, path=self.path, expected="nn.Parameter", got=type(source).__name__)
        self._store(owner)[self._attr] = source

    def _unshare(self) -> None:
        owner = self._privatize()
        store = self._store(owner)
        t = store[self._attr]
        if isinstance(t, UninitializedParameter):
            own: torch.Tensor = UninitializedParameter(requires_grad=t.requires_grad, device=t.device, dtype=t.dtype)
        elif isinstance(t, UninitializedBuffer):
            own = UninitializedBuffer(requires_grad=t.requires_grad, device=t.device, dtype=t.dtype)
        else:
            data = t.detach().clone()
            own = nn.Parameter(data, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else data
        store[self._attr] = own

    def _privatize(self) -> nn.Module:
        """Make every module on this parameter's path used only by this path; return the owner.

        A module reached through several paths (a reused block) is replaced, at this
        path only, by a shallow copy that still holds the same tensors and children.
        """
        counts = Counter(id(m) for _, m in self._root.named_modules(remove_duplicate=False))
        module = self._root
        for key in self._keys:
            child = module._modules[key]
            if counts[id(child)] > 1:
                child = _shallow_clone(child)
                module._modules[key] = child
            module = child
        self._module = module
        return module


# ---- trees ----------------------------------------------------------------------------


def _walk(module: nn.Module, prefix: str, root: nn.Module, keys: tuple[str, ...],
          out: list[tuple[str, Parameter]], seen: set[int] | None) -> None:
    """Append (path, parameter) for ``module`` and its descendants in ``state_dict`` order.

    With ``seen`` (a set of tensor ids), tied tensors are listed once, under the first
    path met; without it, under every path.
    """
    for attr, t in module._parameters.items():
        if t is not None:
            if seen is not None:
                if id(t) in seen:
                    continue
                seen.add(id(t))
            path = prefix + attr
            out.append((path, TorchParameter(path, root, keys, attr, False, module)))
    if module._buffers:
        skip = module._non_persistent_buffers_set
        for attr, t in module._buffers.items():
            if t is not None and attr not in skip and attr not in _SKIPPED_BUFFERS:
                if seen is not None:
                    if id(t) in seen:
                        continue
                    seen.add(id(t))
                path = prefix + attr
                out.append((path, TorchParameter(path, root, keys, attr, True, module)))
    if module._modules:
        if isinstance(module, (nn.Sequential, nn.ModuleList)):
            for i, (name, child) in enumerate(module._modules.items()):
                if child is not None:
                    _walk(child, f"{prefix}{i}.", root, keys + (name,), out, seen)
        else:
            for name, child in module._modules.items():
                if child is not None:
                    _walk(child, f"{prefix}{name}.", root, keys + (name,), out, seen)


class TorchTree(ParameterTree):
    """An ``nn.Module`` as a parameter tree."""

    backend = NAME

    def __init__(self, native: nn.Module, /, *, path: str = "", root: nn.Module | None = None,
                 keys: tuple[str, ...] = ()) -> None:
        super().__init__(native, path=path)
        self._root = native if root is None else root
        self._keys = keys

    def _children(self) -> list[tuple[str, ParameterTree]]:
        module = self.native
        positional = isinstance(module, (nn.Sequential, nn.ModuleList))
        out: list[tuple[str, ParameterTree]] = []
        for i, (name, child) in enumerate(module._modules.items()):
            if child is not None:
                segment = str(i) if positional else name
                out.append((segment, TorchTree(child, path=join_path(self.path, segment), root=self._root,
                                               keys=self._keys + (name,))))
        return out

    def _leaves(self) -> list[tuple[str, Parameter]]:
        out: list[tuple[str, Parameter]] = []
        module = self.native
        prefix = f"{self.path}." if self.path else ""
        for attr, t in module._parameters.items():
            if t is not None:
                out.append((attr, TorchParameter(prefix + attr, self._root, self._keys, attr, False, module)))
        skip = module._non_persistent_buffers_set
        for attr, t in module._buffers.items():
            if t is not None and attr not in skip and attr not in _SKIPPED_BUFFERS:
                out.append((attr, TorchParameter(prefix + attr, self._root, self._keys, attr, True, module)))
        return out

    def _occurrences(self) -> list[tuple[str, Parameter]]:
        out: list[tuple[str, Parameter]] = []
        _walk(self.native, f"{self.path}." if self.path else "", self._root, self._keys, out, None)
        return out

    # The two overrides below are the generic ones with torch shortcuts; they return
    # exactly what the base class would.

    def items(self) -> list[tuple[str, Parameter]]:
        out: list[tuple[str, Parameter]] = []
        _walk(self.native, f"{self.path}." if self.path else "", self._root, self._keys, out, set())
        return out

    def state(self, *, copy: bool = False) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for path, p in self.items():
            _settle(p._owner(), p._attr)  # type: ignore[attr-defined]
            t = p._tensor()  # type: ignore[attr-defined]
            if t.is_cpu and type(t) in _PLAIN and t.dtype in _REAL_DTYPES and not t.is_neg():
                value = t.detach().numpy()  # zero-copy
            else:
                value = p.numpy()  # everything else, errors included
            out[path] = np.array(value, copy=True) if copy else value
        return out

    # ---- distributed processes ----------------------------------------------------------

    def _process_rank(self) -> tuple[int, int]:
        return _dtensor.rank_world()

    def _barrier(self) -> None:
        _dtensor.barrier()

    def _broadcast(self, value: int) -> int:
        return _dtensor.agree_seed(value)

    def _all_succeeded(self, ok: bool) -> bool:
        return _dtensor.all_succeeded(ok)

    # ---- devices ----------------------------------------------------------------------

    def _groups(self) -> list[list[TorchParameter]]:
        groups: dict[int, list[TorchParameter]] = {}
        for _, p in self._occurrences():
            groups.setdefault(p._identity(), []).append(p)  # type: ignore[arg-type]
        return list(groups.values())

    def _to(self, device: str) -> None:
        ties = [g for g in self._groups() if len(g) > 1]
        try:
            self.native.to(torch.device(device))
        except (RuntimeError, AssertionError, ValueError, TypeError) as exc:
            msg = (f"Cannot move torch parameters of {self.path or '(root)'!r} to {device!r}: expected a device "
                   f"this torch build can use, got {device!r} ({exc}). Check torch.cuda.is_available().")
            raise errors.DeviceMismatchError(msg, path=self.path or None, expected="an available device",
                                             got=device) from exc
        _retie(ties)  # a move to or from 'meta' creates new Parameter objects, one per use

    def materialize(self, device: str | torch.device = "cpu") -> TorchTree:
        """Give meta-device parameters storage on ``device`` and run what was recorded for them.

        Like ``module.to_empty(device=...)`` followed by the initializers, values and
        ``load_state`` recorded while the parameters were on ``meta``; ties are kept.
        Parameters with nothing recorded get their module's ``reset_parameters()``
        (torch's default initialization) when the module has one.

        Returns:
            ``self``.
        """
        device = torch.device(device)
        made: list[TorchParameter] = []
        for group in self._groups():
            anchor = group[0]
            old = anchor._tensor()
            if not old.is_meta:
                continue
            new = torch.empty_like(old, device=device)
            if isinstance(old, nn.Parameter):
                new = nn.Parameter(new, requires_grad=old.requires_grad)
            for member in group:  # one new object for every use keeps the tie
                member._store(member._owner())[member._attr] = new
            made.append(anchor)
        # torch defaults first, for modules whose own tensors were all on meta and lack a recorded fill
        fresh = {(id(p._owner()), p._attr) for p in made}
        reset: dict[int, nn.Module] = {}
        unfilled = []
        for p in made:
            owner = p._owner()
            if p._attr in (_pending(owner) or ()):
                continue
            own = [a for a, t in list(owner._parameters.items()) + list(owner._buffers.items())
                   if t is not None and a not in _SKIPPED_BUFFERS]
            if hasattr(owner, "reset_parameters") and all((id(owner), a) in fresh for a in own):
                reset[id(owner)] = owner
            else:
                unfilled.append(p.path)
        for owner in reset.values():
            with torch.no_grad():
                owner.reset_parameters()
        for p in made:
            pending = _pending(p._owner())
            fill = pending.pop(p._attr, None) if pending else None
            if fill is not None:
                fill()
        if unfilled:
            warnings.warn(f"Materialized {unfilled} without an initializer: their values are arbitrary. "
                          "Call tree.initialize(...) before materialize().", errors.PolyparamWarning, stacklevel=2)
        return self


def _retie(groups: list[list[TorchParameter]]) -> None:
    for group in groups:
        anchor = group[0]
        for member in group[1:]:
            if not member.is_tied_to(anchor):
                member._share(anchor)


# ---- the seed's models -------------------------------------------------------------------


def _input(model: nn.Module, x: np.ndarray) -> torch.Tensor:
    device = torch.device("cpu")
    for t in model.parameters():
        if not isinstance(t, UninitializedTensorMixin):
            device = t.device
        break
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)


class TorchModels(ModelFactory):
    """The chapter's models as the PyTorch seed builds them (activations are layers)."""

    def mlp(self) -> Case:
        net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        return Case(net, in_features=4, layers=["0", "2"])

    def rgnet(self) -> Case:
        def block1() -> nn.Module:
            return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU())

        def block2() -> nn.Module:
            net = nn.Sequential()
            for i in range(4):
                net.add_module(f"block {i}", block1())
            return net

        net = nn.Sequential(block2(), nn.Linear(4, 1))
        layers = [f"0.{i}.{j}" for i in range(4) for j in (0, 2)] + ["1"]
        return Case(net, in_features=4, layers=layers)

    def shared(self) -> Case:
        shared = nn.Linear(8, 8)
        net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), shared, nn.ReLU(), shared, nn.ReLU(), nn.Linear(8, 1))
        return Case(net, in_features=4, layers=["0", "2", "4", "6"], tied=[("2", "4")])

    def lazy(self) -> Case:
        net = nn.Sequential(nn.LazyLinear(256), nn.ReLU(), nn.LazyLinear(10))
        return Case(net, in_features=20, layers=["0", "2"])

    def layer(self, kind: str, /) -> nn.Module:
        builders: dict[str, Callable[[], nn.Module]] = {
            "dense": lambda: nn.Linear(300, 400),
            "conv1d": lambda: nn.Conv1d(4, 8, 3),
            "conv2d": lambda: nn.Conv2d(3, 16, 5),
            "conv3d": lambda: nn.Conv3d(2, 4, 3),
            "conv_transpose2d": lambda: nn.ConvTranspose2d(6, 4, 3),
            "grouped_conv2d": lambda: nn.Conv2d(8, 16, 3, groups=4),
            "depthwise_conv2d": lambda: nn.Conv2d(8, 8, 3, groups=8),
            "embedding": lambda: nn.Embedding(50, 16),
            "batchnorm": lambda: nn.BatchNorm1d(8),
        }
        if kind not in builders:
            return super().layer(kind)
        return builders[kind]()

    def forward(self, model: nn.Module, x: np.ndarray, /) -> np.ndarray:
        with torch.no_grad():
            out = model(_input(model, x))
        return out.detach().cpu().numpy()

    def backward(self, model: nn.Module, x: np.ndarray, /) -> None:
        model.zero_grad(set_to_none=True)
        model(_input(model, x)).sum().backward()
