"""Initializers made of others: :class:`Mixed` (rules by path or role) and :class:`Load` (saved values)."""

from __future__ import annotations

import fnmatch
import os
import re
import warnings
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from polyparam import errors
from polyparam._params.mapping import KeyMap, Rename
from polyparam.init.base import Initializer, ParamInfo, _checked_result, _own_fill, register
from polyparam.init.builtins import _BuiltIn
from polyparam.init.coerce import _as_initializer
from polyparam.init.streams import _region, _seed

__all__ = ["Declared", "Load", "Mixed", "OwnFirst"]


# ---- composites --------------------------------------------------------------------------

def _matches(rule: Any, info: ParamInfo) -> bool:
    if isinstance(rule, re.Pattern):
        return rule.search(info.path) is not None
    if isinstance(rule, str):
        if rule.startswith("role:"):
            return info.role == rule[5:]
        if rule.startswith("kind:"):
            return info.kind == rule[5:]
        return fnmatch.fnmatchcase(info.path, rule)
    return bool(rule(info))


def _pairs(rules: Any) -> list[tuple[Any, Any]]:
    """``rules`` of :class:`Mixed` as ``(rule, initializer)`` pairs; a typed error for anything else."""
    fix = 'Pass a list of (rule, initializer) pairs, e.g. [("*.weight", pp.init.Xavier())].'
    if isinstance(rules, Mapping):
        pairs = list(rules.items())
    elif isinstance(rules, (str, bytes)) or not isinstance(rules, Iterable):
        msg = (f"Invalid value for argument `rules` of Mixed: expected (rule, initializer) pairs. "
               f"Received: {rules!r}. {fix}")
        raise errors.InitializerError(msg, expected="(rule, initializer) pairs", got=rules)
    else:
        pairs = []
        for item in rules:
            if not (isinstance(item, Sequence) and not isinstance(item, (str, bytes)) and len(item) == 2):
                msg = (f"Invalid value for a rule of Mixed: expected a (rule, initializer) pair. "
                       f"Received: {item!r}. {fix}")
                raise errors.InitializerError(msg, expected="(rule, initializer)", got=item)
            pairs.append((item[0], item[1]))
    for rule, _ in pairs:
        if not (isinstance(rule, (str, re.Pattern)) or callable(rule)):
            msg = (f"Invalid value for a rule of Mixed: expected a glob, 'role:<role>', 'kind:<kind>', a compiled "
                   f"regex or a predicate on ParamInfo. Received: {rule!r}. {fix}")
            raise errors.InitializerError(msg, expected="glob, regex or predicate", got=rule)
    return pairs


@register("mixed")
class Mixed(_BuiltIn):
    """Ordered rules: the first rule that matches a parameter chooses its initializer.

    A rule is a glob on the canonical path (``"*.weight"``), ``"role:bias"``,
    ``"kind:buffer"``, a compiled regex (searched in the path) or a predicate on :class:`ParamInfo`.
    The matched initializer fills the parameter whatever its role, so
    ``("*.bias", Constant(0.1))`` does set biases. Parameters no rule matches get
    ``default`` (role dispatch), or are refused if there is none. A rule that matched
    nothing in an ``initialize`` call is reported with a warning that names it.

    Unlike Gluon's ``init.Mixed``, it works with ``initialize`` and with deferred init.
    """

    def __init__(self, rules: Sequence[tuple[Any, Initializer]] | Mapping[Any, Initializer],
                 default: Initializer | Callable[..., Any] | str | None = None) -> None:
        self.rules = [(rule, _as_initializer(init, f"rules[{i}]")) for i, (rule, init) in enumerate(_pairs(rules))]
        self.default = None if default is None else _as_initializer(default, "default")
        self._config = {"rules": [[r, i] for r, i in self.rules], "default": default}
        self._hits = [0] * len(self.rules)

    def _pick(self, info: ParamInfo) -> tuple[int, Initializer | None]:
        for i, (rule, init) in enumerate(self.rules):
            if _matches(rule, info):
                return i, init
        return -1, self.default

    def _note(self, info: ParamInfo, /) -> None:
        i, _ = self._pick(info)
        if i >= 0:
            self._hits[i] += 1

    def _finish(self) -> None:
        for (rule, init), hits in zip(self.rules, self._hits):
            if not hits:
                warnings.warn(f"Mixed rule {rule!r} -> {init!r} matched no parameter. Check the pattern against "
                              "tree.paths().", errors.PolyparamWarning, stacklevel=4)
        self._hits = [0] * len(self.rules)

    def check(self, info: ParamInfo, /, *, by_role: bool = True) -> None:
        i, init = self._pick(info)
        if init is None:
            msg = (f"Cannot initialize parameter {info.path!r} with Mixed: expected a rule to match it, got none "
                   f"of {[r for r, _ in self.rules]!r}. Add a rule or a default initializer.")
            raise errors.InitializerError(msg, path=info.path, expected=[r for r, _ in self.rules], got=info.path)
        init.check(info, by_role=by_role and i < 0)

    @property
    def _writes_in_place(self) -> bool:  # type: ignore[override]
        return all(init._writes_in_place for _, init in self.rules) and (
            self.default is None or self.default._writes_in_place)

    @property
    def _fills_every_element(self) -> bool:
        return _own_fill(self, __name__) and all(init._fills_every_element for _, init in self.rules) and (
            self.default is None or self.default._fills_every_element)

    def _copies(self, info: ParamInfo, /) -> bool:
        init = self._pick(info)[1]
        return init is not None and init._copies(info)

    def fill(self, arr: np.ndarray, info: ParamInfo, /, *, seed: int, by_role: bool = True) -> None:
        seed = _seed(seed)
        i, init = self._pick(info)
        assert init is not None, "check() refuses unmatched parameters"
        init.fill(arr, info, seed=seed, by_role=by_role and i < 0)

    def fill_slice(self, arr: np.ndarray, info: ParamInfo, index: Sequence[slice], /, *, seed: int,
                   by_role: bool = True) -> None:
        seed = _seed(seed)
        i, init = self._pick(info)
        assert init is not None, "check() refuses unmatched parameters"
        init.fill_slice(arr, info, index, seed=seed, by_role=by_role and i < 0)


class _PerParameter(_BuiltIn):
    """Picks, per parameter, an initializer that fills it whatever its role, or falls back to ``fallback``."""

    fallback: Initializer | None

    def _own(self, info: ParamInfo) -> Initializer | None:
        raise NotImplementedError

    def _pick(self, info: ParamInfo, by_role: bool) -> tuple[Initializer | None, bool]:
        own = self._own(info)
        return (own, False) if own is not None else (self.fallback, by_role)

    @property
    def _writes_in_place(self) -> bool:  # type: ignore[override]
        return False   # which initializer fills a parameter is known only per parameter: fill a scratch array

    def _note(self, info: ParamInfo, /) -> None:
        init, _ = self._pick(info, True)
        if init is not None and init is self.fallback:
            init._note(info)

    def _finish(self) -> None:
        if self.fallback is not None:
            self.fallback._finish()

    def _copies(self, info: ParamInfo, /) -> bool:
        init = self._pick(info, True)[0]
        return init is not None and init._copies(info)

    def fill(self, arr: np.ndarray, info: ParamInfo, /, *, seed: int, by_role: bool = True) -> None:
        init, role_wise = self._pick(info, by_role)
        assert init is not None, "check() refuses parameters without an initializer"
        init.fill(arr, info, seed=_seed(seed), by_role=role_wise)

    def fill_slice(self, arr: np.ndarray, info: ParamInfo, index: Sequence[slice], /, *, seed: int,
                   by_role: bool = True) -> None:
        init, role_wise = self._pick(info, by_role)
        assert init is not None, "check() refuses parameters without an initializer"
        init.fill_slice(arr, info, index, seed=_seed(seed), by_role=role_wise)


@register("declared")
class Declared(_PerParameter):
    """Each parameter filled as its framework declares it, drawn from polyparam's seeded streams.

    A Keras layer's ``kernel_initializer``/``bias_initializer``, the formulas of torch's
    ``reset_parameters`` (``nn.Linear``: weights and biases from ``U(+-1/sqrt(fan_in))``),
    Gluon's ``Parameter.init`` or its default: whatever the backend reads for the
    parameter. Parameters with nothing declared get ``default`` (role dispatch), or are
    refused if there is none.
    """

    def __init__(self, default: Initializer | Callable[..., Any] | str | None = None) -> None:
        self.default = None if default is None else _as_initializer(default, "default")
        self.fallback = self.default

    def _own(self, info: ParamInfo) -> Initializer | None:
        return info.declared() if info.declared is not None else None

    def check(self, info: ParamInfo, /, *, by_role: bool = True) -> None:
        init, role_wise = self._pick(info, by_role)
        if init is None:
            msg = (f"Cannot initialize parameter {info.path!r} with Declared: expected its framework to declare an "
                   "initializer for it, got none. Pass default= for such parameters.")
            raise errors.InitializerError(msg, path=info.path, expected="a declared initializer", got=None)
        init.check(info, by_role=role_wise)


class OwnFirst(_PerParameter):
    """Gluon's rule for a tree-wide ``initialize``: a parameter's own initializer wins over ``fallback``.

    Built by ``initialize`` from :meth:`Parameter._own_initializer`; not registered (no JSON form).
    """

    def __init__(self, own: dict[str, Initializer], fallback: Initializer) -> None:
        self.own = own
        self.fallback = fallback

    def _own(self, info: ParamInfo) -> Initializer | None:
        return self.own.get(info.path)

    def check(self, info: ParamInfo, /, *, by_role: bool = True) -> None:
        init, role_wise = self._pick(info, by_role)
        assert init is not None
        init.check(info, by_role=role_wise)

    def config(self) -> dict[str, Any]:
        assert self.fallback is not None
        return self.fallback.config()


@register("load")
class Load(_BuiltIn):
    """Values from a state dict ``{path: array}`` or a checkpoint file, by canonical path.

    The file may be any that :func:`polyparam.load` reads in canonical layout (a
    polyparam ``.safetensors``/``.npz``, a plain safetensors file, a torch ``.pt``, a
    Gluon ``.params``). Keys are mapped first (``rename``, ``strip_prefix``,
    ``add_prefix``: as in :func:`polyparam.load`). Parameters missing from the source get
    ``default`` (role dispatch), or are refused if there is none; with ``skip_mismatch``,
    so do those whose value has another shape. Loaded values are used whatever the role.
    """

    def __init__(self, source: Mapping[str, Any] | str | os.PathLike[str],
                 default: Initializer | Callable[..., Any] | str | None = None, *,
                 rename: Rename | None = None, strip_prefix: str | None = None, add_prefix: str | None = None,
                 skip_mismatch: bool = False) -> None:
        if not isinstance(source, (Mapping, str, os.PathLike)):
            msg = (f"Invalid value for argument `source` of Load: expected a state dict {{path: array}} or a "
                   f"file path. Received: source={source!r}. Pass tree.state() or a checkpoint path.")
            raise errors.InitializerError(msg, expected="a mapping or a file path", got=source)
        self.source = source
        self.default = None if default is None else _as_initializer(default, "default")
        self.keymap = KeyMap.of(rename=rename, strip_prefix=strip_prefix, add_prefix=add_prefix)
        self.skip_mismatch = bool(skip_mismatch)
        self._state: Mapping[str, Any] | None = None

    @property
    def _writes_in_place(self) -> bool:  # type: ignore[override]
        return self.default is None or self.default._writes_in_place

    @property
    def _fills_every_element(self) -> bool:
        return _own_fill(self, __name__) and (self.default is None or self.default._fills_every_element)

    def config(self) -> dict[str, Any]:
        if not isinstance(self.source, (str, os.PathLike)):
            msg = "Cannot serialize Load from an in-memory state: expected a file path. Save the state first."
            raise errors.InitializerError(msg, expected="a file path", got=type(self.source).__name__)
        if callable(self.keymap.rename):
            msg = "Cannot serialize Load with a rename callable: expected (regex, replacement) rules."
            raise errors.InitializerError(msg, expected="rename rules", got="a callable")
        extra = {"rename": [list(rule) for rule in self.keymap.rename] if self.keymap.rename else None,
                 "strip_prefix": self.keymap.strip_prefix, "add_prefix": self.keymap.add_prefix,
                 "skip_mismatch": self.skip_mismatch or None}
        return {"source": os.fspath(self.source), "default": self.default,
                **{k: v for k, v in extra.items() if v is not None}}

    def __repr__(self) -> str:
        # config() refuses what has no JSON form; a repr names it instead
        source = (repr(os.fspath(self.source)) if isinstance(self.source, (str, os.PathLike))
                  else f"<state of {len(self.source)} arrays>")
        args = [f"source={source}", f"default={self.default!r}"]
        if self.keymap.rename:
            rename = self.keymap.rename
            args.append(f"rename={rename!r}" if callable(rename) else f"rename={[list(rule) for rule in rename]!r}")
        args += [f"{name}={value!r}" for name, value in (("strip_prefix", self.keymap.strip_prefix),
                                                          ("add_prefix", self.keymap.add_prefix)) if value is not None]
        if self.skip_mismatch:
            args.append("skip_mismatch=True")
        return f"Load({', '.join(args)})"

    def _values(self) -> Mapping[str, Any]:
        if self._state is None:
            if isinstance(self.source, Mapping):
                state: Mapping[str, Any] = self.source
            else:
                state = self._read_file(os.fspath(self.source))
            mapped, _, _ = self.keymap.apply(state, subject="Load")
            self._state = {mapped[k]: v for k, v in state.items() if k in mapped} if self.keymap.active else state
        return self._state

    @staticmethod
    def _read_file(path: str) -> dict[str, np.ndarray]:
        from polyparam.checkpoint.formats import open_archive  # the checked readers pp.load uses

        try:
            archive = open_archive(path, mmap=False)
        except errors.UnsupportedFormatError as exc:
            msg = f"Cannot load initial values from {path!r}: expected a checkpoint file pp.load reads, got {exc}"
            raise errors.InitializerError(msg, expected="a checkpoint file", got=path) from exc
        with archive:
            if archive.metadata.layout != "canonical":
                msg = (f"Cannot load initial values from {path!r}: expected tensors in canonical layout, got the "
                       f"{archive.metadata.layout!r} layout. Load it with pp.load into a model of that framework.")
                raise errors.InitializerError(msg, expected="canonical", got=archive.metadata.layout)
            state = {}
            for name, key in archive.paths().items():
                value = archive.read(key)
                archive.verify(key, value)
                state[name] = np.array(value)
            return state

    def _has(self, info: ParamInfo) -> bool:
        """Whether the source gives ``info`` its value (present, and of its shape under ``skip_mismatch``)."""
        values = self._values()
        if info.path not in values:
            return False
        return not (self.skip_mismatch and tuple(np.shape(values[info.path])) != tuple(info.shape))

    def check(self, info: ParamInfo, /, *, by_role: bool = True) -> None:
        values = self._values()
        if not self._has(info):
            if self.default is None:
                got = (f"shape {np.shape(values[info.path])} (skipped)" if info.path in values
                       else f"{len(values)} other keys")
                msg = (f"Cannot initialize parameter {info.path!r} with Load: expected it in the source, got "
                       f"{got}. Pass default= for parameters the source lacks.")
                raise errors.InitializerError(msg, path=info.path, expected=info.path, got=sorted(values)[:10])
            self.default.check(info, by_role=by_role)
            return
        _checked_result(values[info.path], info, "Load")

    def _copies(self, info: ParamInfo, /) -> bool:
        return self._has(info) or (self.default is not None and self.default._copies(info))

    def fill(self, arr: np.ndarray, info: ParamInfo, /, *, seed: int, by_role: bool = True) -> None:
        seed = _seed(seed)
        values = self._values()
        if self._has(info):
            arr[...] = _checked_result(values[info.path], info, "Load")
        else:
            assert self.default is not None
            self.default.fill(arr, info, seed=seed, by_role=by_role)

    def fill_slice(self, arr: np.ndarray, info: ParamInfo, index: Sequence[slice], /, *, seed: int,
                   by_role: bool = True) -> None:
        seed = _seed(seed)
        values = self._values()
        if self._has(info):
            box = tuple(slice(a, b) for a, b in _region(index, info.shape))
            arr[...] = _checked_result(values[info.path], info, "Load")[box]
        else:
            assert self.default is not None
            self.default.fill_slice(arr, info, index, seed=seed, by_role=by_role)


