"""The conformance kit: every test a polyparam backend must pass.

A backend author writes one small test module:

```python
import pytest
from polyparam.testing import ConformanceTests
from polyparam_mybackend import _backend

class TestMyBackend(ConformanceTests):
    @pytest.fixture
    def backend(self):
        return _backend
```

The kit builds the reference models (the chapter's models) through ``backend.models()``
(a `polyparam.backend.ModelFactory`) and checks access, canonical paths, values, the
error contract, initialization (built-in, per-parameter, custom, seeded, deferred),
ties (detection, write-through, summed gradients, tie/untie after construction),
state round trips and checkpoints (round trips, ties through files, a fault at every
position changing nothing, transfer between two models of the backend). Tests that
need a capability the backend does not declare in ``CAPABILITIES`` are skipped with
the reason; polyparam's own CI fails on skips.

`ConformanceTests` combines the base classes of `polyparam.testing.base`, one module
per concern; a backend may also subclass only some of them. Not covered here:
cross-framework transfer (polyparam's own checkpoint tests) and device moves
(backend-specific).
"""

from __future__ import annotations

import pytest

# The kit's asserts are rewritten by pytest (failures show expected and got); this must
# run before the base modules are imported.
pytest.register_assert_rewrite("polyparam.testing.base")

from polyparam.testing.base import (  # noqa: E402
    BaseAccessTests,
    BaseBackendModuleTests,
    BaseCheckpointTests,
    BaseDeferredTests,
    BaseInitializerLibraryTests,
    BaseInitializerTests,
    BaseTieTests,
    BaseTrainingTests,
    BaseValueTests,
    ConformanceTests,
    assert_unchanged,
    reference_values,
    snapshot,
)

__all__ = [
    "BaseAccessTests",
    "BaseBackendModuleTests",
    "BaseCheckpointTests",
    "BaseDeferredTests",
    "BaseInitializerLibraryTests",
    "BaseInitializerTests",
    "BaseTieTests",
    "BaseTrainingTests",
    "BaseValueTests",
    "ConformanceTests",
    "assert_unchanged",
    "reference_values",
    "snapshot",
]
