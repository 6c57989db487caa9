"""The Hub's sharded layout at scale: sharded save and load against safetensors shard by shard.

Targets (issue 22), a synthetic checkpoint of about 2 GB in many shards, torch model:
  load  <= 1.1x  safetensors.torch.load_file + load_state_dict, shard by shard
  save  <= 1.1x  safetensors.torch.save_file per shard + one fsync per shard
  peak extra memory of the load <= largest tensor + 10% (the baseline's: one whole shard)

The all-or-nothing load keeps an undo copy of every value it replaces: in memory by
default (one model's worth), or in a temporary file with POLYPARAM_UNDO_MEMORY=0 (the row
"undo on disk"), which is what bounds the memory.

Run: python benchmarks/bench_hub.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

from bench_checkpoint import best

import polyparam as pp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small smoke size (about 100 MB)")
    args = parser.parse_args()
    import torch
    from safetensors.torch import load_file, save_file

    n, layers, shard = (1024, 24, "20MB") if args.quick else (2048, 128, "200MB")
    torch.manual_seed(0)
    net = torch.nn.Sequential(*[torch.nn.Linear(n, n) for _ in range(layers)])
    other = torch.nn.Sequential(*[torch.nn.Linear(n, n) for _ in range(layers)])
    largest = n * n * 4
    total = layers * (largest + n * 4)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(__file__))) as d:
        ours, native = os.path.join(d, "ours"), os.path.join(d, "native")
        os.makedirs(native)
        pp.save(net, ours, max_shard_size=shard)
        with open(os.path.join(ours, "model.safetensors.index.json")) as fh:
            weight_map = json.load(fh)["weight_map"]
        groups: dict[str, list[str]] = {}
        for key, name in weight_map.items():
            groups.setdefault(name, []).append(key)
        print(f"{layers} x Linear({n}, {n}) = {total / 1e6:.0f} MB in {len(groups)} shards of <= {shard}; "
              f"largest tensor {largest / 1e6:.0f} MB")
        state = net.state_dict()

        def native_save() -> None:
            for i, keys in enumerate(groups.values()):
                path = os.path.join(native, f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors")
                save_file({k: state[k] for k in keys}, path, metadata={"format": "pt"})
                with open(path, "rb") as fh:
                    os.fsync(fh.fileno())

        def native_load() -> None:
            for name in sorted(os.listdir(native)):
                other.load_state_dict(load_file(os.path.join(native, name)), strict=False)

        native_save()
        results = []
        native_save_t, native_save_mem = best(native_save)
        ours_save_t, ours_save_mem = best(lambda: pp.save(net, ours, max_shard_size=shard))
        results.append(("sharded save", ours_save_t, native_save_t, 1.1, ours_save_mem, native_save_mem))
        native_load()
        native_load_t, native_load_mem = best(native_load)
        pp.load(other, ours)
        ours_load_t, ours_load_mem = best(lambda: pp.load(other, ours))
        results.append(("sharded load (verify=True)", ours_load_t, native_load_t, 1.1, ours_load_mem,
                        native_load_mem))
        fast_t, fast_mem = best(lambda: pp.load(other, ours, verify=False))
        results.append(("sharded load (verify=False)", fast_t, native_load_t, 1.1, fast_mem, native_load_mem))
        os.environ["POLYPARAM_UNDO_MEMORY"] = "0"
        spill_t, spill_mem = best(lambda: pp.load(other, ours))
        del os.environ["POLYPARAM_UNDO_MEMORY"]
        results.append(("sharded load (undo on disk)", spill_t, native_load_t, 1.1, spill_mem, native_load_mem))
        assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))

    limit = largest * 1.1
    print(f"{'operation':<28} {'polyparam s':>11} {'baseline s':>11} {'ratio':>6} {'target':>7} "
          f"{'peak extra MB':>14} {'baseline MB':>12} {'limit MB':>9}")
    for name, t, base, target, mem, base_mem in results:
        ratio = t / base
        missed = ratio > target or (name.startswith("sharded load") and mem > limit)
        print(f"{name:<28} {t:11.3f} {base:11.3f} {ratio:6.2f} {target:7.1f} {mem / 1e6:14.1f} "
              f"{base_mem / 1e6:12.1f} {limit / 1e6:9.1f}{'   MISSED' if missed else ''}")


if __name__ == "__main__":
    main()
