"""TorchTree: an ``nn.Module`` as a parameter tree, with the walk that lists its parameters in ``state_dict`` order."""

from __future__ import annotations

import warnings
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from polyparam import errors
from polyparam.backend import Parameter, ParameterTree, join_path
from polyparam_torch import NAME, _dtensor
from polyparam_torch._convert import PLAIN, REAL_DTYPES, torch2np
from polyparam_torch._deferred import pending, settle
from polyparam_torch._parameter import TorchParameter

__all__ = ["TorchTree", "retie", "walk"]


Entry = tuple[str, tuple[str, ...], str, bool, nn.Module, torch.Tensor]   # path, keys, attr, is_buffer, module, tensor


def unwrapped(module: nn.Module, keys: tuple[str, ...]) -> tuple[nn.Module, tuple[str, ...]]:
    """``module`` and its keys, seeing through ``torch.compile``'s wrapper (``OptimizedModule``).

    The wrapper holds the module it compiles as its one child ``_orig_mod``, which is in
    ``state_dict`` keys (``_orig_mod.0.weight``) but not in the architecture: canonical paths
    leave it out, so a compiled model and the plain one have the same paths (and seeded
    values), and files load into either; native names keep it, as ``state_dict`` does.
    """
    while type(module).__name__ == "OptimizedModule" and isinstance(module._modules.get("_orig_mod"), nn.Module):
        module, keys = module._modules["_orig_mod"], keys + ("_orig_mod",)
    return module, keys


def entries(module: nn.Module, prefix: str, keys: tuple[str, ...], out: list[Entry], seen: set[int] | None) -> None:
    """Append ``(path, keys, attr, is_buffer, module, tensor)`` for ``module`` and its descendants in
    ``state_dict`` order: what :func:`walk` makes parameters of, and ``state()`` reads without making them.

    With ``seen`` (a set of tensor ids), tied tensors are listed once, under the first
    path met; without it, under every path. A ``torch.compile`` wrapper adds no path segment (:func:`unwrapped`).
    """
    module, keys = unwrapped(module, keys)
    if type(module)._save_to_state_dict is not _SAVE_TO_STATE_DICT:
        refuse_quantized(module, prefix)
    for attr, t in module._parameters.items():
        if t is not None:
            if seen is not None:
                if id(t) in seen:
                    continue
                seen.add(id(t))
            out.append((prefix + attr, keys, attr, False, module, t))
    if module._buffers:
        skip = module._non_persistent_buffers_set
        for attr, b in module._buffers.items():
            if b is not None and attr not in skip:
                if seen is not None:
                    if id(b) in seen:
                        continue
                    seen.add(id(b))
                out.append((prefix + attr, keys, attr, True, module, b))
    if module._modules:
        if isinstance(module, (nn.Sequential, nn.ModuleList)):
            for i, (name, child) in enumerate(module._modules.items()):
                if child is not None:
                    entries(child, f"{prefix}{i}.", keys + (name,), out, seen)
        else:
            for name, child in module._modules.items():
                if child is not None:
                    entries(child, f"{prefix}{name}.", keys + (name,), out, seen)


_SAVE_TO_STATE_DICT = nn.Module._save_to_state_dict

#: Where torch keeps its quantized modules, whose weights are packed objects ``state_dict`` writes
#: itself, neither parameters nor buffers
_QUANTIZED = ("torch.ao.nn.quantized", "torch.ao.nn.sparse.quantized", "torch.nn.quantized",
              "torch.ao.nn.intrinsic.quantized")
#: fx's reference quantized modules keep a float weight and their scales and zero points as buffers: all readable
_REFERENCE = "torch.ao.nn.quantized.reference"


def refuse_quantized(module: nn.Module, prefix: str) -> None:
    """Refuse a torch quantized module (``quantize_dynamic``, ``convert``): its packed weights, scales and zero
    points are in ``state_dict`` but not in ``_parameters`` or ``_buffers``, so a tree would leave them out and a
    save, load or diff would silently skip them."""
    kind = type(module)
    if not kind.__module__.startswith(_QUANTIZED) or kind.__module__.startswith(_REFERENCE):
        return
    path = prefix[:-1] or "(the root)"
    msg = (f"Cannot read the parameters of module {path!r}: expected float parameters and buffers, got a torch "
           f"quantized {kind.__name__} ({kind.__module__}), whose packed weights, scales and zero points are "
           "neither. Load or save the float model and quantize it after, or use torch's own "
           "state_dict()/load_state_dict() for the quantized one.")
    raise errors.UnsupportedModelError(msg, path=prefix[:-1], expected="float parameters",
                                       got=f"quantized {kind.__name__}")


def walk(module: nn.Module, prefix: str, root: nn.Module, keys: tuple[str, ...],
         out: list[tuple[str, Parameter]], seen: set[int] | None) -> None:
    """Append (path, parameter) for ``module`` and its descendants in ``state_dict`` order (see :func:`entries`)."""
    found: list[Entry] = []
    entries(module, prefix, keys, found, seen)
    out.extend((path, TorchParameter(path, root, keys, attr, is_buffer, owner))
               for path, keys, attr, is_buffer, owner, _ in found)


def retie(groups: list[list[TorchParameter]]) -> None:
    """Make every member of each group share its first member's tensor again."""
    for group in groups:
        anchor = group[0]
        for member in group[1:]:
            if not member.is_tied_to(anchor):
                member._share(anchor)


class TorchTree(ParameterTree):
    """An ``nn.Module`` as a parameter tree."""

    backend = NAME

    def __init__(self, native: nn.Module, /, *, path: str = "", root: nn.Module | None = None,
                 keys: tuple[str, ...] = ()) -> None:
        super().__init__(native, path=path)
        self._root = native if root is None else root
        self._keys = keys

    # ---- hooks ------------------------------------------------------------------------

    def _children(self) -> list[tuple[str, ParameterTree]]:
        module, keys = unwrapped(self.native, self._keys)
        positional = isinstance(module, (nn.Sequential, nn.ModuleList))
        out: list[tuple[str, ParameterTree]] = []
        for i, (name, child) in enumerate(module._modules.items()):
            if child is not None:
                segment = str(i) if positional else name
                out.append((segment, TorchTree(child, path=join_path(self.path, segment), root=self._root,
                                               keys=keys + (name,))))
        return out

    def _leaves(self) -> list[tuple[str, Parameter]]:
        out: list[tuple[str, Parameter]] = []
        module, keys = unwrapped(self.native, self._keys)
        prefix = f"{self.path}." if self.path else ""
        for attr, t in module._parameters.items():
            if t is not None:
                out.append((attr, TorchParameter(prefix + attr, self._root, keys, attr, False, module)))
        skip = module._non_persistent_buffers_set
        for attr, t in module._buffers.items():
            if t is not None and attr not in skip:
                out.append((attr, TorchParameter(prefix + attr, self._root, keys, attr, True, module)))
        return out

    def _forward(self, inputs: Any, /) -> Any:
        """The module in eval mode under ``no_grad`` on its parameters' device; every module's mode is restored.

        A mapping is passed as keyword arguments (Hugging Face models), a list or tuple as
        positional ones; floating inputs take the dtype of the module's first floating parameter.
        """
        module = self.native
        first = next((t for t in module.parameters() if t.is_floating_point()), None)
        device = first.device if first is not None else torch.device("cpu")

        def as_input(x: Any) -> Any:
            if isinstance(x, np.ndarray) or np.isscalar(x):
                x = torch.from_numpy(np.array(x))
            if isinstance(x, torch.Tensor):
                if x.is_floating_point() and first is not None:
                    x = x.to(first.dtype)
                return x.to(device)
            return x

        def as_output(y: Any) -> Any:
            if isinstance(y, torch.Tensor):
                y = y.detach().cpu()
                return (y.float() if y.dtype in (torch.bfloat16, torch.float16) else y).numpy()
            if isinstance(y, dict):
                return {k: out for k, v in y.items() if (out := as_output(v)) is not None}
            if isinstance(y, (list, tuple)):
                return [as_output(v) for v in y if v is not None]
            return None   # not a tensor (a key/value cache object): nothing to compare

        modes = [(m, m.training) for m in module.modules()]
        module.eval()
        try:
            with torch.no_grad():
                if isinstance(inputs, dict):
                    out = module(**{k: as_input(v) for k, v in inputs.items()})
                elif isinstance(inputs, (list, tuple)):
                    out = module(*(as_input(v) for v in inputs))
                else:
                    out = module(as_input(inputs))
        finally:
            for m, training in modes:
                m.training = training
        return as_output(out)

    def _to(self, device: str) -> None:
        ties = [g for g in self._groups() if len(g) > 1]
        try:
            self.native.to(torch.device(device))
        except (RuntimeError, AssertionError, ValueError, TypeError) as exc:
            msg = (f"Cannot move torch parameters of {self.path or '(root)'!r} to {device!r}: expected a device "
                   f"this torch build can use, got {device!r} ({exc}). Check torch.cuda.is_available().")
            raise errors.DeviceMismatchError(msg, path=self.path or None, expected="an available device",
                                             got=device) from exc
        retie(ties)  # a move to or from 'meta' creates new Parameter objects, one per use

    def _occurrences(self) -> list[tuple[str, Parameter]]:
        out: list[tuple[str, Parameter]] = []
        walk(self.native, f"{self.path}." if self.path else "", self._root, self._keys, out, None)
        return out

    # The two overrides below are the generic ones with torch shortcuts; they return
    # exactly what the base class would.

    def items(self) -> list[tuple[str, Parameter]]:
        out: list[tuple[str, Parameter]] = []
        walk(self.native, f"{self.path}." if self.path else "", self._root, self._keys, out, set())
        return out

    def state(self, *, copy: bool = False) -> dict[str, np.ndarray]:
        found: list[Entry] = []
        entries(self.native, f"{self.path}." if self.path else "", self._keys, found, set())
        out: dict[str, np.ndarray] = {}
        for path, keys, attr, is_buffer, module, t in found:
            if pending(module):
                settle(module, attr)
                t = (module._buffers if is_buffer else module._parameters)[attr]
            if t.is_cpu and type(t) in PLAIN and t.dtype in REAL_DTYPES and not t.is_neg():
                value = torch2np(t.detach())  # zero-copy, the storage left resizable
            else:   # everything else, errors included
                value = TorchParameter(path, self._root, keys, attr, is_buffer, module).numpy()
            out[path] = np.array(value, copy=True) if copy else value
        return out

    # ---- hooks: distributed processes ---------------------------------------------------

    def _process_rank(self) -> tuple[int, int]:
        return _dtensor.rank_world()

    def _barrier(self) -> None:
        _dtensor.barrier()

    def _broadcast(self, value: int) -> int:
        return _dtensor.agree_seed(value)

    def _all_succeeded(self, ok: bool) -> bool:
        return _dtensor.all_succeeded(ok)

    # ---- meta device ----------------------------------------------------------------------

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
            if p._attr in (pending(owner) or ()):
                continue
            own = [a for a, t in list(owner._parameters.items()) + list(owner._buffers.items())
                   if t is not None]
            if hasattr(owner, "reset_parameters") and all((id(owner), a) in fresh for a in own):
                reset[id(owner)] = owner
            else:
                unfilled.append(p.path)
        for owner in reset.values():
            with torch.no_grad():
                owner.reset_parameters()
        for p in made:
            fills = pending(p._owner())
            fill = fills.pop(p._attr, None) if fills else None
            if fill is not None:
                fill()
        if unfilled:
            warnings.warn(f"Materialized {unfilled} without an initializer: their values are arbitrary. "
                          "Call tree.initialize(...) before materialize().", errors.PolyparamWarning, stacklevel=2)
        return self

    def _groups(self) -> list[list[TorchParameter]]:
        """Every occurrence grouped by tensor: a tie group per tensor, in model order."""
        groups: dict[int, list[TorchParameter]] = {}
        for _, p in self._occurrences():
            groups.setdefault(p._identity(), []).append(cast(TorchParameter, p))
        return list(groups.values())
