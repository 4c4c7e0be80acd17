"""A sweep spec -> teachers -> search -> distil, as Ray Tune experiments.

Layout under `<storage>`:
    teachers/<model>-<dataset>-<fingerprint>/   the teacher store, shared by every sweep
    <name>/spec.json                            the validated spec this sweep ran with
    <name>/tune/{teachers,search-<pair>,distill}/  the Tune experiments (checkpoints, state)
    <name>/genotypes/<pair>.json                the genotype of each pair's best search trial
    <name>/results/{epochs,trials}/             the Parquet results (dfa_ray.results)

Resume: running the same command again restores each experiment that exists
(`Tuner.restore(..., resume_errored=True)`): finished trials are not re-run, unfinished ones
continue from their last checkpoint; teachers already in the store are not trained again.
Search runs one Tune experiment per pair, because ASHA compares trials on one metric and
accuracies of different pairs are not comparable.
"""

from __future__ import annotations

import os

# Snapshot the experiment state often, so that a killed driver loses little on resume
# (Ray's default is adaptive and can be minutes). Set before Tune is imported.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")
# ... which makes Tune warn that snapshots are frequent: that is the point here.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

import json  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import torch  # noqa: E402,F401  (torch before ray: see docs/design.md, import order)

from dfa_ray.data import Dataset, load_dataset  # noqa: E402
from dfa_ray.engine.checkpoint import atomic_write_json, first_line  # noqa: E402
from dfa_ray.engine.recipes import get_recipe  # noqa: E402
from dfa_ray.engine.teacher import CHECKPOINT_NAME, fingerprint, read_teacher_checkpoint, teacher_meta  # noqa: E402
from dfa_ray.errors import CheckpointError, ConfigError  # noqa: E402
from dfa_ray.spec import SweepSpec, safe_name, tune_space  # noqa: E402

Logger = Callable[[str], None]


@dataclass
class SweepOutcome:
    sweep_dir: Path
    teachers: dict[str, Path] = field(default_factory=dict)  # model -> teacher store folder
    genotypes: dict[str, dict] = field(default_factory=dict)  # pair name -> genotype document
    skipped: list[str] = field(default_factory=list)  # what could not run, and why

    @property
    def results_dir(self) -> Path:
        return self.sweep_dir / "results"


# -- set-up ---------------------------------------------------------------------------------
def check_storage(path: Path) -> None:
    """Fail before anything runs when the storage folder cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"storage {path} is not writable ({exc.strerror or exc}); choose another with --storage")


def connect(address: str | None, ray_init: dict[str, Any] | None = None) -> None:
    """Attach to a cluster (`auto` or an address), or start a local Ray when none is given."""
    import ray

    if ray.is_initialized():
        return
    # Workers log at WARNING: Tune's per-checkpoint INFO lines would drown the progress lines.
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True,
                              "logging_config": ray.LoggingConfig(log_level="WARNING")}
    kwargs.update(ray_init or {})
    try:
        if address:
            ray.init(address=address, **{k: v for k, v in kwargs.items() if k not in ("num_cpus", "num_gpus")})
        else:
            ray.init(**kwargs)
    except ConnectionError as exc:
        raise ConfigError(f"no Ray cluster at --address {address} ({first_line(exc, 160)}); start one with "
                          "`ray start --head` or leave --address out to run on this machine") from None


def resources(spec: SweepSpec) -> dict[str, float]:
    out = {"cpu": float(spec.resources.cpu)}
    if spec.resources.gpu:
        out["gpu"] = float(spec.resources.gpu)
    return out


def common_config(spec: SweepSpec, stage: str) -> dict[str, Any]:
    return {"sweep": spec.name, "stage": stage, "dataset": spec.data.name,
            "data_spec": {"name": spec.data.name, "root": spec.data.root, "options": dict(spec.data.options)},
            "cpu": float(spec.resources.cpu), "gpu": float(spec.resources.gpu),
            "fast": spec.fast.model_dump(), "plugins": list(spec.plugins)}


# -- one Tune experiment, fresh or restored ----------------------------------------------------
def fit_experiment(spec: SweepSpec, name: str, trainable: Any, param_space: dict[str, Any], tune_config: Any,
                   log: Logger, callbacks: list | None = None) -> Any:
    from ray import tune

    from dfa_ray.tune.callbacks import ProgressCallback, ResultsCallback, restore_missing_rows

    root = spec.sweep_dir / "tune"
    path = root / name
    if tune.Tuner.can_restore(str(path)):
        log(f"[sweep] resuming experiment {name} from {path}")
        tuner = tune.Tuner.restore(str(path), trainable=trainable, param_space=param_space, resume_errored=True)
    else:
        run_config = tune.RunConfig(
            name=name, storage_path=str(root), verbose=0,
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1, num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
            callbacks=[ResultsCallback(spec.sweep_dir), ProgressCallback(log), *(callbacks or [])],
        )
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)
    grid = tuner.fit()
    restored = restore_missing_rows(spec.sweep_dir, grid)
    if restored:
        log(f"[sweep] {name}: rewrote {restored} missing or damaged result row(s) from Tune's trial logs")
    return grid


def grid_tune_config(spec: SweepSpec) -> Any:
    """A grid experiment's TuneConfig. Actors are reused: the next trial of a slot runs in the
    process of the one before (`reset_config`), skipping a fresh worker's start-up."""
    from ray import tune

    return tune.TuneConfig(max_concurrent_trials=spec.resources.max_concurrent, reuse_actors=True)


def with_data(cls: type, data: Dataset, spec: SweepSpec) -> Any:
    """The trainable with the dataset in the object store (once) and the spec's resources."""
    from ray import tune

    return tune.with_resources(tune.with_parameters(cls, data=data), resources(spec))


# -- stage 1: teachers -------------------------------------------------------------------------
def teacher_jobs(spec: SweepSpec, data: Dataset) -> tuple[dict[str, Path], list[dict[str, Any]]]:
    """The store folder of every teacher, and the jobs for those not in the store yet."""
    from dfa_ray.importer import resolve_spec_teachers

    recipe = get_recipe(spec.protocol, spec.teacher_recipe_overrides())
    # teachers taken as they are (`teachers.from`: imported, or named folders): never trained
    folders: dict[str, Path] = resolve_spec_teachers(spec.teachers.from_, spec.teacher_store, spec.teacher_names,
                                                     data.info.name)
    jobs: list[dict[str, Any]] = []
    for model in spec.teacher_names:
        if model in folders:
            continue
        meta = teacher_meta(model, data, recipe, spec.teachers.seed)
        folder = spec.teacher_store / f"{safe_name(model)}-{safe_name(data.info.name)}-{fingerprint(meta)}"
        folders[model] = folder
        if not teacher_finished(folder):
            jobs.append({"model": model, "seed": spec.teachers.seed, "recipe": recipe.to_dict(),
                         "store_dir": str(folder)})
    return folders, jobs


def teacher_finished(folder: Path) -> bool:
    if not (folder / CHECKPOINT_NAME).exists():
        return False
    try:
        _, state = read_teacher_checkpoint(folder)
    except CheckpointError:
        return False  # a damaged store entry is trained again
    return "model" in state


def run_teachers(spec: SweepSpec, data: Dataset, log: Logger, callbacks: list | None = None) -> dict[str, Path]:
    from ray import tune

    from dfa_ray.tune.trainables import TeacherTrainable

    folders, jobs = teacher_jobs(spec, data)
    for model, folder in folders.items():
        if not any(j["model"] == model for j in jobs):
            log(f"[sweep] teacher {model}: taken from the store ({folder})")
    if jobs:
        log(f"[sweep] training {len(jobs)} teacher(s): {', '.join(j['model'] for j in jobs)}")
        param_space = {**common_config(spec, "teacher"), "job": tune.grid_search(jobs)}
        fit_experiment(spec, "teachers", with_data(TeacherTrainable, data, spec), param_space,
                       grid_tune_config(spec), log, callbacks)
    missing = [m for m, f in folders.items() if not teacher_finished(f)]
    if missing:
        raise ConfigError(f"teacher training failed for {', '.join(missing)}; see the errored trials under "
                          f"{spec.sweep_dir / 'tune' / 'teachers'} and the trials table of the results")
    return folders


# -- stage 2: search ---------------------------------------------------------------------------
def search_tune_config(spec: SweepSpec) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from dfa_ray.spec import first_rung
    from dfa_ray.tune.schedulers import SynchronousHalving

    s = spec.search
    grace = first_rung(spec)
    limit = spec.resources.max_concurrent
    if s.scheduler.type == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=s.epochs, grace_period=grace,
                                  reduction_factor=s.scheduler.reduction_factor)
    elif s.scheduler.type == "sha":
        # every trial must exist for a rung to be decided, and paused trials must not hold a
        # slot: the generator creates all of them and the scheduler caps the running ones
        scheduler = SynchronousHalving(max_t=s.epochs, grace_period=grace,
                                       reduction_factor=s.scheduler.reduction_factor,
                                       num_trials=search_trial_count(spec), max_running=limit)
        limit = None
    else:
        scheduler = FIFOScheduler()
    if s.searcher == "optuna":
        import optuna
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        search_alg: Any = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=s.seed))
        if spec.resources.max_concurrent:
            search_alg = ConcurrencyLimiter(search_alg, max_concurrent=spec.resources.max_concurrent)
        max_concurrent = None
    else:
        # A SearchAlgorithm, not a Searcher: Tune ignores max_concurrent_trials for it (with a
        # warning), so the limit goes to the generator itself.
        search_alg = BasicVariantGenerator(random_state=s.seed, max_concurrent=limit or 0)
        max_concurrent = None
    return tune.TuneConfig(metric=s.metric, mode=s.mode, scheduler=scheduler, search_alg=search_alg,
                           num_samples=s.num_samples, max_concurrent_trials=max_concurrent,
                           reuse_actors=True)


def search_trial_count(spec: SweepSpec) -> int:
    """Trials of one pair's search: num_samples times the size of the grid dimensions."""
    grid = 1
    for dist in spec.search.space.values():
        if dist.kind == "grid":
            grid *= len(dist.values)
    return grid * spec.search.num_samples


def run_search(spec: SweepSpec, data: Dataset, teachers: dict[str, Path], log: Logger,
               callbacks: list | None = None) -> dict[str, dict]:
    from dfa_ray.tune.trainables import SearchTrainable

    trainable = with_data(SearchTrainable, data, spec)
    genotypes: dict[str, dict] = {}
    for pair in spec.pairs:
        param_space = {**common_config(spec, "search"), "teacher": pair.teacher, "student": pair.student,
                       "teacher_path": str(teachers[pair.teacher]), "seed": spec.search.seed,
                       "epochs": spec.search.epochs,
                       "options": {**spec.search.options, **tune_space(spec.search.space)}}
        log(f"[sweep] searching {pair.name}: {search_trial_count(spec)} trial(s) x {spec.search.epochs} epochs, "
            f"{spec.search.scheduler.type}, searcher {spec.search.searcher}")
        grid = fit_experiment(spec, f"search-{pair.dir_name}", trainable, param_space, search_tune_config(spec), log,
                              callbacks)
        best = best_genotype(grid, spec.search.epochs)
        if best is None:
            log(f"[sweep] no search trial of {pair.name} finished; its dfa runs are skipped")
            continue
        genotypes[pair.name] = best
        atomic_write_json(spec.sweep_dir / "genotypes" / f"{pair.dir_name}.json", best)
        weights = " | ".join(" ".join(f"{w:.2f}" for w in g["weights"]) for g in best["groups"])
        log(f"[sweep] {pair.name}: best search trial {best.get('trial_id')}, alpha [{weights}]")
    return genotypes


def best_genotype(grid: Any, epochs: int) -> dict | None:
    """The genotype of the trial with the best held-out accuracy at its last epoch, among the
    trials that ran every epoch (ASHA-stopped trials saw less training); else among all."""
    candidates = []
    for result in grid:
        metrics = result.metrics or {}
        if result.error is not None or "genotype_json" not in metrics or metrics.get("val_acc") is None:
            continue
        full = int(metrics.get("epoch", 0)) >= epochs
        # ties go to the trial created first (the number Tune puts after the experiment's
        # random prefix), so the choice does not depend on the order results came back in
        number = str(metrics.get("trial_id", "")).rsplit("_", 1)[-1]
        order = -int(number) if number.isdigit() else 0
        candidates.append((full, float(metrics["val_acc"]), order, metrics["genotype_json"]))
    if not candidates:
        return None
    text = max(candidates, key=lambda c: c[:3])[3]
    return json.loads(text)


# -- stage 3: distillation ---------------------------------------------------------------------
def distill_jobs(spec: SweepSpec, teachers: dict[str, Path], genotypes: dict[str, dict],
                 skipped: list[str]) -> list[dict[str, Any]]:
    recipe = get_recipe(spec.protocol, spec.distill_recipe_overrides())
    jobs = []
    for pair in spec.pairs:
        for method in spec.distill.methods:
            base, _, reference = method.partition(":")
            genotype: Any = None
            options = dict(spec.distill.options.get(method, {}))
            if base == "dfa":
                genotype = reference or genotypes.get(pair.name)
                if genotype is None:
                    skipped.append(f"{pair.name} dfa: no finished search trial")
                    continue
                if reference:
                    options = reference_options(spec, genotypes.get(pair.name), options)
            transfer = None
            if isinstance(genotype, dict) and "_transfer" in genotype:
                genotype = dict(genotype)
                transfer = genotype.pop("_transfer")
            for seed in spec.distill.seeds:
                jobs.append({"transfer": transfer, "teacher": pair.teacher, "student": pair.student, "teacher_path": str(teachers[pair.teacher]),
                             "method": base, "method_options": options,
                             "genotype": genotype, "seed": seed, "recipe": recipe.to_dict()})
    return jobs


def transferred_genotypes(spec: SweepSpec, log: Logger) -> dict[str, dict]:
    """Each pair's genotype from `distill.genotype_from` (DFA-T), checked to be for the same
    architectures; a genotype from another dataset is marked as a transfer, and the job then
    records where it came from (`transfer.source_dataset`, `transfer.genotype`)."""
    from dfa_ray.dfa.genotype import Genotype

    source = spec.distill.genotype_from
    out: dict[str, dict] = {}
    for pair in spec.pairs:
        path = source.path_for(pair.dir_name, spec.storage)
        if not path.is_file():
            raise ConfigError(f"distill.genotype_from: no genotype for {pair.name} at {path}; run the source "
                              "sweep's search first, or fix the path")
        genotype = Genotype.load(path)
        if (genotype.teacher, genotype.student) != (pair.teacher, pair.student):
            raise ConfigError(f"distill.genotype_from: {path} is for {genotype.teacher} -> {genotype.student}, "
                              f"not {pair.name}; genotype transfer needs the same architectures")
        doc = genotype.to_dict()
        if genotype.dataset != spec.data.name:
            doc["_transfer"] = {"source_dataset": genotype.dataset, "genotype": str(path)}
        out[pair.name] = doc
        log(f"[sweep] {pair.name}: genotype from {path} (searched on {genotype.dataset})")
    return out


def reference_options(spec: SweepSpec, searched: dict | None, own: dict[str, Any]) -> dict[str, Any]:
    """The options of a reference-genotype run (dfa:last, dfa:average, dfa:random): exactly
    those of the pair's searched `dfa` run (its feature weight = the search's lambda, its
    feature kind and candidate scaling, the spec's dfa options), so the two differ in the aggregation alone; the
    reference's own spec options still win (an ablation may want to vary them on purpose)."""
    from dfa_ray.engine.methods.dfa import options_from_search

    inherited = options_from_search((searched or {}).get("options", {}))
    return {**inherited, **spec.distill.options.get("dfa", {}), **own}


def run_distill(spec: SweepSpec, data: Dataset, teachers: dict[str, Path], genotypes: dict[str, dict],
                skipped: list[str], log: Logger, callbacks: list | None = None) -> None:
    from ray import tune

    from dfa_ray.tune.trainables import DistillTrainable

    jobs = distill_jobs(spec, teachers, genotypes, skipped)
    if not jobs:
        return
    log(f"[sweep] distilling: {len(jobs)} trial(s) = pairs x methods x seeds")
    param_space = {**common_config(spec, "distill"), "job": tune.grid_search(jobs)}
    fit_experiment(spec, "distill", with_data(DistillTrainable, data, spec), param_space,
                   grid_tune_config(spec), log, callbacks)


# -- the whole sweep -----------------------------------------------------------------------------
def run_sweep(spec: SweepSpec, address: str | None = None, log: Logger = print,
              ray_init: dict[str, Any] | None = None, callbacks: list | None = None) -> SweepOutcome:
    """Run (or resume) the sweep; returns where everything is. `callbacks`: extra Tune
    callbacks for every experiment (monitoring, fault injection in tests)."""
    start = time.perf_counter()
    check_storage(spec.storage)
    check_storage(spec.sweep_dir)
    atomic_write_json(spec.sweep_dir / "spec.json", spec.to_dict())
    # a transferred genotype is checked before any compute is spent
    transferred = transferred_genotypes(spec, log) if spec.distill.genotype_from is not None else None
    data = load_dataset(spec.data.name, root=spec.data.root, **dict(spec.data.options))
    connect(address, ray_init)
    outcome = SweepOutcome(spec.sweep_dir)
    log(f"[sweep] {spec.name}: {len(spec.pairs)} pair(s) on {data.info.name}, storage {spec.storage}")
    outcome.teachers = run_teachers(spec, data, log, callbacks)
    if transferred is not None:
        outcome.genotypes = transferred
    elif spec.search.enabled:
        outcome.genotypes = run_search(spec, data, outcome.teachers, log, callbacks)
    if spec.distill.enabled:
        run_distill(spec, data, outcome.teachers, outcome.genotypes, outcome.skipped, log, callbacks)
    for note in outcome.skipped:
        log(f"[sweep] skipped: {note}")
    log(f"[sweep] done in {time.perf_counter() - start:.0f} s; results in {outcome.results_dir}")
    return outcome
