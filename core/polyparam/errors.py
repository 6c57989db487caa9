"""Every error polyparam raises, in one hierarchy.

```text
PolyparamError
├── UsageError                      (also ValueError)  # a call polyparam cannot make as asked
│   └── InvalidArgumentError                           # an argument or variable outside its choices
├── BackendError
│   ├── BackendNotFoundError        (also LookupError)
│   ├── UnsupportedModelError       (also TypeError)
│   ├── PluginContractError         (also TypeError)
│   └── FrameworkImportError        (also ImportError)
├── ParameterError
│   ├── ParameterNotFoundError      (also KeyError)
│   ├── InvalidIndexError           (also IndexError)  # an item write's index selects no element
│   ├── AmbiguousNameError          (also KeyError)
│   ├── ShapeMismatchError          (also ValueError)
│   ├── DTypeMismatchError          (also TypeError)
│   ├── DeviceMismatchError         (also ValueError)
│   ├── DeferredInitializationError (also RuntimeError)
│   ├── UninitializedParameterError (also RuntimeError)
│   └── WriteFailedError            (also RuntimeError) # the framework refused a write; all was restored
├── UndoLimitError                  (also MemoryError)  # undo copies over POLYPARAM_UNDO_LIMIT
├── StateError                      (also ValueError)
├── InitializerError                (also ValueError)
├── TieError                        (also ValueError)
└── CheckpointError
    ├── TieMismatchError            (also ValueError)  # file ties vs model ties
    ├── TransferError               (also ValueError)  # the two structures differ
    ├── CheckpointWriteError        (also OSError)     # the disk refused a save (errno kept)
    ├── CheckpointNotFoundError     (also FileNotFoundError)  # no file or directory at the path read
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
        ├── DecompressionBombError
        ├── ShardIndexError                            # a Hub index and its shards disagree
        └── NotACheckpointError     (also IsADirectoryError)  # a directory holding no checkpoint

PolyparamWarning (UserWarning)
├── AlreadyInitializedWarning
└── StaleOptimizerWarning                          # a trainer holds a replaced parameter
```

Each exception stores the facts as attributes (``path``, ``expected``, ``got``)
so callers and tests need not parse messages. Messages follow one sentence shape:
"Cannot <action> <subject>: expected <X>, got <Y>. <One way to fix it>."

Every class here exists since version 0.1, unless its docstring says otherwise.
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
    "CheckpointNotFoundError",
    "CheckpointWriteError",
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
    "InvalidArgumentError",
    "InvalidIndexError",
    "InvalidKeyError",
    "InvalidOffsetError",
    "MetadataError",
    "NotACheckpointError",
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
    "ShardIndexError",
    "StaleOptimizerWarning",
    "StateError",
    "TensorSizeError",
    "TieError",
    "TieMismatchError",
    "TooManyTensorsError",
    "TrailingBytesError",
    "TransferError",
    "TruncatedFileError",
    "UndoLimitError",
    "UninitializedParameterError",
    "UnknownDTypeError",
    "UnsafeContentError",
    "UnsupportedFormatError",
    "UnsupportedModelError",
    "UnsupportedVersionError",
    "UsageError",
    "WriteFailedError",
]


class PolyparamError(Exception):
    """Base class of every error raised by polyparam.

    Attributes:
        path: The canonical parameter path concerned, or ``None``.
        expected: What polyparam expected (a shape, dtype, set of keys...), or ``None``.
        got: What it got instead, or ``None``.
    """

    def __init__(self, msg: str, /, *, path: str | None = None, expected: Any = None, got: Any = None) -> None:
        super().__init__(msg)
        self.path = path
        self.expected = expected
        self.got = got

    def __str__(self) -> str:
        # KeyError subclasses would otherwise print the message quoted with repr().
        return str(self.args[0]) if self.args else ""


# ---- calls -------------------------------------------------------------------


class UsageError(PolyparamError, ValueError):
    """A call polyparam cannot make as asked, for instance a plot of a history with nothing recorded.

    New after 0.1.0: these calls raised a plain ``ValueError`` before, which this class still is.

    Attributes:
        argument: The argument or environment variable concerned, or ``None``.
    """

    def __init__(self, msg: str, /, *, argument: str | None = None, **facts: Any) -> None:
        super().__init__(msg, **facts)
        self.argument = argument


class InvalidArgumentError(UsageError):
    """An argument or environment variable has a value outside the choices polyparam accepts.

    ``expected`` holds the accepted values, ``got`` the value given and ``argument`` its name.
    """


# ---- backends and plugins ----------------------------------------------------


class BackendError(PolyparamError):
    """A problem with a backend or a plugin that provides one.
    """

    def __init__(self, msg: str, /, *, backend: str | None = None, plugin: str | None = None, **facts: Any) -> None:
        super().__init__(msg, **facts)
        self.backend = backend
        self.plugin = plugin


class BackendNotFoundError(BackendError, LookupError):
    """No installed plugin provides the requested backend.
    """


class UnsupportedModelError(BackendError, TypeError):
    """No installed backend recognises the object given to `polyparam.tree`.
    """


class PluginContractError(BackendError, TypeError):
    """A plugin broke the hook contract or returned something that is not a backend.
    """


class FrameworkImportError(BackendError, ImportError):
    """A backend's framework cannot be imported safely in this process.
    """


# ---- parameters --------------------------------------------------------------


class ParameterError(PolyparamError):
    """A problem with one parameter.
    """


class ParameterNotFoundError(ParameterError, KeyError):
    """No parameter or block has the requested path or name.
    """


class InvalidIndexError(ParameterError, IndexError):
    """An item write's index selects no element of the parameter: out of range, too many axes, or not an index.

    New after 0.1.0: NumPy's ``IndexError`` escaped before, which this class still is.
    """


class AmbiguousNameError(ParameterError, KeyError):
    """A name or suffix matches more than one parameter.
    """


class ShapeMismatchError(ParameterError, ValueError):
    """A value's shape differs from the parameter's shape.
    """


class DTypeMismatchError(ParameterError, TypeError):
    """A value's dtype cannot be cast to the parameter's dtype without changing its kind.
    """


class DeviceMismatchError(ParameterError, ValueError):
    """Parameters on different devices were asked to do something that needs one device.
    """


class DeferredInitializationError(ParameterError, RuntimeError):
    """The parameter's shape is not known yet, so it has no data.
    """


class UninitializedParameterError(ParameterError, RuntimeError):
    """The parameter has a shape but was never initialized.
    """


class WriteFailedError(ParameterError, RuntimeError):
    """The framework refused a write that polyparam's checks allowed.

    Raised by multi-parameter writes after every value written before was restored;
    the framework's own exception is its ``__cause__``. New after 0.1.0.
    """


# ---- whole-tree operations ---------------------------------------------------


class UndoLimitError(PolyparamError, MemoryError):
    """The copies that let a failed write change nothing would exceed ``POLYPARAM_UNDO_LIMIT``.

    Raised before the first write. New after 0.1.0.
    """


class StateError(PolyparamError, ValueError):
    """A state dict does not fit the tree (missing or unexpected keys, conflicting tied values).
    """


class InitializerError(PolyparamError, ValueError):
    """An initializer cannot be built or cannot fill a parameter.
    """


class TieError(PolyparamError, ValueError):
    """Parameters cannot be tied or untied as asked.
    """


# ---- checkpoints -------------------------------------------------------------


class CheckpointError(PolyparamError):
    """A checkpoint file cannot be written, read or applied, or a transfer cannot be made.
    """


class CheckpointFormatError(CheckpointError, ValueError):
    """A file polyparam refuses to read: every malformed-file class has its own subclass.

    Attributes:
        file: The file concerned (``str``), or ``None`` for in-memory data.
    """

    def __init__(self, msg: str, /, *, file: str | None = None, **facts: Any) -> None:
        super().__init__(msg, **facts)
        self.file = file


class CheckpointWriteError(CheckpointError, OSError):
    """A checkpoint could not be written (disk full, file too large, no permission); the previous file is kept.

    ``errno`` holds the operating system's error number when one is known, ``filename``
    and ``file`` the target (not a temporary path); the original error is the ``__cause__``.
    New after 0.1.0: these failures raised the writer's own error before.
    """

    def __init__(self, msg: str, /, *, file: str | None = None, errno: int | None = None, **facts: Any) -> None:
        super().__init__(msg, **facts)
        self.file = file
        self.errno = errno
        self.strerror = msg
        self.filename = file


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """Nothing exists at the path a load reads (also a ``FileNotFoundError``, as ``open`` would raise).

    ``errno``, ``filename`` and ``file`` are set as the operating system's error would set them.
    """

    def __init__(self, msg: str, /, *, file: str | None = None, **facts: Any) -> None:
        super().__init__(msg, **facts)
        self.file = file
        self.errno = 2   # ENOENT
        self.strerror = msg
        self.filename = file


class TieMismatchError(CheckpointError, ValueError):
    """The ties recorded in a file cannot be reconciled with the model's ties (or the reverse).
    """


class TransferError(CheckpointError, ValueError):
    """Source and destination of `polyparam.transfer` differ in structure.

    ``report`` holds the `polyparam.TransferReport` with every difference.
    """

    def __init__(self, msg: str, /, *, report: Any = None, **facts: Any) -> None:
        super().__init__(msg, **facts)
        self.report = report


class UnsupportedFormatError(CheckpointFormatError):
    """The file's extension or content is not a checkpoint format polyparam reads or writes.
    """


class UnsafeContentError(CheckpointFormatError):
    """The file holds code or references polyparam refuses to run or follow (pickle, HDF5 links).
    """


class EmptyFileError(CheckpointFormatError):
    """The file has no bytes at all.
    """


class TruncatedFileError(CheckpointFormatError):
    """The file ends before the data its header declares.
    """


class BadMagicError(CheckpointFormatError):
    """The file's leading bytes are not the format's signature (often: another format renamed).
    """


class HeaderTooLargeError(CheckpointFormatError):
    """The declared header is larger than the format's limit (100 MB for safetensors).
    """


class HeaderLengthError(CheckpointFormatError):
    """The declared header length runs past the end of the file.
    """


class HeaderEncodingError(CheckpointFormatError):
    """The header is not valid UTF-8.
    """


class HeaderJSONError(CheckpointFormatError):
    """The header is not valid JSON (or not a Python literal, for .npy headers).
    """


class HeaderSchemaError(CheckpointFormatError):
    """The header parses but its fields are not the format's.
    """


class DuplicateKeyError(CheckpointFormatError):
    """A tensor name appears twice in the header.
    """


class InvalidKeyError(CheckpointFormatError):
    """A tensor name is empty, reserved or not a string.
    """


class TooManyTensorsError(CheckpointFormatError):
    """The header declares more tensors than polyparam's limit.
    """


class UnknownDTypeError(CheckpointFormatError):
    """A tensor's dtype is unknown or not supported.
    """


class ShapeOverflowError(CheckpointFormatError):
    """A tensor's shape has negative, non-integer or absurdly large dimensions.
    """


class TensorSizeError(CheckpointFormatError):
    """A tensor's byte range does not match its shape times its dtype's size.
    """


class InvalidOffsetError(CheckpointFormatError):
    """A tensor's byte range is reversed, negative or not two integers.
    """


class OffsetOutOfRangeError(CheckpointFormatError):
    """A tensor's byte range lies past the data section.
    """


class OverlappingOffsetsError(CheckpointFormatError):
    """Two tensors' byte ranges overlap.
    """


class OffsetGapError(CheckpointFormatError):
    """The tensors' byte ranges leave a hole in the data section.
    """


class TrailingBytesError(CheckpointFormatError):
    """Bytes follow the last tensor (a polyglot file).
    """


class MetadataError(CheckpointFormatError):
    """polyparam's metadata in the file is malformed or names tensors the file lacks.
    """


class UnsupportedVersionError(CheckpointFormatError):
    """The file was written by a newer polyparam format version.
    """


class ChecksumError(CheckpointFormatError):
    """A tensor's data does not match the checksum recorded when it was saved (corrupt data).
    """


class CorruptArchiveError(CheckpointFormatError):
    """The container (zip archive, HDF5 file) is damaged.
    """


class DecompressionBombError(CheckpointFormatError):
    """A member declares far more bytes than the file could hold.
    """


# ---- warnings ----------------------------------------------------------------


class ShardIndexError(CheckpointFormatError):
    """A sharded checkpoint's index (``model.safetensors.index.json``) and its shards disagree.

    A shard it names is missing or outside the directory, a key is not in the shard the
    index names, a shard holds a key the index does not list, or ``total_size`` differs
    from the shards' bytes.
    """


class NotACheckpointError(CheckpointFormatError, IsADirectoryError):
    """A directory given as a checkpoint holds none polyparam reads (also an ``IsADirectoryError``).
    """

    def __init__(self, msg: str, /, *, file: str | None = None, **facts: Any) -> None:
        super().__init__(msg, file=file, **facts)
        self.errno = 21   # EISDIR, as the operating system's error for a directory would say
        self.strerror = msg
        self.filename = file


class PolyparamWarning(UserWarning):
    """Base class of polyparam's warnings.
    """


class AlreadyInitializedWarning(PolyparamWarning):
    """``initialize`` skipped a parameter that already has data (pass ``force_reinit=True``).
    """


class StaleOptimizerWarning(PolyparamWarning):
    """A tie or untie replaced a parameter object that an optimizer (a Gluon ``Trainer``) holds.

    The optimizer keeps updating the object it was given; build it again after tying.
    """
