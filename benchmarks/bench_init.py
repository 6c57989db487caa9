"""Seeded ``tree.initialize`` against each framework's own in-place initialization.

    python benchmarks/bench_init.py [--quick] [--only torch,keras,mxnet]

Same model in each framework: 6 dense layers of 4096x4096 float32 (100M parameters,
400 MB; --quick: 512x512). Each framework runs in its own process. Also printed: how far
the process's resident memory peaks above its size before the call (every allocator
counted), for ``initialize`` and for the native way, against the largest parameter
(target: at most that).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent

COMMON = textwrap.dedent("""
    import sys
    sys.path.insert(0, {here!r})
    from _timing import best_of, peak_growth, report
    import numpy as np
    import polyparam as pp
    N = {n}

    def memory(name, ours, native):
        ours(), native()          # warm: allocator pools and lazy set-up outside the measure
        mine, theirs = peak_growth(ours), peak_growth(native)
        limit = N * N * 4
        print(f"{{name}} peak extra memory during initialize: polyparam {{mine / 2**20:.1f}} MiB, "
              f"native {{theirs / 2**20:.1f}} MiB (largest parameter {{limit / 2**20:.1f}} MiB)"
              f"{{'  ok' if mine <= limit else '  OVER'}}", flush=True)

    def ours(tree, init):
        return lambda: tree.initialize(init, seed=0, force_reinit=True)
""")

TORCH = textwrap.dedent("""
    import torch
    from torch import nn
    net = nn.Sequential(*[nn.Linear(N, N) for _ in range(6)])
    tree = pp.tree(net)
    weights = [m.weight for m in net]

    def native(fn):
        def run():
            with torch.no_grad():
                for w in weights:
                    fn(w)
        return run

    for name, init, fn, target in [
        ("Uniform(0.07)", pp.init.Uniform(0.07), lambda w: nn.init.uniform_(w, -0.07, 0.07), 1.0),
        ("Xavier uniform", pp.init.Xavier(), nn.init.xavier_uniform_, 1.0),
        ("He uniform", pp.init.He(nonlinearity="relu"),
         lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"), 1.0),
        ("Normal(0.01)", pp.init.Normal(0.01), lambda w: nn.init.normal_(w, 0, 0.01), 1.0),
        ("Xavier gaussian", pp.init.Xavier(rnd_type="gaussian", magnitude=1), nn.init.xavier_normal_, 1.0),
    ]:
        report(f"torch {name}", best_of(ours(tree, init)), best_of(native(fn)), target)
    memory("torch Xavier uniform", ours(tree, pp.init.Xavier()), native(nn.init.xavier_uniform_))
""")

KERAS = textwrap.dedent("""
    import keras
    model = keras.Sequential([keras.Input((N,))] + [keras.layers.Dense(N) for _ in range(6)])
    tree = pp.tree(model)
    kernels = [layer.kernel for layer in model.layers]

    def native(make):
        def run():
            for v in kernels:
                v.assign(make()(v.shape, "float32"))
        return run

    for name, init, make, target in [
        ("Uniform(0.07)", pp.init.Uniform(0.07), lambda: keras.initializers.RandomUniform(-0.07, 0.07), 1.0),
        ("Xavier uniform", pp.init.Xavier(), keras.initializers.GlorotUniform, 1.0),
        ("He uniform", pp.init.He(nonlinearity="relu"), keras.initializers.HeUniform, 1.0),
        ("Normal(0.01)", pp.init.Normal(0.01), lambda: keras.initializers.RandomNormal(0, 0.01), 1.0),
    ]:
        report(f"keras ({keras.backend.backend()}) {name}", best_of(ours(tree, init)), best_of(native(make)), target)
    memory(f"keras ({keras.backend.backend()}) Xavier uniform", ours(tree, pp.init.Xavier()),
           native(keras.initializers.GlorotUniform))
""")

MXNET = textwrap.dedent("""
    import mxnet as mx
    from mxnet.gluon import nn
    net = nn.Sequential()
    for _ in range(6):
        net.add(nn.Dense(N, in_units=N))
    net.initialize()
    tree = pp.tree(net)

    def native(init):
        def run():
            net.initialize(init, force_reinit=True)
            mx.nd.waitall()
        return run

    for name, init, mxinit, target in [
        ("Uniform(0.07)", pp.init.Uniform(0.07), mx.init.Uniform(0.07), 1.0),
        ("Xavier uniform", pp.init.Xavier(), mx.init.Xavier(), 1.0),
        ("MSRAPrelu (gaussian)", pp.init.MSRAPrelu(), mx.init.MSRAPrelu(), 1.0),
        ("Normal(0.01)", pp.init.Normal(0.01), mx.init.Normal(0.01), 1.0),
    ]:
        report(f"mxnet {name}", best_of(lambda: (ours(tree, init)(), mx.nd.waitall())), best_of(native(mxinit)), target)
    memory("mxnet Xavier uniform", lambda: (ours(tree, pp.init.Xavier())(), mx.nd.waitall()),
           native(mx.init.Xavier()))
""")


def main() -> int:
    quick = "--quick" in sys.argv
    only = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--only=")), "torch,keras,mxnet").split(",")
    n = 512 if quick else 4096
    print(f"6 dense layers of {n}x{n} float32 ({6 * n * n / 1e6:.1f}M weights); ratio < 1 means polyparam is faster")
    failed = 0
    for name, body in (("torch", TORCH), ("keras", KERAS), ("mxnet", MXNET)):
        if name not in only:
            continue
        code = COMMON.format(here=str(HERE), n=n) + body
        failed |= subprocess.call([sys.executable, "-c", code]) != 0
    return failed


if __name__ == "__main__":
    sys.exit(main())
