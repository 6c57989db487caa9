"""The NumPy reference backend against plain NumPy, in one run.

    python benchmarks/bench_numpy.py [--quick]

Model: a nested dict of 6 dense layers of 4096x4096 float32 (100M parameters, 400 MB);
--quick uses 512x512.
"""

from __future__ import annotations

import sys

import numpy as np
from _timing import best_of, report

import polyparam as pp
from polyparam import numpy as pnp


def main() -> None:
    quick = "--quick" in sys.argv
    n = 512 if quick else 4096
    model = {str(i): {"weight": np.zeros((n, n), np.float32), "bias": np.zeros(n, np.float32)} for i in range(6)}
    tree = pp.tree(model)
    print(f"{sum(p.size for p in tree.parameters()) / 1e6:.1f}M float32 parameters")

    def native_uniform() -> None:
        rng = np.random.default_rng(0)
        for layer in model.values():
            rng.random(out=layer["weight"], dtype=np.float32)
            layer["weight"] *= 0.14
            layer["weight"] -= 0.07
            layer["bias"][...] = 0

    report("initialize(Uniform, seed) vs Generator.random(out=)", best_of(
        lambda: tree.initialize(pp.init.Uniform(), seed=0, force_reinit=True)), best_of(native_uniform))
    report("state() vs a dict of the arrays", best_of(lambda: tree.state()),
           best_of(lambda: {f"{k}.{n}": a for k, layer in model.items() for n, a in layer.items()}))
    saved = tree.state(copy=True)
    report("load_state() vs copying every array", best_of(lambda: tree.load_state(saved)),
           best_of(lambda: [np.copyto(model[k.split(".")[0]][k.split(".")[1]], v) for k, v in saved.items()]))

    layers = 100 if quick else 1000
    net = pnp.Sequential(*[pnp.Dense(4, in_units=4) for _ in range(layers)])
    report(f"pp.tree + items() of {layers} layers vs collect_params()",
           best_of(lambda: [p.shape for _, p in pp.tree(net).items()]),
           best_of(lambda: [p.shape for p in net.collect_params().values()]))


if __name__ == "__main__":
    main()
