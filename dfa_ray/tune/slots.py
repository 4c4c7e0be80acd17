"""`resources.max_concurrent` as a limit on the whole sweep, across its concurrent experiments.

The sweep runs one Tune experiment per node of its graph, several at once in one driver, and
Tune's own limits (`max_concurrent_trials`, a generator's `max_concurrent`) count the trials of
one experiment only. A `SlotPool` counts the trials that hold a slot in every experiment of one
sweep; three thin wrappers consult it where Tune decides:
- trial creation (`GatedVariantGenerator` for grid and random search, `GatedLimiter` for
  Optuna): a new trial is created only when a slot is free, and the slot is reserved for it;
- the scheduler (`SlotScheduler`): a trial takes its slot when Tune adds it, gives it back
  when it pauses (SHA pauses trials at a rung: a paused trial holds no resources, and the rung
  can only fill if the others may run), ends, errors or is removed, and a paused trial resumes
  only when a slot is free.
The wrappers hold the pool's *name*, not the pool: Tune pickles its TuneConfig with the
experiment, and a resumed experiment must find the live pool of the driver that resumes it.
Without an open pool (no `max_concurrent`) they change nothing. Trials restored by a resumed
experiment take their slots when Tune adds them, so right after a resume the sweep may run a
few more than the limit until they end.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.basic_variant import BasicVariantGenerator

_POOLS: dict[str, "SlotPool"] = {}
_POOLS_LOCK = threading.Lock()
_TRIAL_PREFIXES: set[str] = set()  # every trial-id prefix this driver process has handed out


class SlotPool:
    """Up to `limit` trials hold a slot at once, over every experiment of one sweep."""

    def __init__(self, limit: int) -> None:
        self.limit = int(limit)
        self._lock = threading.Lock()
        self._held: dict[str, set[str]] = {}
        self._reserved: dict[str, int] = {}

    def used(self) -> int:
        with self._lock:
            return self._used()

    def _used(self) -> int:
        return sum(len(s) for s in self._held.values()) + sum(self._reserved.values())

    def reserve(self, experiment: str) -> bool:
        """Reserve a slot for a trial about to be created; False when none is free."""
        with self._lock:
            if self._used() >= self.limit:
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
        """A paused trial takes a slot again if one is free."""
        with self._lock:
            held = self._held.setdefault(experiment, set())
            if trial_id in held:
                return True
            if self._used() >= self.limit:
                return False
            held.add(trial_id)
            return True

    def release(self, experiment: str, trial_id: str) -> None:
        with self._lock:
            self._held.get(experiment, set()).discard(trial_id)


def open_pool(name: str, limit: int | None) -> SlotPool | None:
    """The pool of sweep `name` (None: no limit)."""
    if limit is None:
        return None
    with _POOLS_LOCK:
        _POOLS[name] = SlotPool(limit)
        return _POOLS[name]


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

    def next_trial(self) -> Trial | None:
        pool = _pool(self._pool_name)
        if pool is None:
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
        if pool is None:
            return super().suggest(trial_id)
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
