"""A pytest plugin that plants one layout bug (named by POLYPARAM_PLANT) in the example JAX plugin.

The JAX plugin's layout conversion is its layers' declarations: each :class:`Leaf` says
how its native array permutes to the canonical layout (``to_canonical``) and how many
groups it has, and the transposed convolution turns the canonical kernel into the one
``lax`` runs. Each bug is planted there, as a plugin author would have written it: the
layer constructors of ``polyparam_jax.model`` are wrapped so that the layer they return
carries the mistake. Reads and writes go through the same conversion, so values read
back are the values written and only what the layout *means* is wrong. Loaded by
``test_kit_catches_planted_bugs`` in a child pytest run of the kit.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable

#: bug -> what the planted plugin gets wrong.
BUGS = {
    "dense_weight_not_transposed": "Dense declares its (in, out) kernel canonical: no (1, 0) permutation",
    "embedding_transposed": "Embedding declares a (1, 0) permutation its (tokens, dim) table does not have",
    "conv_kernel_hw_swapped": "2-D convolutions permute the kernel's height and width axes",
    "conv3d_spatial_axes_reversed": "3-D convolutions reverse the kernel's spatial axes (D, H, W -> W, H, D)",
    "conv_kernel_flipped": "convolutions run with the kernel flipped in space (a true convolution)",
    "conv_transpose_not_flipped": "the transposed convolution forgets to flip the kernel for lax",
    "conv_transpose_in_out_swapped": "the transposed convolution declares its kernel (out, in, *k)",
    "batchnorm_mean_and_var_swapped": "BatchNorm names its running mean 'running_var' and its variance 'running_mean'",
    "groups_ignored": "convolutions declare groups=1 whatever their groups",
}


def _plant(name: str) -> None:
    import jax.numpy as jnp

    from polyparam_jax import model as jm

    def wrap(constructor: str, change: Callable[[jm.Layer], None]) -> None:
        """Make ``jm.<constructor>`` return its layer with ``change`` applied (the factory calls it through ``jm``)."""
        original = getattr(jm, constructor)

        @functools.wraps(original)
        def planted(*args: Any, **kwargs: Any) -> jm.Layer:
            layer = original(*args, **kwargs)
            change(layer)
            return layer

        setattr(jm, constructor, planted)

    def relayout(constructor: str, leaf: str, *, ndim: int | None = None, **fields: Any) -> None:
        """Declare ``leaf`` of the layers of ``constructor`` (with ``ndim`` spatial axes, if given) with ``fields``."""
        def change(layer: jm.Layer) -> None:
            if ndim is None or layer.kind == f"conv{ndim}d":
                layer.leaves = tuple(dataclasses.replace(lf, **fields) if lf.name == leaf else lf
                                     for lf in layer.leaves)

        wrap(constructor, change)

    def flip_kernel_before_apply(constructor: str) -> None:
        """Run the layer on its kernel flipped in space: undoes a flip the layer does, or adds one it does not."""
        def change(layer: jm.Layer) -> None:
            apply = layer.apply_fun

            def flipped(params: Any, x: Any, **kwargs: Any) -> Any:
                w, b = params
                return apply([jnp.flip(w, axis=tuple(range(2, w.ndim))), b], x, **kwargs)

            layer.apply_fun = flipped

        wrap(constructor, change)

    if name == "dense_weight_not_transposed":
        relayout("Dense", "weight", to_canonical=None)
    elif name == "embedding_transposed":
        relayout("Embedding", "weight", to_canonical=(1, 0))
    elif name == "conv_kernel_hw_swapped":
        relayout("Conv", "weight", ndim=2, to_canonical=(0, 1, 3, 2))
    elif name == "conv3d_spatial_axes_reversed":
        relayout("Conv", "weight", ndim=3, to_canonical=(0, 1, 4, 3, 2))
    elif name == "conv_kernel_flipped":
        flip_kernel_before_apply("Conv")
    elif name == "conv_transpose_not_flipped":
        flip_kernel_before_apply("ConvTranspose")  # flip(flip(w)) == w: the layer's own flip is gone
    elif name == "conv_transpose_in_out_swapped":
        relayout("ConvTranspose", "weight", to_canonical=(1, 0, 2, 3))
    elif name == "batchnorm_mean_and_var_swapped":
        def swap(layer: jm.Layer) -> None:
            scale, shift, mean, var = layer.leaves
            layer.leaves = (scale, shift,
                            dataclasses.replace(mean, name="running_var", role="running_var"),
                            dataclasses.replace(var, name="running_mean", role="running_mean"))

        wrap("BatchNorm", swap)
    elif name == "groups_ignored":
        relayout("Conv", "weight", groups=1)
    else:
        raise ValueError(f"unknown planted bug {name!r}: expected one of {sorted(BUGS)}")


def pytest_configure(config: Any) -> None:
    name = os.environ.get("POLYPARAM_PLANT")
    if name:
        _plant(name)
