"""Sharded initialize on 2 gloo ranks (FSDP2) against the single-process initialize, in one run.

    python benchmarks/bench_distributed.py            # 6 x Linear(4096, 4096): 100.7M float32 (~400 MB)
    python benchmarks/bench_distributed.py --quick    # smoke size

Targets (issue "Sharded parameters on torch.distributed"):
    per-rank initialize time   <= 0.6x the single-process initialize
    per-rank peak memory       <= 0.6x the full model

Both sides build the model on ``meta`` and allocate it (``to_empty``; FSDP2 allocates
each rank's shard only), then time ``tree.initialize(Xavier(), seed=0)``. Peak memory is
the growth of the process's high-water mark (``VmHWM`` in /proc/self/status) from
just before the model is allocated to after initialize. Every process is fresh. The
machine has 2 cores: each rank runs with 1 thread, and the single process is measured
both with 1 thread and with every core (``POLYPARAM_NUM_THREADS`` unset), so the ratio
is printed against both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from _timing import proc_status


def _build(layers: int, width: int):  # noqa: ANN202 - torch is imported late
    import torch
    from torch import nn

    with torch.device("meta"):
        return nn.Sequential(*[nn.Linear(width, width, bias=True) for _ in range(layers)])


def _measure(layers: int, width: int, repeats: int) -> dict:
    import polyparam as pp

    sharded = os.environ.get("RANK") is not None
    if sharded:
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    warm = _build(1, 8)  # imports and one-time set-up outside the measured growth
    if sharded:
        fully_shard(warm, mesh=mesh)
    warm.to_empty(device="cpu")
    pp.tree(warm).initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    del warm

    base = proc_status("VmHWM")
    model = _build(layers, width)
    if sharded:
        fully_shard(model, mesh=mesh)
    model.to_empty(device="cpu")
    tree = pp.tree(model)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
        times.append(time.perf_counter() - start)
    peak = proc_status("VmHWM") - base
    full_bytes = sum(p.nbytes for _, p in tree.items())
    return {"time": min(times), "peak": peak, "model_bytes": full_bytes}


def _rank(rank: int, world: int, port: int, layers: int, width: int, repeats: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo",
                      RANK=str(rank), WORLD_SIZE=str(world))
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    result = _measure(layers, width, repeats)
    dist.barrier()
    dist.destroy_process_group()
    with open(f"{out}.{rank}", "w") as fh:
        json.dump(result, fh)


def _single(threads: str | None, layers: int, width: int, repeats: int) -> dict:
    env = dict(os.environ)
    env.pop("POLYPARAM_NUM_THREADS", None)
    if threads is not None:
        env["POLYPARAM_NUM_THREADS"] = threads
    code = (f"import json, sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import bench_distributed as b; "
            f"print(json.dumps(b._measure({layers}, {width}, {repeats})))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke size (6 x 512^2)")
    args = parser.parse_args()
    layers, width, repeats = (6, 512, 3) if args.quick else (6, 4096, 3)

    import torch.multiprocessing as mp

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "distributed"))
    from _dist_launch import free_port

    single_all = _single(None, layers, width, repeats)
    single_one = _single("1", layers, width, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank")
        os.environ["POLYPARAM_NUM_THREADS"] = "1"
        mp.start_processes(_rank, args=(2, free_port(), layers, width, repeats, out), nprocs=2, join=True,
                           start_method="spawn")
        ranks = []
        for r in range(2):
            with open(f"{out}.{r}") as fh:
                ranks.append(json.load(fh))
    model_mb = single_all["model_bytes"] / 2**20
    print(f"model: {layers} x Linear({width}, {width}) = {single_all['model_bytes'] // 4:,} float32 "
          f"({model_mb:.0f} MiB); best of {repeats}")
    print(f"single process, all cores : initialize {single_all['time']:.3f} s, "
          f"peak +{single_all['peak'] / 2**20:.0f} MiB")
    print(f"single process, 1 thread  : initialize {single_one['time']:.3f} s, "
          f"peak +{single_one['peak'] / 2**20:.0f} MiB")
    worst_time = max(r["time"] for r in ranks)
    worst_peak = max(r["peak"] for r in ranks)
    for i, r in enumerate(ranks):
        print(f"rank {i} of 2 (1 thread)   : initialize {r['time']:.3f} s, peak +{r['peak'] / 2**20:.0f} MiB")
    for name, base in (("all cores", single_all["time"]), ("1 thread", single_one["time"])):
        ratio = worst_time / base
        print(f"per-rank time / single ({name:9}) = {ratio:.2f}x  (target <= 0.6x){'' if ratio <= 0.6 else '  OVER'}")
    ratio = worst_peak / single_all["model_bytes"]
    print(f"per-rank peak / full model            = {ratio:.2f}x  (target <= 0.6x){'' if ratio <= 0.6 else '  OVER'}")


if __name__ == "__main__":
    main()
