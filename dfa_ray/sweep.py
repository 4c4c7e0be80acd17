"""A sweep spec -> a dependency graph of Ray Tune experiments: teachers, searches, distillations.

The graph (dfa_ray.graph), one node per experiment:
    teacher:<model>        trains one teacher (absent when the store or `teachers.from` has it)
    search:<pair>          the pair's search, once its teacher is ready
    distill:<pair>         the pair's baseline distillations, once its teacher is ready
    distill-dfa:<pair>     the pair's dfa distillations (searched and reference genotypes),
                           once its search has ended
Every node runs as soon as the nodes it needs have succeeded, all of them at once as far as
the cluster allows. The sweep's slot pool (dfa_ray.tune.slots) limits the running trials of
the whole sweep (to `resources.max_concurrent`, else to what the cluster holds) and gives a
free slot to the node heading the longest chain of estimated work (its bottom level from the
cost model, dfa_ray.plan): a pair's search before the baselines whose own chains are shorter. Why one Tune experiment per pair's
search rather than one experiment for the whole sweep: a scheduler compares the trials of one
experiment on one metric, and accuracies of different pairs are not comparable; separate
experiments also resume, fail and report separately. A node that fails skips only the nodes
that need it; the others finish.

Layout under `<storage>`:
    teachers/<model>-<dataset>-<fingerprint>/   the teacher store (dfa_ray.teacher_store)
    <name>/spec.json                            the validated spec this sweep ran with
    <name>/tune/<experiment>/                   one Tune experiment per node
    <name>/genotypes/<pair>.json                the genotype of each pair's best search trial
    <name>/results/                             the Parquet results (dfa_ray.results)

Resume: running the same command again restores each experiment that exists
(`Tuner.restore(..., resume_errored=True)`): finished trials are not re-run, unfinished ones
continue from their last checkpoint; teachers already in the store are not trained again.
"""

from __future__ import annotations

import os
import shutil

# Snapshot the experiment state often, so that a killed driver loses little on resume
# (Ray's default is adaptive and can be minutes). Set before Tune is imported.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")
# ... which makes Tune warn that snapshots are frequent: that is the point here.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# Tune's "insufficient resources" check is off: under the sweep's slot gate an experiment
# often has no running trial, or no trial at all yet, for as long as other experiments hold
# the slots (minutes to hours). Tune reads 60 s of that as "the cluster is too small", and on
# an experiment with no trial yet its check indexes an empty list (Ray 2.60: IndexError in
# insufficient_resources_manager.py), which ends the experiment. The sweep says itself when a
# trial fits no node (`trial_fits_no_node`).
NEVER_S = "1e12"
os.environ.setdefault("TUNE_WARN_INSUFFICENT_RESOURCE_THRESHOLD_S", NEVER_S)
os.environ.setdefault("TUNE_WARN_INSUFFICENT_RESOURCE_THRESHOLD_S_AUTOSCALER", NEVER_S)

import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Mapping  # noqa: E402

import torch  # noqa: E402,F401  (torch before ray: see docs/design.md, import order)

from dfa_ray.cost_model import CostModel  # noqa: E402
from dfa_ray.data import Dataset, load_dataset  # noqa: E402
from dfa_ray.engine.checkpoint import atomic_write_json, first_line  # noqa: E402
from dfa_ray.errors import ConfigError  # noqa: E402
from dfa_ray.graph import GraphOutcome, Node, NodeFailed, run_graph  # noqa: E402
from dfa_ray.names import safe_name  # noqa: E402
from dfa_ray.plan import node_priorities  # noqa: E402
from dfa_ray.spec import PairSpec, ResourcesSpec, SweepSpec  # noqa: E402
from dfa_ray.sweep_trials import (  # noqa: E402,F401  (re-exported: the sweep's public helpers)
    common_config,
    distill_trials,
    group_trials,
    is_dfa,
    reference_options,
    search_config,
    search_trial_count,
    teacher_jobs,
    transferred_genotypes,
)
from dfa_ray.teacher_store import TeacherStore  # noqa: E402
from dfa_ray.tune.configs import GroupTrial, param_space  # noqa: E402

Logger = Callable[[str], None]


def _group_trainable() -> type:
    from dfa_ray.tune.trainables import GroupDistillTrainable

    return GroupDistillTrainable


@dataclass(frozen=True)
class Trainables:
    """The Trainable class of each stage: the seam through which a test double (e.g. the
    scheduling benchmark's sleeping trainables) replaces the real ones; nothing else changes.
    `group` runs the shared-teacher group trials of `distill.share_teacher` (a GroupTrial
    config); a double that replaces `distill` but not `group` needs `share_teacher: false`."""

    teacher: type
    search: type
    distill: type
    group: type = field(default_factory=_group_trainable)

    @classmethod
    def default(cls) -> "Trainables":
        from dfa_ray.tune.trainables import DistillTrainable, GroupDistillTrainable, SearchTrainable, TeacherTrainable

        return cls(TeacherTrainable, SearchTrainable, DistillTrainable, GroupDistillTrainable)


@dataclass
class SweepOutcome:
    sweep_dir: Path
    teachers: dict[str, Path] = field(default_factory=dict)  # model -> teacher store folder
    genotypes: dict[str, dict] = field(default_factory=dict)  # pair name -> genotype document
    skipped: list[str] = field(default_factory=list)  # what could not run, and why
    failed: list[str] = field(default_factory=list)  # nodes that failed, and why
    grids: dict[str, Any] = field(default_factory=dict)  # node id -> its experiment's ResultGrid
    graph: GraphOutcome | None = None

    @property
    def results_dir(self) -> Path:
        return self.sweep_dir / "results"


def print_line(line: str) -> None:
    """The default progress output. A module-level function, not `print` itself: Tune pickles
    each experiment's callbacks (the progress callback holds this), and while one experiment
    runs, Tune's output handling swaps `builtins.print`, which then no longer pickles."""
    print(line, flush=True)


class _PicklableLog:
    """A caller's log function that survives Tune's pickling of the experiment's callbacks;
    one that does not pickle (e.g. `print` while Tune has swapped it) is stored as print_line."""

    def __init__(self, fn: Logger) -> None:
        self.fn = fn

    def __call__(self, line: str) -> None:
        self.fn(line)

    def __getstate__(self) -> dict[str, Any]:
        from ray import cloudpickle

        try:
            cloudpickle.dumps(self.fn)
            return {"fn": self.fn}
        except Exception:  # anything unpicklable: the restored copy prints instead
            return {"fn": print_line}


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


def trial_fits_no_node(resources: ResourcesSpec, nodes: list[dict[str, Any]]) -> str | None:
    """Why no live node of the cluster (`ray.nodes()`) can hold one trial now, or None when
    one can: a trial's CPUs and GPUs go to one node. The sweep warns and waits (an autoscaler
    may add a node), as Tune would, but once, and with the spec's field to change."""
    need = {"CPU": float(resources.cpu), "GPU": float(resources.gpu)}
    live = [node.get("Resources", {}) for node in nodes if node.get("Alive", True)]
    if any(all(have.get(key, 0.0) + 1e-9 >= amount for key, amount in need.items()) for have in live):
        return None
    largest = max(live, key=lambda have: (have.get("GPU", 0.0), have.get("CPU", 0.0)), default={})
    return (f"a trial asks for {need['CPU']:g} CPU(s) and {need['GPU']:g} GPU(s) (resources.cpu, resources.gpu) "
            f"but the largest of the cluster's {len(live)} node(s) has {largest.get('CPU', 0.0):g} CPU(s) and "
            f"{largest.get('GPU', 0.0):g} GPU(s); the trials wait for a node that fits (an autoscaler's), "
            "else stop the sweep and lower resources.cpu / resources.gpu")


def slot_limit(spec: SweepSpec) -> int:
    """How many trials the sweep runs at once: `resources.max_concurrent` when given (it may
    exceed what the cluster holds now: the pending trials are what makes an autoscaler add
    nodes), else the trials the cluster's CPUs and GPUs hold now at the spec's resources per
    trial; the sweep re-reads it while it runs (nodes come and go)."""
    import ray

    if spec.resources.max_concurrent is not None:
        return spec.resources.max_concurrent
    total = ray.cluster_resources()
    slots = int(total.get("CPU", 0.0) / spec.resources.cpu + 1e-9)
    if spec.resources.gpu:
        slots = min(slots, int(total.get("GPU", 0.0) / spec.resources.gpu + 1e-9))
    return max(1, slots)


SLOT_REFRESH_S = 5.0


def pool_name(spec: SweepSpec) -> str:
    """The sweep's slot pool (dfa_ray.tune.slots): its folder, unique per running sweep."""
    return str(spec.sweep_dir)


# -- one Tune experiment, fresh or restored ----------------------------------------------------
def trial_dirname(trial: Any) -> str:
    """A trial's folder name: stage, pair, method and seed, then Tune's id (unique)."""
    from dfa_ray.tune.configs import flat_config

    config = flat_config(trial.config)
    stage = config.get("stage", "trial")
    if stage == "teacher":
        what = f"{config.get('model')}-s{config.get('seed')}"
    elif "members" in config:  # a shared-teacher group: its members are in its config
        what = f"{config.get('teacher')}->{config.get('student')}-group-s{config.get('seed')}"
    else:
        pair = f"{config.get('teacher')}->{config.get('student')}"
        what = f"{pair}-{config.get('method', 'search')}-s{config.get('seed')}"
    return safe_name(f"{stage}-{what}-{trial.trial_id}")


def has_tune_snapshot(path: Path) -> bool:
    """Whether Tune saved its state of the experiment in `path` (the trials it created)."""
    return any(path.glob("experiment_state-*.json"))


def fit_experiment(spec: SweepSpec, name: str, trainable: Any, param_space: dict[str, Any], tune_config: Any,
                   log: Logger, callbacks: list | None = None) -> Any:
    from ray import tune

    from dfa_ray.tune.callbacks import (ProgressCallback, ResultsCallback, discard_unrecorded_trials,
                                        restore_missing_rows)

    root = spec.sweep_dir / "tune"
    path = root / name
    if tune.Tuner.can_restore(str(path)) and has_tune_snapshot(path):
        log(f"[sweep] resuming experiment {name} from {path}")
        tuner = tune.Tuner.restore(str(path), trainable=trainable, param_space=param_space, resume_errored=True)
    else:
        if path.exists():
            # Tune writes tuner.pkl when the experiment is created and its first snapshot of
            # the trials a few seconds later; a driver killed in between leaves a folder Tune
            # would "resume" as a fresh run of ONE sample (its restore passes no num_samples),
            # and trial folders it knows nothing of. Start it over, without their rows.
            discarded = discard_unrecorded_trials(spec.sweep_dir, path)
            shutil.rmtree(path)
            log(f"[sweep] {name}: the stopped run ended before Tune recorded its trials; starting it over"
                + (f" (discarded the rows of {discarded} unrecorded trial(s))" if discarded else ""))
        run_config = tune.RunConfig(
            name=name, storage_path=str(root), verbose=0,
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1, num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
            callbacks=[ResultsCallback(spec.sweep_dir), ProgressCallback(log), *run_callbacks(spec),
                       *(callbacks or [])],
        )
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)
    grid = tuner.fit()
    restored = restore_missing_rows(spec.sweep_dir, grid)
    if restored:
        log(f"[sweep] {name}: rewrote {restored} missing or damaged result row(s) from Tune's trial logs")
    return grid


def run_callbacks(spec: SweepSpec) -> list:
    """Tune's own loggers and the user's callbacks named in the spec's `run` section."""
    from dfa_ray.tune.loggers import tune_callbacks

    return tune_callbacks(spec.run)


def grid_tune_config(spec: SweepSpec, experiment: str = "") -> Any:
    """A grid experiment's TuneConfig. Actors are reused: the next trial of a slot runs in the
    process of the one before (`reset_config`), skipping a fresh worker's start-up."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from dfa_ray.tune.slots import GatedVariantGenerator, SlotScheduler

    limit = spec.resources.max_concurrent or 0
    return tune.TuneConfig(search_alg=GatedVariantGenerator(max_concurrent=limit, pool=pool_name(spec),
                                                            experiment=experiment),
                           scheduler=SlotScheduler(FIFOScheduler(), pool_name(spec), experiment),
                           reuse_actors=True, trial_dirname_creator=trial_dirname)


def search_tune_config(spec: SweepSpec, experiment: str = "") -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from dfa_ray.spec import first_rung
    from dfa_ray.tune.schedulers import SynchronousHalving
    from dfa_ray.tune.slots import GatedLimiter, GatedVariantGenerator, SlotScheduler

    s = spec.search
    grace = first_rung(spec)
    limit = spec.resources.max_concurrent
    if s.scheduler.type == "asha":
        scheduler: Any = ASHAScheduler(time_attr="training_iteration", max_t=s.epochs, grace_period=grace,
                                       reduction_factor=s.scheduler.reduction_factor)
    elif s.scheduler.type == "sha":
        # every trial must exist for a rung to be decided, and paused trials must not hold a
        # slot: the generator creates trials as slots free up and a paused trial gives its
        # slot back (dfa_ray.tune.slots), so the whole-sweep limit also holds for SHA
        scheduler = SynchronousHalving(max_t=s.epochs, grace_period=grace,
                                       reduction_factor=s.scheduler.reduction_factor,
                                       num_trials=search_trial_count(spec))
        limit = None
    else:
        scheduler = FIFOScheduler()
    pool = pool_name(spec)
    if s.searcher == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        search_alg: Any = GatedLimiter(OptunaSearch(sampler=optuna.samplers.TPESampler(seed=s.seed)),
                                       max_concurrent=spec.resources.max_concurrent or search_trial_count(spec),
                                       pool=pool, experiment=experiment)
    else:
        # A SearchAlgorithm, not a Searcher: Tune ignores max_concurrent_trials for it (with a
        # warning), so the limit goes to the generator itself.
        search_alg = GatedVariantGenerator(random_state=s.seed, max_concurrent=limit or 0, pool=pool,
                                           experiment=experiment)
    return tune.TuneConfig(metric=s.metric, mode=s.mode, scheduler=SlotScheduler(scheduler, pool, experiment),
                           search_alg=search_alg, num_samples=s.num_samples, reuse_actors=True,
                           trial_dirname_creator=trial_dirname)


def with_data(cls: type, data: Dataset, spec: SweepSpec) -> Any:
    """The trainable with the dataset in the object store (once) and the spec's resources."""
    from ray import tune

    return tune.with_resources(tune.with_parameters(cls, data=data), resources(spec))


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


# -- the graph's nodes ----------------------------------------------------------------------------
class SweepGraph:
    """The nodes of one sweep, each a closure over the spec, the dataset and the outcome."""

    def __init__(self, spec: SweepSpec, data: Dataset, trainables: Trainables, log: Logger,
                 callbacks: list | None, outcome: SweepOutcome, transferred: dict[str, dict] | None,
                 order: str = "graph") -> None:
        self.spec, self.data, self.trainables, self.log, self.order = spec, data, trainables, log, order
        self.callbacks, self.outcome, self.transferred = callbacks, outcome, transferred
        self.priorities = node_priorities(spec, CostModel.load())
        self.store = TeacherStore(spec.teacher_store)
        # each stage's trainable wrapped once: `with_parameters` puts the dataset into the object
        # store at every call, and every experiment of a stage can share one copy
        self._wrapped: dict[type, Any] = {}
        self._wrap_lock = threading.Lock()

    def _trainable(self, cls: type) -> Any:
        from ray import tune

        with self._wrap_lock:
            if cls not in self._wrapped:
                # a trainable that declares `takes_data = False` (a test double) is not handed
                # the dataset, so its workers need not import what unpickling it needs (torch)
                self._wrapped[cls] = (with_data(cls, self.data, self.spec) if getattr(cls, "takes_data", True)
                                      else tune.with_resources(cls, resources(self.spec)))
            return self._wrapped[cls]

    def _fit(self, node_id: str, experiment: str, cls: type, space: dict[str, Any], tune_config: Any) -> Any:
        from dfa_ray.tune.slots import experiment_slots

        # the node's bottom level: the head of the longest chain of work gets free slots first
        with experiment_slots(pool_name(self.spec), experiment, self.priorities.get(node_id, 0.0)):
            grid = fit_experiment(self.spec, experiment, self._trainable(cls), space, tune_config,
                                  self.log, self.callbacks)
        self.outcome.grids[node_id] = grid
        return grid

    def nodes(self) -> list[Node]:
        spec = self.spec
        folders, jobs = teacher_jobs(spec, self.data)
        self.outcome.teachers = dict(folders)
        pending = {job.model: job for job in jobs}
        out: list[Node] = []
        for model in spec.teacher_names:
            if model in pending:
                out.append(Node(f"teacher:{model}", self._teacher_node(pending[model])))
            else:
                self.log(f"[sweep] teacher {model}: taken from the store ({folders[model]})")
                out.append(Node(f"teacher:{model}", lambda _inputs, folder=folders[model]: folder))
        for pair in spec.pairs:
            teacher_id = f"teacher:{pair.teacher}"
            searched = self.transferred is None and spec.search.enabled
            if searched:
                out.append(Node(f"search:{pair.name}", self._search_node(pair), (teacher_id,)))
            if not spec.distill.enabled:
                continue
            baselines = [m for m in spec.distill.methods if not is_dfa(m)]
            dfa = [m for m in spec.distill.methods if is_dfa(m)]
            if baselines:
                out.append(Node(f"distill:{pair.name}", self._distill_node(pair, baselines, teacher_id, None),
                                (teacher_id,)))
            if dfa and (searched or self.transferred is not None):
                deps = (teacher_id, f"search:{pair.name}") if searched else (teacher_id,)
                out.append(Node(f"distill-dfa:{pair.name}",
                                self._distill_node(pair, dfa, teacher_id, f"search:{pair.name}" if searched else None),
                                deps))
            elif dfa:
                self.outcome.skipped.append(f"{pair.name} {', '.join(dfa)}: search is disabled and no "
                                            "distill.genotype_from is given")
        return barrier_order(out) if self.order == "barriers" else out

    def _teacher_node(self, job: Any) -> Callable[[Mapping[str, Any]], Path]:
        def run(_inputs: Mapping[str, Any]) -> Path:
            from ray import tune

            self.log(f"[sweep] training teacher {job.model}")
            self._fit(f"teacher:{job.model}", f"teacher-{safe_name(job.model)}", self.trainables.teacher,
                      param_space([job], tune.grid_search), grid_tune_config(self.spec, f"teacher-{job.model}"))
            if not self.store.finished(job.store_dir):
                raise NodeFailed(f"teacher {job.model} did not finish training; see the errored trial under "
                                 f"{self.spec.sweep_dir / 'tune' / ('teacher-' + safe_name(job.model))}")
            return Path(job.store_dir)
        return run

    def _search_node(self, pair: PairSpec) -> Callable[[Mapping[str, Any]], dict]:
        def run(inputs: Mapping[str, Any]) -> dict:
            spec = self.spec
            experiment = f"search-{pair.dir_name}"
            self.log(f"[sweep] searching {pair.name}: {search_trial_count(spec)} trial(s) x {spec.search.epochs} "
                     f"epochs, {spec.search.scheduler.type}, searcher {spec.search.searcher}")
            grid = self._fit(f"search:{pair.name}", experiment, self.trainables.search,
                             search_config(spec, pair, inputs[f"teacher:{pair.teacher}"]),
                             search_tune_config(spec, experiment))
            best = best_genotype(grid, spec.search.epochs)
            if best is None:
                raise NodeFailed(f"no search trial of {pair.name} finished")
            atomic_write_json(spec.sweep_dir / "genotypes" / f"{pair.dir_name}.json", best)
            self.outcome.genotypes[pair.name] = best
            weights = " | ".join(" ".join(f"{w:.2f}" for w in g["weights"]) for g in best["groups"])
            self.log(f"[sweep] {pair.name}: best search trial {best.get('trial_id')}, alpha [{weights}]")
            return best
        return run

    def _distill_node(self, pair: PairSpec, methods: list[str], teacher_id: str,
                      search_id: str | None) -> Callable[[Mapping[str, Any]], Any]:
        def run(inputs: Mapping[str, Any]) -> Any:
            from ray import tune

            genotype = inputs[search_id] if search_id else (self.transferred or {}).get(pair.name)
            jobs = distill_trials(self.spec, pair, inputs[teacher_id], methods, genotype)
            trials = group_trials(self.spec, jobs)
            grouped = any(isinstance(t, GroupTrial) for t in trials)
            kind = "distill-dfa" if search_id or any(is_dfa(m) for m in methods) else "distill"
            experiment = f"{kind}-{pair.dir_name}"
            sizes = sorted({len(t.members) for t in trials if isinstance(t, GroupTrial)}, reverse=True)
            how = (f"{len(trials)} shared-teacher group trial(s) of {' or '.join(map(str, sizes))} methods" if grouped
                   else f"{len(trials)} trial(s)")
            self.log(f"[sweep] distilling {pair.name}: {how} = {', '.join(methods)} x "
                     f"{len(self.spec.distill.seeds)} seed(s)")
            cls = self.trainables.group if grouped else self.trainables.distill
            return self._fit(f"{kind}:{pair.name}", experiment, cls,
                             param_space(trials, tune.grid_search), grid_tune_config(self.spec, experiment))
        return run


def barrier_order(nodes: list[Node]) -> list[Node]:
    """The same nodes in the order of the earlier, barrier-driven sweep: every teacher first,
    then one pair's search after the other, then every distillation. Kept to measure what the
    graph gains (benchmarks/cluster_schedule.py), not as a way to run studies."""
    teachers = [n.id for n in nodes if n.id.startswith("teacher:")]
    searches = [n.id for n in nodes if n.id.startswith("search:")]
    out = []
    for n in nodes:
        extra: tuple[str, ...] = ()
        if n.id.startswith("search:"):
            i = searches.index(n.id)
            extra = tuple(teachers) + ((searches[i - 1],) if i else ())
        elif n.id.startswith("distill"):
            extra = tuple(teachers) + tuple(searches)
        deps = tuple(dict.fromkeys(n.depends_on + extra))
        out.append(Node(n.id, n.run, deps))
    return out


# -- the whole sweep -----------------------------------------------------------------------------
def run_sweep(spec: SweepSpec, address: str | None = None, log: Logger = print_line,
              ray_init: dict[str, Any] | None = None, callbacks: list | None = None,
              trainables: Trainables | None = None, order: str = "graph") -> SweepOutcome:
    """Run (or resume) the sweep; returns where everything is, with every experiment's
    ResultGrid (`outcome.grids`, by node id). `callbacks`: extra Tune callbacks for every
    experiment (monitoring, fault injection in tests); `trainables`: the stages' Trainable
    classes (default: the real ones); `order`: "graph" (every node as soon as it can run) or
    "barriers" (the earlier stage-by-stage order, for comparison)."""
    from dfa_ray.tune.slots import close_pool, open_pool

    start = time.perf_counter()
    log = log if isinstance(log, _PicklableLog) else _PicklableLog(log)
    check_storage(spec.storage)
    check_storage(spec.sweep_dir)
    atomic_write_json(spec.sweep_dir / "spec.json", spec.to_dict())
    # a transferred genotype is checked before any compute is spent
    transferred = transferred_genotypes(spec, log) if spec.distill.genotype_from is not None else None
    data = load_dataset(spec.data.name, root=spec.data.root, **dict(spec.data.options))
    connect(address, ray_init)
    from dfa_ray.tune import registry_lock

    registry_lock.install()  # the graph starts experiments from several threads at once
    outcome = SweepOutcome(spec.sweep_dir)
    if transferred is not None:
        outcome.genotypes = dict(transferred)
    log(f"[sweep] {spec.name}: {len(spec.pairs)} pair(s) on {data.info.name}, storage {spec.storage}")
    if order not in ("graph", "barriers"):
        raise ValueError(f"order must be 'graph' or 'barriers', not {order!r}")
    import ray

    too_big = trial_fits_no_node(spec.resources, ray.nodes())
    if too_big is not None:
        log(f"[sweep] warning: {too_big}")
    graph = SweepGraph(spec, data, trainables or Trainables.default(), log, callbacks, outcome, transferred, order)
    pool = open_pool(pool_name(spec), slot_limit(spec))
    finished = threading.Event()

    def refresh_limit() -> None:
        while not finished.wait(SLOT_REFRESH_S):
            try:
                pool.set_limit(slot_limit(spec))
            except Exception:  # noqa: BLE001  (a GCS hiccup: keep the last limit, try again)
                continue

    if spec.resources.max_concurrent is None:  # a given limit stays; the cluster's capacity changes
        threading.Thread(target=refresh_limit, name="dfa-ray-slot-limit", daemon=True).start()
    try:
        outcome.graph = run_graph(graph.nodes(), log)
    finally:
        finished.set()
        close_pool(pool_name(spec))
    for node in outcome.graph.with_status("failed"):
        outcome.failed.append(f"{node.id}: {node.reason}")
    for node in outcome.graph.with_status("skipped"):
        outcome.skipped.append(f"{node.id}: {node.reason}")
    for note in outcome.failed:
        log(f"[sweep] failed: {note}")
    for note in outcome.skipped:
        log(f"[sweep] skipped: {note}")
    log(f"[sweep] done in {time.perf_counter() - start:.0f} s; results in {outcome.results_dir}")
    return outcome
