"""What a layer computes from its canonical parameters: NumPy reference forwards, PyTorch semantics.

The conformance kit writes random values through polyparam in canonical layout, runs
the framework's own forward and compares it with these. A backend whose layout
conversion is wrong in a way shapes cannot show (kernel height and width swapped, a
transposed-convolution kernel not flipped, running mean and variance swapped) fails.

Inputs and outputs are in PyTorch's layout: ``(N, features)`` for dense layers,
``(N, C, *spatial)`` for convolutions and batch norm, integer indices ``(N, L)`` for
embeddings. Convolutions use stride 1, no padding, no dilation.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["FORWARDS", "batchnorm", "conv", "conv_transpose", "dense", "embedding", "layernorm", "reference_forward"]


def dense(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """``x @ weight.T + bias`` with ``weight`` of shape ``(out, in)``."""
    y = x.astype(np.float64) @ weight.astype(np.float64).T
    return y if bias is None else y + bias


def conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, *, groups: int = 1) -> np.ndarray:
    """Cross-correlation (PyTorch's ``conv{1,2,3}d``): ``weight`` is ``(out, in / groups, *kernel)``."""
    x = x.astype(np.float64)
    weight = weight.astype(np.float64)
    n, c = x.shape[:2]
    out, per_group = weight.shape[:2]
    kernel = weight.shape[2:]
    d = len(kernel)
    windows = np.lib.stride_tricks.sliding_window_view(  # type: ignore[call-overload]  # axis may be a tuple
        x, kernel, axis=tuple(range(2, 2 + d)))
    # windows: (N, C, *out_spatial, *kernel)
    outs = []
    for g in range(groups):
        xs = windows[:, g * per_group:(g + 1) * per_group]
        ws = weight[g * (out // groups):(g + 1) * (out // groups)]
        # sum over channel and kernel axes
        spatial = "".join("hijk"[:d])
        k = "".join("pqrs"[:d])
        outs.append(np.einsum(f"nc{spatial}{k},oc{k}->no{spatial}", xs, ws))
    y = np.concatenate(outs, axis=1)
    if bias is not None:
        y = y + bias.reshape((1, -1) + (1,) * d)
    return y


def conv_transpose(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, *,
                   groups: int = 1) -> np.ndarray:
    """PyTorch's ``conv_transpose{1,2,3}d``: the adjoint of :func:`conv` with the same weight.

    ``weight`` is ``(in, out / groups, *kernel)``; each input element adds its value times
    the kernel into the output window it would have been computed from.
    """
    x = x.astype(np.float64)
    weight = weight.astype(np.float64)
    n, c_in = x.shape[:2]
    spatial = x.shape[2:]
    per_group_out = weight.shape[1]
    kernel = weight.shape[2:]
    d = len(kernel)
    out_spatial = tuple(s + k - 1 for s, k in zip(spatial, kernel))
    y = np.zeros((n, per_group_out * groups) + out_spatial)
    in_per_group = c_in // groups
    for g in range(groups):
        xs = x[:, g * in_per_group:(g + 1) * in_per_group]
        ws = weight[g * in_per_group:(g + 1) * in_per_group]  # (in_g, out_g, *kernel)
        target = y[:, g * per_group_out:(g + 1) * per_group_out]
        for offset in np.ndindex(*kernel):
            # contribution of kernel tap `offset`: out[n, o, pos + offset] += x[n, i, pos] * w[i, o, offset]
            contrib = np.einsum("ni...,io->no...", xs, ws[(slice(None), slice(None)) + offset])
            index = (slice(None), slice(None)) + tuple(slice(o, o + s) for o, s in zip(offset, spatial))
            target[index] += contrib
    if bias is not None:
        y = y + bias.reshape((1, -1) + (1,) * d)
    return y


def batchnorm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, running_mean: np.ndarray,
              running_var: np.ndarray, *, eps: float = 1e-5) -> np.ndarray:
    """Batch norm in inference, per channel (axis 1): ``(x - mean) / sqrt(var + eps) * weight + bias``."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    scale = weight / np.sqrt(running_var.astype(np.float64) + eps)
    return (x.astype(np.float64) - running_mean.reshape(shape)) * scale.reshape(shape) + bias.reshape(shape)


def layernorm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, *, eps: float = 1e-5) -> np.ndarray:
    """Layer norm over the last axis: ``(x - mean) / sqrt(var + eps) * weight + bias`` (biased variance)."""
    x = x.astype(np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def embedding(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Rows of ``weight`` (``(num_embeddings, dim)``) picked by the integer indices ``x``."""
    return weight.astype(np.float64)[x]


def _conv_kind(params: dict[str, np.ndarray], x: np.ndarray, groups: int) -> np.ndarray:
    return conv(x, params["weight"], params.get("bias"), groups=groups)


#: The reference forward of every kind of `polyparam.backend.LAYER_SPECS` and ``"batchnorm"``:
#: ``f(params, x, groups) -> y`` with ``params`` the layer's canonical values by leaf name.
FORWARDS: dict[str, Callable[[dict[str, np.ndarray], np.ndarray, int], np.ndarray]] = {
    "dense": lambda p, x, g: dense(x, p["weight"], p.get("bias")),
    "conv1d": _conv_kind,
    "conv2d": _conv_kind,
    "conv3d": _conv_kind,
    "grouped_conv2d": _conv_kind,
    "depthwise_conv2d": _conv_kind,
    "conv_transpose2d": lambda p, x, g: conv_transpose(x, p["weight"], p.get("bias"), groups=g),
    "embedding": lambda p, x, g: embedding(x, p["weight"]),
    "batchnorm": lambda p, x, g: batchnorm(x, p["weight"], p["bias"], p["running_mean"], p["running_var"]),
    "layernorm": lambda p, x, g: layernorm(x, p["weight"], p["bias"]),
}


def reference_forward(kind: str, params: dict[str, np.ndarray], x: np.ndarray, *, groups: int = 1) -> np.ndarray:
    """The output of a layer of ``kind`` with canonical ``params`` on ``x`` (PyTorch layouts), in float64."""
    return FORWARDS[kind](params, x, groups)
