"""Key mapping: the renames, prefixes and subtree a load or transfer applies to a source's keys.

Applied before any check, so a mapped key is checked (and reported) as if the source had
used the mapped name. Every call that reads keys (`pp.load`, `load_state`, `pp.transfer`,
`pp.init.Load`, `polyparam convert`) builds one :class:`KeyMap` from its arguments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from polyparam import errors

__all__ = ["KeyMap", "Rename", "likely_cause"]

#: ``[(regex, replacement), ...]`` applied in order with :func:`re.sub`, or a callable
#: ``key -> new key`` (``None`` drops the key).
Rename = Sequence[tuple[str, str]] | Callable[[str], "str | None"]


@dataclass(frozen=True)
class KeyMap:
    """How a source's keys become the destination's paths: strip, rename, then add a prefix.

    ``root`` loads into the subtree at that path: the source's keys are relative to it
    (it adds ``root + "."`` last) and only the subtree's parameters are expected.
    """

    rename: Rename | None = None
    strip_prefix: str | None = None
    add_prefix: str | None = None
    root: str | None = None
    _rules: tuple[tuple[re.Pattern[str], str], ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def of(cls, *, rename: Rename | None = None, strip_prefix: str | None = None, add_prefix: str | None = None,
           root: str | None = None) -> KeyMap:
        """Check the arguments and compile the rules.

        Raises:
            InvalidArgumentError: A prefix that is not a string, a rule that is not a
                ``(regex, replacement)`` pair of strings, or a regex that does not compile.
        """
        for name, value in (("strip_prefix", strip_prefix), ("add_prefix", add_prefix), ("root", root)):
            if value is not None and (not isinstance(value, str) or not value):
                msg = (f"Invalid value for argument `{name}`: expected a non-empty string such as 'module.', got "
                       f"{value!r}.")
                raise errors.InvalidArgumentError(msg, argument=name, expected="a non-empty str", got=value)
        rules: list[tuple[re.Pattern[str], str]] = []
        if rename is not None and not callable(rename):
            if isinstance(rename, (str, bytes)) or not isinstance(rename, Sequence):
                msg = ("Invalid value for argument `rename`: expected a list of (regex, replacement) pairs or a "
                       f"callable key -> new key, got {type(rename).__name__}. Write rename=[(r'^model\\.', '')].")
                raise errors.InvalidArgumentError(msg, argument="rename", expected="[(regex, replacement), ...]",
                                                  got=type(rename).__name__)
            for rule in rename:
                if not (isinstance(rule, (tuple, list)) and len(rule) == 2 and all(isinstance(x, str) for x in rule)):
                    msg = (f"Invalid rule in argument `rename`: expected a (regex, replacement) pair of strings, got "
                           f"{rule!r}.")
                    raise errors.InvalidArgumentError(msg, argument="rename", expected="(regex, replacement)",
                                                      got=rule)
                try:
                    rules.append((re.compile(rule[0]), rule[1]))
                except re.error as exc:
                    msg = f"Invalid regex {rule[0]!r} in argument `rename`: {exc}."
                    raise errors.InvalidArgumentError(msg, argument="rename", expected="a regex",
                                                      got=rule[0]) from None
        return cls(rename, strip_prefix, add_prefix, root, tuple(rules))

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.rename, self.strip_prefix, self.add_prefix, self.root))

    def one(self, key: str) -> str | None:
        """The mapped key, or ``None`` if a rename callable dropped it."""
        stripped = key
        if self.strip_prefix is not None and key.startswith(self.strip_prefix):
            stripped = key[len(self.strip_prefix):]
        out: str | None = stripped
        if callable(self.rename):
            try:
                out = self.rename(stripped)
            except Exception as exc:
                msg = (f"Cannot map key {key!r}: expected the `rename` callable to return a key or None, got "
                       f"{type(exc).__name__}: {exc}. Nothing was changed; fix the callable for this key.")
                raise errors.InvalidArgumentError(msg, argument="rename", path=key, expected="a key or None",
                                                  got=f"{type(exc).__name__}: {exc}") from exc
            if out is not None and not isinstance(out, str):
                msg = (f"Invalid result of the `rename` callable for key {key!r}: expected a str (or None to drop "
                       f"the key), got {type(out).__name__}.")
                raise errors.InvalidArgumentError(msg, argument="rename", path=key, expected="str or None",
                                                  got=type(out).__name__)
        else:
            for pattern, replacement in self._rules:
                try:
                    stripped = pattern.sub(replacement, stripped)
                except (re.error, IndexError) as exc:
                    msg = f"Cannot apply rename rule {pattern.pattern!r} -> {replacement!r} to {key!r}: {exc}."
                    raise errors.InvalidArgumentError(msg, argument="rename", path=key, expected="a valid replacement",
                                                      got=replacement) from None
            out = stripped
        if out is None:
            return None
        if self.add_prefix is not None:
            out = self.add_prefix + out
        if self.root is not None:
            out = f"{self.root}.{out}"
        return out

    def apply(self, keys: Iterable[str], *, subject: str) -> tuple[dict[str, str], dict[str, str], list[str]]:
        """``(mapped, renamed, dropped)``: ``{source key: mapped key}`` for the keys kept,
        ``{source key: mapped key}`` for those that changed, and the keys a callable dropped.

        Raises:
            StateError: Two source keys map to one key (nothing has been written).
        """
        mapped: dict[str, str] = {}
        renamed: dict[str, str] = {}
        dropped: list[str] = []
        seen: dict[str, str] = {}
        for key in keys:
            new = self.one(key) if self.active else key
            if new is None:
                dropped.append(key)
                continue
            if new in seen:
                msg = (f"Cannot map the keys of {subject}: expected each key to map to its own path, got "
                       f"{seen[new]!r} and {key!r} both mapped to {new!r}. Make the rename rules tell them apart, "
                       "or drop one (a rename callable returning None).")
                raise errors.StateError(msg, path=new, expected="one key per path", got=[seen[new], key])
            seen[new] = key
            mapped[key] = new
            if new != key:
                renamed[key] = new
        return mapped, renamed, dropped


def _prefixes(keys: Iterable[str], depth: int = 3) -> set[str]:
    """Every leading ``a.``, ``a.b.``, ... (up to ``depth`` components) of ``keys``."""
    out: set[str] = set()
    for key in keys:
        parts = key.split(".")
        out.update(".".join(parts[:n]) + "." for n in range(1, min(depth, len(parts) - 1) + 1))
    return out


def _best_prefix(prefixes: set[str], hits: Callable[[str], int], need: int) -> str:
    scored = sorted(((hits(p), -len(p), p) for p in prefixes), reverse=True)
    return scored[0][2] if scored and scored[0][0] >= need else ""


def likely_cause(missing: list[str], unexpected: list[str]) -> str:
    """One sentence on why keys do not match (a prefix on either side, an index shift), or ``""``."""
    if not missing or not unexpected:
        return ""
    missing_set, unexpected_set = set(missing), set(unexpected)
    extra = _best_prefix(_prefixes(unexpected),
                         lambda p: sum(k.startswith(p) and k[len(p):] in missing_set for k in unexpected),
                         max(1, len(unexpected) // 2))
    if extra:
        return f"The source's keys carry a prefix {extra!r}: pass strip_prefix={extra!r}."
    lacking = _best_prefix(_prefixes(missing), lambda p: sum(p + k in missing_set for k in unexpected),
                           max(1, len(unexpected) // 2))
    if lacking:
        return (f"The source's keys are relative to the block {lacking[:-1]!r}: pass root={lacking[:-1]!r} "
                f"(or add_prefix={lacking!r}).")

    def shape_free(key: str) -> str:
        return ".".join("#" if part.isdigit() else part for part in key.split("."))

    if sorted(map(shape_free, missing)) == sorted(map(shape_free, unexpected_set)):
        return ("The names agree but the layer indices differ (e.g. activation modules counted in one model "
                "only): pass match=\"order\" to pair parameters in model order, or a rename rule.")
    return ""
