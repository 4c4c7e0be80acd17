"""`dfa-ray`: the command line.

Every user mistake ends in one line on stderr and exit code 2 (no traceback); see
`dfa_ray.errors`. Sub-commands: models, datasets, methods, teacher, search, distill, sweep, report.
"""

from __future__ import annotations

# torch before ray in every entry point (see docs/design.md, import order): in a
# loopback-only namespace a process that imports ray first can fail to load libtorch.
import torch  # noqa: F401  (import order matters)

import argparse
import json
import sys
from typing import Any, Sequence

from dfa_ray.cli_checks import OneLineParser, check_args, epochs_arg, seed_arg
from dfa_ray.errors import ConfigError, DfaRayError

def parse_assignments(items: Sequence[str] | None, flag: str) -> dict[str, Any]:
    """`key=value` pairs; values are parsed as YAML scalars (numbers, booleans, lists), with
    YAML 1.2 numbers as in a spec (`--set lr=5e-4` is a float)."""
    import yaml

    from dfa_ray.spec import yaml_value

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml_value(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def print_line(text: str) -> None:
    print(text, flush=True)


# -- data and recipe arguments shared by teacher / search / distill --------------------------
def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="digits", help="dataset name (see `dfa-ray datasets`; default: digits)")
    p.add_argument("--data-root", default=None, help="folder of the dataset files (default: the dataset's own)")
    p.add_argument("--download", action="store_true", help="download the dataset first (connected machines only)")
    p.add_argument("--data-opt", action="append", metavar="KEY=VALUE",
                   help="dataset option, e.g. normalization=overhaul for cifar100 (repeatable)")
    p.add_argument("--plugin", action="append", metavar="MODULE",
                   help="import this module first: its models, datasets, methods (docs/plugins.md; repeatable)")


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default=None,
                   help="training recipe: quick | crd | overhaul | dfa_author | dfa_author_cinic "
                        "(default: quick for digits and synthetic, crd otherwise)")
    p.add_argument("--epochs", type=epochs_arg, default=None, help="override the recipe's epoch count")
    p.add_argument("--set", dest="recipe_set", action="append", metavar="FIELD=VALUE",
                   help="override a recipe field, e.g. --set lr=0.1 --set batch_size=128 (repeatable)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the run (recorded with the results)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")


def load_data(args: argparse.Namespace):
    from dfa_ray.data import load_dataset

    return load_dataset(args.data, root=args.data_root, download=args.download,
                        **parse_assignments(args.data_opt, "--data-opt"))


def resolve_recipe(args: argparse.Namespace):
    from dfa_ray.engine.recipes import get_recipe

    name = args.recipe or ("quick" if args.data in ("digits", "synthetic") else "crd")
    overrides = parse_assignments(args.recipe_set, "--set")
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    return get_recipe(name, overrides)


# -- sub-commands ------------------------------------------------------------------------
def cmd_models(args: argparse.Namespace) -> int:
    from dfa_ray.models import MODELS, model_summary

    rows = [model_summary(name) for name in MODELS.names()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<12} {'params@100':>12}  {'groups (channels x blocks)':<44} {'min px':>6}")
    for r in rows:
        groups = ", ".join(f"{g['channels']}x{g['blocks']}" for g in r["groups"])
        print(f"{r['name']:<12} {r['params']:>12,}  {groups:<44} {r['min_size']:>6}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from dfa_ray.data import dataset_table

    rows = dataset_table()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        mark = "present" if r["present"] else "missing"
        print(f"{r['name']:<14} {mark:<8} {str(r['root'] or '(embedded)'):<40} {r['description']}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    """Every distillation method with its paper and options (from each method's declaration)."""
    from dfa_ray.engine.methods import method_catalog

    rows = method_catalog()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['name']}: {r['paper']}" + ("  (needs --genotype)" if r["genotype"] else ""))
        for o in r["options"]:
            print(f"    {o['name']:<14} {json.dumps(o['default']):<10} {o['allowed']:<34} {o['help']}")
    return 0


def cmd_teacher(args: argparse.Namespace) -> int:
    from dfa_ray.engine.teacher import train_teacher

    data = load_data(args)
    recipe = resolve_recipe(args)
    log = None if args.quiet else print_line
    print_line(f"training teacher {args.model} on {data.info.name} ({len(data.train)} train / {len(data.test)} test "
               f"images), recipe {recipe.name}, {recipe.epochs} epochs, seed {args.seed} -> {args.out}")
    final = train_teacher(args.model, data, recipe, args.seed, args.out, device=args.device, log=log)
    print_line(f"teacher {args.model}: test accuracy {final['test_acc_last']:.2f}% (last epoch), "
               f"{final['test_acc_best']:.2f}% (best validation epoch {final['best_epoch']}); saved in {args.out}")
    return 0


def add_search_option_flags(p: argparse.ArgumentParser) -> None:
    """One flag per search option of docs/method.md (`--gamma-ts 0.5`, `--order 2`, ...)."""
    from dfa_ray.dfa.options import SearchOptions

    group = p.add_argument_group("search options (docs/method.md; defaults in brackets)")
    for field, default in SearchOptions().model_dump(mode="json").items():
        group.add_argument(f"--{field.replace('_', '-')}", dest=f"opt_{field}", default=None, metavar="VALUE",
                           help=f"[{default}]")


def search_options_from(args: argparse.Namespace):
    from dfa_ray.dfa.options import SearchOptions

    raw = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}
    return SearchOptions.model_validate(parse_assignments([f"{k}={v}" for k, v in raw.items()], "search option"))


def cmd_search(args: argparse.Namespace) -> int:
    from dfa_ray.engine.checkpoint import atomic_write_json
    from dfa_ray.engine.search import SearchRun
    from dfa_ray.engine.teacher import load_teacher

    data = load_data(args)
    options = search_options_from(args)
    teacher, meta = load_teacher(args.teacher, data)
    run = SearchRun(teacher, meta["model"], args.student, data, options, args.epochs, args.seed, device=args.device,
                    log=None if args.quiet else print_line)
    print_line(f"searching the aggregation for {meta['model']} -> {args.student} on {data.info.name}, "
               f"{args.epochs} epochs, seed {args.seed}; group pairing:")
    print_line(str(run.pairing))
    genotype = run.run()
    path = genotype.save(args.out)
    history_path = path.with_suffix(".history.json")
    atomic_write_json(history_path, {"teacher": meta["model"], "student": args.student, "dataset": data.info.name,
                                     "seed": args.seed, "options": options.model_dump(mode="json"), "history": run.history,
                                     "machine": run.machine()})
    print_line(f"genotype written to {path} (per-epoch metrics in {history_path}); final alpha:")
    for group in genotype.groups:
        weights = ", ".join(f"{c}={w:.3f}" for c, w in zip(group.candidates, group.weights))
        print_line(f"  student group {group.student_group} <- teacher group {group.teacher_group}: {weights}")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from dfa_ray.engine.distill import build_distill_run
    from dfa_ray.engine.teacher import load_teacher, train_in_folder

    if "," in args.method:
        methods = distill_method_list(args.method)
        if len(methods) > 1:
            return distill_group(args, methods)
        args.method = methods[0]
    data = load_data(args)
    recipe = resolve_recipe(args)
    teacher, tmeta = load_teacher(args.teacher, data)
    options = parse_assignments(args.opt, "--opt")
    if args.method == "dfa" and args.genotype is None:
        raise ConfigError("--method dfa needs --genotype: a file written by `dfa-ray search`, or last | average | random")
    run = build_distill_run(teacher, tmeta["model"], args.student, data, recipe, args.method, args.seed,
                            options=options, genotype=args.genotype, device=args.device,
                            log=None if args.quiet else print_line, transfer=args.transfer)
    meta = {"model": args.student, "teacher": tmeta["model"], "teacher_checkpoint": str(args.teacher),
            "method": args.method, "options": run.task.config, "genotype": args.genotype,
            "transfer": _transfer_record(run, data.info.name, args.genotype),
            "dataset": data.info.name, "num_classes": data.info.num_classes, "in_channels": data.info.in_channels,
            "recipe": recipe.model_dump(mode="json"), "seed": args.seed}
    print_line(f"distilling {tmeta['model']} -> {args.student} with {args.method} on {data.info.name}, recipe "
               f"{recipe.name}, {recipe.epochs} epochs, seed {args.seed} -> {args.out}")
    final = train_in_folder(run, meta, args.out, "dfa-ray/distill", None if args.quiet else print_line)
    print_line(f"{args.method} {tmeta['model']} -> {args.student}: test accuracy {final['test_acc_last']:.2f}% "
               f"(last epoch), {final['test_acc_best']:.2f}% (best validation epoch {final['best_epoch']}); "
               f"saved in {args.out}")
    return 0


def distill_method_list(text: str) -> list[str]:
    """`--method vanilla,kd,at,dfa` as its entries (`dfa:last` etc. allowed), checked."""
    from dfa_ray.dfa.genotype import REFERENCE_KINDS
    from dfa_ray.engine.methods import METHODS

    entries = [e.strip() for e in text.split(",")]
    if any(not e for e in entries):
        raise ConfigError(f"--method {text!r} has an empty entry; write the methods comma-separated, e.g. kd,at,dfa")
    repeated = sorted({e for e in entries if entries.count(e) > 1})
    if repeated:
        raise ConfigError(f"--method lists {', '.join(repeated)} more than once; name each method once")
    for e in entries:
        name, _, kind = e.partition(":")
        METHODS.get(name)  # an unknown method: one line with the valid names
        if kind and (name != "dfa" or kind not in REFERENCE_KINDS):
            raise ConfigError(f"--method entry {e!r}: only dfa takes a reference genotype after ':' "
                              f"({', '.join('dfa:' + k for k in REFERENCE_KINDS)})")
    return entries


def group_options(items: Sequence[str] | None, methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A group's `--opt METHOD.KEY=VALUE` per method entry (an unprefixed key is ambiguous)."""
    out: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for item in items or []:
        key = item.partition("=")[0].strip()
        target, dot, option_key = key.partition(".")
        if not dot:
            raise ConfigError(f"--opt {item!r} is ambiguous with several methods ({', '.join(methods)}); write "
                              f"METHOD.KEY=VALUE, e.g. --opt {methods[-1]}.{key or 'w_feat'}=...")
        if target not in out:
            raise ConfigError(f"--opt {item!r}: {target!r} is not one of the methods of --method "
                              f"({', '.join(methods)})")
        out[target].update(parse_assignments([f"{option_key}={item.partition('=')[2]}"], "--opt"))
    return out


def distill_group(args: argparse.Namespace, methods: list[str]) -> int:
    """`distill --method a,b,c`: one shared-teacher group (docs/shared_teacher.md), one folder
    per method under --out holding what a single-method run's --out holds."""
    from pathlib import Path

    from dfa_ray.engine.group import GroupMember, build_group_run, train_group_in_folders
    from dfa_ray.engine.methods import resolve_options
    from dfa_ray.engine.teacher import load_teacher

    options = group_options(args.opt, methods)
    if "dfa" in methods and args.genotype is None:
        raise ConfigError("--method dfa needs --genotype: a file written by `dfa-ray search`, or last | average | "
                          "random (or list dfa:last, dfa:average, dfa:random)")
    for m in methods:  # option names and values, before any data is loaded
        if m.partition(":")[0] != "dfa":
            resolve_options(m, options[m])
    data = load_data(args)
    recipe = resolve_recipe(args)
    teacher, tmeta = load_teacher(args.teacher, data)
    members = []
    for m in methods:
        name, _, kind = m.partition(":")
        genotype = (kind or args.genotype) if name == "dfa" else None
        members.append(GroupMember(key=m, method=name, options=options[m], genotype=genotype,
                                   transfer=args.transfer))
    group = build_group_run(teacher, tmeta["model"], args.student, data, recipe, members, args.seed,
                            device=args.device, log=None if args.quiet else print_line)
    folders, metas = {}, {}
    for member in members:
        run = group.members[member.key].run
        folders[member.key] = Path(args.out) / member.key.replace(":", "-")
        metas[member.key] = {
            "model": args.student, "teacher": tmeta["model"], "teacher_checkpoint": str(args.teacher),
            "method": member.method, "options": run.task.config, "genotype": member.genotype,
            "transfer": _transfer_record(run, data.info.name, member.genotype if member.genotype else None),
            "dataset": data.info.name, "num_classes": data.info.num_classes, "in_channels": data.info.in_channels,
            "recipe": recipe.model_dump(mode="json"), "seed": args.seed}
    print_line(f"distilling {tmeta['model']} -> {args.student} with {', '.join(methods)} sharing one teacher forward "
               f"per batch on {data.info.name}, recipe {recipe.name}, {recipe.epochs} epochs, seed {args.seed} "
               f"-> {args.out}/<method>")
    finals = train_group_in_folders(group, folders, metas, "dfa-ray/distill", None if args.quiet else print_line)
    failed = []
    for member in members:
        m = group.members[member.key]
        if m.ended is not None:
            failed.append(f"{member.key}: {m.ended}")
            continue
        final = finals[member.key]
        print_line(f"{member.key} {tmeta['model']} -> {args.student}: test accuracy {final['test_acc_last']:.2f}% "
                   f"(last epoch), {final['test_acc_best']:.2f}% (best validation epoch {final['best_epoch']}); "
                   f"saved in {folders[member.key]}")
    if failed:  # the others finished and are saved; the exit status says some did not
        raise DfaRayError("; ".join(failed))
    return 0


def _transfer_record(run, dataset: str, genotype_path: str | None) -> dict | None:
    """Where a transferred genotype came from (None when it was searched on this dataset)."""
    genotype = getattr(run.task, "genotype", None)
    if genotype is None or genotype.dataset == dataset:
        return None
    return {"source_dataset": genotype.dataset, "genotype": genotype_path}


def cmd_sweep(args: argparse.Namespace) -> int:
    from dfa_ray.spec import load_spec

    spec = load_spec(args.spec, overrides=parse_assignments(args.set, "--set"), storage=args.storage)
    from dfa_ray.sweep import run_sweep  # imports ray: after the spec is known to be valid

    outcome = run_sweep(spec, address=args.address, log=print_line)
    print_line(f"results: {outcome.results_dir} (read with dfa_ray.results.load or pandas.read_parquet)")
    print_line(f"report:  dfa-ray report {outcome.sweep_dir} --out {outcome.sweep_dir / 'report'}")
    # a failed node (e.g. a teacher that did not train) leaves a partial sweep: say so in the
    # exit status, after the nodes that could run have finished
    return 1 if outcome.failed else 0


def build_parser() -> argparse.ArgumentParser:
    from dfa_ray import __version__

    parser = OneLineParser(prog="dfa-ray", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"dfa-ray {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the model zoo")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(handler=cmd_models)

    p = sub.add_parser("datasets", help="list the datasets, where each is looked for and whether it is present")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_datasets)

    p = sub.add_parser("methods", help="list the distillation methods with their options, defaults and papers")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(handler=cmd_methods)

    p = sub.add_parser("teacher", help="train one teacher without Ray")
    p.add_argument("--model", required=True, help="architecture (see `dfa-ray models`)")
    add_data_args(p)
    add_run_args(p)
    p.add_argument("--out", required=True, help="folder for checkpoint.pt and metrics.json")
    p.set_defaults(handler=cmd_teacher)

    p = sub.add_parser("search", help="stage 1: search the feature aggregation of one pair without Ray")
    p.add_argument("--teacher", required=True, help="teacher folder (from `dfa-ray teacher`) or its checkpoint.pt")
    p.add_argument("--student", required=True, help="student architecture")
    add_data_args(p)
    p.add_argument("--epochs", type=epochs_arg, default=6, help="search epochs (default 6)")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--out", required=True, help="genotype JSON file to write")
    add_search_option_flags(p)
    p.set_defaults(handler=cmd_search)

    p = sub.add_parser("distill", help="stage 2: distil a student with one method (or several sharing one teacher "
                                       "forward) without Ray")
    p.add_argument("--teacher", required=True, help="teacher folder (from `dfa-ray teacher`) or its checkpoint.pt")
    p.add_argument("--student", required=True, help="student architecture")
    p.add_argument("--method", required=True,
                   help="distillation method, e.g. kd, dkd, fitnet, at, nst, sp, pkt, rkd, cc, dfa (see `dfa-ray methods`); "
                        "several comma-separated (vanilla,kd,at,dfa; dfa:last for a reference genotype) train as one "
                        "shared-teacher group, each into --out/<method>/ (docs/shared_teacher.md)")
    p.add_argument("--genotype", default=None,
                   help="for dfa: genotype file from `dfa-ray search`, or a reference genotype: last | average | random")
    p.add_argument("--transfer", action="store_true",
                   help="accept a --genotype searched on another dataset (same architectures): DFA-T")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE",
                   help="method option, e.g. w_feat=50, w_kl=0.9, pairing=size, stage_weights=halving; each method's "
                        "options: `dfa-ray methods` (repeatable); with several methods METHOD.KEY=VALUE, e.g. "
                        "at.w_feat=50")
    add_data_args(p)
    add_run_args(p)
    p.add_argument("--out", required=True,
                   help="folder for checkpoint.pt and metrics.json (several methods: one subfolder per method)")
    p.set_defaults(handler=cmd_distill)

    p = sub.add_parser("sweep", help="run (or resume) a sweep spec on Ray Tune: teachers -> search -> distil")
    p.add_argument("spec", help="sweep spec YAML (see experiments/)")
    p.add_argument("--storage", default=None, help="override the spec's storage folder (absolute, shared by all nodes)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to attach to (`auto`: the running one); default: start a local Ray")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any spec field by its dotted path, e.g. --set search.epochs=2 (repeatable)")
    p.set_defaults(handler=cmd_sweep)

    from dfa_ray.report_cli import add_report_command  # analysis: pandas only, no torch/Ray work

    add_report_command(sub)
    from dfa_ray.importer import add_import_command  # teachers from RepDistiller / mdistiller checkpoints

    add_import_command(sub)
    from dfa_ray.plan_cli import add_plan_commands  # plan / validate: the spec alone, no Ray, no data

    add_plan_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_args(args)  # outputs, devices, bounds: before any data is loaded or trained
        return args.handler(args)
    except DfaRayError as exc:
        print(f"dfa-ray {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dfa-ray {args.command}: interrupted; run the same command again to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
