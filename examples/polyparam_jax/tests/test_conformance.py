"""The polyparam conformance kit on the JAX backend: all a plugin author writes."""

import pytest

pytest.importorskip("jax")

from polyparam.testing import ConformanceTests  # noqa: E402
from polyparam_jax import _backend  # noqa: E402


class TestJaxConformance(ConformanceTests):
    @pytest.fixture
    def backend(self):
        return _backend
