"""What every base test class shares: the fixtures a backend overrides or inherits, and the helpers.

`_Kit` holds the fixtures. A backend's test class overrides `backend`; the others are
built from it: `models` (the backend's `ModelFactory`), `require` (skips a test whose
capability the backend does not declare) and one fixture per reference model (`mlp`,
`rgnet`, `shared`, `lazy`), each a `(Case, ParameterTree)` pair of a fresh model.
"""

from __future__ import annotations

from typing import Any, Callable, cast

import numpy as np
import pytest

import polyparam as pp
from polyparam.backend import Case, ModelFactory
from polyparam.init import ParamInfo

__all__ = ["assert_unchanged", "info_of", "reference_values", "snapshot"]


def snapshot(tree: pp.ParameterTree) -> dict[str, np.ndarray]:
    """Independent copies of every initialized parameter's value, by path."""
    return {path: np.array(p.numpy(), copy=True) for path, p in tree.items() if p.state == "initialized"}


def assert_unchanged(before: dict[str, np.ndarray], tree: pp.ParameterTree) -> None:
    """Assert that every value in ``tree`` still equals its copy in ``before`` (a `snapshot`)."""
    after = snapshot(tree)
    assert after.keys() == before.keys()
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value, err_msg=f"{path} changed")


def info_of(p: pp.Parameter) -> ParamInfo:
    """The `ParamInfo` an initializer sees for ``p``."""
    return ParamInfo(path=p.path, native_name=p.native_name, role=p.role, axes=p.axes,
                     shape=cast("tuple[int, ...]", tuple(p.shape)), dtype=p.dtype, groups=p.groups,
                     kind=p.kind)


def reference_values(p: pp.Parameter, init: pp.Initializer, seed: int) -> np.ndarray:
    """What ``init`` with ``seed`` must give ``p``: the NumPy reference draw in canonical layout."""
    info = info_of(p)
    out = np.empty(info.shape, info.dtype)
    init.fill(out, info, seed=seed)
    return out


def _inputs(case: Case, batch: int = 3) -> np.ndarray:
    """A fixed batch of inputs for ``case``'s model."""
    return np.random.default_rng(0).uniform(-1, 1, size=(batch, case.in_features)).astype(np.float32)


class _Kit:
    """Fixtures and helpers every Base*Tests class shares."""

    @pytest.fixture
    def backend(self) -> Any:
        """The backend module under test (satisfies `polyparam.backend.Backend`)."""
        raise NotImplementedError("Override the `backend` fixture in your ConformanceTests subclass.")

    @pytest.fixture
    def models(self, backend: Any) -> ModelFactory:
        """The model factory; defaults to ``backend.models()``."""
        return backend.models()

    @pytest.fixture
    def require(self, backend: Any) -> Callable[[str], None]:
        """A function that skips the test unless the backend declares the capability."""

        def require(capability: str) -> None:
            if capability not in backend.CAPABILITIES:
                pytest.skip(f"{backend.NAME} backend does not declare capability {capability!r}")

        return require

    @pytest.fixture
    def mlp(self, models: ModelFactory) -> tuple[Case, pp.ParameterTree]:
        case = models.mlp()
        return case, pp.tree(case.model)

    @pytest.fixture
    def rgnet(self, models: ModelFactory) -> tuple[Case, pp.ParameterTree]:
        case = models.rgnet()
        return case, pp.tree(case.model)

    @pytest.fixture
    def shared(self, models: ModelFactory, require: Callable[[str], None]) -> tuple[Case, pp.ParameterTree]:
        require("tying")
        case = models.shared()
        return case, pp.tree(case.model)

    @pytest.fixture
    def lazy(self, models: ModelFactory, require: Callable[[str], None]) -> tuple[Case, pp.ParameterTree]:
        require("deferred")
        case = models.lazy()
        return case, pp.tree(case.model)
