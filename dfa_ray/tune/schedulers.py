"""Synchronous successive halving (`search.scheduler.type: sha`): pruning that depends only on
the trials' metrics.

Why not ASHA for a study that must repeat: ASHA promotes a trial as soon as it is in the top
1/eta of the results its rung has *so far*, so which trials survive depends on which trial
reported first, i.e. on timing. Two runs of the same spec then pick different winners (seen:
lambda 3 in one run, 10 in the other, 0.8 points apart). SHA waits at every rung until each
trial of the bracket has reported (a trial that arrives early is paused, its checkpoint
saved and its resources freed), then keeps the best ceil(n / eta) by the metric and resumes
them. Ties at a rung go to the trial created *last*: Tune's bracket sorts its trials (held in
creation order) with Python's stable sort and keeps the tail, and we keep its rule, so a rung
is still a function of the metrics and the creation order only. On a big cluster ASHA keeps more GPUs busy; on a
study that must give the same numbers twice, SHA is the one.

Built on Tune's own synchronous HyperBand (`HyperBandScheduler` and its bracket), with one
bracket that holds every trial of the experiment and ASHA's rung layout: rungs at
grace_period * eta^k epochs below max_t. Ray is pinned to 2.60, whose bracket class this
relies on; tests/test_sweep_ray.py checks the behaviour on a real local Ray.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers.hyperband import HyperBandScheduler, _Bracket


def halvings(max_t: int, grace_period: int, reduction_factor: float) -> int:
    """The number of rungs: k with grace * eta^k < max_t (ASHA's layout)."""
    k = 0
    while grace_period * reduction_factor**k < max_t:
        k += 1
    return k


class _WholeBracket(_Bracket):
    """A bracket that decides a rung only once all `max_trials` trials have joined it (Tune's
    bracket decides as soon as the trials it holds so far are done, which with lazily created
    trials would be a subset)."""

    def cur_iter_done(self) -> bool:
        return len(self._all_trials) >= self._n0 and super().cur_iter_done()


class SynchronousHalving(HyperBandScheduler):
    """SHA over `num_trials` trials: rungs at grace_period * eta^k, each decided when every
    live trial has reached it. `max_running` caps the trials running at once (paused trials
    do not count, so a rung can always fill)."""

    def __init__(
        self,
        *,
        max_t: int,
        grace_period: int,
        reduction_factor: float,
        num_trials: int,
        max_running: int | None = None,
        time_attr: str = "training_iteration",
        metric: str | None = None,
        mode: str | None = None,
    ) -> None:
        super().__init__(time_attr=time_attr, metric=metric, mode=mode, max_t=max_t,
                         reduction_factor=reduction_factor, stop_last_trials=True)
        self._grace = int(grace_period)
        self._num_trials = int(num_trials)
        self._halvings = halvings(max_t, grace_period, reduction_factor)
        self._max_running = max_running

    def _create_bracket(self, s: int) -> _Bracket:  # every trial in one bracket, ASHA's rungs
        return _WholeBracket(time_attr=self._time_attr, max_trials=self._num_trials, init_t_attr=self._grace,
                             max_t_attr=self._max_t_attr, eta=self._eta, s=self._halvings,
                             stop_last_trials=self._stop_last_trials)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        if self._max_running is not None:
            running = sum(1 for t in tune_controller.get_trials() if t.status == Trial.RUNNING)
            if running >= self._max_running:
                return None
        return super().choose_trial_to_run(tune_controller)

    def rungs(self) -> list[int]:
        """The epochs at which trials are compared."""
        return [min(self._max_t_attr, math.floor(self._grace * self._eta**k)) for k in range(self._halvings)]
