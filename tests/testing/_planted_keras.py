"""A pytest plugin that plants one layout bug (named by POLYPARAM_PLANT) in the Keras adapter.

The Keras adapter's layout conversion is ``polyparam_keras._layout``: ``perm`` (native ->
canonical axis permutation per layout), ``to_canonical``/``to_native``, the batch-norm
slot table and ``groups``. Each bug replaces one of them with what a buggy adapter would
have, in the modules that use it. Reads and writes go through the same conversion, so
values read back are the values written and only what the layout *means* is wrong.
Loaded by ``test_kit_catches_planted_bugs`` in a child pytest run of the kit.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import numpy as np

#: bug -> what the planted adapter gets wrong.
BUGS = {
    "dense_weight_not_transposed": "perm('dense') is None: the (in, out) kernel crosses as if it were (out, in)",
    "embedding_transposed": "perm('embedding') is (1, 0): the (tokens, dim) table crosses transposed",
    "conv_kernel_hw_swapped": "perm('conv', 4) is (3, 2, 1, 0): Conv2D kernels cross with height and width swapped",
    "conv3d_spatial_axes_reversed": "perm('conv', 5) is (4, 3, 2, 1, 0): Conv3D kernels cross with D, H, W reversed",
    "conv_transpose_not_flipped": "Conv2DTranspose kernels cross flipped in space (not the adjoint of the conv)",
    "conv_transpose_in_out_swapped": "perm('conv_transpose') reads (*k, out, in) as (*k, in, out)",
    "depthwise_kernel_hw_swapped": "perm('depthwise', 4) is (2, 3, 1, 0): height and width swapped",
    "depthwise_multiplier_order": "depthwise (in, mult) channels flattened multiplier-major: out = m * in + i",
    "batchnorm_mean_and_var_swapped": "the batch-norm slots map running_mean to moving_variance and back",
    "groups_ignored": "groups() is 1 for every layer",
}


def _plant(name: str) -> None:
    from polyparam_keras import _layout, _parameter

    def replace(attr: str, value: Any) -> None:
        """Replace ``attr`` in ``_layout`` and wherever ``_parameter`` imported it."""
        setattr(_layout, attr, value)
        if hasattr(_parameter, attr):
            setattr(_parameter, attr, value)

    def wrong_perm(layout: str, ndim: int | None, wrong: Callable[[int], tuple[int, ...] | None]) -> None:
        """``perm(layout, n)`` answers ``wrong(n)`` (for ``n == ndim`` only, if given); ``to_canonical``,
        ``to_native`` and ``canonical_shape`` all ask ``perm``."""
        original = _layout.perm

        def perm(lay: str, n: int) -> tuple[int, ...] | None:
            if lay == layout and (ndim is None or n == ndim):
                return wrong(n)
            return original(lay, n)

        replace("perm", perm)

    def converted(layout: str, to_canonical: Callable[[np.ndarray], np.ndarray],
                  to_native: Callable[[np.ndarray, tuple[int, ...]], np.ndarray]) -> None:
        """``to_canonical``/``to_native`` of ``layout`` are the given pair (others are unchanged)."""
        original_to_canonical, original_to_native = _layout.to_canonical, _layout.to_native

        def planted_to_canonical(lay: str, value: np.ndarray) -> np.ndarray:
            return to_canonical(value) if lay == layout else original_to_canonical(lay, value)

        def planted_to_native(lay: str, array: np.ndarray, native_shape: tuple[int, ...]) -> np.ndarray:
            return to_native(array, native_shape) if lay == layout else original_to_native(lay, array, native_shape)

        replace("to_canonical", planted_to_canonical)
        replace("to_native", planted_to_native)

    if name == "dense_weight_not_transposed":
        wrong_perm("dense", None, lambda n: None)
    elif name == "embedding_transposed":
        wrong_perm("embedding", None, lambda n: (1, 0))
    elif name == "conv_kernel_hw_swapped":
        wrong_perm("conv", 4, lambda n: (3, 2, 1, 0))
    elif name == "conv3d_spatial_axes_reversed":
        wrong_perm("conv", 5, lambda n: (4, 3, 2, 1, 0))
    elif name == "conv_transpose_in_out_swapped":
        wrong_perm("conv_transpose", None, lambda n: (n - 2, n - 1, *range(n - 2)))
    elif name == "depthwise_kernel_hw_swapped":
        wrong_perm("depthwise", 4, lambda n: (2, 3, 1, 0))
    elif name == "conv_transpose_not_flipped":
        original_to_canonical, original_to_native = _layout.to_canonical, _layout.to_native

        def flip(a: np.ndarray) -> np.ndarray:  # a view: the TensorFlow staging write goes through it too
            return a[(slice(None),) * 2 + (slice(None, None, -1),) * (a.ndim - 2)]

        converted("conv_transpose", lambda v: flip(original_to_canonical("conv_transpose", v)),
                  lambda a, shape: original_to_native("conv_transpose", flip(a), shape))
    elif name == "depthwise_multiplier_order":
        def depthwise_to_canonical(value: np.ndarray) -> np.ndarray:  # (*k, in, mult) -> (mult * in, 1, *k)
            out = value.transpose((value.ndim - 1, value.ndim - 2, *range(value.ndim - 2)))
            return out.reshape((out.shape[0] * out.shape[1], 1, *out.shape[2:]))

        def depthwise_to_native(array: np.ndarray, native_shape: tuple[int, ...]) -> np.ndarray:
            n = len(native_shape)
            array = array.reshape((native_shape[-1], native_shape[-2], *native_shape[:-2]))
            return array.transpose((*range(2, n), 1, 0))

        converted("depthwise", depthwise_to_canonical, depthwise_to_native)
    elif name == "batchnorm_mean_and_var_swapped":
        scale, shift, mean, var = _layout._BN  # running_mean reads and writes moving_variance, and back
        _layout._BN = (scale, shift, dataclasses.replace(mean, var=var.var), dataclasses.replace(var, var=mean.var))
    elif name == "groups_ignored":
        replace("groups", lambda layer, slot: 1)
    else:
        raise ValueError(f"unknown planted bug {name!r}: expected one of {sorted(BUGS)}")


def pytest_configure(config: Any) -> None:
    name = os.environ.get("POLYPARAM_PLANT")
    if name:
        _plant(name)
