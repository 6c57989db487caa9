"""polyparam: one way to access, initialize, tie, save and move model parameters,
whatever framework built the model.

::

    import polyparam as pp

    tree = pp.tree(net)                      # torch, keras, gluon, polyparam.numpy or a dict
    print(tree)                              # every parameter, with totals
    tree.initialize(pp.init.Xavier(), seed=0)   # the same values on every backend
    pp.tie(tree[1], tree[2])                 # tie after construction

Importing polyparam imports no framework: a backend imports its framework the first
time an object of that framework is handled.
"""

from __future__ import annotations

from typing import Any

from polyparam import _preload, errors, init, roles
from polyparam._diff import Diff, diff
from polyparam._groups import average, param_groups
from polyparam._manager import backend_for, get_backend, list_backends, tree
from polyparam._params.parameter import Parameter
from polyparam._params.ties import TieGroup
from polyparam._params.tree import ParameterSelection, ParameterTree
from polyparam._tie import tie
from polyparam._transfer import transfer
from polyparam.backend import Backend, Case, ModelFactory
from polyparam.checkpoint import consolidate, load, save
from polyparam.hookspecs import hookimpl
from polyparam.init import Initializer
from polyparam.init.run import InitReport

_preload.preload_libstdcxx()  # before any framework: see polyparam._preload

__all__ = [
    "Backend",
    "Case",
    "Diff",
    "InitReport",
    "Initializer",
    "ModelFactory",
    "Parameter",
    "ParameterSelection",
    "ParameterTree",
    "TieGroup",
    "average",
    "backend_for",
    "consolidate",
    "diff",
    "errors",
    "get_backend",
    "hookimpl",
    "init",
    "list_backends",
    "load",
    "param_groups",
    "roles",
    "save",
    "tie",
    "transfer",
    "tree",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version

        return version("polyparam")
    if name in ("numpy", "plot", "testing"):
        import importlib

        return importlib.import_module(f"polyparam.{name}")
    msg = f"module 'polyparam' has no attribute {name!r}"
    raise AttributeError(msg)
