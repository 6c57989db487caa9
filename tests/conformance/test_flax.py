"""The conformance kit on Flax NNX (the current tested set)."""

import pytest

pytest.importorskip("flax.nnx")
from polyparam.testing import ConformanceTests  # noqa: E402 - after the importorskip
from polyparam_flax import _backend  # noqa: E402

#: Kit tests of a capability Flax NNX does not have, so they are not collected here (a skip
#: would fail CI): NNX modules know their shapes at construction ("deferred").
#: docs/backends/flax.md says so.
NOT_FLAX = ("test_unknown_dimensions_show_as_none", "test_reading_a_deferred_parameter_teaches",
            "test_initializer_runs_at_first_forward_only", "test_deferred_seeded_values_equal_eager_ones",
            "test_load_state_into_deferred_parameters")


class TestFlaxConformance(ConformanceTests):
    @pytest.fixture
    def backend(self):
        return _backend

    for _name in NOT_FLAX:
        locals()[_name] = None
    del _name
