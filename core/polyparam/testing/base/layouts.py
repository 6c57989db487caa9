"""What a layout means: values written through polyparam give the framework's forward the reference's output.

Shapes and round trips cannot tell a correct layout conversion from one that swaps
two kernel axes of the same size, forgets to flip a transposed convolution's kernel or
swaps running mean and variance. These tests write random values in canonical layout,
run the framework's own forward (`ModelFactory.forward_layer`) and compare it with a
NumPy forward computed from the canonical values (`polyparam.testing.reference`,
PyTorch's semantics). A failure names the layer kind, the parameters, expected and got,
and the likely cause when one simple mistake explains the output.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import polyparam as pp
from polyparam.backend import LAYER_INPUTS, LAYER_SPECS, ModelFactory
from polyparam.testing.base.kit import _Kit
from polyparam.testing.reference import reference_forward

__all__ = ["KINDS", "BaseLayoutMeaningTests", "LayoutNotCheckedWarning", "explain"]

#: Every layer kind the layout tests know: `LAYER_SPECS`, batch norm and layer norm.
KINDS = [*sorted(LAYER_SPECS), "batchnorm", "layernorm"]

#: The canonical shapes of the normalization layers' parameters (8 features).
_NORM_SHAPES = {"batchnorm": {name: (8,) for name in ("weight", "bias", "running_mean", "running_var")},
                "layernorm": {"weight": (8,), "bias": (8,)}}


class LayoutNotCheckedWarning(UserWarning):
    """A backend runs no forward for a layer kind, so what its layout means for that kind is not checked."""


def _values(path: str, p: pp.Parameter, rng: np.random.Generator) -> np.ndarray:
    """Random canonical values that make every role distinguishable (mean and variance far apart)."""
    shape = tuple(int(d or 0) for d in p.shape)  # layers are built: every dimension is known
    if p.role == "running_var":
        value = rng.uniform(1.0, 4.0, shape)
    elif p.role == "running_mean":
        value = rng.uniform(0.1, 0.9, shape)  # positive and apart from the variances: swapped, both still run
    elif p.role == "scale":
        value = rng.uniform(0.5, 2.0, shape)
    else:
        value = rng.standard_normal(shape) * 0.5
    return value.astype(p.dtype)


def _inputs(kind: str, rng: np.random.Generator) -> np.ndarray:
    shape = LAYER_INPUTS[kind]
    if kind == "embedding":
        return rng.integers(0, LAYER_SPECS[kind].shape[0], shape)
    return rng.standard_normal(shape).astype(np.float32)


def _mistakes(kind: str, params: dict[str, np.ndarray]) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Canonical values as one simple layout mistake would have delivered them to the framework."""
    out: list[tuple[str, dict[str, np.ndarray]]] = []
    weight = params.get("weight")
    if weight is not None and weight.ndim >= 3:
        spatial = tuple(range(2, weight.ndim))
        why = ("PyTorch's transposed convolution uses the convolution's kernel as it is: flip it only if the "
               "framework's transposed convolution does not" if kind.startswith("conv_transpose") else
               "the canonical kernel is PyTorch's cross-correlation kernel: flip it only for a framework that "
               "convolves")
        out.append((f"the spatial kernel axes are flipped ({why})", {**params, "weight": np.flip(weight, spatial)}))
    if weight is not None and weight.ndim >= 4 and weight.shape[2] == weight.shape[3]:
        out.append(("kernel axes 2 and 3 (height and width) look swapped", {**params, "weight": weight.swapaxes(2, 3)}))
    if weight is not None and weight.ndim >= 2 and weight.shape[0] == weight.shape[1]:
        out.append(("axes 0 and 1 (out and in) look swapped", {**params, "weight": weight.swapaxes(0, 1)}))
    if "running_mean" in params and "running_var" in params:
        out.append(("running_mean and running_var look swapped",
                    {**params, "running_mean": params["running_var"], "running_var": params["running_mean"]}))
    if "weight" in params and "bias" in params and params["weight"].shape == params["bias"].shape:
        out.append(("weight and bias (scale and shift) look swapped",
                    {**params, "weight": params["bias"], "bias": params["weight"]}))
    if "bias" in params:
        out.append(("the bias is not applied (or not written)", {**params, "bias": np.zeros_like(params["bias"])}))
    return out


def explain(kind: str, params: dict[str, np.ndarray], x: np.ndarray, got: np.ndarray, groups: int) -> str | None:
    """The simple mistake that explains ``got``, if one does."""
    for cause, wrong in _mistakes(kind, params):
        try:
            expected = reference_forward(kind, wrong, x, groups=groups)
        except Exception:  # noqa: BLE001 - a mistake that cannot even run does not explain the output
            continue
        if expected.shape == got.shape and np.allclose(got, expected, rtol=2e-3, atol=2e-3):
            return cause
    if groups > 1:
        try:
            expected = reference_forward(kind, params, x, groups=1)
        except Exception:  # noqa: BLE001 - ungrouped shapes do not fit: groups were not ignored
            return None
        if expected.shape == got.shape and np.allclose(got, expected, rtol=2e-3, atol=2e-3):
            return f"the {groups} groups look ignored"
    return None


class BaseLayoutMeaningTests(_Kit):
    """The framework's forward on values written in canonical layout equals the NumPy reference's."""

    @pytest.mark.parametrize("kind", KINDS)
    def test_forward_of_canonical_values_matches_the_reference(self, backend: Any, models: ModelFactory,
                                                               kind: str) -> None:
        if kind not in models.forward_kinds():
            warnings.warn(f"the {backend.NAME} backend runs no forward for {kind!r}: what its layout means for "
                          "that kind is not checked", LayoutNotCheckedWarning, stacklevel=1)
            return
        model = models.layer(kind)
        tree = pp.tree(model)
        expected_shapes = {"weight": LAYER_SPECS[kind].shape} if kind in LAYER_SPECS else _NORM_SHAPES[kind]
        for path, shape in expected_shapes.items():
            got_shape = tree[path].shape
            if got_shape != shape:
                pytest.fail(f"{backend.NAME} {kind}: parameter {path!r}: expected canonical shape {shape} (PyTorch "
                            f"layout), got {got_shape}; the layout cannot mean the reference's.", pytrace=False)
        rng = np.random.default_rng(sum(map(ord, kind)))
        params: dict[str, np.ndarray] = {}
        for path, p in tree.items():
            value = _values(path, p, rng)
            p.set(value)
            params[path] = value
        for path, value in params.items():
            np.testing.assert_array_equal(tree[path].numpy(), value,
                                          err_msg=f"{backend.NAME} {kind}: {path!r} does not read back what was set")
        x = _inputs(kind, rng)
        got = np.asarray(models.forward_layer(model, kind, x), dtype=np.float64)
        groups = LAYER_SPECS[kind].groups if kind in LAYER_SPECS else 1
        expected = reference_forward(kind, params, x, groups=groups)
        _check(backend.NAME, kind, params, x, got, expected, groups)

    @pytest.mark.parametrize("kind", [*LAYER_SPECS, "batchnorm"])
    def test_a_single_layer_has_no_layout_doubt(self, backend: Any, models: ModelFactory, kind: str) -> None:
        """A layer alone, whose layout the adapter knows, moves to another framework: no parameter of it is in
        doubt (``Parameter._layout_doubt``, which stops a transfer across backends)."""
        tree = pp.tree(models.layer(kind))
        doubts = {path: doubt for path, p in tree.items() if (doubt := p._layout_doubt()) is not None}
        if doubts:
            pytest.fail(f"{backend.NAME} {kind}: expected no layout doubt for a layer alone, got {doubts}; "
                        "pp.transfer to another framework would refuse it.", pytrace=False)


def _check(name: str, kind: str, params: dict[str, np.ndarray], x: np.ndarray, got: np.ndarray,
           expected: np.ndarray, groups: int) -> None:
    where = f"{name} {kind} with parameters {sorted(params)}"
    if got.shape != expected.shape:
        cause = explain(kind, params, x, got, groups)
        hint = f" Likely cause: {cause}." if cause else " Check which axis the adapter maps to which."
        pytest.fail(f"{where}: expected output shape {expected.shape} (PyTorch layout), got {got.shape}.{hint}",
                    pytrace=False)
    scale = float(np.abs(expected).max()) or 1.0
    if np.allclose(got, expected, rtol=1e-3, atol=1e-3 * scale):
        return
    worst = np.unravel_index(int(np.argmax(np.abs(got - expected))), got.shape)
    cause = explain(kind, params, x, got, groups)
    hint = f" Likely cause: {cause}." if cause else ""
    pytest.fail(f"{where}: the framework's forward differs from the reference computed from the canonical values "
                f"written: at index {tuple(int(i) for i in worst)} expected {expected[worst]:.6g}, got "
                f"{got[worst]:.6g} (max difference {float(np.abs(got - expected).max()):.3g}).{hint}", pytrace=False)

