"""polyparam plugin for MXNet Gluon 1.9. Importing this module never imports mxnet.

The backend module (:mod:`polyparam_mxnet._backend`) is imported the first time a
Gluon block is handled or ``pp.get_backend("mxnet")`` is called; before it loads
libmxnet it checks that the process can do so safely (see :mod:`polyparam_mxnet._loadorder`).
"""

from __future__ import annotations

import sys
from typing import Any

from polyparam import hookimpl

NAME = "mxnet"


@hookimpl
def polyparam_backend_names() -> list[str]:
    return [NAME]


@hookimpl
def polyparam_get_backend(name: str) -> Any:
    if name != NAME:
        return None
    from polyparam_mxnet import _backend  # the only place mxnet gets imported

    return _backend


@hookimpl
def polyparam_backend_for(obj: object) -> str | None:
    # array-api-compat: not imported means not ours. mxnet.gluon is imported by
    # `import mxnet`, so a Gluon block implies both modules are present.
    gluon = sys.modules.get("mxnet.gluon")
    if gluon is None:
        return None
    return NAME if isinstance(obj, gluon.Block) else None
