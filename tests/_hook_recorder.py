"""A pytest plugin that records which backend hooks run (used by ``test_hooks_meta``).

Loaded with ``-p tests._hook_recorder``; writes the names of the hooks called, one per
line, to the file named by ``POLYPARAM_HOOK_RECORD`` when the session ends.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import pytest

CALLED: set[str] = set()


def _subclasses(cls: type) -> list[type]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_subclasses(sub))
    return out


def _wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def recorded(*args: Any, **kwargs: Any) -> Any:
        CALLED.add(name)
        return fn(*args, **kwargs)

    return recorded


def hook_names() -> set[str]:
    """Every ``_`` method of the base classes (not dunders nor ``_repr_html_``): the hooks and the core steps."""
    from polyparam.backend import Parameter, ParameterCollection, ParameterTree

    return {name for cls in (Parameter, ParameterCollection, ParameterTree) for name, value in vars(cls).items()
            if name.startswith("_") and not name.endswith("_") and callable(value)}


def pytest_collection_finish(session: pytest.Session) -> None:
    from polyparam.backend import Parameter, ParameterCollection

    names = hook_names()
    for base in (Parameter, ParameterCollection):
        for cls in _subclasses(base):
            for name in names & set(vars(cls)):
                setattr(cls, name, _wrap(name, vars(cls)[name]))


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get("POLYPARAM_HOOK_RECORD")
    if target:
        with open(target, "w") as fh:
            fh.write("\n".join(sorted(CALLED)))
