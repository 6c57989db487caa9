"""Whether libmxnet can be loaded safely into this process (framework-free).

libmxnet 1.9.1 is built against the old libstdc++ ABI. Its static initializer
(``OperatorTune<float>::Initialize``) constructs a ``std::random_device``; the
old-ABI ``random_device::_M_init(const std::string&)`` in the system libstdc++
forwards to the new-ABI ``_M_init`` and ``_M_getval`` through libstdc++'s own GOT.
When TensorFlow is the first to load libstdc++ (``import tensorflow`` before anything
else that links it), libstdc++'s lookup scope starts with
``libtensorflow_framework.so.2``, which exports its own copies of those two symbols
built for another ``random_device`` layout, and the dynamic linker binds libstdc++'s
GOT entries to them once and for all. ``import mxnet`` then jumps through a garbage
pointer and the process dies with a segmentation fault.

Nothing done after that binding can repair it short of patching libstdc++'s GOT, so
polyparam does the two safe things:

* ``import polyparam`` loads libstdc++ (:func:`polyparam._preload`), which fixes
  libstdc++'s lookup scope before TensorFlow can be imported after it;
* before ``import mxnet``, :func:`check` looks at the load order of the shared objects
  in the process and raises :class:`~polyparam.errors.FrameworkImportError` with the
  fix instead of letting the process crash.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["check", "loaded_objects", "unsafe_reason"]

_TENSORFLOW_LIBS = ("libtensorflow_framework.so", "libtensorflow_cc.so")


class _PhdrInfo(ctypes.Structure):
    _fields_ = [("dlpi_addr", ctypes.c_void_p), ("dlpi_name", ctypes.c_char_p),
                ("dlpi_phdr", ctypes.c_void_p), ("dlpi_phnum", ctypes.c_uint16)]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(_PhdrInfo), ctypes.c_size_t, ctypes.c_void_p)


def loaded_objects() -> list[str] | None:
    """Paths of the shared objects in this process in load order, or ``None`` if unknown.

    ``dl_iterate_phdr`` walks the dynamic linker's link map, which is in load order
    (``/proc/self/maps`` is in address order, which says nothing about it).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        iterate = libc.dl_iterate_phdr
    except (OSError, AttributeError):
        return None
    names: list[str] = []

    def visit(info: ctypes._Pointer[_PhdrInfo], size: int, data: ctypes.c_void_p) -> int:
        raw = info.contents.dlpi_name
        names.append(raw.decode(errors="replace") if raw else "")
        return 0

    iterate.argtypes = [_Callback, ctypes.c_void_p]
    iterate.restype = ctypes.c_int
    iterate(_Callback(visit), None)
    return names


def _first(names: list[str], prefixes: tuple[str, ...]) -> int | None:
    for i, name in enumerate(names):
        if os.path.basename(name).startswith(prefixes):
            return i
    return None


def unsafe_reason() -> str | None:
    """Why loading libmxnet now would crash the process, or ``None`` when it is safe."""
    if "mxnet" in sys.modules and hasattr(sys.modules["mxnet"], "base"):
        return None  # libmxnet is already loaded: too late to crash, nothing to check
    names = loaded_objects()
    if names is None:
        return None
    tensorflow = _first(names, _TENSORFLOW_LIBS)
    if tensorflow is None:
        return None
    stdcxx = _first(names, ("libstdc++.so",))
    if stdcxx is not None and stdcxx < tensorflow:
        return None
    return (f"TensorFlow ({names[tensorflow]}) was loaded before libstdc++, so libstdc++'s "
            "std::random_device calls are bound to TensorFlow's copies and libmxnet's static "
            "initializer would crash the process with a segmentation fault")


def check() -> None:
    """Raise :class:`~polyparam.errors.FrameworkImportError` if ``import mxnet`` would crash."""
    reason = unsafe_reason()
    if reason is None:
        return
    from polyparam import errors

    msg = (f"Cannot import mxnet in this process: expected libstdc++ to be loaded before TensorFlow, "
           f"got {reason}. Import polyparam (or mxnet) before tensorflow/keras, e.g. put "
           "`import polyparam` first in your script, or run the MXNet code in another process.")
    raise errors.FrameworkImportError(msg, backend="mxnet", plugin="polyparam_mxnet",
                                      expected="libstdc++ loaded before TensorFlow", got=reason)
