"""MXNet Gluon backend benchmark: polyparam against Gluon's own way, as ratios measured in one run.

    python benchmarks/bench_mxnet.py            # 6 Dense(4096) layers, ~100M float32 parameters
    python benchmarks/bench_mxnet.py --quick    # small smoke size

Targets (issue "MXNet Gluon 1.9 backend"):
  tree.initialize(pp.init.Xavier(), force_reinit=True) <= 1.0x net.initialize(mx.init.Xavier(), force_reinit=True)
  tree.state() <= 1.2x [p.data().asnumpy() for p in net.collect_params().values()]
MXNet runs asynchronously: every timed call ends with mx.nd.waitall(). Each figure is the best of --repeat runs,
ours and native alternating.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import warnings
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import report  # noqa: E402


def paired(ours: Callable[[], Any], native: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Best times of ``ours`` and ``native``, run alternately so both meet the same machine state
    (on a shared 2-core machine, memory and page-fault noise otherwise lands on one side)."""
    import time

    best = [float("inf"), float("inf")]
    for _ in range(repeat):
        for i, fn in enumerate((native, ours)):
            gc.collect()
            start = time.perf_counter()
            result = fn()
            best[i] = min(best[i], time.perf_counter() - start)
            del result
    return best[1], best[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke size")
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    width, depth = (256, 3) if args.quick else (args.width, args.layers)

    import numpy as np

    import polyparam as pp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import mxnet as mx
    from mxnet.gluon import nn

    net = nn.Sequential()
    for _ in range(depth):
        net.add(nn.Dense(width, in_units=width))
    net.initialize()
    mx.nd.waitall()
    tree = pp.tree(net)
    params = list(net.collect_params().values())
    n = sum(int(np.prod(p.shape)) for p in params)
    print(f"mxnet {mx.__version__}: {depth} x Dense({width}), {n / 1e6:.1f}M float32 parameters "
          f"({n * 4 / 2**20:.0f} MiB), best of {args.repeat}")

    def native_init() -> None:
        net.initialize(mx.init.Xavier(), force_reinit=True)
        mx.nd.waitall()

    def ours_init() -> None:
        tree.initialize(pp.init.Xavier(), force_reinit=True)
        mx.nd.waitall()

    def native_read() -> list:
        out = [p.data().asnumpy() for p in params]
        mx.nd.waitall()
        return out

    def ours_read() -> dict:
        out = tree.state()
        mx.nd.waitall()
        return out

    state = tree.state(copy=True)

    def native_write() -> None:
        for p, value in zip(params, state.values()):
            p.set_data(mx.nd.array(value))
        mx.nd.waitall()

    def ours_write() -> None:
        tree.load_state(state)
        mx.nd.waitall()

    gc.collect()
    native_init(), ours_init()  # warm up both paths (allocations, operator caches)
    report("initialize(Xavier, force_reinit=True)", *paired(ours_init, native_init, args.repeat), 1.0)
    report("state() vs asnumpy() over collect_params()", *paired(ours_read, native_read, 2 * args.repeat), 1.2)
    report("load_state() vs set_data(nd.array(v))", *paired(ours_write, native_write, args.repeat))

    # sanity: the two ways agree, and Xavier's bound holds
    tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    bound = np.sqrt(3 / width)
    for (path, value), p in zip(tree.state().items(), params):
        np.testing.assert_array_equal(value, p.data().asnumpy(), err_msg=path)
        if value.ndim == 2:
            assert np.abs(value).max() <= bound, path


if __name__ == "__main__":
    main()
