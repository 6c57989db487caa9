"""Initializers: built-ins with Gluon's (and Keras'/PyTorch's) arguments, and the base for your own.

An initializer fills NumPy arrays in canonical layout. polyparam calls it once per
parameter (once per tie group) with random streams keyed by ``(seed, canonical
path)``, so a seeded initialization gives bit-identical values on every backend, on
any device, in any order, with any number of threads.

**Streams.** The key is a 128-bit hash of the seed and the path. Built-ins fill the
parameter's C-order flat array in blocks of :data:`BLOCK` elements; block ``b`` is
drawn by Philox (a counter-based generator) with that key and its counter starting
at ``b * 2**192``, so blocks are independent and are filled in parallel threads.
Where a kernel takes exactly one uniform per element (uniform, untruncated normal), a
block is also split over the threads, each piece's generator started where the
block's stream stands at its first element: the values are the same.
Custom initializers get :attr:`Initializer.rng`, the block-0 stream
(:func:`generator_for`).

**Roles.** Parameters whose role is ``weight`` (or ``other``) get
:meth:`Initializer.init_weight`; biases, BatchNorm scale/shift and running statistics
get their conventional values (0, 1, 0, 0, 1) unless the initializer overrides
``init_bias``, ``init_scale``, ``init_shift``, ``init_running_mean`` or
``init_running_var``. An initializer given to one parameter
(``tree["0.bias"].initialize(init)``) fills it as a weight, as in Gluon.

**Fans** come from the parameter's axis roles (``out``, ``in``, ``space``) and its
``groups``, never from axis positions: see :class:`ParamInfo`.

Three styles of custom initializer are accepted::

    class MyInit(pp.init.Initializer):          # Gluon style: fill in place
        def init_weight(self, name, arr):
            arr[:] = self.rng.uniform(-10, 10, arr.shape)

    class KerasStyle(pp.init.Initializer):      # Keras style: return an array
        def __call__(self, shape, dtype):
            return np.full(shape, 0.5, dtype)

    def plain(shape, dtype):                    # any callable (shape, dtype[, rng]) -> array
        return np.zeros(shape, dtype)

Every built-in and every class registered with :func:`register` has a name for
:func:`get` and a JSON form (:func:`dumps` / :func:`loads`, Gluon's
``["name", {kwargs}]``).
"""

from __future__ import annotations

from polyparam.init.base import Initializer, ParamInfo, dumps, get, loads, register
from polyparam.init.builtins import (
                                    Bilinear,
                                    Constant,
                                    Dirac,
                                    Glorot,
                                    He,
                                    Identity,
                                    Kaiming,
                                    LeCun,
                                    MSRAPrelu,
                                    Normal,
                                    One,
                                    Orthogonal,
                                    Sparse,
                                    TruncatedNormal,
                                    Uniform,
                                    VarianceScaling,
                                    Xavier,
                                    Zero,
                                    calculate_gain,
)
from polyparam.init.coerce import as_initializer
from polyparam.init.composite import Declared, Load, Mixed
from polyparam.init.streams import BLOCK, generator_for, stream_key

__all__ = [
    "BLOCK",
    "Bilinear",
    "Constant",
    "Declared",
    "Dirac",
    "Glorot",
    "He",
    "Identity",
    "Initializer",
    "Kaiming",
    "LeCun",
    "Load",
    "MSRAPrelu",
    "Mixed",
    "Normal",
    "One",
    "Orthogonal",
    "ParamInfo",
    "Sparse",
    "TruncatedNormal",
    "Uniform",
    "VarianceScaling",
    "Xavier",
    "Zero",
    "as_initializer",
    "calculate_gain",
    "dumps",
    "generator_for",
    "get",
    "loads",
    "register",
    "stream_key",
]

