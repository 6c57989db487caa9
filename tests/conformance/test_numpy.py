"""The conformance kit on the NumPy reference backend (no framework needed)."""

import pytest

from polyparam.numpy import _backend as _numpy_backend
from polyparam.testing import ConformanceTests


class TestNumpyConformance(ConformanceTests):
    @pytest.fixture
    def backend(self):
        return _numpy_backend
