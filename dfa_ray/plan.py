"""What a sweep will cost before it runs: its dependency graph, trials and epochs per node, and
an estimate of its GPU-hours and wall time on N GPUs (`dfa-ray plan SPEC`).

Why: a CIFAR sweep is hundreds of GPU-hours; a spec whose search has 8x the trials meant, or
whose scheduler prunes nothing, should be caught by reading numbers, not by a cluster bill.
Nothing here starts Ray or reads data: the counts come from the spec alone, the seconds from
a cost model of measured step times (`dfa_ray.cost_model`).

The graph, with the node names the sweep uses:
- `teacher:<model>`: one per teacher of the pairs; a teacher trial runs the teacher recipe's
  epochs; a teacher named by `teachers.from` (imported, or a folder) is a node of 0 trials.
  (A teacher already in the store is counted as trained: finding it needs the dataset.)
- `search:<pair>` <- its teacher: `search_trial_count(spec)` trials, pruned by the scheduler:
  `sha` exactly as `dfa_ray.tune.schedulers.SynchronousHalving` (Tune's bracket: rungs from
  `first_rung(spec)`, times the reduction factor, truncated to whole epochs, keeping
  ceil(n / eta) of the bracket's n at each rung); `asha`: the same counts, *expected* (which
  trials ASHA promotes depends on timing); `fifo`: every trial runs every epoch. No search node
  when the search is disabled or `distill.genotype_from` gives the genotypes.
- `distill:<pair>` <- its teacher: the baselines (every method but `dfa` and `dfa:<ref>`).
- `distill-dfa:<pair>` <- its search node (its teacher when there is none): `dfa` and the
  reference aggregations, whose options are inherited from the search.
A distillation job is (method, seed) and runs the distillation recipe's epochs (plus the init
stage of AB, FT and FSP); with `distill.share_teacher` a trial is one (pair, seed) group that
trains all its methods together (one teacher forward per batch for the group).

The wall time is a list-scheduling simulation over the graph (`simulate`), and a lower bound
no schedule can beat (`lower_bound`): both are plain functions of `SimNode`s, so a scheduling
benchmark can use them on graphs of its own.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Sequence

from dfa_ray.cost_model import CostModel, DatasetSize, dataset_size, split_sizes
from dfa_ray.errors import ConfigError

STAGES = ("teacher", "search", "distill", "distill-dfa")
_EPS = 1e-9


# =============================================================================================
# the simulation: plain data in, plain data out
# =============================================================================================
@dataclass(frozen=True)
class SimNode:
    """One node of a graph to schedule. `phases` are barrier-separated: every trial of phase k
    must end before any of phase k + 1 starts (a synchronous-halving rung); each phase lists
    the seconds of each of its trials. `gpu`: devices per trial (a fraction shares one device;
    0 is a CPU trial, which takes one device slot)."""

    id: str
    depends_on: tuple[str, ...]
    phases: tuple[tuple[float, ...], ...]
    gpu: float = 1.0

    @property
    def demand(self) -> float:
        return self.gpu if self.gpu > 0 else 1.0

    @property
    def length(self) -> float:
        """Seconds from its start to its end with unlimited devices: each phase's longest trial."""
        return sum(max(p) for p in self.phases if p)

    @property
    def device_seconds(self) -> float:
        return sum(sum(p) for p in self.phases) * self.demand

    @property
    def trial_seconds(self) -> float:
        return sum(sum(p) for p in self.phases)


@dataclass(frozen=True)
class ScheduledTrial:
    node: str
    phase: int
    index: int
    start: float
    end: float
    devices: tuple[int, ...]


@dataclass(frozen=True)
class Schedule:
    makespan: float
    trials: tuple[ScheduledTrial, ...]
    node_end: dict[str, float]


@dataclass(frozen=True)
class LowerBound:
    """max of: device-seconds / devices; the critical path (the longest chain of node lengths);
    trial-seconds / max_concurrent when the running trials are capped."""

    device_bound: float
    critical_path: float
    concurrency_bound: float
    value: float


def _order(nodes: Sequence[SimNode]) -> list[SimNode]:
    """`nodes` in a dependency order (stable: the given order where dependencies allow);
    ConfigError for an unknown dependency, a duplicate id or a cycle."""
    by_id: dict[str, SimNode] = {}
    for n in nodes:
        if n.id in by_id:
            raise ConfigError(f"graph: node {n.id!r} appears twice")
        by_id[n.id] = n
    for n in nodes:
        for d in n.depends_on:
            if d not in by_id:
                raise ConfigError(f"graph: node {n.id!r} depends on {d!r}, which is not a node")
    done: set[str] = set()
    out: list[SimNode] = []
    pending = list(nodes)
    while pending:
        ready = [n for n in pending if all(d in done for d in n.depends_on)]
        if not ready:
            raise ConfigError(f"graph: the dependencies of {', '.join(n.id for n in pending)} form a cycle")
        first = ready[0]
        out.append(first)
        done.add(first.id)
        pending.remove(first)
    return out


def critical_path(nodes: Sequence[SimNode]) -> float:
    """The longest chain of node lengths through the dependencies (unlimited devices)."""
    finish: dict[str, float] = {}
    for n in _order(nodes):
        finish[n.id] = max((finish[d] for d in n.depends_on), default=0.0) + n.length
    return max(finish.values(), default=0.0)


def _bottom_levels(nodes: Sequence[SimNode]) -> dict[str, float]:
    """Each node's length plus its longest chain of successors: the list-scheduling priority."""
    succ: dict[str, list[str]] = {n.id: [] for n in nodes}
    for n in nodes:
        for d in n.depends_on:
            succ[d].append(n.id)
    level: dict[str, float] = {}
    by_id = {n.id: n for n in nodes}
    for n in reversed(_order(nodes)):
        level[n.id] = by_id[n.id].length + max((level[s] for s in succ[n.id]), default=0.0)
    return level


def lower_bound(nodes: Sequence[SimNode], devices: int, max_concurrent: int | None = None) -> LowerBound:
    """No schedule of `nodes` on `devices` devices (and at most `max_concurrent` running
    trials) ends before this."""
    _check_devices(nodes, devices)
    device_bound = sum(n.device_seconds for n in nodes) / devices
    path = critical_path(nodes)
    concurrency = sum(n.trial_seconds for n in nodes) / max_concurrent if max_concurrent else 0.0
    return LowerBound(device_bound, path, concurrency, max(device_bound, path, concurrency))


def _check_devices(nodes: Sequence[SimNode], devices: int) -> None:
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ConfigError(f"--gpus {devices!r}: give a whole number of devices >= 1")
    for n in nodes:
        if n.demand > devices + _EPS and any(n.phases):
            raise ConfigError(f"--gpus {devices}: a trial of {n.id} needs {n.demand:g} GPUs (resources.gpu); "
                              f"plan with --gpus {math.ceil(n.demand)} or more")


def simulate(nodes: Sequence[SimNode], devices: int, max_concurrent: int | None = None) -> Schedule:
    """List scheduling of the trials of `nodes` on `devices` devices.

    A node's first phase becomes ready when all its dependencies have ended; its next phase
    when every trial of the one before has ended. Whenever a trial ends (and at time 0), the
    ready trials are visited in priority order (the node's bottom level, i.e. the longest
    chain of work from it to the end of the graph, highest first; then the node's place in
    `nodes`; then the longer trial; then its index) and each one that fits is started: fewer
    than `max_concurrent` trials running, and a device with `demand` capacity free (a fraction
    goes to the lowest-numbered device where it fits; whole GPUs take the lowest-numbered
    free devices). A trial that does not fit does not block a later one that does.
    """
    _check_devices(nodes, devices)
    ordered = _order(nodes)
    place = {n.id: i for i, n in enumerate(nodes)}
    level = _bottom_levels(nodes)
    by_id = {n.id: n for n in nodes}
    succ: dict[str, list[str]] = {n.id: [] for n in nodes}
    for n in ordered:
        for d in dict.fromkeys(n.depends_on):  # a dependency named twice is still one
            succ[d].append(n.id)
    free = [1.0] * devices
    waiting = {n.id: len(set(n.depends_on)) for n in nodes}
    left_in_phase: dict[str, int] = {}
    phase_of: dict[str, int] = {}
    node_end: dict[str, float] = {}
    ready: list[tuple[tuple[float, int, float, int], str, int, int, float]] = []
    running: list[tuple[float, int, str, int, int, tuple[int, ...], float]] = []
    done: list[ScheduledTrial] = []
    seq = 0

    def open_phase(node_id: str, phase: int, now: float) -> None:
        n = by_id[node_id]
        # empty phases (a node of 0 trials) end at once
        while phase < len(n.phases) and not n.phases[phase]:
            phase += 1
        if phase >= len(n.phases):
            finish_node(node_id, now)
            return
        phase_of[node_id] = phase
        left_in_phase[node_id] = len(n.phases[phase])
        for i, seconds in enumerate(n.phases[phase]):
            key = (-level[node_id], place[node_id], -seconds, i)
            ready.append((key, node_id, phase, i, seconds))
        ready.sort()

    def finish_node(node_id: str, now: float) -> None:
        node_end[node_id] = now
        for s in succ[node_id]:
            waiting[s] -= 1
            if waiting[s] == 0:
                open_phase(s, 0, now)

    def fit(demand: float) -> tuple[int, ...] | None:
        if demand <= 1.0 + _EPS:
            for d, capacity in enumerate(free):
                if capacity + _EPS >= demand:
                    return (d,)
            return None
        whole = [d for d, capacity in enumerate(free) if capacity >= 1.0 - _EPS]
        need = int(round(demand))
        return tuple(whole[:need]) if len(whole) >= need else None

    now = 0.0
    for n in ordered:
        if waiting[n.id] == 0 and n.id not in phase_of and n.id not in node_end:
            open_phase(n.id, 0, now)
    while ready or running:
        started = []
        for item in ready:
            if max_concurrent is not None and len(running) >= max_concurrent:
                break
            _, node_id, phase, index, seconds = item
            demand = by_id[node_id].demand
            where = fit(demand)
            if where is None:
                continue
            for d in where:
                free[d] -= demand if demand <= 1.0 else 1.0
            heapq.heappush(running, (now + seconds, seq, node_id, phase, index, where, now))
            seq += 1
            started.append(item)
        for item in started:
            ready.remove(item)
        if not running:
            raise AssertionError("simulate: ready trials that fit nowhere")  # excluded by _check_devices
        end = running[0][0]
        now = end
        # every trial ending now frees its devices before anything new is placed
        while running and running[0][0] <= now + _EPS:
            t_end, _, node_id, phase, index, where, t_start = heapq.heappop(running)
            demand = by_id[node_id].demand
            for d in where:
                free[d] = min(1.0, free[d] + (demand if demand <= 1.0 else 1.0))
            done.append(ScheduledTrial(node_id, phase, index, t_start, t_end, where))
            left_in_phase[node_id] -= 1
            if left_in_phase[node_id] == 0:
                open_phase(node_id, phase + 1, now)
    missing = [n.id for n in nodes if n.id not in node_end]
    if missing:  # pragma: no cover - every node is reachable in a valid order
        raise AssertionError(f"simulate: nodes never ran: {missing}")
    return Schedule(makespan=max(node_end.values(), default=0.0), trials=tuple(done), node_end=node_end)


# =============================================================================================
# the plan of a spec
# =============================================================================================
@dataclass(frozen=True)
class PlanNode:
    """One node of the sweep's graph. `epochs_per_trial`: one entry per trial (a pruned search
    lists each trial's epochs, longest first); `epochs_per_job` likewise per (method, seed) job
    (the same as per trial unless share_teacher groups jobs into trials); `total_epochs` is the
    sum over jobs. Seconds are None when the cost model lacks a model of the node."""

    id: str
    stage: str
    pair: str | None
    teacher: str
    student: str | None
    depends_on: tuple[str, ...]
    trials: int
    jobs: int
    epochs_per_trial: tuple[int, ...]
    epochs_per_job: tuple[int, ...]
    total_epochs: int
    gpu_per_trial: float
    methods: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    exact: bool = True  # False: expected counts (ASHA)
    source: str = ""  # how the node's trials come about (the scheduler, a teacher's origin)
    rungs: tuple[int, ...] = ()  # a pruned search's decision epochs
    trial_seconds: tuple[float, ...] | None = None
    phases: tuple[tuple[float, ...], ...] | None = None  # for the simulation
    est_seconds: float | None = None  # the node's trials' seconds, summed (each on a whole device)
    device_seconds: float | None = None  # est_seconds x devices per trial

    def sim_node(self) -> SimNode:
        assert self.phases is not None
        return SimNode(self.id, self.depends_on, self.phases, self.gpu_per_trial)


@dataclass(frozen=True)
class StageTotals:
    stage: str
    nodes: int
    trials: int
    jobs: int
    epochs: int
    device_seconds: float | None


@dataclass(frozen=True)
class WallEstimate:
    gpus: int
    simulated_s: float
    lower_bound_s: float
    device_bound_s: float
    critical_path_s: float
    concurrency_bound_s: float
    max_concurrent: int | None


@dataclass(frozen=True)
class CostSource:
    path: str | None
    describe: str
    machine: dict[str, Any]
    device: str
    torch: str
    batch_size: int
    image_size: int
    date: str
    note: str
    search_factor_source: str


@dataclass(frozen=True)
class Plan:
    sweep: str
    dataset: str
    dataset_size: DatasetSize
    share_teacher: bool
    nodes: tuple[PlanNode, ...]
    stages: tuple[StageTotals, ...]
    trials: int
    jobs: int
    epochs: int
    gpu_hours: float | None
    wall: WallEstimate | None
    cost_model: CostSource
    missing_costs: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    group_sizes: "GroupSizeAdvice | None" = None

    def node(self, node_id: str) -> PlanNode:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (counts as numbers); the phases are left out (the simulation's input)."""
        out = asdict(self)
        for n in out["nodes"]:
            n.pop("phases", None)
        return out


@dataclass(frozen=True)
class GroupSizeOption:
    group_size: int | None  # None: one group per (pair, seed)
    simulated_s: float
    gpu_hours: float
    trials: int


@dataclass(frozen=True)
class GroupSizeAdvice:
    """`distill.group_size` on `gpus` devices: each size's simulated wall time, and the best.
    Bigger groups share the teacher's forward among more students (fewer GPU-hours) but make
    longer trials; on a big cluster the longest group can become the study's critical path."""

    gpus: int
    best: int | None
    options: tuple[GroupSizeOption, ...]


# -- search pruning ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Halving:
    """A synchronous-halving search: the decision epochs, each trial's epochs (longest first),
    and the barrier-separated segments [(trials running, epochs each)]."""

    rungs: tuple[int, ...]
    epochs_per_trial: tuple[int, ...]
    segments: tuple[tuple[int, int], ...]


def halvings(max_t: int, grace_period: int, reduction_factor: float) -> int:
    """The rungs' count, as `dfa_ray.tune.schedulers.halvings` (that module imports Ray):
    k with grace * eta^k < max_t."""
    k = 0
    while grace_period * reduction_factor**k < max_t:
        k += 1
    return k


def synchronous_halving(num_trials: int, max_t: int, grace_period: int, reduction_factor: float) -> Halving:
    """What SynchronousHalving does to `num_trials` trials, read off Tune's `_Bracket` (Ray
    2.60): all trials run to r = grace; at each of the `halvings` rungs the bracket's size n
    becomes ceil(n / eta) (n starts at num_trials), r becomes int(min(r * eta, max_t)), and the
    best n of the live trials continue to r; after the last rung the bracket is finished and
    its trials stop where they are. A trial also ends on its own at max_t."""
    n, r, halves = num_trials, min(grace_period, max_t), halvings(max_t, grace_period, reduction_factor)
    live, at = num_trials, 0
    epochs: list[int] = []
    rungs: list[int] = []
    segments: list[tuple[int, int]] = []
    while True:
        segments.append((live, r - at))
        at = r
        if halves == 0 or r >= max_t:
            epochs += [r] * live
            break
        rungs.append(r)
        halves -= 1
        n = int(math.ceil(n / reduction_factor))
        r = int(min(r * reduction_factor, max_t))
        keep = min(n, live)
        epochs += [at] * (live - keep)
        live = keep
    return Halving(tuple(rungs), tuple(sorted(epochs, reverse=True)), tuple(s for s in segments if s[0] and s[1]))


# -- the spec's numbers ------------------------------------------------------------------------
def _values(spec: Any, key: str, default: Any) -> list[Any]:
    """The values a search option can take in this spec: the space's choices/grid, its fixed
    value, else the default (a continuous range gives its endpoints)."""
    space = spec.search.space.get(key)
    if space is not None:
        return list(space.values)
    return [spec.search.options.get(key, default)]


def _init_epochs(method: str, options: dict[str, Any], epochs: int) -> int:
    """Epochs of the init stage a method's trial runs before its main phase (AB, FT, FSP)."""
    from dfa_ray.engine.methods import METHODS
    from dfa_ray.engine.methods.learned import INIT_EPOCHS_AT_240, WithInitStage
    from dfa_ray.losses_part2 import scaled_epochs

    cls = METHODS.get(method.partition(":")[0])
    if not (isinstance(cls, type) and issubclass(cls, WithInitStage)):
        return 0
    asked = options.get("init_epochs")
    return scaled_epochs(INIT_EPOCHS_AT_240, epochs) if asked is None else int(asked)


def _uses_teacher(method: str) -> bool:
    # vanilla is the only method without a teacher forward (cross-entropy alone)
    return method != "vanilla"


def _is_dfa(method: str) -> bool:
    return method.partition(":")[0] == "dfa"


@dataclass
class _Costs:
    """Seconds per epoch of each stage from the cost model (None where a model is missing)."""

    model: CostModel
    size: DatasetSize
    missing: set[str] = field(default_factory=set)

    def _get(self, name: str):
        cost = self.model.cost(name)
        if cost is None:
            self.missing.add(name)
        return cost

    @property
    def scale(self) -> float:
        return self.model.area_scale(self.size.image_size)

    def teacher_epoch(self, teacher: str, holdout: float) -> float | None:
        t = self._get(teacher)
        if t is None:
            return None
        kept, held = split_sizes(self.size, holdout)
        return (kept * t.train_s_per_image + held * t.forward_s_per_image) * self.scale

    def search_epoch(self, teacher: str, student: str, factor: float, arch_fraction: float) -> float | None:
        t, s = self._get(teacher), self._get(student)
        if t is None or s is None:
            return None
        weights, arch = split_sizes(self.size, arch_fraction)
        step = factor * (s.train_s_per_image + t.forward_s_per_image)
        return (weights * step + arch * s.forward_s_per_image) * self.scale

    def distill_epoch(self, teacher: str, student: str, holdout: float, teacher_forward: bool,
                      student_train: int = 1) -> float | None:
        """One epoch of `student_train` students trained on one teacher forward per batch."""
        t, s = self._get(teacher), self._get(student)
        if s is None or (teacher_forward and t is None):
            return None
        kept, held = split_sizes(self.size, holdout)
        step = student_train * s.train_s_per_image + (t.forward_s_per_image if teacher_forward else 0.0)
        return (kept * step + student_train * held * s.forward_s_per_image) * self.scale


def _teacher_sources(spec: Any) -> dict[str, str]:
    """model -> 'imported' or 'folder <path>' for the teachers `teachers.from` names."""
    source = spec.teachers.from_
    if source == "imported":
        return {m: "imported" for m in spec.teacher_names}
    if isinstance(source, dict):
        return {m: f"folder {f}" for m, f in source.items() if m in spec.teacher_names}
    return {}


def build_plan(spec: Any, cost_model: CostModel, gpus: int = 1, advise: bool = True,
               teachers_ready: bool = False) -> Plan:
    """The graph of `spec` with its counts and cost estimates on `gpus` devices (and, with
    `advise` and share_teacher, the wall time of each `distill.group_size`). `teachers_ready`:
    every teacher is in the teacher store already and costs nothing."""
    from dfa_ray.engine.recipes import get_recipe
    from dfa_ray.spec import first_rung

    size = dataset_size(spec.data.name, spec.data.options)
    costs = _Costs(cost_model, size)
    gpu = float(spec.resources.gpu)
    share = bool(getattr(spec.distill, "share_teacher", False))
    notes: list[str] = []
    nodes: list[PlanNode] = []

    # teachers
    t_recipe = get_recipe(spec.protocol, spec.teacher_recipe_overrides())
    taken = _teacher_sources(spec)
    if teachers_ready:
        taken = {model: taken.get(model, "in the teacher store (teachers ready)") for model in spec.teacher_names}
    for model in spec.teacher_names:
        if model in taken:
            nodes.append(PlanNode(f"teacher:{model}", "teacher", None, model, None, (), 0, 0, (), (), 0, gpu,
                                  source=taken[model], trial_seconds=(), phases=(), est_seconds=0.0,
                                  device_seconds=0.0))
            continue
        per_epoch = costs.teacher_epoch(model, t_recipe.holdout_fraction)
        secs = None if per_epoch is None else per_epoch * t_recipe.epochs
        nodes.append(_node(f"teacher:{model}", "teacher", None, model, None, (), (t_recipe.epochs,),
                           (t_recipe.epochs,), gpu, None if secs is None else (secs,),
                           None if secs is None else ((secs,),), source="trained (recipe "
                           f"{t_recipe.name}, {t_recipe.epochs} epochs)"))
    if any(model not in taken for model in spec.teacher_names):  # (never with teachers_ready)
        notes.append("a teacher already in the storage's teacher store is not trained again; the plan counts it "
                     "as trained (finding it needs the dataset)")

    # searches
    s = spec.search
    searching = s.enabled and spec.distill.genotype_from is None
    d_recipe = get_recipe(spec.protocol, spec.distill_recipe_overrides())
    if searching:
        from dfa_ray.dfa.options import SearchOptions

        base = SearchOptions()
        n_trials = _search_trials(spec)
        factors = [cost_model.search.factor(int(o), str(sc))
                   for o in _values(spec, "order", base.order) for sc in _values(spec, "schedule", base.schedule)]
        factor = sum(factors) / len(factors)
        arch_fraction = sum(float(v) for v in _values(spec, "arch_fraction", base.arch_fraction)) / \
            len(_values(spec, "arch_fraction", base.arch_fraction))
        kind = s.scheduler.type
        if kind == "fifo":
            halving = Halving((), (s.epochs,) * n_trials, ((n_trials, s.epochs),))
            source = "fifo: every trial runs every epoch"
        else:
            grace = first_rung(spec)
            halving = synchronous_halving(n_trials, s.epochs, grace, s.scheduler.reduction_factor)
            rungs = ", ".join(str(r) for r in halving.rungs) or "none"
            source = (f"{kind}: rungs at epoch {rungs} (grace {grace}, reduction factor "
                      f"{s.scheduler.reduction_factor:g})" + ("; ASHA's counts are expected, not exact: which trials "
                                                              "it promotes depends on timing" if kind == "asha" else ""))
    for pair in spec.pairs:
        teacher_id = f"teacher:{pair.teacher}"
        search_id = None
        if searching:
            search_id = f"search:{pair.name}"
            per_epoch = costs.search_epoch(pair.teacher, pair.student, factor, arch_fraction)
            trial_secs = None if per_epoch is None else tuple(e * per_epoch for e in halving.epochs_per_trial)
            phases = None
            if per_epoch is not None:
                phases = tuple((seg_epochs * per_epoch,) * count for count, seg_epochs in halving.segments)
                if kind != "sha":  # no barrier: each trial is one stretch of its epochs
                    phases = (trial_secs,)
            nodes.append(_node(search_id, "search", pair.name, pair.teacher, pair.student, (teacher_id,),
                               halving.epochs_per_trial, halving.epochs_per_trial, gpu, trial_secs, phases,
                               exact=kind != "asha", source=source, rungs=halving.rungs))
        methods = list(spec.distill.methods) if spec.distill.enabled else []
        for stage, chosen, deps in (
            ("distill", [m for m in methods if not _is_dfa(m)], (teacher_id,)),
            ("distill-dfa", [m for m in methods if _is_dfa(m)], (search_id,) if search_id else (teacher_id,)),
        ):
            if chosen:
                nodes.append(_distill_node(spec, stage, pair, chosen, deps, d_recipe.epochs, d_recipe.holdout_fraction,
                                           costs, gpu))
    if spec.distill.genotype_from is not None:
        notes.append("the dfa genotypes come from distill.genotype_from: no search node")

    plan = _assemble(spec, nodes, costs, cost_model, size, share, gpus, notes)
    if advise and share and plan.wall is not None:
        advice = group_size_advice(spec, cost_model, gpus, teachers_ready)
        if advice is not None:
            plan = replace(plan, group_sizes=advice)
    return plan


GROUP_SIZE_TIE = 0.01  # sizes within 1 % of the fastest count as fast: the biggest of them wins


def group_size_advice(spec: Any, cost_model: CostModel, gpus: int,
                      teachers_ready: bool = False) -> GroupSizeAdvice | None:
    """Plan `spec` with every `distill.group_size` from one method per group to all of a
    node's methods; the best is the one with the shortest simulated wall time (the biggest
    among those within GROUP_SIZE_TIE of it: the fewest GPU-hours). None when no node groups
    two methods or a cost is unknown."""
    baselines = [m for m in spec.distill.methods if not _is_dfa(m)]
    largest = max(len(baselines), len(spec.distill.methods) - len(baselines))
    if not spec.distill.enabled or largest < 2:
        return None
    options = []
    for size in [None, *range(largest - 1, 0, -1)]:
        variant = spec.model_copy(update={"distill": spec.distill.model_copy(update={"group_size": size})})
        plan = build_plan(variant, cost_model, gpus, advise=False, teachers_ready=teachers_ready)
        if plan.wall is None or plan.gpu_hours is None:
            return None
        option = GroupSizeOption(size, plan.wall.simulated_s, plan.gpu_hours, plan.trials)
        if options and size is not None and (option.simulated_s, option.trials) == \
                (options[-1].simulated_s, options[-1].trials) and options[-1].group_size is not None:
            options[-1] = option  # splits every node as the bigger size did: keep the size the groups have
        else:
            options.append(option)
    fastest = min(o.simulated_s for o in options)
    best = next(o for o in options if o.simulated_s <= fastest * (1 + GROUP_SIZE_TIE))  # biggest first
    return GroupSizeAdvice(gpus, best.group_size, tuple(options))


def node_priorities(spec: Any, cost_model: CostModel) -> dict[str, float]:
    """Each node's bottom level (its estimated seconds plus the longest chain of work after it),
    the order in which the sweep hands out slots (dfa_ray.tune.slots). Where the cost model
    lacks a model, every node counts as one unit of work, so a chain's head still goes first."""
    plan = build_plan(spec, cost_model, 1, advise=False)
    if all(n.phases is not None for n in plan.nodes):
        return _bottom_levels([n.sim_node() for n in plan.nodes])
    return _bottom_levels([SimNode(n.id, n.depends_on, ((1.0,),)) for n in plan.nodes])


def _search_trials(spec: Any) -> int:
    return spec.search.trial_count


def _node(node_id: str, stage: str, pair: str | None, teacher: str, student: str | None, deps: tuple[str, ...],
          epochs_per_trial: tuple[int, ...], epochs_per_job: tuple[int, ...], gpu: float,
          trial_seconds: tuple[float, ...] | None, phases: tuple[tuple[float, ...], ...] | None,
          **extra: Any) -> PlanNode:
    est = None if trial_seconds is None else sum(trial_seconds)
    return PlanNode(node_id, stage, pair, teacher, student, deps, len(epochs_per_trial), len(epochs_per_job),
                    epochs_per_trial, epochs_per_job, sum(epochs_per_job), gpu, trial_seconds=trial_seconds,
                    phases=phases, est_seconds=est, device_seconds=None if est is None else est * (gpu or 1.0),
                    **extra)


def _distill_node(spec: Any, stage: str, pair: Any, methods: list[str], deps: tuple[str, ...], epochs: int,
                  holdout: float, costs: _Costs, gpu: float) -> PlanNode:
    seeds = tuple(spec.distill.seeds)
    job_epochs = {m: epochs + _init_epochs(m, dict(spec.distill.options.get(m, {})), epochs) for m in methods}
    per_job: list[int] = []
    trial_epochs: list[int] = []
    trial_secs: list[float] | None = []
    groups = spec.distill.groups_of(methods)  # (one method each without share_teacher)
    student = costs.distill_epoch(pair.teacher, pair.student, holdout, False)
    teacher = costs.distill_epoch(pair.teacher, pair.student, holdout, True)
    for seed in seeds:
        per_job += [job_epochs[m] for m in methods]
        for group in groups:
            # a group trial: every student of the group trains each epoch, the teacher's
            # forward runs once per batch for all of them
            trial_epochs.append(max(job_epochs[m] for m in group))
            if trial_secs is None:
                continue
            uses = [m for m in group if _uses_teacher(m)]
            if student is None or (uses and teacher is None):
                trial_secs = None
                continue
            forward = teacher - student if uses else 0.0  # the teacher's share of one epoch
            trial_secs.append(sum(job_epochs[m] for m in group) * student
                              + (max(job_epochs[m] for m in uses) * forward if uses else 0.0))
    secs = None if trial_secs is None else tuple(trial_secs)
    sizes = sorted({len(g) for g in groups}, reverse=True)
    grouped = (f"; share_teacher: {len(groups)} group trial(s) per seed of {' or '.join(map(str, sizes))} methods"
               if sizes != [1] else "")
    return _node(f"{stage}:{pair.name}", stage, pair.name, pair.teacher, pair.student, deps, tuple(trial_epochs),
                 tuple(per_job), gpu, secs, None if secs is None else (secs,), methods=tuple(methods), seeds=seeds,
                 source=f"{len(methods)} method(s) x {len(seeds)} seed(s){grouped}")


def _assemble(spec: Any, nodes: list[PlanNode], costs: _Costs, cost_model: CostModel, size: DatasetSize,
              share: bool, gpus: int, notes: list[str]) -> Plan:
    stages = []
    for stage in STAGES:
        mine = [n for n in nodes if n.stage == stage]
        if not mine:
            continue
        dev = None if any(n.device_seconds is None for n in mine) else sum(n.device_seconds for n in mine)
        stages.append(StageTotals(stage, len(mine), sum(n.trials for n in mine), sum(n.jobs for n in mine),
                                  sum(n.total_epochs for n in mine), dev))
    known = all(n.phases is not None for n in nodes)
    wall = None
    gpu_hours = None
    if known:
        sim_nodes = [n.sim_node() for n in nodes]
        limit = spec.resources.max_concurrent
        schedule = simulate(sim_nodes, gpus, limit)
        bound = lower_bound(sim_nodes, gpus, limit)
        wall = WallEstimate(gpus, schedule.makespan, bound.value, bound.device_bound, bound.critical_path,
                            bound.concurrency_bound, limit)
        gpu_hours = sum(n.device_seconds or 0.0 for n in nodes) / 3600.0
    else:
        _check_devices([], gpus)
    if costs.scale != 1.0:
        notes.append(f"{size.name} images are {size.image_size}x{size.image_size}: the {cost_model.image_size}x"
                     f"{cost_model.image_size} step times are scaled by the area ({costs.scale:.3f})")
    m = cost_model
    source = CostSource(m.path, m.describe(), m.machine, m.device, m.torch, m.batch_size, m.image_size, m.date,
                        m.note, m.search.source)
    return Plan(spec.name, spec.data.name, size, share, tuple(nodes), tuple(stages),
                sum(n.trials for n in nodes), sum(n.jobs for n in nodes), sum(n.total_epochs for n in nodes),
                gpu_hours, wall, source, tuple(sorted(costs.missing)), tuple(notes))


# -- text ------------------------------------------------------------------------------------
def duration(seconds: float | None) -> str:
    """`3 d 4 h`, `2 h 05 min`, `7 min 30 s`, `12 s`; `?` when unknown."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s >= 86400:
        return f"{s // 86400} d {s % 86400 // 3600} h"
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{seconds:.0f} s" if seconds >= 1 else f"{seconds:.2f} s"


def _epochs_text(values: Iterable[int]) -> str:
    """`4 x 6` or `6 6 2 2` (a pruned search: each trial's epochs)."""
    values = list(values)
    if not values:
        return "-"
    if len(set(values)) == 1:
        return f"{len(values)} x {values[0]}"
    runs: list[str] = []
    for v in sorted(set(values), reverse=True):
        runs.append(f"{values.count(v)} x {v}")
    return " + ".join(runs)


def format_plan(plan: Plan, spec_path: str | None = None) -> str:
    size = plan.dataset_size
    lines = [f"plan of sweep {plan.sweep}" + (f" ({spec_path})" if spec_path else "") +
             f": {plan.dataset} ({size.train:,} training images, {size.image_size}x{size.image_size})"]
    lines.append("graph (node <- dependencies: trials x epochs = epochs; estimated trial-time):")
    width = max(len(n.id) for n in plan.nodes)
    for n in plan.nodes:
        deps = ", ".join(n.depends_on) or "-"
        jobs = f", {n.jobs} jobs" if n.jobs != n.trials else ""
        mark = " (expected)" if not n.exact else ""
        lines.append(f"  {n.id:<{width}}  <- {deps}")
        lines.append(f"  {'':<{width}}     {n.trials} trial(s){jobs}: epochs {_epochs_text(n.epochs_per_trial)} = "
                     f"{n.total_epochs} epochs{mark}; {duration(n.est_seconds)}; {n.source}")
        if n.methods:
            lines.append(f"  {'':<{width}}     methods {' '.join(n.methods)}; seeds {' '.join(map(str, n.seeds))}")
    lines.append("stages:")
    lines.append(f"  {'stage':<12} {'nodes':>5} {'trials':>7} {'jobs':>7} {'epochs':>9} {'device-hours':>13}")
    for st in plan.stages:
        hours = "?" if st.device_seconds is None else f"{st.device_seconds / 3600:.2f}"
        lines.append(f"  {st.stage:<12} {st.nodes:>5} {st.trials:>7} {st.jobs:>7} {st.epochs:>9} {hours:>13}")
    hours = "?" if plan.gpu_hours is None else f"{plan.gpu_hours:.2f}"
    lines.append(f"  {'total':<12} {len(plan.nodes):>5} {plan.trials:>7} {plan.jobs:>7} {plan.epochs:>9} {hours:>13}")
    gpu = plan.nodes[0].gpu_per_trial if plan.nodes else 0.0
    per = f"{gpu:g} GPU per trial" if gpu else "CPU trials (one device slot each)"
    lines.append(f"GPU-hours: {hours} ({per}; device-hours = trial time x devices per trial)")
    w = plan.wall
    if w is None:
        lines.append(f"wall time: unknown: the cost model has no step times for {', '.join(plan.missing_costs)}; "
                     "measure them with `python -m benchmarks.step_costs --models ...` and pass --cost-model")
    else:
        cap = f", at most {w.max_concurrent} trials at once" if w.max_concurrent else ""
        lines.append(f"wall time on {w.gpus} GPU(s){cap}: {duration(w.simulated_s)} (list-scheduling simulation); "
                     f"lower bound {duration(w.lower_bound_s)} (device time / {w.gpus} = {duration(w.device_bound_s)}, "
                     f"critical path {duration(w.critical_path_s)}"
                     + (f", trial time / {w.max_concurrent} = {duration(w.concurrency_bound_s)}" if w.max_concurrent
                        else "") + ")")
    advice = plan.group_sizes
    if advice is not None:
        def size_text(size: int | None) -> str:
            return "null" if size is None else str(size)

        lines.append(f"distill.group_size on {advice.gpus} GPU(s) (methods per shared-teacher trial; simulated wall "
                     f"time, GPU-hours, trials):")
        for o in advice.options:
            mark = "  <- fastest" if o.group_size == advice.best else ""
            lines.append(f"  {size_text(o.group_size):>5}  {duration(o.simulated_s):>14}  {o.gpu_hours:12.2f}  "
                         f"{o.trials:6d}{mark}")
    c = plan.cost_model
    lines.append(f"costs measured on {c.describe} ({c.path}); search factor: {c.search_factor_source}")
    if c.note:
        lines.append(f"  note: {c.note}")
    for note in plan.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)


__all__ = [
    "GroupSizeAdvice", "GroupSizeOption", "Halving", "LowerBound", "Plan", "PlanNode", "Schedule", "ScheduledTrial", "SimNode", "StageTotals",
    "WallEstimate", "build_plan", "critical_path", "duration", "format_plan", "group_size_advice", "halvings", "lower_bound",
    "node_priorities", "simulate",
    "synchronous_halving",
]
