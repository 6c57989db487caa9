"""Keras backend benchmark: polyparam against Keras' own way, as ratios measured in one run.

    python benchmarks/bench_keras.py            # 6 Dense(4096) layers, ~100M float32 parameters
    python benchmarks/bench_keras.py --quick    # small smoke size
    KERAS_BACKEND=torch python benchmarks/bench_keras.py

Targets (issue "Keras 3 backend"): state() <= 1.2x get_weights(), load_state() <= 1.2x set_weights().
Each figure is the best of --repeat runs.
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any, Callable


def best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        del result
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke size")
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    width, depth = (256, 3) if args.quick else (args.width, args.layers)

    import keras
    import numpy as np

    import polyparam as pp

    model = keras.Sequential([keras.Input((width,))] + [keras.layers.Dense(width) for _ in range(depth)])
    tree = pp.tree(model)
    n = model.count_params()
    print(f"keras {keras.__version__} on {keras.backend.backend()}: {depth} x Dense({width}), "
          f"{n / 1e6:.1f}M float32 parameters ({n * 4 / 2**20:.0f} MiB), best of {args.repeat}")

    native_weights = model.get_weights()
    state = tree.state(copy=True)
    rows = [
        ("state() vs get_weights()", best(tree.state, args.repeat), best(model.get_weights, args.repeat), 1.2),
        ("state(copy=True) vs get_weights()", best(lambda: tree.state(copy=True), args.repeat),
         best(model.get_weights, args.repeat), None),
        ("load_state() vs set_weights()", best(lambda: tree.load_state(state), args.repeat),
         best(lambda: model.set_weights(native_weights), args.repeat), 1.2),
    ]
    for name, ours, native, target in rows:
        ratio = ours / native
        verdict = "" if target is None else ("  ok" if ratio <= target else f"  ABOVE TARGET {target}x")
        print(f"{name:36s} {ours:8.4f} s / {native:8.4f} s = {ratio:5.2f}x{verdict}")
    # sanity: the two ways agree
    for (path, value), keras_value in zip(tree.state().items(), model.get_weights()):
        np.testing.assert_array_equal(value, keras_value.T if value.ndim == 2 else keras_value, err_msg=path)


if __name__ == "__main__":
    main()
