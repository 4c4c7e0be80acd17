"""The sweep's slots: how many trials run at once over all its concurrent experiments, and
which experiment gets a slot that frees up.

The sweep runs one Tune experiment per node of its graph, several at once in one driver, and
Tune's own limits (`max_concurrent_trials`, a generator's `max_concurrent`) count the trials of
one experiment only; Ray, given more trials than the cluster holds, starts whichever asks
first. A `SlotPool` counts the trials that hold a slot in every experiment of one sweep, up to
a limit (`resources.max_concurrent`, and the trials the cluster holds at once, re-read while
the sweep runs), and hands a free slot to the experiment of the highest *priority* that wants
one: the driver gives each experiment its node's bottom level in the graph (the longest chain
of estimated work from the node to the end of the study, dfa_ray.plan), so a pair's search,
which heads the chain to its dfa distillations, starts before the baselines whose chains are
shorter (list scheduling by critical path, which `dfa-ray plan` simulates). An experiment
*wants* a slot from when the driver opens it until it has asked and been served, and again
whenever it asks and finds none free; a want is forgotten `WANT_TTL_S` after its last ask
(an experiment that stopped asking needs nothing).

Three thin wrappers consult the pool where Tune decides:
- trial creation (`GatedVariantGenerator` for grid and random search, `GatedLimiter` for
  Optuna): a new trial is created only when a slot is free for its experiment, and the slot is
  reserved for it; a generator with no trial left to create does not ask;
- the scheduler (`SlotScheduler`): a trial takes its slot when Tune adds it, gives it back
  when it pauses (SHA pauses trials at a rung: a paused trial holds no resources, and the rung
  can only fill if the others may run), ends, errors or is removed, and a paused trial resumes
  only when a slot is free for it.
The wrappers hold the pool's *name*, not the pool: Tune pickles its TuneConfig with the
experiment, and a resumed experiment must find the live pool of the driver that resumes it.
Without an open pool they change nothing. Trials restored by a resumed experiment take their
slots when Tune adds them, so right after a resume the sweep may run a few more than the
limit until they end.
"""

from __future__ import annotations

import threading
import time
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.basic_variant import BasicVariantGenerator

_POOLS: dict[str, "SlotPool"] = {}
_POOLS_LOCK = threading.Lock()
_TRIAL_PREFIXES: set[str] = set()  # every trial-id prefix this driver process has handed out


WANT_TTL_S = 3.0  # Tune's controller asks every loop (well under a second) while it wants trials
OPENING_TTL_S = 120.0  # an experiment the driver opened has this long to start and ask


class SlotPool:
    """Up to `limit` trials hold a slot at once, over every experiment of one sweep; a free slot
    goes to the waiting experiment of the highest priority (ties: whoever asks)."""

    def __init__(self, limit: int, clock: Any = time.monotonic) -> None:
        self.limit = int(limit)
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[str, set[str]] = {}
        self._reserved: dict[str, int] = {}
        self._priority: dict[str, float] = {}
        self._wants: dict[str, float] = {}  # experiment -> when its want expires

    def used(self) -> int:
        with self._lock:
            return self._used()

    def _used(self) -> int:
        return sum(len(s) for s in self._held.values()) + sum(self._reserved.values())

    def set_limit(self, limit: int) -> None:
        with self._lock:
            self.limit = max(1, int(limit))

    # -- priorities ------------------------------------------------------------------------
    def open_experiment(self, experiment: str, priority: float) -> None:
        """The driver is starting `experiment`: it wants slots from now on, before its first ask."""
        with self._lock:
            self._priority[experiment] = float(priority)
            self._wants[experiment] = self._clock() + OPENING_TTL_S

    def close_experiment(self, experiment: str) -> None:
        with self._lock:
            self._wants.pop(experiment, None)
            self._priority.pop(experiment, None)
            self._reserved.pop(experiment, None)
            self._held.pop(experiment, None)

    def _outranked(self, experiment: str) -> bool:
        """Whether an experiment of a higher priority is waiting for a slot."""
        now = self._clock()
        mine = self._priority.get(experiment, 0.0)
        return any(until > now and self._priority.get(other, 0.0) > mine
                   for other, until in self._wants.items() if other != experiment)

    def _grant(self, experiment: str) -> bool:
        if self._used() >= self.limit or self._outranked(experiment):
            self._wants[experiment] = self._clock() + WANT_TTL_S
            return False
        self._wants.pop(experiment, None)
        return True

    # -- slots -----------------------------------------------------------------------------
    def reserve(self, experiment: str) -> bool:
        """Reserve a slot for a trial about to be created; False when none is free for it."""
        with self._lock:
            if not self._grant(experiment):
                return False
            self._reserved[experiment] = self._reserved.get(experiment, 0) + 1
            return True

    def unreserve(self, experiment: str) -> None:
        with self._lock:
            if self._reserved.get(experiment, 0) > 0:
                self._reserved[experiment] -= 1

    def claim(self, experiment: str, trial_id: str) -> None:
        """The trial takes its slot (its reservation, or a new one for a restored trial)."""
        with self._lock:
            held = self._held.setdefault(experiment, set())
            if trial_id in held:
                return
            if self._reserved.get(experiment, 0) > 0:
                self._reserved[experiment] -= 1
            held.add(trial_id)

    def try_take(self, experiment: str, trial_id: str) -> bool:
        """A paused trial takes a slot again if one is free for it."""
        with self._lock:
            held = self._held.setdefault(experiment, set())
            if trial_id in held:
                return True
            if not self._grant(experiment):
                return False
            held.add(trial_id)
            return True

    def release(self, experiment: str, trial_id: str) -> None:
        with self._lock:
            self._held.get(experiment, set()).discard(trial_id)


def open_pool(name: str, limit: int) -> SlotPool:
    """The pool of sweep `name`."""
    with _POOLS_LOCK:
        _POOLS[name] = SlotPool(limit)
        return _POOLS[name]


@contextmanager
def experiment_slots(name: str, experiment: str, priority: float) -> Iterator[None]:
    """While the block runs `experiment`, the pool of sweep `name` (if open) serves it at
    `priority`; afterwards it holds and wants nothing."""
    pool = _pool(name)
    if pool is None:
        yield
        return
    pool.open_experiment(experiment, priority)
    try:
        yield
    finally:
        pool.close_experiment(experiment)


def close_pool(name: str) -> None:
    with _POOLS_LOCK:
        _POOLS.pop(name, None)


def _pool(name: str | None) -> SlotPool | None:
    return _POOLS.get(name) if name else None


def unique_trial_prefix() -> str:
    """A trial-id prefix no other experiment of this driver has. Tune's own prefix is the first
    five hex digits of a uuid1, i.e. of the clock, which stay the same for 0.4 ms: experiments
    the sweep creates at once (a pair's baselines and its dfa trials, with a given genotype) got
    the same prefix, their trials the same ids, and the results (keyed by trial id) lost rows.
    Random digits, re-drawn until unused in this process; a resumed experiment restores its own."""
    with _POOLS_LOCK:
        while True:
            prefix = uuid.uuid4().hex[:5] + "_"
            if prefix not in _TRIAL_PREFIXES:
                _TRIAL_PREFIXES.add(prefix)
                return prefix


class GatedVariantGenerator(BasicVariantGenerator):
    """Tune's grid/random generator that creates a trial only when the sweep has a free slot,
    and whose trial ids differ from every other experiment's of the driver.
    A subclass, not a wrapper: Tune sizes its pending-trial queue by `isinstance` on it."""

    def __init__(self, *args: Any, pool: str | None = None, experiment: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._uuid_prefix = unique_trial_prefix()
        self._pool_name = pool
        self._experiment = experiment

    def _has_trial_to_create(self) -> bool:
        if self.is_finished():
            return False
        if self.max_concurrent > 0 and len(self._live_trials) >= self.max_concurrent:
            return False
        # Tune's iterators number their trials on from the samples of the ones before, so
        # the last one's counter is the number created so far (restored with them on resume)
        return bool(self._iterators) and self._iterators[-1].counter < self.total_samples

    def next_trial(self) -> Trial | None:
        pool = _pool(self._pool_name)
        if pool is None or not self._has_trial_to_create():
            # nothing to ask a slot for (Tune calls this every loop): Tune's own next_trial
            # creates nothing here, and marks the generator finished once it has run dry
            return super().next_trial()
        if not pool.reserve(self._experiment):
            return None
        trial = super().next_trial()
        if trial is None:
            pool.unreserve(self._experiment)
        return trial


class GatedLimiter(ConcurrencyLimiter):
    """Tune's ConcurrencyLimiter (for Optuna) that also waits for a free slot of the sweep."""

    def __init__(self, searcher: Any, max_concurrent: int, pool: str | None = None, experiment: str = "") -> None:
        super().__init__(searcher, max_concurrent=max_concurrent)
        self._pool_name = pool
        self._experiment = experiment

    def suggest(self, trial_id: str) -> dict | None:
        pool = _pool(self._pool_name)
        if pool is None or len(self.live_trials) >= self.max_concurrent:
            return super().suggest(trial_id)  # (at its own limit it suggests nothing, asks no slot)
        if not pool.reserve(self._experiment):
            return None
        suggestion = super().suggest(trial_id)
        if not isinstance(suggestion, dict):
            pool.unreserve(self._experiment)
        return suggestion


class SlotScheduler(TrialScheduler):
    """Any Tune scheduler, with trials taking and giving back the sweep's slots."""

    def __init__(self, inner: TrialScheduler, pool: str | None, experiment: str) -> None:
        super().__init__()
        self.inner = inner
        self._pool_name = pool
        self._experiment = experiment

    # what Tune reads from a scheduler besides the hooks
    @property
    def metric(self) -> Any:
        return self.inner.metric

    @property
    def supports_buffered_results(self) -> bool:
        return self.inner.supports_buffered_results

    def set_search_properties(self, metric: Any, mode: Any, **spec: Any) -> bool:
        return self.inner.set_search_properties(metric, mode, **spec)

    def _release(self, trial: Trial) -> None:
        pool = _pool(self._pool_name)
        if pool is not None:
            pool.release(self._experiment, trial.trial_id)

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        pool = _pool(self._pool_name)
        if pool is not None and trial.status in (Trial.PENDING, Trial.RUNNING):
            pool.claim(self._experiment, trial.trial_id)
        self.inner.on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self._release(trial)
        self.inner.on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        decision = self.inner.on_trial_result(tune_controller, trial, result)
        if decision in (TrialScheduler.PAUSE, TrialScheduler.STOP):
            self._release(trial)
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        self._release(trial)
        self.inner.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self._release(trial)
        self.inner.on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        trial = self.inner.choose_trial_to_run(tune_controller)
        pool = _pool(self._pool_name)
        if trial is None or pool is None or trial.status != Trial.PAUSED:
            return trial
        return trial if pool.try_take(self._experiment, trial.trial_id) else None

    def debug_string(self) -> str:
        return self.inner.debug_string()

    def save(self, checkpoint_path: str) -> None:
        self.inner.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.inner.restore(checkpoint_path)
