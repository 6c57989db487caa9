"""The conformance kit on Flax NNX (the current tested set)."""

import pytest

pytest.importorskip("flax.nnx")
from polyparam.testing import ConformanceTests  # noqa: E402 - after the importorskip
from polyparam_flax import _backend  # noqa: E402

#: Kit tests of capabilities Flax NNX does not have, so they are not collected here (a skip
#: would fail CI): NNX modules know their shapes at construction ("deferred"), and what
#: trains is the Variable's type plus the filter given to nnx.grad, not a per-Variable
#: switch polyparam could flip ("training"). docs/backends/flax.md says so.
NOT_FLAX = ("test_unknown_dimensions_show_as_none", "test_reading_a_deferred_parameter_teaches",
            "test_initializer_runs_at_first_forward_only", "test_deferred_seeded_values_equal_eager_ones",
            "test_load_state_into_deferred_parameters", "test_training_freeze_holds_through_the_frameworks_own_step",
            "test_training_count_splits_trainable_and_frozen", "test_training_tied_parameters_freeze_together",
            "test_training_trainable_accepts_only_bools", "test_training_grad_norm_clip_and_zero")


class TestFlaxConformance(ConformanceTests):
    @pytest.fixture
    def backend(self):
        return _backend

    for _name in NOT_FLAX:
        locals()[_name] = None
    del _name
