"""A shared-teacher group: several students of one pair, seed and recipe trained side by side,
with ONE frozen-teacher forward per batch serving every member (docs/shared_teacher.md).

Why: a study distils each (pair, seed) with many methods, and every one of those trials runs
the same frozen teacher over the same batches (the training loader's batches are a function
of (seed, epoch) only). For resnet32x4 -> resnet8x4 the teacher forward costs about twice the
student's forward and backward, so most of a stage's compute is that forward, repeated.

What is shared: the teacher, the loaders (one copy of the data on the device) and, per batch,
the teacher forward, computed with the union of what the members' methods need
(`engine.views.TeacherRequest`: logits only when only logit methods train, both feature kinds
in one pass when some want pre-activation maps and some post-ReLU ones, nothing when no member
needs the teacher). What each member keeps: its own `TrainingRun` (student, method modules,
optimiser, LR schedule, init stage, history, best-validation weights, evaluation, test), its
own RNG states (python / numpy / torch, swapped in around all of its work, so its random
draws are exactly those of a separate run), its own non-finite-loss ending, and its own part
of the group's state.

Phases. AB, FT and FSP start with an init stage whose epochs draw the loader's epochs -1, -2,
...; main epochs draw 0, 1, .... The group walks one timeline of *ticks*: tick i < N (N the
longest init stage of the group) draws epoch -1-i and trains the members whose init stage has
more than i epochs; tick N + e draws epoch e and trains every member's main epoch e. So every
batch stream is drawn, and its teacher forward computed, once; a member with a shorter (or
no) init stage simply waits during the ticks it has no epoch in. `step()` returns the metrics
of the members that trained in that tick.

Bit for bit (CPU, same threads): every member runs the same operations on the same inputs as
its separate `build_distill_run` run, so its metrics (timings aside) and weights are equal.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfa_ray.data import Dataset
from dfa_ray.dfa.genotype import Genotype
from dfa_ray.engine.checkpoint import capture_rng_state, restore_rng_state
from dfa_ray.engine.distill import build_distill_run
from dfa_ray.engine.recipes import Recipe
from dfa_ray.engine.runtime import FastPath, autocast, resolve_device
from dfa_ray.engine.training import Loaders, Logger, NonFiniteLossError, TrainingRun, make_loaders
from dfa_ray.engine.views import TeacherOutputs, TeacherRequest, teacher_outputs
from dfa_ray.errors import CheckpointError, ConfigError, DfaRayError

TIMING_KEYS = ("images_per_s", "seconds")  # wall-clock metrics: the only ones a group changes


@dataclass(frozen=True)
class GroupMember:
    """One student of a group: its key (unique in the group; the CLI's folder name), its method,
    options and genotype (as `build_distill_run` takes them)."""

    key: str
    method: str
    options: Mapping[str, Any] | None = None
    genotype: Genotype | str | Path | None = None
    transfer: bool = False


@dataclass
class MemberRun:
    """A member's own run and state inside the group."""

    spec: GroupMember
    run: TrainingRun
    rng: dict  # its python / numpy / torch RNG states between its turns
    ended: str | None = None  # the NonFiniteLossError message once its loss diverged
    ended_epoch: int | None = None

    @property
    def task(self) -> nn.Module:
        return self.run.task

    @property
    def running(self) -> bool:
        return self.ended is None and not self.run.done


@contextlib.contextmanager
def _rng_of(member: MemberRun) -> Iterator[None]:
    """The member's RNG states in, around its work; what it drew, kept for its next turn."""
    restore_rng_state(member.rng)
    try:
        yield
    finally:
        member.rng = capture_rng_state()


@dataclass
class _Turn:
    """A member's share of one tick."""

    member: MemberRun
    work: Any  # training.EpochWork
    shared: bool  # takes the group's teacher forward
    busy: float = 0.0  # seconds of its own work this tick


class GroupRun:
    """Members of one pair, seed and recipe, trained one tick (one batch stream) per `step()`."""

    def __init__(self, members: dict[str, MemberRun], teacher: nn.Module, loaders: Loaders, device: torch.device,
                 fast: FastPath, init_ticks: int, main_epochs: int) -> None:
        self.members = members
        self.teacher = teacher
        self.loaders = loaders
        self.device = device
        self.fast = fast
        self.init_ticks = init_ticks  # the longest init stage of the group
        self.main_epochs = main_epochs
        self.teacher_seconds = 0.0  # time in the shared teacher forwards (the benchmark reads it)

    @property
    def epochs(self) -> int:
        """Ticks from start to end: the longest init stage, then the recipe's epochs."""
        return self.init_ticks + self.main_epochs

    def _position(self, m: MemberRun) -> int:
        """The tick at which this member trains next."""
        run = m.run
        return run.init_epoch if run.phase == "init" else self.init_ticks + run.epoch

    @property
    def tick(self) -> int:
        """Completed ticks: the earliest next tick of a running member (a group resumed from
        member states written at different ticks lets the ones behind catch up first)."""
        positions = [self._position(m) for m in self.members.values() if m.running]
        return min(positions) if positions else self.epochs

    @property
    def done(self) -> bool:
        return not any(m.running for m in self.members.values())

    def step(self) -> dict[str, dict]:
        """Train one tick: {key: that member's epoch metrics} for each member that trained, or
        {"nonfinite": reason, "epoch": e, "done": True} for one whose loss just diverged."""
        if self.done:
            raise RuntimeError("the group has already finished all its epochs")
        tick = self.tick
        outer = capture_rng_state()
        try:
            return self._step(tick)
        finally:
            restore_rng_state(outer)  # the caller's RNG is as it was

    def _step(self, tick: int) -> dict[str, dict]:
        active = [m for m in self.members.values() if m.running and self._position(m) == tick]
        turns: list[_Turn] = []
        for m in active:
            start = time.perf_counter()
            with _rng_of(m):
                work = m.run.begin_epoch()
            turns.append(_Turn(m, work, m.run.shares_teacher(), time.perf_counter() - start))
        streams = {t.work.loader_epoch for t in turns}
        if len(streams) != 1:  # pragma: no cover - the tick rule makes one stream per tick
            raise RuntimeError(f"members of tick {tick} draw different epochs {sorted(streams)}")
        request = TeacherRequest.merge(t.member.run.teacher_request() for t in turns if t.shared)
        loader = self.loaders.train
        loader.set_epoch(streams.pop())
        sharing = sum(t.shared for t in turns)
        teacher_time = 0.0
        for x, y, index in loader:
            outputs: TeacherOutputs | None = None
            if request is not None:
                start = time.perf_counter()
                self.teacher.eval()
                with autocast(self.device, bool(self.fast.bf16)):
                    outputs = teacher_outputs(self.teacher, x, request)
                teacher_time += time.perf_counter() - start
            guarded = ([x, y, index] + (outputs.tensors() if outputs is not None else []))
            versions = [t._version for t in guarded]
            for turn in turns:
                start = time.perf_counter()
                with _rng_of(turn.member):
                    turn.member.run.train_batch(turn.work, x, y, index, teacher=outputs if turn.shared else False)
                turn.busy += time.perf_counter() - start
                if [t._version for t in guarded] != versions:
                    raise DfaRayError(f"method {turn.member.spec.method} (member {turn.member.spec.key}) modified the "
                                      "batch or the shared teacher forward in place; a shared-teacher group needs "
                                      "methods that only read them: run it on its own")
        self.teacher_seconds += teacher_time
        out: dict[str, dict] = {}
        for turn in turns:
            m = turn.member
            # its images/s: its own work plus an equal share of the teacher forwards it used
            share = teacher_time / sharing if turn.shared and sharing else 0.0
            with _rng_of(m):
                try:
                    out[m.spec.key] = m.run.end_epoch(turn.work, train_seconds=turn.busy + share)
                except NonFiniteLossError as exc:
                    m.ended, m.ended_epoch = str(exc), exc.epoch
                    out[m.spec.key] = {"nonfinite": str(exc), "epoch": exc.epoch, "done": True}
        return out

    def run(self) -> dict[str, dict]:
        """Every tick to the end: {key: final numbers} of the members that finished."""
        while not self.done:
            self.step()
        return {k: m.run.final for k, m in self.members.items() if m.run.final is not None}

    # -- state ------------------------------------------------------------------------------
    def member_state(self, key: str) -> dict:
        """One member's `TrainingRun.state_dict()`, with its own RNG states: exactly what its
        separate run would checkpoint (the CLI writes it into the member's folder)."""
        m = self.members[key]
        outer = capture_rng_state()
        try:
            with _rng_of(m):
                return m.run.state_dict()
        finally:
            restore_rng_state(outer)

    def load_member_state(self, key: str, state: dict) -> None:
        m = self.members[key]
        outer = capture_rng_state()
        try:
            m.run.load_state_dict(state)  # restores the member's RNG states globally ...
            m.rng = capture_rng_state()  # ... which become its own
        finally:
            restore_rng_state(outer)

    def state_dict(self) -> dict:
        """Every member's state (its run, RNG states, ending); the data order needs none."""
        return {"members": {key: {"run": self.member_state(key), "ended": m.ended, "ended_epoch": m.ended_epoch}
                            for key, m in self.members.items()}}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("members")
        if not isinstance(saved, dict) or set(saved) != set(self.members):
            have = sorted(saved) if isinstance(saved, dict) else []
            raise CheckpointError(f"the group state holds members {have}, this group has {sorted(self.members)}")
        for key, entry in saved.items():
            self.load_member_state(key, entry["run"])
            self.members[key].ended = entry.get("ended")
            self.members[key].ended_epoch = entry.get("ended_epoch")


def build_group_run(
    teacher: nn.Module,
    teacher_name: str,
    student_name: str,
    data: Dataset,
    recipe: Recipe,
    members: Sequence[GroupMember],
    seed: int,
    device: str | torch.device = "auto",
    fast: FastPath = FastPath(),
    log: Logger | None = None,
) -> GroupRun:
    """Build each member exactly as `build_distill_run` builds a separate run (seeded, so its
    student's and modules' initial weights are that run's), sharing the teacher and loaders."""
    if not members:
        raise ConfigError("a shared-teacher group needs at least one member")
    keys = [m.key for m in members]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ConfigError(f"group member key(s) {', '.join(repeated)} appear more than once; give each member "
                          "its own key")
    dev = resolve_device(device)
    resolved_fast = fast.resolved(dev)
    loaders = make_loaders(data, recipe, seed, dev, bool(resolved_fast.channels_last))
    outer = capture_rng_state()
    runs: dict[str, MemberRun] = {}
    try:
        for m in members:
            run = build_distill_run(teacher, teacher_name, student_name, data, recipe, m.method, seed,
                                    options=m.options, genotype=m.genotype, device=dev, fast=fast, log=log,
                                    transfer=m.transfer, loaders=loaders)
            if not run.label.startswith(f"{m.key} "):  # e.g. a key other than the method's name
                run.label = f"{m.key} {run.label}"
            runs[m.key] = MemberRun(spec=m, run=run, rng=capture_rng_state())
    finally:
        restore_rng_state(outer)
    init_ticks = max((r.run.init.epochs for r in runs.values() if r.run.init is not None), default=0)
    return GroupRun(runs, teacher, loaders, dev, resolved_fast, init_ticks, recipe.epochs)


def strip_timing(metrics: dict) -> dict:
    """A metrics row without its wall-clock entries (what the bit-for-bit guarantee covers)."""
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}


# -- one folder per member (the CLI's `distill --method a,b,c --out DIR`) ----------------------
class _MemberCheckpoint:
    """A member seen as a run by `teacher.save_run_state`: its state_dict is the member's own
    (with its RNG states), everything else is its TrainingRun's."""

    def __init__(self, group: GroupRun, key: str) -> None:
        self._group, self._key = group, key

    def state_dict(self) -> dict:
        return self._group.member_state(self._key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._group.members[self._key].run, name)


def train_group_in_folders(group: GroupRun, folders: Mapping[str, str | Path], metas: Mapping[str, dict],
                           kind: str, log: Logger | None = None) -> dict[str, dict]:
    """Run the group to the end, writing after every tick each trained member's folder exactly
    as `teacher.train_in_folder` writes a single run's (checkpoint.pt, metrics.json); members
    whose folder already holds their run continue from it (so a single-method run can continue
    a member's folder, and the reverse). Returns {key: final numbers} of the members that
    finished; a diverged member's folder keeps its last finite epoch, as a single run's does."""
    from dfa_ray.engine.checkpoint import load_checkpoint
    from dfa_ray.engine.teacher import CHECKPOINT_NAME, fingerprint, save_run_state

    for key, folder in folders.items():
        path = Path(folder) / CHECKPOINT_NAME
        if not path.exists():
            continue
        state = load_checkpoint(path)
        if state.get("kind") != kind or not isinstance(state.get("meta"), dict):
            raise CheckpointError(f"{path} is not a {kind} checkpoint; choose another --out")
        if fingerprint(state["meta"]) != fingerprint(metas[key]):
            old = state["meta"]
            raise CheckpointError(f"{folder} already holds a different run ({old.get('method')} "
                                  f"{old.get('model')} on {old.get('dataset')}, seed {old.get('seed')}); "
                                  "choose another --out")
        group.load_member_state(key, state["run"])
        if log:
            run = group.members[key].run
            log(f"[{run.label}] resuming from {path} after epoch {run.epoch}")
    while not group.done:
        for key, row in group.step().items():
            if "nonfinite" not in row:
                save_run_state(folders[key], _MemberCheckpoint(group, key), metas[key], kind)
    return {k: m.run.final for k, m in group.members.items() if m.run.final is not None}
