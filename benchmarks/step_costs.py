"""Per-image step costs of the model zoo: the measurements behind `dfa-ray plan`'s cost model.

For each model (by default every model a spec in experiments/ names), on synthetic 32x32 RGB
images with 100 classes at one batch size, the median over a few steps of
- a training step: forward, cross-entropy, backward, SGD step (momentum, weight decay), and
- a forward-only pass in eval mode under `no_grad` (what a frozen teacher costs a distillation
  step, and what evaluating a network costs),
each divided by the batch size. The search's extra cost over a distillation step (the
bi-level step) is not re-measured here: it is taken from `search_step`'s figures in
benchmarks/results/*.json when they are there (the ratio of a search step to a DFA
distillation step, per order and schedule), else a stated default.

The result is written (atomically) as a cost model, by default into the package
(`dfa_ray/cost_model.json`, what `dfa-ray plan` reads unless given `--cost-model FILE`),
recording the machine, torch, the batch size, the image size and the date. Measured on a CPU,
the figures stand in for a GPU's until the benchmark is run on one:

    python -m benchmarks.step_costs [--models resnet8 wrn_16_2] [--all] [--batch-size 64]
                                    [--steps 3] [--device cuda] [--out FILE]

Few steps per model on purpose: the plan needs the order of magnitude of an epoch, not a
benchmark-grade figure; a model's first step (allocator, kernel choice) is not timed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import yaml

from benchmarks.common import apply_threads, machine, sync
from dfa_ray.cost_model import (
    COST_MODEL_KIND,
    COST_MODEL_VERSION,
    DEFAULT_PATH,
    DEFAULT_SEARCH_FACTORS,
    CostModel,
    ModelCost,
    SearchFactors,
)

ROOT = Path(__file__).resolve().parent.parent
IMAGE_SIZE = 32  # CIFAR's: the size of every spec the costs are for
NUM_CLASSES = 100


def experiment_models(folder: Path = ROOT / "experiments") -> list[str]:
    """Every teacher and student named by a spec in `folder`, in order of first appearance
    (read as plain YAML: a spec that names a plug-in model still lists it)."""
    names: dict[str, None] = {}
    for path in sorted(folder.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        for pair in doc.get("pairs") or []:
            for role in ("teacher", "student"):
                if isinstance(pair, dict) and isinstance(pair.get(role), str):
                    names.setdefault(pair[role], None)
    return list(names)


def search_factors(results: Path = ROOT / "benchmarks" / "results") -> SearchFactors:
    """The search step's cost over a DFA distillation step, from `search_step`'s recorded
    figures (mean over its pairs and over the results files), else the stated defaults."""
    ratios: dict[str, list[float]] = {}
    sources = []
    for path in sorted(results.glob("*.json")):
        try:
            report = json.loads(path.read_text()).get("search_step")
        except (OSError, ValueError, AttributeError):
            continue
        if not isinstance(report, dict):
            continue
        found = False
        for row in report.get("results", []):
            for key in ("order1_groupwise", "order1_joint", "order2_groupwise", "order2_joint"):
                value = row.get(f"{key}_ratio")
                if isinstance(value, (int, float)):
                    ratios.setdefault(key, []).append(float(value))
                    found = True
        if found:
            sources.append(f"benchmarks/results/{path.name} (search_step)")
    if not ratios:
        return DEFAULT_SEARCH_FACTORS
    merged = {key: round(statistics.mean(ratios.get(key) or [getattr(DEFAULT_SEARCH_FACTORS, key)]), 3)
              for key in ("order1_groupwise", "order1_joint", "order2_groupwise", "order2_joint")}
    return SearchFactors(**merged, source="mean over the pairs of " + ", ".join(sources))


def time_model(name: str, batch_size: int, steps: int, device: torch.device) -> ModelCost:
    """Median seconds per image of a training step and of an eval-mode forward."""
    from dfa_ray.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES).to(device)
    x = torch.randn(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, device=device)
    y = torch.randint(0, NUM_CLASSES, (batch_size,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def train_step() -> None:
        model.train()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def forward() -> None:
        model.eval()
        with torch.no_grad():
            model(x)

    times: dict[str, list[float]] = {"train": [], "forward": []}
    for step in range(steps + 1):  # step 0 warms up and is not kept
        for key, fn in (("train", train_step), ("forward", forward)):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            if step:
                times[key].append(time.perf_counter() - start)
    return ModelCost(train_s_per_image=statistics.median(times["train"]) / batch_size,
                     forward_s_per_image=statistics.median(times["forward"]) / batch_size)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="default: every model of experiments/*.yaml")
    parser.add_argument("--all", action="store_true", help="the whole model zoo")
    parser.add_argument("--batch-size", type=int, default=64, help="the CRD protocol's batch size")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model (after one warm-up step)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=-1,
                        help="torch threads; -1: 1 on the CPU (a 1-CPU Ray trial's setting), torch's default elsewhere")
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH, help=f"cost model to write (default {DEFAULT_PATH})")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    threads = apply_threads(args.threads, device)
    if args.all:
        from dfa_ray.models import MODELS

        names = MODELS.names()
    else:
        names = args.models or experiment_models()
    info = machine(device)
    print(f"machine: {info}")
    start = time.perf_counter()
    models: dict[str, ModelCost] = {}
    for name in names:
        cost = time_model(name, args.batch_size, args.steps, device)
        models[name] = cost
        print(f"{name:<12} train {cost.train_s_per_image * 1e3:8.3f} ms/img   forward {cost.forward_s_per_image * 1e3:8.3f} "
              f"ms/img   (batch {args.batch_size}, {IMAGE_SIZE}x{IMAGE_SIZE})", flush=True)
    model = CostModel(
        kind=COST_MODEL_KIND, version=COST_MODEL_VERSION, machine=info, torch=torch.__version__,
        device=str(device), threads=threads or torch.get_num_threads(), batch_size=args.batch_size,
        image_size=IMAGE_SIZE, num_classes=NUM_CLASSES, steps=args.steps,
        date=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        note=("measured on a CPU: these times stand in for a GPU's until `python -m benchmarks.step_costs "
              "--device cuda` is run on one and its file shipped" if device.type == "cpu" else
              f"measured on {info['device_name']}"),
        models=models, search=search_factors())
    model.save(args.out)
    wall = time.perf_counter() - start
    print(f"cost model of {len(models)} models written to {args.out} in {wall:.0f} s")
    report = {"benchmark": "step_costs", "machine": info, "batch_size": args.batch_size, "image_size": IMAGE_SIZE,
              "steps": args.steps, "wall_s": round(wall, 1), "out": str(args.out),
              "results": [{"model": n, "train_ms_per_image": round(c.train_s_per_image * 1e3, 4),
                           "forward_ms_per_image": round(c.forward_s_per_image * 1e3, 4)} for n, c in models.items()]}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
