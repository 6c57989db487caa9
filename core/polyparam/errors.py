"""Every error polyparam raises, in one hierarchy.

::

    PolyparamError
    ├── BackendError
    │   ├── BackendNotFoundError        (also LookupError)
    │   ├── UnsupportedModelError       (also TypeError)
    │   ├── PluginContractError         (also TypeError)
    │   └── FrameworkImportError        (also ImportError)
    ├── ParameterError
    │   ├── ParameterNotFoundError      (also KeyError)
    │   ├── AmbiguousNameError          (also KeyError)
    │   ├── ShapeMismatchError          (also ValueError)
    │   ├── DTypeMismatchError          (also TypeError)
    │   ├── DeviceMismatchError         (also ValueError)
    │   ├── DeferredInitializationError (also RuntimeError)
    │   └── UninitializedParameterError (also RuntimeError)
    ├── StateError                      (also ValueError)
    ├── InitializerError                (also ValueError)
    └── TieError                        (also ValueError)

    PolyparamWarning (UserWarning)
    └── AlreadyInitializedWarning

Each exception stores the facts as attributes (``path``, ``expected``, ``got``)
so callers and tests need not parse messages. Messages follow one sentence shape:
"Cannot <action> <subject>: expected <X>, got <Y>. <One way to fix it>."
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyInitializedWarning",
    "AmbiguousNameError",
    "BackendError",
    "BackendNotFoundError",
    "DTypeMismatchError",
    "DeferredInitializationError",
    "DeviceMismatchError",
    "FrameworkImportError",
    "InitializerError",
    "ParameterError",
    "ParameterNotFoundError",
    "PluginContractError",
    "PolyparamError",
    "PolyparamWarning",
    "ShapeMismatchError",
    "StateError",
    "TieError",
    "UninitializedParameterError",
    "UnsupportedModelError",
]


class PolyparamError(Exception):
    """Base class of every error raised by polyparam.

    Attributes:
        path: The canonical parameter path concerned, or ``None``.
        expected: What polyparam expected (a shape, dtype, set of keys...), or ``None``.
        got: What it got instead, or ``None``.

    .. versionadded:: 0.1
    """

    def __init__(self, msg: str, /, *, path: str | None = None, expected: Any = None, got: Any = None) -> None:
        super().__init__(msg)
        self.path = path
        self.expected = expected
        self.got = got

    def __str__(self) -> str:
        # KeyError subclasses would otherwise print the message quoted with repr().
        return str(self.args[0]) if self.args else ""


# ---- backends and plugins ----------------------------------------------------


class BackendError(PolyparamError):
    """A problem with a backend or a plugin that provides one.

    .. versionadded:: 0.1
    """

    def __init__(self, msg: str, /, *, backend: str | None = None, plugin: str | None = None, **facts: Any) -> None:
        super().__init__(msg, **facts)
        self.backend = backend
        self.plugin = plugin


class BackendNotFoundError(BackendError, LookupError):
    """No installed plugin provides the requested backend.

    .. versionadded:: 0.1
    """


class UnsupportedModelError(BackendError, TypeError):
    """No installed backend recognises the object given to :func:`polyparam.tree`.

    .. versionadded:: 0.1
    """


class PluginContractError(BackendError, TypeError):
    """A plugin broke the hook contract or returned something that is not a backend.

    .. versionadded:: 0.1
    """


class FrameworkImportError(BackendError, ImportError):
    """A backend's framework cannot be imported safely in this process.

    .. versionadded:: 0.1
    """


# ---- parameters --------------------------------------------------------------


class ParameterError(PolyparamError):
    """A problem with one parameter.

    .. versionadded:: 0.1
    """


class ParameterNotFoundError(ParameterError, KeyError):
    """No parameter or block has the requested path or name.

    .. versionadded:: 0.1
    """


class AmbiguousNameError(ParameterError, KeyError):
    """A name or suffix matches more than one parameter.

    .. versionadded:: 0.1
    """


class ShapeMismatchError(ParameterError, ValueError):
    """A value's shape differs from the parameter's shape.

    .. versionadded:: 0.1
    """


class DTypeMismatchError(ParameterError, TypeError):
    """A value's dtype cannot be cast to the parameter's dtype without changing its kind.

    .. versionadded:: 0.1
    """


class DeviceMismatchError(ParameterError, ValueError):
    """Parameters on different devices were asked to do something that needs one device.

    .. versionadded:: 0.1
    """


class DeferredInitializationError(ParameterError, RuntimeError):
    """The parameter's shape is not known yet, so it has no data.

    .. versionadded:: 0.1
    """


class UninitializedParameterError(ParameterError, RuntimeError):
    """The parameter has a shape but was never initialized.

    .. versionadded:: 0.1
    """


# ---- whole-tree operations ---------------------------------------------------


class StateError(PolyparamError, ValueError):
    """A state dict does not fit the tree (missing or unexpected keys, conflicting tied values).

    .. versionadded:: 0.1
    """


class InitializerError(PolyparamError, ValueError):
    """An initializer cannot be built or cannot fill a parameter.

    .. versionadded:: 0.1
    """


class TieError(PolyparamError, ValueError):
    """Parameters cannot be tied or untied as asked.

    .. versionadded:: 0.1
    """


# ---- warnings ----------------------------------------------------------------


class PolyparamWarning(UserWarning):
    """Base class of polyparam's warnings.

    .. versionadded:: 0.1
    """


class AlreadyInitializedWarning(PolyparamWarning):
    """``initialize`` skipped a parameter that already has data (pass ``force_reinit=True``).

    .. versionadded:: 0.1
    """
