"""`dfa-ray plan SPEC` and `dfa-ray validate SPEC`: what a sweep is and costs, before it runs.

Kept apart from cli.py so the wiring there is one call (`add_plan_commands(sub)`). Neither
command starts Ray or reads data: `validate` is `load_spec` and a one-line summary; `plan` adds
the graph and the estimates of `dfa_ray.plan` from a cost model (`dfa_ray.cost_model`).
A mistake (a missing spec, an invalid field, an unreadable cost model, --gpus 0) is a
ConfigError, which `cli.main` prints as the usual error and exit code 2.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from dfa_ray.errors import ConfigError


def _load(args: argparse.Namespace):
    from dfa_ray.cli import parse_assignments
    from dfa_ray.spec import load_spec

    return load_spec(args.spec, overrides=parse_assignments(args.set, "--set"),
                     storage=getattr(args, "storage", None))


def cmd_validate(args: argparse.Namespace) -> int:
    spec = _load(args)
    stages = ["search" if spec.search.enabled and spec.distill.genotype_from is None else "no search",
              "distill" if spec.distill.enabled else "no distill"]
    print(f"OK {args.spec}: sweep {spec.name}, {len(spec.pairs)} pair(s) ({', '.join(p.name for p in spec.pairs)}), "
          f"{len(spec.distill.methods)} method(s) ({' '.join(spec.distill.methods)}), "
          f"{len(spec.distill.seeds)} seed(s) ({' '.join(map(str, spec.distill.seeds))}), {' + '.join(stages)}, "
          f"data {spec.data.name}, protocol {spec.protocol}", flush=True)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from dfa_ray.cost_model import CostModel
    from dfa_ray.plan import build_plan, format_plan

    if args.gpus < 1:
        raise ConfigError(f"--gpus {args.gpus}: give the number of GPUs (devices) to plan for, at least 1")
    cost_model = CostModel.load(args.cost_model)  # before the spec: a wrong file fails fast
    spec = _load(args)
    plan = build_plan(spec, cost_model, args.gpus, teachers_ready=args.teachers_ready)
    if args.json:
        print(json.dumps({"spec": str(args.spec), **plan.to_dict()}, indent=2), flush=True)
    else:
        print(format_plan(plan, str(args.spec)), flush=True)
    return 0


def _gpus(text: str) -> int:
    try:
        value = int(text, 10) if len(text) <= 9 else None
    except ValueError:
        value = None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a number of GPUs: give a whole number >= 1")
    return value


def add_plan_commands(subparsers: Any) -> None:
    """Register `plan` and `validate` on the `dfa-ray` sub-command parsers."""
    set_help = "override any spec field by its dotted path, e.g. --set search.num_samples=4 (repeatable)"
    p = subparsers.add_parser(
        "plan", help="the sweep's graph, trials and epochs per stage, GPU-hours and wall time on N GPUs (no Ray)",
        description="Print the dependency graph of a sweep spec (teachers, per-pair searches, distillations), its "
                    "trials and epochs per node and stage, the GPU-hours and the wall time on --gpus N from a cost "
                    "model of measured step times (docs/plan.md). Starts no Ray and reads no data.")
    p.add_argument("spec", help="sweep spec YAML (see experiments/)")
    p.add_argument("--gpus", type=_gpus, default=1, help="GPUs (devices) to plan the wall time for (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the text")
    p.add_argument("--teachers-ready", action="store_true",
                   help="plan as if every teacher were in the teacher store already (costing nothing)")
    p.add_argument("--cost-model", default=None, metavar="FILE",
                   help="cost model JSON from `python -m benchmarks.step_costs --out FILE` (default: the packaged one)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=set_help)
    p.add_argument("--storage", default=None, help="override the spec's storage folder")
    p.set_defaults(handler=cmd_plan)

    p = subparsers.add_parser("validate", help="validate a sweep spec and print a one-line summary (no Ray, no data)")
    p.add_argument("spec", help="sweep spec YAML")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=set_help)
    p.set_defaults(handler=cmd_validate)


__all__ = ["add_plan_commands", "cmd_plan", "cmd_validate"]
