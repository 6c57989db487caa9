"""Background saves: how long training is blocked, and how much a running save slows each step.

A torch MLP of about 100M float32 parameters (400 MB; ``--quick``: about 6M) trains with
SGD on the CPU. Measured in one run:

  * step time with no save running (the baseline);
  * ``pp.save(tree, f)`` blocking, and ``safetensors.torch.save_file`` (the native way);
  * ``pp.save(tree, f, background=True, staging=...)``: the time until it returns (the
    snapshot), the time until the file is in place, and the training time the save costs:
    K steps (longer than the whole write) run right after the call, against K steps with
    no save; for ``staging=None`` (a copy of the whole model) and a quarter of the model.

Ratios printed: snapshot / blocking pp.save, snapshot / save_file, training time lost /
blocking pp.save (a blocking save loses all of its time), and the K steps' time during
the save / without (the slowdown). ``BENCH_DIR`` chooses the disk (default: the temp dir).

Run: python benchmarks/bench_background.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import threading
import time
from typing import Any, Callable

import polyparam as pp


def steps_until(step: Callable[[], None], done: Callable[[], bool], *, least: int = 3) -> tuple[list[float], int]:
    """Step times while ``done()`` is false (at least ``least`` steps); and how many ran while it was false."""
    times: list[float] = []
    during = 0
    while len(times) < least or not done():
        running = not done()
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        during += running
        if len(times) > 10_000:
            break
    return times, during


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="about 6M parameters instead of 100M")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    width, depth, batch = (1024, 6, 64) if args.quick else (4096, 6, 64)
    layers: list[Any] = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(net.parameters(), lr=1e-4)
    x = torch.randn(batch, width)
    tree = pp.tree(net)
    nbytes = sum(p.nbytes for _, p in tree.items())
    print(f"model: {sum(p.numel() for p in net.parameters()) / 1e6:.1f}M parameters, {nbytes / 1e6:.0f} MB; "
          f"torch threads {torch.get_num_threads()}", flush=True)

    def step() -> None:
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()

    for _ in range(3):
        step()
    quiet = statistics.median(steps_until(step, lambda: True, least=10)[0])

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as folder:
        path = os.path.join(folder, "m.safetensors")

        def timed(fn: Callable[[], Any]) -> float:
            best = float("inf")
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t0)
            return best

        blocking = timed(lambda: pp.save(tree, path))
        native = timed(lambda: save_file(net.state_dict(), path))
        print(f"{'step, no save (median)':<44} {quiet:8.4f} s", flush=True)
        print(f"{'blocking pp.save':<44} {blocking:8.4f} s", flush=True)
        print(f"{'safetensors.torch.save_file (native)':<44} {native:8.4f} s   pp.save / native "
              f"{blocking / native:5.2f}x", flush=True)

        # Training time a checkpoint costs: K steps with a save started before them, against K steps
        # without (K steps last longer than the whole write). Blocking: the save's own time.
        k = max(3, math.ceil(3 * blocking / quiet))

        def run_steps() -> float:
            t0 = time.perf_counter()
            for _ in range(k):
                step()
            return time.perf_counter() - t0

        print(f"{'training time lost, blocking pp.save':<44} {blocking:8.4f} s", flush=True)
        for label, staging in (("staging=None", None), ("staging=model/4", nbytes // 4)):
            snaps, totals, lost, slowdowns = [], [], [], []
            for _ in range(args.repeat):
                base = run_steps()
                finished: list[float] = []
                t0 = time.perf_counter()
                handle = pp.save(tree, path, background=True, staging=staging)
                watcher = threading.Thread(target=lambda h=handle, out=finished: (h.wait(),
                                                                                  out.append(time.perf_counter())))
                watcher.start()   # notes when the file is in place, not when the training loop next looks
                loop = run_steps()
                handle.wait()     # not done after K steps: what is left counts as lost too
                elapsed = time.perf_counter() - t0
                watcher.join()
                snaps.append(handle.snapshot_seconds)
                totals.append(finished[0] - t0)
                lost.append(elapsed - base)
                slowdowns.append(loop / base)
            snap, cost = min(snaps), statistics.median(lost)
            print(f"background, {label:<32} snapshot {snap:8.4f} s   file in place after {min(totals):7.3f} s   "
                  f"training time lost {cost:7.3f} s", flush=True)
            print(f"  snapshot / blocking pp.save {snap / blocking:5.2f}x   "
                  f"snapshot / save_file {snap / native:5.2f}x   lost / blocking pp.save {cost / blocking:5.2f}x   "
                  f"{k} steps during the save / without {statistics.median(slowdowns):5.2f}x (slowdown)", flush=True)

if __name__ == "__main__":
    main()
