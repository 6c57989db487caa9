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
    ├── TieError                        (also ValueError)
    └── CheckpointError
        ├── TieMismatchError            (also ValueError)  # file ties vs model ties
        ├── TransferError               (also ValueError)  # the two structures differ
        └── CheckpointFormatError       (also ValueError)  # a file polyparam refuses to read
            ├── UnsupportedFormatError                     # extension or content not a known format
            ├── UnsafeContentError                         # pickle, code, links: never executed
            ├── EmptyFileError
            ├── TruncatedFileError
            ├── BadMagicError                              # leading bytes of another format
            ├── HeaderTooLargeError
            ├── HeaderLengthError                          # declared header runs past the file
            ├── HeaderEncodingError                        # not UTF-8
            ├── HeaderJSONError                            # not JSON
            ├── HeaderSchemaError                          # JSON, but not the expected fields
            ├── DuplicateKeyError
            ├── InvalidKeyError
            ├── TooManyTensorsError
            ├── UnknownDTypeError
            ├── ShapeOverflowError
            ├── TensorSizeError                            # shape x dtype != byte range
            ├── InvalidOffsetError                         # reversed or non-integer range
            ├── OffsetOutOfRangeError
            ├── OverlappingOffsetsError
            ├── OffsetGapError
            ├── TrailingBytesError
            ├── MetadataError                              # polyparam metadata inconsistent
            ├── UnsupportedVersionError
            ├── ChecksumError                              # data does not match its checksum
            ├── CorruptArchiveError                        # broken zip / HDF5 structure
            └── DecompressionBombError

    PolyparamWarning (UserWarning)
    ├── AlreadyInitializedWarning
    └── StaleOptimizerWarning                          # a trainer holds a replaced parameter

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
    "BadMagicError",
    "CheckpointError",
    "CheckpointFormatError",
    "ChecksumError",
    "CorruptArchiveError",
    "DTypeMismatchError",
    "DecompressionBombError",
    "DeferredInitializationError",
    "DeviceMismatchError",
    "DuplicateKeyError",
    "EmptyFileError",
    "FrameworkImportError",
    "HeaderEncodingError",
    "HeaderJSONError",
    "HeaderLengthError",
    "HeaderSchemaError",
    "HeaderTooLargeError",
    "InitializerError",
    "InvalidKeyError",
    "InvalidOffsetError",
    "MetadataError",
    "OffsetGapError",
    "OffsetOutOfRangeError",
    "OverlappingOffsetsError",
    "ParameterError",
    "ParameterNotFoundError",
    "PluginContractError",
    "PolyparamError",
    "PolyparamWarning",
    "ShapeMismatchError",
    "ShapeOverflowError",
    "StaleOptimizerWarning",
    "StateError",
    "TensorSizeError",
    "TieError",
    "TieMismatchError",
    "TooManyTensorsError",
    "TrailingBytesError",
    "TransferError",
    "TruncatedFileError",
    "UninitializedParameterError",
    "UnknownDTypeError",
    "UnsafeContentError",
    "UnsupportedFormatError",
    "UnsupportedModelError",
    "UnsupportedVersionError",
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


# ---- checkpoints -------------------------------------------------------------


class CheckpointError(PolyparamError):
    """A checkpoint file cannot be written, read or applied, or a transfer cannot be made.

    .. versionadded:: 0.1
    """


class CheckpointFormatError(CheckpointError, ValueError):
    """A file polyparam refuses to read: every malformed-file class has its own subclass.

    Attributes:
        file: The file concerned (``str``), or ``None`` for in-memory data.

    .. versionadded:: 0.1
    """

    def __init__(self, msg: str, /, *, file: str | None = None, **facts: Any) -> None:
        super().__init__(msg, **facts)
        self.file = file


class TieMismatchError(CheckpointError, ValueError):
    """The ties recorded in a file cannot be reconciled with the model's ties (or the reverse).

    .. versionadded:: 0.1
    """


class TransferError(CheckpointError, ValueError):
    """Source and destination of :func:`polyparam.transfer` differ in structure.

    ``report`` holds the :class:`~polyparam.TransferReport` with every difference.

    .. versionadded:: 0.1
    """

    def __init__(self, msg: str, /, *, report: Any = None, **facts: Any) -> None:
        super().__init__(msg, **facts)
        self.report = report


class UnsupportedFormatError(CheckpointFormatError):
    """The file's extension or content is not a checkpoint format polyparam reads or writes.

    .. versionadded:: 0.1
    """


class UnsafeContentError(CheckpointFormatError):
    """The file holds code or references polyparam refuses to run or follow (pickle, HDF5 links).

    .. versionadded:: 0.1
    """


class EmptyFileError(CheckpointFormatError):
    """The file has no bytes at all.

    .. versionadded:: 0.1
    """


class TruncatedFileError(CheckpointFormatError):
    """The file ends before the data its header declares.

    .. versionadded:: 0.1
    """


class BadMagicError(CheckpointFormatError):
    """The file's leading bytes are not the format's signature (often: another format renamed).

    .. versionadded:: 0.1
    """


class HeaderTooLargeError(CheckpointFormatError):
    """The declared header is larger than the format's limit (100 MB for safetensors).

    .. versionadded:: 0.1
    """


class HeaderLengthError(CheckpointFormatError):
    """The declared header length runs past the end of the file.

    .. versionadded:: 0.1
    """


class HeaderEncodingError(CheckpointFormatError):
    """The header is not valid UTF-8.

    .. versionadded:: 0.1
    """


class HeaderJSONError(CheckpointFormatError):
    """The header is not valid JSON (or not a Python literal, for .npy headers).

    .. versionadded:: 0.1
    """


class HeaderSchemaError(CheckpointFormatError):
    """The header parses but its fields are not the format's.

    .. versionadded:: 0.1
    """


class DuplicateKeyError(CheckpointFormatError):
    """A tensor name appears twice in the header.

    .. versionadded:: 0.1
    """


class InvalidKeyError(CheckpointFormatError):
    """A tensor name is empty, reserved or not a string.

    .. versionadded:: 0.1
    """


class TooManyTensorsError(CheckpointFormatError):
    """The header declares more tensors than polyparam's limit.

    .. versionadded:: 0.1
    """


class UnknownDTypeError(CheckpointFormatError):
    """A tensor's dtype is unknown or not supported.

    .. versionadded:: 0.1
    """


class ShapeOverflowError(CheckpointFormatError):
    """A tensor's shape has negative, non-integer or absurdly large dimensions.

    .. versionadded:: 0.1
    """


class TensorSizeError(CheckpointFormatError):
    """A tensor's byte range does not match its shape times its dtype's size.

    .. versionadded:: 0.1
    """


class InvalidOffsetError(CheckpointFormatError):
    """A tensor's byte range is reversed, negative or not two integers.

    .. versionadded:: 0.1
    """


class OffsetOutOfRangeError(CheckpointFormatError):
    """A tensor's byte range lies past the data section.

    .. versionadded:: 0.1
    """


class OverlappingOffsetsError(CheckpointFormatError):
    """Two tensors' byte ranges overlap.

    .. versionadded:: 0.1
    """


class OffsetGapError(CheckpointFormatError):
    """The tensors' byte ranges leave a hole in the data section.

    .. versionadded:: 0.1
    """


class TrailingBytesError(CheckpointFormatError):
    """Bytes follow the last tensor (a polyglot file).

    .. versionadded:: 0.1
    """


class MetadataError(CheckpointFormatError):
    """polyparam's metadata in the file is malformed or names tensors the file lacks.

    .. versionadded:: 0.1
    """


class UnsupportedVersionError(CheckpointFormatError):
    """The file was written by a newer polyparam format version.

    .. versionadded:: 0.1
    """


class ChecksumError(CheckpointFormatError):
    """A tensor's data does not match the checksum recorded when it was saved (corrupt data).

    .. versionadded:: 0.1
    """


class CorruptArchiveError(CheckpointFormatError):
    """The container (zip archive, HDF5 file) is damaged.

    .. versionadded:: 0.1
    """


class DecompressionBombError(CheckpointFormatError):
    """A member declares far more bytes than the file could hold.

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


class StaleOptimizerWarning(PolyparamWarning):
    """A tie or untie replaced a parameter object that an optimizer (a Gluon ``Trainer``) holds.

    The optimizer keeps updating the object it was given; build it again after tying.

    .. versionadded:: 0.1
    """
