"""The dependency-graph runner (dfa_ray.graph) and the whole-sweep slot pool, without Ray
clusters: order, concurrency, failure isolation, skip reasons, graph checks."""

from __future__ import annotations

import threading
import time

import pytest

from dfa_ray.graph import Node, NodeFailed, check_graph, run_graph


def test_a_node_runs_after_its_dependencies_and_gets_their_products():
    order: list[str] = []
    lock = threading.Lock()

    def job(name, value):
        def run(inputs):
            with lock:
                order.append(name)
            return value + sum(inputs.values())
        return run

    nodes = [Node("c", job("c", 100), ("a", "b")), Node("a", job("a", 1)), Node("b", job("b", 10), ("a",))]
    outcome = run_graph(nodes, log=lambda _: None)
    assert order.index("a") < order.index("b") < order.index("c")
    assert outcome.product("a") == 1 and outcome.product("b") == 11 and outcome.product("c") == 112
    assert {n.status for n in outcome.nodes.values()} == {"done"}


def test_independent_nodes_run_at_the_same_time():
    barrier = threading.Barrier(3, timeout=10)  # each node waits for the other two to have started

    def run(_inputs):
        barrier.wait()
        return time.time()

    outcome = run_graph([Node(f"n{i}", run) for i in range(3)], log=lambda _: None)
    assert [n.status for n in outcome.nodes.values()] == ["done"] * 3


def test_a_failed_node_skips_exactly_its_dependants_and_the_rest_finishes():
    def fail(_inputs):
        raise NodeFailed("teacher t1 did not finish training")

    def boom(_inputs):
        raise ZeroDivisionError("a bug in a node")

    ok = lambda _inputs: "ok"  # noqa: E731
    nodes = [Node("teacher:t1", fail), Node("teacher:t2", ok),
             Node("search:p1", ok, ("teacher:t1",)), Node("distill-dfa:p1", ok, ("teacher:t1", "search:p1")),
             Node("search:p2", ok, ("teacher:t2",)), Node("distill-dfa:p2", ok, ("search:p2",)),
             Node("bug", boom), Node("after-bug", ok, ("bug",))]
    outcome = run_graph(nodes, log=lambda _: None)
    status = {i: n.status for i, n in outcome.nodes.items()}
    assert status == {"teacher:t1": "failed", "teacher:t2": "done", "search:p1": "skipped",
                      "distill-dfa:p1": "skipped", "search:p2": "done", "distill-dfa:p2": "done",
                      "bug": "failed", "after-bug": "skipped"}
    assert outcome.nodes["teacher:t1"].reason == "teacher t1 did not finish training"
    assert outcome.nodes["search:p1"].reason == "needs teacher:t1 failed (teacher t1 did not finish training)"
    assert outcome.nodes["distill-dfa:p1"].reason.startswith("needs teacher:t1 failed")
    assert outcome.nodes["bug"].reason == "ZeroDivisionError: a bug in a node"
    assert outcome.nodes["search:p1"].started is None  # a skipped node never ran


@pytest.mark.parametrize("nodes, message", [
    ([Node("a", print), Node("a", print)], "duplicate node ids"),
    ([Node("a", print, ("x",))], "depends on unknown node"),
    ([Node("a", print, ("b",)), Node("b", print, ("a",))], "cycle"),
])
def test_bad_graphs_are_refused(nodes, message):
    with pytest.raises(ValueError, match=message):
        check_graph(nodes)


def test_the_slot_pool_counts_every_experiment_and_frees_paused_trials():
    from dfa_ray.tune.slots import SlotPool

    pool = SlotPool(2)
    assert pool.reserve("search-a") and pool.reserve("distill-b")
    assert not pool.reserve("search-c"), "the limit is for the whole sweep"
    pool.claim("search-a", "t1")
    pool.claim("distill-b", "t2")
    assert pool.used() == 2
    pool.release("search-a", "t1")  # t1 paused at a rung: its slot is free for another trial
    assert pool.try_take("search-c", "t3") and not pool.try_take("search-a", "t1")
    pool.release("distill-b", "t2")
    assert pool.try_take("search-a", "t1") and pool.used() == 2
    pool.claim("search-a", "restored")  # a restored trial takes its slot even above the limit
    assert pool.used() == 3


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_free_slot_goes_to_the_waiting_experiment_of_the_highest_priority():
    from dfa_ray.tune.slots import OPENING_TTL_S, WANT_TTL_S, SlotPool

    clock = Clock()
    pool = SlotPool(2, clock=clock)
    pool.open_experiment("distill-a", priority=5.0)
    pool.open_experiment("search-a", priority=9.0)  # heads the longer chain
    # the search was opened but has not asked yet: the baselines wait for it to start
    assert not pool.reserve("distill-a")
    assert pool.reserve("search-a") and pool.reserve("search-a")
    pool.claim("search-a", "s1")
    pool.claim("search-a", "s2")
    assert pool.used() == 2
    assert not pool.reserve("search-a"), "full"  # the search wants a third slot
    pool.release("search-a", "s1")
    assert not pool.reserve("distill-a"), "the slot is the waiting search's"
    assert pool.reserve("search-a")
    pool.claim("search-a", "s3")
    # the search stops asking (its trials are all created): its want lapses, the baselines go
    pool.release("search-a", "s2")
    clock.now += WANT_TTL_S + 0.1
    assert pool.reserve("distill-a")
    # a paused search trial resuming at a rung outranks the baselines too
    pool.claim("distill-a", "d1")
    assert not pool.try_take("search-a", "s1")
    pool.release("distill-a", "d1")
    assert not pool.reserve("distill-a") and pool.try_take("search-a", "s1")
    # an experiment that ended wants and holds nothing
    pool.close_experiment("search-a")
    assert pool.used() == 0 and pool.reserve("distill-a")
    # an opened experiment that never asks stops blocking after OPENING_TTL_S
    pool.open_experiment("search-b", priority=9.0)
    assert not pool.reserve("distill-a")
    clock.now += OPENING_TTL_S + 0.1
    assert pool.reserve("distill-a")
    pool.set_limit(0)
    assert pool.limit == 1, "at least one trial runs"


def test_a_generator_with_nothing_left_to_create_asks_for_no_slot():
    """A finished generator must not keep a want alive: Tune calls next_trial every loop."""
    from ray.tune.experiment import Experiment

    from dfa_ray.tune.slots import GatedVariantGenerator, close_pool, experiment_slots, open_pool

    clock = Clock()
    pool = open_pool("pool-test", 1)
    pool._clock = clock
    try:
        with experiment_slots("pool-test", "search-a", 9.0):
            generator = GatedVariantGenerator(pool="pool-test", experiment="search-a")
            generator.add_configurations([Experiment("search-a", run=lambda config: None, config={}, num_samples=1)])
            trial = generator.next_trial()
            assert trial is not None and pool.used() == 1
            pool.claim("search-a", trial.trial_id)
            assert generator.next_trial() is None and generator.is_finished()
            pool.release("search-a", trial.trial_id)
            assert pool.reserve("distill-a"), "the finished search left no want behind"
        assert "search-a" not in pool._priority
    finally:
        close_pool("pool-test")


def test_experiments_created_at_once_get_different_trial_ids(monkeypatch):
    """Tune takes its trial-id prefix from a uuid1 (the clock): generators created within the
    same 0.4 ms shared it, and two experiments of a pair's distillation wrote rows under the
    same trial ids. Here the clock is frozen: the ids must still differ."""
    import uuid

    import ray.tune.search.basic_variant as basic_variant
    from ray.tune.experiment import Experiment

    from dfa_ray.tune.slots import GatedVariantGenerator

    frozen = uuid.uuid1()
    monkeypatch.setattr(basic_variant.uuid, "uuid1", lambda *a, **k: frozen)
    ids = []
    for name in ("distill-a", "distill-dfa-a"):
        generator = GatedVariantGenerator()
        generator.add_configurations([Experiment(name, run=lambda config: None, config={"x": 1}, num_samples=2)])
        ids += [generator.next_trial().trial_id for _ in range(2)]
    assert len(set(ids)) == 4, ids
    assert ids[0].endswith("_00000") and ids[1].endswith("_00001")


def test_the_barrier_order_chains_the_searches_and_holds_every_distillation_back():
    from dfa_ray.sweep import barrier_order

    ok = lambda _inputs: None  # noqa: E731
    nodes = [Node("teacher:a", ok), Node("teacher:b", ok),
             Node("search:p1", ok, ("teacher:a",)), Node("search:p2", ok, ("teacher:b",)),
             Node("distill:p1", ok, ("teacher:a",)), Node("distill-dfa:p2", ok, ("teacher:b", "search:p2"))]
    deps = {n.id: set(n.depends_on) for n in barrier_order(nodes)}
    assert deps["search:p1"] == {"teacher:a", "teacher:b"}
    assert deps["search:p2"] == {"teacher:a", "teacher:b", "search:p1"}
    assert deps["distill:p1"] == deps["distill-dfa:p2"] == {"teacher:a", "teacher:b", "search:p1", "search:p2"}
    check_graph(barrier_order(nodes))


def test_an_experiment_waiting_for_a_slot_is_not_ended_by_tunes_insufficient_resources_check(monkeypatch):
    """Under the slot gate an experiment can hold no trial at all for as long as others hold
    the slots. Tune's check of "no trial ran for 60 s" then indexes its empty trial list (Ray
    2.60) and ends the experiment: a 64-GPU benchmark lost nine nodes to it. The sweep turns
    the check off; here Tune's own check runs on an empty experiment for a simulated hour."""
    import ray.tune.execution.insufficient_resources_manager as irm

    import dfa_ray.sweep  # noqa: F401  (sets the threshold before Tune reads it)

    clock = {"now": 0.0}
    monkeypatch.setattr(irm.time, "monotonic", lambda: clock["now"])

    def an_hour_without_trials() -> None:
        irm._get_insufficient_resources_warning_threshold.cache_clear()
        manager = irm._InsufficientResourcesManager()
        for _ in range(61):
            manager.on_no_available_trials([])
            clock["now"] += 60.0

    try:
        an_hour_without_trials()  # the sweep's setting: nothing happens
        assert irm._get_insufficient_resources_warning_threshold() >= 1e9
        monkeypatch.setenv("TUNE_WARN_INSUFFICENT_RESOURCE_THRESHOLD_S", "60")  # Tune's default
        with pytest.raises(IndexError):
            an_hour_without_trials()
    finally:
        monkeypatch.undo()
        irm._get_insufficient_resources_warning_threshold.cache_clear()


def test_a_trial_that_fits_no_node_is_named_with_the_fields_to_change():
    from dfa_ray.spec import ResourcesSpec
    from dfa_ray.sweep import trial_fits_no_node

    nodes = [{"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}},
             {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},  # gone: does not count
             {"Alive": True, "Resources": {"CPU": 2.0}}]
    assert trial_fits_no_node(ResourcesSpec(cpu=4.0, gpu=1.0), nodes) is None
    assert trial_fits_no_node(ResourcesSpec(cpu=2.0), nodes) is None
    # 2 GPUs exist in total, but a trial's GPUs go to one node
    nodes.append({"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}})
    message = trial_fits_no_node(ResourcesSpec(cpu=1.0, gpu=2.0), nodes)
    assert message is not None and "1 CPU(s) and 2 GPU(s)" in message
    assert "largest of the cluster's 3 node(s) has 8 CPU(s) and 1 GPU(s)" in message
    assert "resources.cpu / resources.gpu" in message
    assert "fits" in trial_fits_no_node(ResourcesSpec(cpu=16.0), nodes)
