"""A pytest plugin that plants one layout bug (named by POLYPARAM_PLANT) in the PyTorch adapter.

Each bug is applied the same way on read and on write, as a real adapter bug is: values
read back are the values written, so only what the layout *means* is wrong. Loaded by
``test_kit_catches_planted_bugs`` in a child pytest run of the kit.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np


def _plant(name: str) -> None:
    import torch

    from polyparam_torch._parameter import TorchParameter

    original_init = TorchParameter.__init__
    original_shape = TorchParameter._shape
    original_read = TorchParameter._read
    original_write = TorchParameter._write

    def owner(p: Any) -> Any:
        return p._owner()

    def is_conv_transpose(p: Any) -> bool:
        return p._attr == "weight" and isinstance(owner(p), torch.nn.modules.conv._ConvTransposeNd)

    def is_conv_kernel(p: Any) -> bool:
        return p._attr == "weight" and isinstance(owner(p), torch.nn.Conv2d)

    def is_norm_vector(p: Any) -> bool:
        return p._attr in ("weight", "bias") and isinstance(owner(p), torch.nn.modules.batchnorm._BatchNorm)

    def is_dense(p: Any) -> bool:
        return p._attr == "weight" and isinstance(owner(p), torch.nn.Linear)

    def is_embedding(p: Any) -> bool:
        return p._attr == "weight" and isinstance(owner(p), torch.nn.Embedding)

    def symmetric(where: Callable[[Any], bool], to_canonical: Callable[[np.ndarray], np.ndarray],
                  to_native: Callable[[np.ndarray], np.ndarray],
                  shape: Callable[[tuple[int, ...]], tuple[int, ...]] | None = None) -> None:
        def _shape(self: Any) -> Any:
            s = original_shape(self)
            return shape(s) if shape is not None and where(self) else s

        def _read(self: Any) -> np.ndarray:
            value = original_read(self)
            return np.ascontiguousarray(to_canonical(value)) if where(self) else value

        def _write(self: Any, array: np.ndarray, /) -> None:
            original_write(self, np.ascontiguousarray(to_native(array)) if where(self) else array)

        def _writable_view(self: Any) -> None:
            return None  # every write goes through the planted conversion

        TorchParameter._shape = _shape  # type: ignore[method-assign]
        TorchParameter._read = _read  # type: ignore[method-assign]
        TorchParameter._write = _write  # type: ignore[method-assign]
        TorchParameter._writable_view = _writable_view  # type: ignore[method-assign,assignment]

    def flip(a: np.ndarray) -> np.ndarray:
        return a[:, :, ::-1, ::-1]

    if name == "conv_kernel_hw_swapped":
        symmetric(is_conv_kernel, lambda a: a.swapaxes(2, 3), lambda a: a.swapaxes(2, 3),
                  lambda s: (s[0], s[1], s[3], s[2]))
    elif name == "conv_transpose_not_flipped":
        symmetric(is_conv_transpose, flip, flip)
    elif name == "batchnorm_scale_left_2d":
        symmetric(is_norm_vector, lambda a: a.reshape(1, -1), lambda a: a.reshape(-1), lambda s: (1, *s))
    elif name == "dense_weight_not_transposed":
        symmetric(is_dense, lambda a: a.T, lambda a: a.T, lambda s: (s[1], s[0]))
    elif name == "embedding_transposed":
        symmetric(is_embedding, lambda a: a.T, lambda a: a.T, lambda s: (s[1], s[0]))
    elif name == "batchnorm_mean_and_var_swapped":
        def swapped_init(self: Any, *args: Any, **kwargs: Any) -> None:
            original_init(self, *args, **kwargs)
            other = {"running_mean": "running_var", "running_var": "running_mean"}
            if getattr(self, "_attr", None) in other:
                self._attr = other[self._attr]

        TorchParameter.__init__ = swapped_init  # type: ignore[method-assign]
    elif name == "groups_ignored":
        TorchParameter.groups = property(lambda self: 1)  # type: ignore[assignment,method-assign]
    else:
        raise ValueError(f"unknown planted bug {name!r}")


def pytest_configure(config: Any) -> None:
    name = os.environ.get("POLYPARAM_PLANT")
    if name:
        _plant(name)
