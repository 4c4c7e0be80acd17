"""`dfa-ray plan` / `validate` and dfa_ray.plan: the graph and counts of every spec in
experiments/ against counts worked out here from the spec's own fields, the scheduling
simulation on a graph worked out by hand, the lower bound, the cost model, and the command
line (JSON, one-line errors, no Ray)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from dfa_ray.cost_model import CostModel, dataset_size, split_sizes
from dfa_ray.errors import ConfigError
from dfa_ray.plan import SimNode, build_plan, format_plan, lower_bound, simulate
from dfa_ray.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "experiments").glob("*.yaml"))
INIT_STAGE_METHODS = {"ab", "ft", "fsp"}  # methods with an init stage (CRD's 30 of 240 epochs)


class Ran:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """`dfa-ray ARGS` in this process, from the repository root (a subprocess per call would cost
    seconds of imports each; the no-Ray check below runs in a fresh process)."""
    from dfa_ray.cli import main

    monkeypatch.chdir(ROOT)

    def run(*args: str) -> Ran:
        capsys.readouterr()
        try:
            rc = main(list(args))
        except SystemExit as exc:  # argparse's own errors
            rc = int(exc.code or 0)
        out = capsys.readouterr()
        return Ran(rc, out.out, out.err)

    return run


# -- expected counts, worked out from the spec's fields -----------------------------------------
def protocol_epochs(spec) -> int:
    from dfa_ray.engine.recipes import RECIPES

    return RECIPES.get(spec.protocol).epochs


def student_groups(name: str) -> int:
    import torch

    from dfa_ray.models import create_model

    with torch.device("meta"):
        return create_model(name, num_classes=10).num_groups


def expected_grace(spec) -> int:
    s = spec.search
    if s.scheduler.grace_period is not None:
        return s.scheduler.grace_period
    warmup = s.options.get("warmup_epochs", 0)
    groups = min(student_groups(p.student) for p in spec.pairs)
    # the first group of a groupwise search ends after warmup + its share of the other epochs
    return math.ceil(warmup + (s.epochs - warmup) / groups)


def sha_by_hand(trials: int, max_t: int, grace: int, eta: float) -> list[int]:
    """Each trial's epochs under Tune's synchronous bracket, written out: rungs at grace, then
    int(min(r * eta, max_t)) ...; there are as many rungs as k >= 0 with grace * eta**k < max_t;
    at each the bracket keeps ceil(its previous size / eta)."""
    rungs = 0
    while grace * eta**rungs < max_t:
        rungs += 1
    stopped: list[int] = []
    size, alive, epoch = trials, trials, grace
    for _ in range(rungs):
        if epoch >= max_t:
            break
        size = math.ceil(size / eta)
        survivors = min(size, alive)
        stopped += [epoch] * (alive - survivors)
        alive = survivors
        epoch = int(min(epoch * eta, max_t))
    return sorted(stopped + [epoch] * alive, reverse=True)


def expected_nodes(spec) -> dict[str, dict]:
    """node id -> {depends_on, trials, epochs_per_trial (sorted)} from the spec's fields."""
    out: dict[str, dict] = {}
    teacher_epochs = spec.teachers.recipe.get("epochs", spec.recipe.get("epochs", protocol_epochs(spec)))
    distill_epochs = spec.distill.epochs or spec.recipe.get("epochs", protocol_epochs(spec))
    taken = spec.teachers.from_
    for pair in spec.pairs:
        trained = taken == "train" or (isinstance(taken, dict) and pair.teacher not in taken)
        out[f"teacher:{pair.teacher}"] = {"depends_on": (), "epochs": [teacher_epochs] if trained else []}
    searching = spec.search.enabled and spec.distill.genotype_from is None
    n_trials = spec.search.num_samples
    for dist in spec.search.space.values():
        if dist.kind == "grid":
            n_trials *= len(dist.values)
    for pair in spec.pairs:
        teacher = f"teacher:{pair.teacher}"
        if searching:
            s = spec.search
            if s.scheduler.type == "fifo":
                epochs = [s.epochs] * n_trials
            else:
                epochs = sha_by_hand(n_trials, s.epochs, expected_grace(spec), s.scheduler.reduction_factor)
            out[f"search:{pair.name}"] = {"depends_on": (teacher,), "epochs": epochs}
        baselines = [m for m in spec.distill.methods if not m.startswith("dfa")]
        dfa = [m for m in spec.distill.methods if m == "dfa" or m.startswith("dfa:")]
        for stage, methods, deps in (("distill", baselines, (teacher,)),
                                     ("distill-dfa", dfa, (f"search:{pair.name}",) if searching else (teacher,))):
            if not methods or not spec.distill.enabled:
                continue
            per_method = []
            for m in methods:
                init = 0
                if m in INIT_STAGE_METHODS:
                    asked = spec.distill.options.get(m, {}).get("init_epochs")
                    init = max(1, round(30 * distill_epochs / 240)) if asked is None else asked
                per_method.append(distill_epochs + init)
            seeds = len(spec.distill.seeds)
            jobs = sorted(per_method * seeds, reverse=True)
            # share_teacher: one trial per seed trains every method (or, with group_size, each
            # near-equal run of at most group_size methods); it lasts as long as its longest
            trials = jobs
            if spec.distill.share_teacher:
                size = spec.distill.group_size or len(per_method)
                count = -(-len(per_method) // size)
                bounds = [0]
                for i in range(count):
                    bounds.append(bounds[-1] + len(per_method) // count + (i < len(per_method) % count))
                trials = sorted([max(per_method[a:b]) for a, b in zip(bounds, bounds[1:])] * seeds, reverse=True)
            out[f"{stage}:{pair.name}"] = {"depends_on": deps, "epochs": trials, "jobs": jobs}
    return out


@pytest.fixture(scope="module")
def cost_model() -> CostModel:
    return CostModel.load()


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_experiment_plans_the_counts_its_fields_give(path, cost_model):
    spec = load_spec(path)
    plan = build_plan(spec, cost_model, gpus=4)
    expected = expected_nodes(spec)
    assert {n.id for n in plan.nodes} == set(expected)
    for node in plan.nodes:
        want = expected[node.id]
        assert node.depends_on == want["depends_on"], node.id
        assert sorted(node.epochs_per_trial, reverse=True) == want["epochs"], node.id
        jobs = want.get("jobs", want["epochs"])
        assert node.trials == len(want["epochs"]) and node.jobs == len(jobs), node.id
        assert sorted(node.epochs_per_job, reverse=True) == jobs, node.id
        assert node.total_epochs == sum(jobs), node.id
        assert node.gpu_per_trial == spec.resources.gpu
        assert node.est_seconds is not None and node.est_seconds >= 0, node.id
    stage_epochs = {st.stage: st.epochs for st in plan.stages}
    for stage in stage_epochs:
        assert stage_epochs[stage] == sum(sum(w.get("jobs", w["epochs"])) for i, w in expected.items()
                                         if i.split(":")[0] == stage)
    assert plan.trials == sum(len(w["epochs"]) for w in expected.values())
    assert plan.wall is not None and plan.wall.simulated_s >= plan.wall.lower_bound_s - 1e-6
    assert plan.gpu_hours == pytest.approx(sum(n.device_seconds for n in plan.nodes) / 3600)


def test_hand_worked_search_counts_of_two_specs(cost_model):
    quick = build_plan(load_spec(ROOT / "experiments/quickstart.yaml"), cost_model)
    # 4 trials, 6 epochs, grace 2, eta 2: all to 2; keep 2 to 4; keep 1 to 6
    assert quick.node("search:resnet20->resnet8").epochs_per_trial == (6, 4, 2, 2)
    assert quick.node("search:resnet20->resnet8").rungs == (2, 4)
    crd = build_plan(load_spec(ROOT / "experiments/cifar100_crd13.yaml"), cost_model)
    # 8 trials, 30 epochs, grace 10, eta 3: all to 10; keep ceil(8 / 3) = 3 to 30
    assert crd.node("search:resnet56->resnet20").epochs_per_trial == (30,) * 3 + (10,) * 5
    # 15 baselines x 3 seeds, ab and ft with a 30-epoch init stage before their 240
    base = crd.node("distill:resnet56->resnet20")
    assert base.jobs == 45 and base.total_epochs == 45 * 240 + 6 * 30
    assert base.trials == (3 if crd.share_teacher else 45)  # share_teacher: one trial per seed
    transfer = build_plan(load_spec(ROOT / "experiments/cinic10_transfer.yaml"), cost_model)
    assert not [n for n in transfer.nodes if n.stage == "search"]
    assert transfer.node("distill-dfa:wrn_28_4->wrn_16_2").depends_on == ("teacher:wrn_28_4",)


def test_asha_reports_sha_counts_as_expected_and_an_imported_teacher_trains_nothing(cost_model):
    spec = load_spec(ROOT / "experiments/quickstart.yaml",
                     overrides={"search.scheduler.type": "asha", "teachers.from": "imported"})
    plan = build_plan(spec, cost_model)
    search = plan.node("search:wrn_16_2->wrn_16_1")
    assert search.epochs_per_trial == (6, 4, 2, 2) and not search.exact and "expected" in search.source
    teacher = plan.node("teacher:wrn_16_2")
    assert teacher.trials == 0 and teacher.total_epochs == 0 and teacher.source == "imported"
    assert search.depends_on == ("teacher:wrn_16_2",)


def test_share_teacher_groups_the_methods_of_a_seed_into_one_trial(cost_model):
    spec = load_spec(ROOT / "experiments/quickstart.yaml", overrides={"distill.seeds": [0, 1, 2]})
    distill = spec.distill.model_copy(update={"share_teacher": True})
    shared = build_plan(spec.model_copy(update={"distill": distill}), cost_model)
    alone = build_plan(spec.model_copy(update={"distill": spec.distill.model_copy(update={"share_teacher": False})}),
                       cost_model)
    node, single = shared.node("distill:resnet20->resnet8"), alone.node("distill:resnet20->resnet8")
    assert shared.share_teacher and not alone.share_teacher
    assert (node.trials, node.jobs, node.epochs_per_job) == (3, 12, (12,) * 12)
    assert (single.trials, single.jobs) == (12, 12)
    # one teacher forward per batch for the group instead of one per method (kd, fitnet, at)
    assert node.est_seconds < single.est_seconds


def test_group_size_splits_each_seed_into_near_equal_groups(cost_model):
    spec = load_spec(ROOT / "experiments/cifar100_crd13.yaml", overrides={"distill.group_size": 4})
    node = build_plan(spec, cost_model).node("distill:resnet56->resnet20")
    # 15 baselines by at most 4: vanilla kd fitnet at | sp cc vid rkd | pkt ab ft nst | crd crd+kd dkd;
    # the third group holds ab and ft, whose 30 init epochs make it 270 epochs long
    assert spec.distill.groups_of([m for m in spec.distill.methods if m != "dfa"])[2] == ("pkt", "ab", "ft", "nst")
    assert node.trials == 4 * 3 and node.jobs == 45
    assert sorted(node.epochs_per_trial, reverse=True) == [270] * 3 + [240] * 9
    assert "4 group trial(s) per seed of 4 or 3 methods" in node.source
    whole = build_plan(load_spec(ROOT / "experiments/cifar100_crd13.yaml"), cost_model).node(node.id)
    # smaller groups: more teacher forwards, the same student work, so more device time but a
    # shorter longest trial
    assert node.device_seconds > whole.device_seconds and max(node.trial_seconds) < max(whole.trial_seconds)
    # one method per group: exactly the plain trials of share_teacher false
    ones = build_plan(load_spec(ROOT / "experiments/cifar100_crd13.yaml", overrides={"distill.group_size": 1}),
                      cost_model).node(node.id)
    alone = build_plan(load_spec(ROOT / "experiments/cifar100_crd13.yaml", overrides={"distill.share_teacher": False}),
                       cost_model).node(node.id)
    assert ones.trials == alone.trials == 45 and ones.trial_seconds == pytest.approx(alone.trial_seconds)


def test_the_group_size_advice_is_the_fastest_simulated_size(cost_model):
    from dfa_ray.plan import GROUP_SIZE_TIE, group_size_advice

    spec = load_spec(ROOT / "experiments/cifar100_crd13.yaml", overrides={"resources.gpu": 1.0})
    advice = {g: group_size_advice(spec, cost_model, g, teachers_ready=True) for g in (1, 64)}
    for gpus, a in advice.items():
        sizes = [o.group_size for o in a.options]
        assert sizes[0] is None and sizes[1:] == sorted(sizes[1:], reverse=True) and sizes[-1] == 1
        # each option is the plan of that size
        for o in a.options:
            variant = spec.model_copy(update={"distill": spec.distill.model_copy(update={"group_size": o.group_size})})
            plan = build_plan(variant, cost_model, gpus, advise=False, teachers_ready=True)
            assert plan.wall.simulated_s == pytest.approx(o.simulated_s) and plan.trials == o.trials
        fastest = min(o.simulated_s for o in a.options)
        best = next(o for o in a.options if o.group_size == a.best)
        assert best.simulated_s <= fastest * (1 + GROUP_SIZE_TIE)
        # GPU-hours only grow as groups shrink (fewer students share each teacher forward)
        hours = [o.gpu_hours for o in a.options]
        assert hours == sorted(hours)
    # one device: the most sharing is the fastest; 64: the biggest groups are the critical path
    assert advice[1].best is None
    assert advice[64].best is not None and advice[64].options[0].simulated_s > 1.5 * min(
        o.simulated_s for o in advice[64].options)
    text = format_plan(build_plan(spec, cost_model, 64, teachers_ready=True))
    assert "distill.group_size on 64 GPU(s)" in text and "<- fastest" in text


# -- the simulation and the lower bound, on a graph worked out by hand ---------------------------
HAND = [
    SimNode("A", (), ((4.0,),), gpu=1),
    SimNode("B", ("A",), ((2.0, 2.0, 2.0), (5.0,)), gpu=1),  # a rung: 3 trials, then 1 survivor
    SimNode("C", (), ((3.0,),), gpu=1),
    SimNode("D", ("C",), ((1.0, 1.0),), gpu=0.5),
]


def test_list_scheduling_makespan_on_a_hand_built_graph():
    # 2 devices. t=0: A (priority 4 + 7) on device 0, C (3 + 1) on device 1. t=3: C ends; both
    # halves of D share device 1 until 4. t=4: A ends; B's rung trials take both devices (4-6),
    # the third runs 6-8; B's survivor runs 8-13.
    schedule = simulate(HAND, devices=2)
    assert schedule.makespan == 13.0
    runs = {(t.node, t.phase, t.index): (t.start, t.end, t.devices) for t in schedule.trials}
    assert runs[("D", 0, 0)] == (3.0, 4.0, (1,)) and runs[("D", 0, 1)] == (3.0, 4.0, (1,))
    assert sorted(v[:2] for k, v in runs.items() if k[:2] == ("B", 0)) == [(4.0, 6.0), (4.0, 6.0), (6.0, 8.0)]
    assert runs[("B", 1, 0)][:2] == (8.0, 13.0)
    # one trial at a time: A 0-4, B's rung 4-10 (before C: it leads to more work), B 10-15,
    # C 15-18, D 18-20
    assert simulate(HAND, devices=2, max_concurrent=1).makespan == 20.0


def test_lower_bound_is_the_largest_of_device_time_critical_path_and_concurrency():
    bound = lower_bound(HAND, devices=2)
    assert bound.device_bound == (4 + 11 + 3 + 0.5 * 2) / 2  # 9.5
    assert bound.critical_path == 11.0  # A then B's rung and survivor
    assert bound.value == 11.0
    capped = lower_bound(HAND, devices=2, max_concurrent=1)
    assert capped.concurrency_bound == 20.0 and capped.value == 20.0
    assert lower_bound(HAND, devices=100).value == 11.0
    with pytest.raises(ConfigError, match=r"--gpus 1: a trial of W needs 2 GPUs"):
        simulate([SimNode("W", (), ((1.0,),), gpu=2)], devices=1)
    with pytest.raises(ConfigError, match="cycle"):
        simulate([SimNode("X", ("Y",), ((1.0,),)), SimNode("Y", ("X",), ((1.0,),))], devices=1)


# -- the cost model --------------------------------------------------------------------------------
def test_the_packaged_cost_model_covers_every_model_of_the_experiments(cost_model):
    import yaml

    models = {p[role] for path in SPECS for p in yaml.safe_load(path.read_text())["pairs"] for role in p}
    assert models <= set(cost_model.models)
    assert cost_model.image_size == 32 and cost_model.batch_size >= 1 and cost_model.date
    assert cost_model.machine["device"] == cost_model.device and cost_model.torch
    for cost in cost_model.models.values():
        assert 0 < cost.forward_s_per_image < cost.train_s_per_image
    # a deeper network of a family costs more per image
    assert cost_model.models["resnet110"].train_s_per_image > cost_model.models["resnet8"].train_s_per_image


def test_dataset_sizes_match_the_loaded_digits():
    from dfa_ray.data import holdout_split, load_dataset

    data = load_dataset("digits")
    size = dataset_size("digits")
    assert (size.train, size.test, size.image_size) == (len(data.train), len(data.test), data.info.image_size)
    kept, held = holdout_split(data.train, 0.1, 0)
    assert split_sizes(size, 0.1) == (len(kept), len(held))
    assert dataset_size("fashion_mnist", {"train_size": 1500}).train == 1500
    assert dataset_size("cifar100").train == 50000
    with pytest.raises(ConfigError, match="built-in datasets only"):
        dataset_size("my_plugin_data")


def test_a_broken_cost_model_is_named_in_one_line(tmp_path, run_cli):
    bad = tmp_path / "costs.json"
    bad.write_text(json.dumps({"kind": "something-else"}))
    proc = run_cli("plan", "experiments/quickstart.yaml", "--cost-model", str(bad))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and f"--cost-model {bad} is not a dfa-ray cost model" in proc.stderr


# -- the command line --------------------------------------------------------------------------
def test_plan_json_matches_build_plan(cost_model, run_cli):
    proc = run_cli("plan", "experiments/quickstart.yaml", "--json", "--gpus", "2", "--set", "search.num_samples=8")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    plan = build_plan(load_spec(ROOT / "experiments/quickstart.yaml", overrides={"search.num_samples": 8}),
                      cost_model, gpus=2)
    assert doc["spec"] == "experiments/quickstart.yaml" and doc["sweep"] == "quickstart"
    assert [n["id"] for n in doc["nodes"]] == [n.id for n in plan.nodes]
    for got, node in zip(doc["nodes"], plan.nodes):
        assert (got["trials"], got["jobs"], got["total_epochs"]) == (node.trials, node.jobs, node.total_epochs)
        assert tuple(got["epochs_per_trial"]) == node.epochs_per_trial and tuple(got["depends_on"]) == node.depends_on
    search = next(n for n in doc["nodes"] if n["id"] == "search:resnet20->resnet8")
    assert search["epochs_per_trial"] == [6, 6, 4, 4, 2, 2, 2, 2]  # 8 to epoch 2, keep 4 to 4, keep 2 to 6
    assert doc["wall"]["gpus"] == 2 and doc["wall"]["simulated_s"] == pytest.approx(plan.wall.simulated_s)
    assert doc["gpu_hours"] == pytest.approx(plan.gpu_hours)
    assert doc["cost_model"]["date"] == cost_model.date and doc["cost_model"]["machine"] == cost_model.machine


def test_plan_text_shows_the_graph_the_totals_and_the_machine(run_cli):
    proc = run_cli("plan", "experiments/cinic10_transfer.yaml", "--gpus", "8")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "distill-dfa:wrn_28_4->wrn_16_4" in out and "<- teacher:wrn_28_4" in out
    assert "search:" not in out
    assert "wall time on 8 GPU(s)" in out and "GPU-hours:" in out and "costs measured on" in out


def test_validate_prints_one_ok_line_and_a_mistake_exits_2_in_one_line(run_cli):
    proc = run_cli("validate", "experiments/fashion_mnist_study.yaml")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1
    assert proc.stdout.startswith("OK experiments/fashion_mnist_study.yaml: sweep fashion_mnist_study, 3 pair(s)")
    assert "8 method(s)" in proc.stdout and "3 seed(s) (0 1 2)" in proc.stdout
    missing = run_cli("validate", "experiments/no_such_spec.yaml")
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr == "dfa-ray validate: error: spec file experiments/no_such_spec.yaml does not exist\n"
    bad = run_cli("validate", "experiments/quickstart.yaml", "--set", "pairs.0.student=resnet9")
    assert bad.returncode == 2 and "pairs[0].student: unknown model 'resnet9'" in bad.stderr
    assert bad.stderr.startswith("dfa-ray validate: error: invalid sweep spec experiments/quickstart.yaml")
    gpus = run_cli("plan", "experiments/quickstart.yaml", "--gpus", "0")
    assert gpus.returncode == 2 and gpus.stderr.count("\n") == 1 and "--gpus" in gpus.stderr


def test_plan_and_validate_import_no_ray():
    code = ("import contextlib, io, sys\n"
            "from dfa_ray.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert main(['plan', 'experiments/cifar100_crd13.yaml', '--json']) == 0\n"
            "    assert main(['validate', 'experiments/quickstart.yaml']) == 0\n"
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_step_costs_benchmark_writes_a_cost_model_plan_reads(tmp_path, run_cli):
    sys.path.insert(0, str(ROOT))  # `benchmarks` is a folder of the repository, not an installed package
    from benchmarks import run_all, step_costs

    assert {"resnet8", "ResNet50", "ShuffleV2"} <= set(step_costs.experiment_models())
    factors = step_costs.search_factors()
    assert factors.order2_groupwise > factors.order1_groupwise > 1 and "search_step" in factors.source
    out = tmp_path / "costs.json"
    report = step_costs.main(["--models", "resnet8", "wrn_16_1", "--batch-size", "4", "--steps", "1",
                              "--out", str(out)])
    model = CostModel.load(out)
    assert set(model.models) == {"resnet8", "wrn_16_1"} and model.batch_size == 4 and model.path == str(out)
    assert [r["what"] for r in run_all.rows_step_costs(report)][0] == "step cost resnet8, batch 4 at 32px"
    # a spec whose models the file lacks still gets its counts, without seconds
    plan = build_plan(load_spec(ROOT / "experiments/quickstart.yaml"), model)
    assert plan.missing_costs == ("resnet20", "wrn_16_2") and plan.wall is None and plan.gpu_hours is None
    assert plan.node("search:resnet20->resnet8").epochs_per_trial == (6, 4, 2, 2)
    proc = run_cli("plan", "experiments/quickstart.yaml", "--cost-model", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "wall time: unknown: the cost model has no step times for resnet20, wrn_16_2" in proc.stdout
