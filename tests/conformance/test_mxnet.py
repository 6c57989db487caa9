"""The conformance kit on the MXNet Gluon backend."""

import importlib.util

import pytest

if importlib.util.find_spec("mxnet") is None:  # not importorskip: importing is the backend's job (load-order check)
    pytest.skip("mxnet is not installed", allow_module_level=True)

from polyparam.testing import ConformanceTests  # noqa: E402
from polyparam_mxnet import _backend  # noqa: E402


class TestMXNetConformance(ConformanceTests):
    @pytest.fixture
    def backend(self):
        return _backend
