"""Base test classes of the conformance kit, one module per concern.

These classes are a stable API for third-party backends: a backend's test module
subclasses them (usually all at once, through `ConformanceTests`) and overrides the
`backend` fixture. Subclasses select, skip or override tests by their names, so moving
or renaming tests is not done lightly.

- `kit`: the fixtures every class shares (`backend`, `models`, `require` and the
  reference models `mlp`, `rgnet`, `shared`, `lazy`) and the helpers `snapshot`,
  `assert_unchanged` and `reference_values`.
- `access`: `BaseBackendModuleTests` (protocol names, registration) and
  `BaseAccessTests` (canonical paths, indexing, look-ups, state, printing).
- `values`: `BaseValueTests` (writes, refused writes, state round trips, gradients).
- `initializers`: `BaseInitializerTests` (initialize() on trees, blocks and parameters).
- `initializer_library`: `BaseInitializerLibraryTests` (every built-in initializer on
  every layer kind).
- `deferred`: `BaseDeferredTests` (shapes known at the first forward).
- `ties`: `BaseTieTests` (shared parameters).
- `checkpoint`: `BaseCheckpointTests` (save, load and transfer).
- `faults`: `BaseFaultTests` (a write failing at any position changes nothing).
- `layouts`: `BaseLayoutMeaningTests` (the framework's forward on canonical values equals the reference's).
- `training`: `BaseTrainingTests` (freeze, counts, gradient norms and clipping, casts, vectors, averages).
"""

from __future__ import annotations

from polyparam.testing.base.access import BaseAccessTests, BaseBackendModuleTests
from polyparam.testing.base.checkpoint import BaseCheckpointTests
from polyparam.testing.base.deferred import BaseDeferredTests
from polyparam.testing.base.faults import BaseFaultTests
from polyparam.testing.base.initializer_library import BaseInitializerLibraryTests
from polyparam.testing.base.initializers import BaseInitializerTests
from polyparam.testing.base.kit import assert_unchanged, reference_values, snapshot
from polyparam.testing.base.layouts import BaseLayoutMeaningTests
from polyparam.testing.base.ties import BaseTieTests
from polyparam.testing.base.training import BaseTrainingTests
from polyparam.testing.base.values import BaseValueTests

__all__ = [
    "BaseAccessTests",
    "BaseBackendModuleTests",
    "BaseCheckpointTests",
    "BaseDeferredTests",
    "BaseFaultTests",
    "BaseInitializerLibraryTests",
    "BaseInitializerTests",
    "BaseLayoutMeaningTests",
    "BaseTieTests",
    "BaseTrainingTests",
    "BaseValueTests",
    "ConformanceTests",
    "assert_unchanged",
    "reference_values",
    "snapshot",
]


class ConformanceTests(BaseBackendModuleTests, BaseAccessTests, BaseValueTests, BaseInitializerTests,
                       BaseInitializerLibraryTests, BaseDeferredTests, BaseTieTests, BaseCheckpointTests,
                       BaseFaultTests, BaseLayoutMeaningTests, BaseTrainingTests):
    """Every test a polyparam backend must pass. Subclass it and override ``backend``.

    Optional capabilities (skipped when not in ``backend.CAPABILITIES``):
    ``"tying"``, ``"deferred"``, ``"gradients"``, ``"forward"``, ``"training"`` (trainable is
    assignable, gradients writable, ``ModelFactory.sgd_step``), ``"casting"`` (``Parameter._cast``).
    """
