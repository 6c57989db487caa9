"""The conformance kit on the PyTorch backend."""

import pytest

pytest.importorskip("torch")

from polyparam.testing import ConformanceTests  # noqa: E402
from polyparam_torch import _backend  # noqa: E402


class TestTorchConformance(ConformanceTests):
    @pytest.fixture
    def backend(self):
        return _backend
