"""Sweeps on a real local Ray cluster (started by this module, inside the loopback-only
network namespace that `make test` provides, stopped by this module)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile

import pandas as pd
import pytest
import torch  # noqa: F401  (torch before ray)

from dfa_ray.localray import end_processes_mentioning
from raytest import (assert_loopback_only, local_ray, run_spec as run, tiny_spec, train_store_teacher,
                     wait_for, write_spec)

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_cluster():
    with local_ray("dfa-ray-test-") as ray:
        yield ray


@pytest.fixture(scope="module")
def storage(tmp_path_factory, ray_cluster):
    """One storage for the module, with the tiny specs' teacher already in its store."""
    root = tmp_path_factory.mktemp("storage")
    train_store_teacher(tiny_spec("warmup", root))
    return root


def test_every_address_ray_uses_is_loopback(ray_cluster):
    assert_loopback_only()
    nodes = ray_cluster.nodes()
    assert nodes and all(n["NodeManagerAddress"] == "127.0.0.1" for n in nodes)
    assert ray_cluster.util.get_node_ip_address() == "127.0.0.1"


def test_end_to_end_sweep_with_asha_pruning(ray_cluster, tmp_path):
    from dfa_ray.results import load

    # its own storage: the teacher is trained by the sweep (TeacherTrainable), not taken from a store
    spec = tiny_spec("e2e", tmp_path, search={
        "enabled": True, "epochs": 4, "num_samples": 4, "options": {"batch_size": 128},
        "space": {"gamma_ts": {"loguniform": [0.25, 4.0]}, "lam": {"choice": [1.0, 10.0, 100.0]}},
        # rungs before the first group's search is over: this test is about pruning itself
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2, "early_rungs": True}},
        distill={"methods": ["vanilla", "kd", "dfa", "dfa:last"], "epochs": 1})
    outcome, lines = run(spec)
    assert any("training teacher resnet14" in line for line in lines)
    epochs, trials = load(outcome.sweep_dir)
    assert set(trials.stage) == {"teacher", "search", "distill"}
    teacher = trials[trials.stage == "teacher"].iloc[0]
    assert teacher.status == "completed" and teacher.test_acc_last > 10
    assert (tmp_path / "teachers").is_dir() and list((tmp_path / "teachers").glob("resnet14-digits-*/checkpoint.pt"))
    # a second sweep on the same storage takes the teacher from the store
    _, lines = run(tiny_spec("e2e-again", tmp_path, distill={"methods": ["vanilla"], "epochs": 1}))
    assert any("teacher resnet14: taken from the store" in line for line in lines)
    search = trials[trials.stage == "search"]
    assert len(search) == 4
    assert (search.status == "pruned").sum() >= 1, search[["status", "epochs_run"]]
    assert (search.epochs_run < 4).sum() >= 1
    distill = trials[trials.stage == "distill"]
    assert sorted(distill.method) == ["dfa", "dfa:last", "kd", "vanilla"]
    assert (distill.status == "completed").all() and distill.test_acc_last.notna().all()
    assert not epochs.duplicated(["stage", "trial_id", "epoch"]).any()
    assert (epochs[epochs.stage == "search"].alphas.notna()).all()
    # actors are reused: 4 distill trials, at most 2 at a time, ran in at most 2 processes
    pids = {json.loads(line)["pid"] for f in (outcome.sweep_dir / "tune" / "distill-resnet14-to-resnet8").glob("*/result.json")
            for line in f.read_text().splitlines() if line.strip()}
    assert 1 <= len(pids) <= 2, pids
    genotype = (outcome.sweep_dir / "genotypes" / "resnet14-to-resnet8.json")
    assert genotype.exists() and outcome.genotypes["resnet14->resnet8"]["student"] == "resnet8"
    # every trial ended compacted: its epochs in one file, its summary in another (+ 2 column files)
    results = outcome.sweep_dir / "results"
    assert not list(results.glob("epochs/*/running/*.parquet")), "a finished trial kept one file per epoch"
    assert len([p for p in results.rglob("*") if p.is_file()]) <= 2 * len(trials) + 2
    assert len(list(results.glob("epochs/*/*.parquet"))) == trials.epochs_run.gt(0).sum()
    raw = pd.read_parquet(results / "epochs")  # every epoch row once, with load()'s columns
    assert len(raw) == len(epochs) and not raw.duplicated(["stage", "trial_id", "epoch"]).any()
    assert list(raw.columns) == list(epochs.columns)
    assert epochs.groupby("trial_id").epoch.max().to_dict() == trials.set_index("trial_id").epochs_run.to_dict()
    # searched and method options as columns
    search_rows = epochs[epochs.stage == "search"]
    assert search_rows["opt.gamma_ts"].between(0.25, 4.0).all() and search_rows["opt.lam"].isin([1, 10, 100]).all()
    assert (search_rows["opt.batch_size"] == 128).all()
    assert (epochs[(epochs.stage == "distill") & (epochs.method == "kd")]["opt.temperature"] == 4.0).all()
    # the dfa trial distilled with the best search trial's genotype
    dfa_row = distill[distill.method == "dfa"].iloc[0]
    assert '"kind": "search"' in dfa_row.genotype


def test_optuna_proposes_the_search_settings(storage):
    from dfa_ray.results import load

    spec = tiny_spec("optuna", storage, search={
        "enabled": True, "epochs": 1, "num_samples": 3, "searcher": "optuna", "scheduler": {"type": "fifo"},
        "options": {"batch_size": 256}, "space": {"gamma_ts": {"loguniform": [0.1, 10.0]}}},
        distill={"enabled": False})
    outcome, _ = run(spec)
    experiment = outcome.sweep_dir / "tune" / "search-resnet14-to-resnet8"
    assert list(experiment.glob("searcher-state-*")), "Optuna's searcher state is saved with the experiment"

    _, trials = load(outcome.sweep_dir)
    values = [json.loads(c)["options.gamma_ts"] for c in trials.config]
    assert len(values) == 3 and len(set(values)) == 3
    assert all(0.1 <= v <= 10.0 for v in values)


def test_validate_save_restore_holds_for_the_three_trainables(storage, ray_cluster):
    from ray.tune.utils import validate_save_restore

    from dfa_ray.engine.recipes import get_recipe
    from dfa_ray.tune import DistillTrainable, SearchTrainable, TeacherTrainable

    teacher = train_store_teacher(tiny_spec("warmup", storage))
    common = {"sweep": "v", "dataset": "digits", "data_spec": {"name": "digits", "root": None, "options": {}},
              "seed": 0, "cpu": 1, "gpu": 0, "fast": {}, "plugins": []}
    # validate_save_restore trains a few steps before and after the restore: leave epochs for it
    recipe = get_recipe("quick", {"epochs": 5, "batch_size": 256}).model_dump(mode="json")
    validate_save_restore(TeacherTrainable, {**common, "stage": "teacher", "model": "resnet8", "recipe": recipe,
                                             "store_dir": str(storage / "validate-teacher")})
    validate_save_restore(SearchTrainable, {**common, "stage": "search", "teacher": "resnet14", "student": "resnet8",
                                            "teacher_path": str(teacher), "epochs": 5,
                                            "options": {"batch_size": 256}})
    validate_save_restore(DistillTrainable, {**common, "stage": "distill", "teacher": "resnet14",
                                             "student": "resnet8", "teacher_path": str(teacher), "method": "dfa:average",
                                             "genotype": None, "method_options": {}, "recipe": recipe})


def test_a_killed_trial_process_is_retried_from_its_checkpoint(storage):
    from ray import tune

    from dfa_ray.results import load

    class KillOnce(tune.Callback):
        """SIGKILL the trial's actor process once, right after it reports epoch 2."""

        def __init__(self) -> None:
            self.killed_pid: int | None = None
            self.epochs: list[int] = []
            self.failures = 0

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.epochs.append(int(result["epoch"]))
            if result["epoch"] == 2 and self.killed_pid is None:
                self.killed_pid = result["pid"]
                os.kill(result["pid"], signal.SIGKILL)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.failures = trial.num_failures

    killer = KillOnce()
    spec = tiny_spec("killtrial", storage, distill={"methods": ["vanilla"], "epochs": 5},
                     resources={"max_concurrent": 1})
    outcome, _ = run(spec, callbacks=[killer])
    assert killer.killed_pid is not None and killer.failures >= 1
    after_kill = killer.epochs[killer.epochs.index(2) + 1:]
    assert after_kill and after_kill[0] >= 2, f"restarted from scratch: {killer.epochs}"  # continued, not epoch 1
    epochs, trials = load(outcome.sweep_dir)
    assert sorted(epochs.epoch) == [1, 2, 3, 4, 5]
    assert trials.status.tolist() == ["completed"]


def test_a_killed_driver_is_resumed_by_the_same_command(storage, tmp_path):
    from dfa_ray.results import load

    spec_path = write_spec(tmp_path / "spec.yaml", tiny_spec("driverkill", storage, distill={
        "methods": ["vanilla", "kd"], "seeds": [0, 1], "epochs": 6}))
    ray_tmp = tempfile.mkdtemp(prefix="dfa-ray-driver-")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "DFA_RAY_TEST_MARKER": ray_tmp}
    command = [sys.executable, "-m", "dfa_ray.cli", "sweep", str(spec_path)]
    epochs_dir = storage / "driverkill" / "results" / "epochs"
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True, cwd=tmp_path)
    try:
        wait_for(lambda: epochs_dir.exists() and len(list(epochs_dir.glob("distill/running/*.parquet"))) >= 3,
                 timeout=240, what="three distillation epochs")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        end_processes_mentioning(ray_tmp)  # the local Ray that driver started, and nothing else
    partial = (load(storage / "driverkill")[0].stage == "distill").sum()  # rows: finished trials are one file
    assert partial < 24, "the sweep finished before the driver was killed"
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    end_processes_mentioning(ray_tmp)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming experiment distill" in second.stdout
    epochs, trials = load(storage / "driverkill")
    distill = epochs[epochs.stage == "distill"]
    assert not distill.duplicated(["trial_id", "epoch"]).any()
    assert len(distill) == 24  # 2 methods x 2 seeds x 6 epochs, each once
    assert distill.groupby("trial_id").epoch.apply(sorted).apply(lambda e: e == [1, 2, 3, 4, 5, 6]).all()
    done = trials[trials.stage == "distill"]
    assert len(done) == 4 and (done.status == "completed").all()


def test_same_spec_twice_gives_the_same_search_decisions_genotypes_and_accuracies(ray_cluster, tmp_path):
    """Synchronous halving (sha) decides each rung from the metrics alone, so two runs of one
    spec into two storage folders prune the same trials, pick the same genotype and give the
    same accuracy in every trial row (timing columns aside)."""
    from dfa_ray.results import load

    outcomes = []
    for run_name in ("first", "second"):
        storage = tmp_path / run_name
        spec = tiny_spec("twice", storage, search={
            "enabled": True, "epochs": 3, "num_samples": 4, "options": {"batch_size": 128, "arch_lr": 0.05},
            "space": {"gamma_ts": {"loguniform": [0.25, 4.0]}, "lam": {"choice": [1.0, 10.0, 100.0]}},
            "scheduler": {"type": "sha", "reduction_factor": 2}},
            distill={"methods": ["kd", "dfa", "dfa:last"], "epochs": 1})
        train_store_teacher(spec)
        outcome, lines = run(spec)
        assert any("sha" in line for line in lines)
        outcomes.append(outcome)
    (g1,), (g2,) = (sorted((o.sweep_dir / "genotypes").glob("*.json")) for o in outcomes)
    doc1, doc2 = json.loads(g1.read_text()), json.loads(g2.read_text())
    doc1.pop("trial_id"), doc2.pop("trial_id")  # Tune's random experiment prefix
    assert doc1 == doc2
    rows = []
    for o in outcomes:
        epochs, trials = load(o.sweep_dir)
        key = ["stage", "method", "seed", "epochs_run", "status"]
        accs = [c for c in trials.columns if c.endswith("_acc") or "_acc_" in c]
        rows.append((trials.assign(cfg=trials.config.map(lambda c: json.dumps(
            {k: v for k, v in json.loads(c).items() if k in ("options.gamma_ts", "options.lam", "job.method",
                                                              "job.method_options.w_feat")}, sort_keys=True)))
                     .sort_values(key + ["cfg"]).reset_index(drop=True)[key + ["cfg"] + accs],
                     epochs.sort_values(["stage", "epoch", "val_acc"]).reset_index(drop=True)[["stage", "epoch", "val_acc"]]))
    (t1, e1), (t2, e2) = rows
    search = t1[t1.stage == "search"]
    assert len(search) == 4 and (search.status == "pruned").sum() == 3, search  # 4 -> 2 -> 1
    assert t1.equals(t2), (t1, t2)
    assert e1.equals(e2)
