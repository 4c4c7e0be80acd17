"""Cost of one DFA search step relative to one DFA distillation step of the same pair.

Measured in one run on synthetic tensors: for each pair, the median wall time of
- one stage-2 `dfa` distillation step (teacher forward, student forward/backward, SGD step),
- one search step (`dfa_ray.dfa.search_step`: architecture step, weight step, TS-connector
  step) with first-order and second-order architecture gradients,
and their ratios against the targets (first order <= 3x, second order <= 5x). The default
`groupwise` schedule is timed with each group active in turn (mean over the groups); `joint`
(all groups at once, the most expensive) is timed too.

    python benchmarks/search_step.py                     # CPU, batch 64, both pairs
    python benchmarks/search_step.py --batch 16 --device cuda

The last line of the output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from dfa_ray.dfa import SearchOptions, build_search, genotype_from_search, search_step
from dfa_ray.engine.methods import build_distiller
from dfa_ray.models import create_model

TARGETS = {"order1": 3.0, "order2": 5.0}
PAIRS = [("resnet32x4", "resnet8x4"), ("wrn_40_2", "wrn_16_2")]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_interleaved(fns: dict, device: torch.device, repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds of each fn() over `repeats` rounds after `warmup` rounds. The functions
    run in turn within each round, so a change of machine load (shared CPUs) hits all of them
    alike and the ratios stay fair."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(warmup + repeats):
        for k, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            if r >= warmup:
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def machine(device: torch.device) -> dict:
    info = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            info["cpu"] = names[0]
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def bench_pair(tname: str, sname: str, args, device: torch.device) -> dict:
    torch.manual_seed(0)
    teacher = create_model(tname, 100).to(device).eval()
    gen = torch.Generator().manual_seed(1)
    n = args.batch

    def data(k):
        x = torch.randn(k, n, 3, 32, 32, generator=gen).to(device)
        y = torch.randint(0, 100, (k, n), generator=gen).to(device)
        return x, y

    x, y = data(2)
    result: dict = {"pair": f"{tname}->{sname}", "batch": n}

    # stage 2: one dfa distillation step (genotype from a fresh search net: softmax weights)
    student = create_model(sname, 100).to(device)
    parts = build_search(teacher, student, SearchOptions(schedule="joint"), image_size=32)
    geno = genotype_from_search(parts.net, tname, sname, "cifar100")
    distiller = build_distiller("dfa", teacher, create_model(sname, 100).to(device), {}, genotype=geno).to(device).train()
    opt = torch.optim.SGD(distiller.trainable_parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def distil_step():
        _, losses = distiller.forward_train(x[0], y[0])
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()

    fns = {"distill": distil_step}
    configs = []
    for order in (1, 2):
        for schedule in args.schedules:
            parts = build_search(
                teacher, create_model(sname, 100).to(device), SearchOptions(order=order, schedule=schedule), image_size=32
            )
            parts.net.to(device)
            groups_list = [None] if schedule == "joint" else [[g] for g in range(parts.net.num_pairs)]
            key = f"order{order}_{schedule}"
            configs.append((key, schedule, len(groups_list)))
            for i, groups in enumerate(groups_list):

                def step(parts=parts, groups=groups):
                    search_step(
                        parts.net, parts.architect, (x[0], y[0]), (x[1], y[1]),
                        parts.weight_optimizer, parts.ts_optimizer, groups,
                    )

                fns[f"{key}/{i}"] = step
    t = timed_interleaved(fns, device, args.repeats, args.warmup)
    result["distill_s"] = t["distill"]
    for key, schedule, n_groups in configs:
        per_group = [t[f"{key}/{i}"] for i in range(n_groups)]
        result[f"{key}_s"] = statistics.mean(per_group)
        if schedule == "groupwise":
            result[f"{key}_per_group_s"] = per_group
        result[f"{key}_ratio"] = result[f"{key}_s"] / result["distill_s"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: leave torch's default)")
    ap.add_argument("--schedules", nargs="+", default=["groupwise", "joint"], choices=["groupwise", "joint"])
    ap.add_argument("--pairs", nargs="+", default=[f"{t}->{s}" for t, s in PAIRS])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = machine(device)
    print("machine:", ", ".join(f"{k}={v}" for k, v in info.items()))
    print(f"targets: first order <= {TARGETS['order1']}x, second order <= {TARGETS['order2']}x one dfa distillation step")
    results = []
    for pair in args.pairs:
        tname, sname = pair.split("->")
        r = bench_pair(tname, sname, args, device)
        results.append(r)
        print(f"{r['pair']} batch {r['batch']}: distill {r['distill_s'] * 1e3:.0f} ms/step")
        for order in (1, 2):
            for schedule in args.schedules:
                key = f"order{order}_{schedule}"
                ok = "ok" if r[f"{key}_ratio"] <= TARGETS[f"order{order}"] else "OVER TARGET"
                extra = ""
                if schedule == "groupwise":
                    extra = " (per group: " + ", ".join(f"{t * 1e3:.0f}" for t in r[f"{key}_per_group_s"]) + " ms)"
                print(
                    f"  search order {order} {schedule:9s}: {r[f'{key}_s'] * 1e3:.0f} ms/step = "
                    f"{r[f'{key}_ratio']:.2f}x (target <= {TARGETS[f'order{order}']}x: {ok}){extra}"
                )
    print(json.dumps({"benchmark": "search_step", "machine": info, "targets": TARGETS, "results": results}))


if __name__ == "__main__":
    main()
