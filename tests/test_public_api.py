"""The public surface: names resolve, are sorted, and match product.md."""

import importlib

import pytest

import polyparam as pp
from polyparam.backend import BACKEND_NAMES, Backend


def test_all_is_sorted_and_resolves() -> None:
    assert pp.__all__ == sorted(pp.__all__)
    for name in pp.__all__:
        assert getattr(pp, name) is not None, name


@pytest.mark.parametrize("module", ["polyparam.errors", "polyparam.init", "polyparam.hookspecs",
                                    "polyparam.numpy", "polyparam.testing"])
def test_public_modules_define_all(module: str) -> None:
    mod = importlib.import_module(module)
    assert mod.__all__ == sorted(mod.__all__)
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name}"


def test_version_and_lazy_submodules() -> None:
    assert pp.__version__
    assert pp.numpy.Dense is not None
    with pytest.raises(AttributeError):
        pp.no_such_thing  # noqa: B018


def test_backend_protocol_names_match_the_listed_names() -> None:
    members = {name for name in dir(Backend) if not name.startswith("_")} | set(Backend.__annotations__)
    assert members == set(BACKEND_NAMES)


def test_every_error_is_a_polyparam_error() -> None:
    for name in pp.errors.__all__:
        cls = getattr(pp.errors, name)
        assert issubclass(cls, (pp.errors.PolyparamError, pp.errors.PolyparamWarning)), name
