"""Training-loop operations against torch's own way, on a big model and on many small tensors.

Per operation: polyparam's time over the native way's, measured in the same run (best of
several). Models: 6 Linear(4096, 4096) (100M float32 parameters) and 500 Linear(8, 8)
(1,000 tensors). Targets (issue 16): at most 1.2x native. Each native way starts from the
model, as polyparam's starts from the tree (both walk the modules), except the two lines
marked "held": a loop over a list of tensors the caller already holds, which shows the
fixed cost per call polyparam pays on top (the walk, the checks).

    freeze        tree.freeze() + unfreeze()       vs  requires_grad_(False/True) on each of model.parameters()
    freeze held   tree.freeze() + unfreeze()       vs  the same loop over a list held beforehand
    param_groups  pp.param_groups(tree, rules)    vs  a list comprehension over named_parameters()
    grad_norm     tree.grad_norm()                vs  get_total_norm(grads of model.parameters()) (clip_grad_norm_'s)
    clip_grads    tree.clip_grads(m)              vs  clip_grad_norm_(model.parameters(), m); m shrinks every call,
                                                      so every call of either scales the gradients
    clip held     tree.clip_grads(m)              vs  clip_grad_norm_(params, m) on a list held beforehand
    cast          tree.cast(bf16) + cast(fp32)    vs  model.to(bf16) + to(fp32)
    vector        tree.vector()                   vs  parameters_to_vector(model.parameters())

Run: python benchmarks/bench_training.py [--quick] [--repeat N]
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

import torch
from _timing import best_of
from torch.nn.utils import clip_grad_norm_, parameters_to_vector

import polyparam as pp

try:
    from torch.nn.utils import get_total_norm  # torch 2.6+: clip_grad_norm_'s norm, without the scaling
except ImportError:  # older torch: clip_grad_norm_ with a limit it never reaches (it scales by 1.0)
    def get_total_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
        return clip_grad_norm_(tensors, 1e30)


def models(quick: bool) -> dict[str, torch.nn.Module]:
    width = 512 if quick else 4096
    return {f"big (6 x Linear({width}))": torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(6)]),
            "many small (500 x Linear(8, 8))": torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(500)])}


REPEAT = 5


def line(name: str, ours: Callable[[], Any], native: Callable[[], Any]) -> None:
    ours()
    native()
    t_ours, t_native = best_of(ours, REPEAT), best_of(native, REPEAT)
    print(f"  {name:<13} {t_ours * 1e3:9.2f} ms vs {t_native * 1e3:9.2f} ms native = {t_ours / t_native:5.2f}x",
          flush=True)


def bench(label: str, model: torch.nn.Module) -> None:
    tree = pp.tree(model)
    params = list(model.parameters())
    model(torch.ones(2, params[0].shape[1])).sum().backward()
    print(f"{label}: {sum(p.numel() for p in params):,} parameters in {len(params)} tensors", flush=True)

    def freeze() -> None:
        tree.freeze()
        tree.unfreeze()

    def native_freeze() -> None:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.parameters():
            p.requires_grad_(True)

    def held_freeze() -> None:
        for p in params:
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)

    def native_groups() -> list[dict[str, Any]]:
        named = list(model.named_parameters())
        return [{"params": [p for n, p in named if n.endswith("bias")], "weight_decay": 0.0},
                {"params": [p for n, p in named if not n.endswith("bias")], "weight_decay": 0.01}]

    def native_norm() -> torch.Tensor:
        return get_total_norm([p.grad for p in model.parameters() if p.grad is not None])

    limit = [tree.grad_norm()]

    def shrinking() -> float:
        """A max_norm below the current norm, so each call (of either way) scales every gradient."""
        limit[0] *= 0.9
        return limit[0]

    def cast() -> None:
        tree.cast("bfloat16")
        tree.cast("float32")

    def native_cast() -> None:
        model.to(torch.bfloat16)
        model.to(torch.float32)

    rules = [("role:bias", {"weight_decay": 0.0})]
    line("freeze", freeze, native_freeze)
    line("freeze held", freeze, held_freeze)
    line("param_groups", lambda: pp.param_groups(tree, rules, default={"weight_decay": 0.01}), native_groups)
    line("grad_norm", tree.grad_norm, native_norm)
    line("clip_grads", lambda: tree.clip_grads(shrinking()),
         lambda: clip_grad_norm_(model.parameters(), shrinking()))
    line("clip held", lambda: tree.clip_grads(shrinking()), lambda: clip_grad_norm_(params, shrinking()))
    line("cast", cast, native_cast)
    line("vector", tree.vector, lambda: parameters_to_vector(model.parameters()))


def main() -> None:
    global REPEAT
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small models (smoke run)")
    parser.add_argument("--repeat", type=int, default=REPEAT, help="runs per measurement; the best counts")
    args = parser.parse_args()
    quick, REPEAT = args.quick, args.repeat
    torch.manual_seed(0)
    for label, model in models(quick).items():
        bench(label, model)


if __name__ == "__main__":
    main()
