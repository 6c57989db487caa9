"""Load libstdc++ at ``import polyparam``, before any framework can (Linux, mxnet installed).

When TensorFlow is the first to load libstdc++, libstdc++'s ``std::random_device``
calls bind to the copies that ``libtensorflow_framework.so.2`` exports, and libmxnet's
static initializer then crashes the process on ``import mxnet`` (segmentation fault;
details in ``polyparam_mxnet._loadorder``). Loading libstdc++ first fixes its lookup
scope, as ``import torch`` or ``import keras`` already do, so users of polyparam can
import TensorFlow and MXNet in either order. Nothing is done where it cannot matter:
off Linux, without mxnet installed, or once TensorFlow is imported (too late).
``POLYPARAM_NO_PRELOAD=1`` turns it off.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys

__all__ = ["preload_libstdcxx"]


def preload_libstdcxx() -> bool:
    """Load ``libstdc++.so.6`` if it can prevent the TensorFlow/MXNet crash; return whether it did."""
    if not sys.platform.startswith("linux") or "tensorflow" in sys.modules or os.environ.get("POLYPARAM_NO_PRELOAD"):
        return False
    try:
        if importlib.util.find_spec("mxnet") is None:
            return False
        ctypes.CDLL("libstdc++.so.6")  # by soname: no subprocess, unlike ctypes.util.find_library
    except (OSError, ValueError, ImportError):
        return False
    return True
