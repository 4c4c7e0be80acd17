"""Shared-teacher groups in the sweep (`distill.share_teacher`, docs/shared_teacher.md): how the
sweep groups its jobs, and on a real local Ray cluster (inside the loopback-only namespace,
started and stopped by this module) that every member of a group trial is recorded exactly as
its separate trial: the same numbers, its own rows, its own ending, and a resumed group with
no member row lost or duplicated. The tests without Ray come first."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch  # noqa: F401  (torch before ray)

from pandas.testing import assert_frame_equal

from dfa_ray.localray import end_processes_mentioning
from raytest import local_ray, run_spec as run, tiny_spec, train_store_teacher, wait_for, write_spec

PAIR = "resnet14->resnet8"
NAN_KD = {"kd": {"w_kl": 1e39}}  # finite for the spec, inf as float32: kd's loss is not finite at once


def spec_of(name, storage, **sections):
    from dfa_ray.spec import parse_spec

    return parse_spec(tiny_spec(name, storage, **sections))


# -- the grouping rule, without Ray --------------------------------------------------------------
def test_a_node_becomes_one_group_per_seed_with_its_methods_in_spec_order(tmp_path):
    from dfa_ray.sweep_trials import distill_trials, group_trials
    from dfa_ray.tune.configs import DistillTrial, GroupTrial, param_space, parse_trial, resolved_config

    spec = spec_of("rule", tmp_path, distill={"methods": ["vanilla", "kd", "at"], "seeds": [0, 3],
                                              "options": {"kd": {"temperature": 2.0}}})
    jobs = distill_trials(spec, spec.pairs[0], tmp_path / "teacher", list(spec.distill.methods), None)
    groups = group_trials(spec, jobs)
    assert [type(g) for g in groups] == [GroupTrial, GroupTrial]
    assert [g.seed for g in groups] == [0, 3] and all(g.keys == ["vanilla", "kd", "at"] for g in groups)
    # Tune's resolved config of the group's grid entry parses back into the group ...
    space = param_space(groups, lambda entries: entries)
    config = {**{k: v for k, v in space.items() if k != "job"}, "job": space["job"][1]}
    assert parse_trial(config) == groups[1]
    # ... and each member is exactly the trial of its own it replaces (config and all)
    separate = {(j.method, j.seed): j for j in jobs}
    for key in ("vanilla", "kd", "at"):
        member = groups[1].member(key)
        assert isinstance(member, DistillTrial) and member == separate[(key, 3)]
        assert resolved_config(member) == resolved_config(separate[(key, 3)])
    assert groups[1].member("kd").method_options == {"temperature": 2.0}
    with pytest.raises(KeyError, match="no member 'fitnet'"):
        groups[0].member("fitnet")
    # a plain DistillTrial's config still parses as one
    assert isinstance(parse_trial(resolved_config(jobs[0])), DistillTrial)
    # share_teacher false, or a single method: the trials as they are
    off = spec.model_copy(update={"distill": spec.distill.model_copy(update={"share_teacher": False})})
    assert group_trials(off, jobs) == jobs
    single = [j for j in jobs if j.method == "kd"]
    assert group_trials(spec, single) == single
    with pytest.raises(ValueError, match="kd appear more than once"):
        GroupTrial(**{k: getattr(groups[0], k) for k in GroupTrial.model_fields if k != "members"},
                   members=groups[0].members + groups[0].members[1:2])


def test_group_size_splits_a_seed_into_near_equal_groups_of_one_trainable(tmp_path):
    from dfa_ray.spec import split_evenly
    from dfa_ray.sweep_trials import distill_trials, group_trials
    from dfa_ray.tune.configs import DistillTrial, GroupTrial

    assert split_evenly("abcdefghij", 4) == [tuple("abcd"), tuple("efg"), tuple("hij")]
    assert split_evenly("abcde", None) == [tuple("abcde")] and split_evenly("", 3) == []
    assert split_evenly("abc", 1) == [("a",), ("b",), ("c",)] and split_evenly("abc", 5) == [tuple("abc")]
    spec = spec_of("sizes", tmp_path, distill={"methods": ["vanilla", "kd", "at"], "seeds": [0, 3], "group_size": 2})
    jobs = distill_trials(spec, spec.pairs[0], tmp_path / "teacher", list(spec.distill.methods), None)
    groups = group_trials(spec, jobs)
    # 3 methods by at most 2: (vanilla, kd) and (at,), the lone one still a group (one trainable
    # per experiment), each member the separate trial it replaces
    assert [(g.seed, g.keys) for g in groups] == [(0, ["vanilla", "kd"]), (0, ["at"]), (3, ["vanilla", "kd"]),
                                                  (3, ["at"])]
    assert all(isinstance(g, GroupTrial) for g in groups)
    separate = {(j.method, j.seed): j for j in jobs}
    assert all(g.member(k) == separate[(k, g.seed)] for g in groups for k in g.keys)
    ones = spec.model_copy(update={"distill": spec.distill.model_copy(update={"group_size": 1})})
    assert group_trials(ones, jobs) == jobs and all(isinstance(t, DistillTrial) for t in jobs)
    with pytest.raises(Exception, match="group_size"):
        spec_of("bad", tmp_path, distill={"methods": ["vanilla", "kd"], "group_size": 0})


def group_entries(config: dict, trial_id: str) -> list[dict]:
    """The result log (result.json lines) of a group trial of vanilla and kd whose kd member
    diverged in epoch 1, as GroupDistillTrainable reports it and Tune logs it."""
    def entry(it: int, members: dict, ended: dict) -> dict:
        return {"members": members, "method_options": {"vanilla": {}, "kd": {"temperature": 4.0, "w_kl": 1e39}},
                "ended": ended, "epoch": it, "done": it == 2, "device": "cpu", "node": "n", "node_id": "x",
                "trial_id": trial_id, "training_iteration": it, "config": config, "pid": 7, "hostname": "h",
                "time_total_s": float(it)}
    reason = "non-finite training loss (nan) in epoch 1: kd"
    return [entry(1, {"vanilla": {"epoch": 1, "train_loss": 2.0, "val_acc": 30.0, "done": False},
                      "kd": {"nonfinite": reason, "epoch": 1, "done": True}}, {"kd": {"reason": reason, "epoch": 1}}),
            entry(2, {"vanilla": {"epoch": 2, "train_loss": 1.5, "val_acc": 40.0, "done": True, "test_acc_last": 41.0,
                                  "test_acc_best": 41.0, "best_epoch": 2, "best_val_acc": 40.0}},
                  {"kd": {"reason": reason, "epoch": 1}})]


def test_lost_member_rows_are_rebuilt_from_the_group_trials_log(tmp_path):
    """restore_missing_rows reads a group trial's result.json as its members' logs: each member
    gets its own rows and summary (the diverged one errored with its reason), compacted."""
    from types import SimpleNamespace

    from dfa_ray.results import load
    from dfa_ray.sweep_trials import distill_trials, group_trials
    from dfa_ray.tune.callbacks import restore_missing_rows
    from dfa_ray.tune.configs import member_trial_id, param_space

    spec = spec_of("restore", tmp_path, distill={"methods": ["vanilla", "kd"], "options": NAN_KD})
    group, = group_trials(spec, distill_trials(spec, spec.pairs[0], tmp_path / "teacher", ["vanilla", "kd"], None))
    space = param_space([group], lambda entries: entries)
    config = {**{k: v for k, v in space.items() if k != "job"}, "job": space["job"][0]}
    trial_dir = tmp_path / "tune" / "trial"
    trial_dir.mkdir(parents=True)
    entries = group_entries(config, "g_00000")
    (trial_dir / "result.json").write_text("\n".join(json.dumps(e) for e in entries) + "\n{\"torn")
    sweep_dir = tmp_path / "sweep"
    grid = [SimpleNamespace(path=str(trial_dir), error=None)]
    assert restore_missing_rows(sweep_dir, grid) == 2 + 2  # vanilla's two epochs, two summaries
    assert restore_missing_rows(sweep_dir, grid) == 0  # nothing is missing any more
    epochs, trials = load(sweep_dir)
    ids = {m: member_trial_id("g_00000", m) for m in ("vanilla", "kd")}
    assert sorted(trials.trial_id) == sorted(ids.values())
    t = trials.set_index("method")
    assert t.loc["vanilla", "status"] == "completed" and t.loc["vanilla", "test_acc_last"] == 41.0
    assert t.loc["kd", "status"] == "errored" and "non-finite" in t.loc["kd", "reason"]
    assert t.loc["kd", "epochs_run"] == 1
    assert epochs.trial_id.tolist() == [ids["vanilla"]] * 2 and sorted(epochs.epoch) == [1, 2]
    assert json.loads(t.loc["vanilla", "config"])["method"] == "vanilla"
    assert not list((sweep_dir / "results").glob("epochs/*/running/*.parquet")), "member rows not compacted"


# -- on a real local Ray ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    with local_ray("dfa-ray-group-") as ray:
        yield ray


@pytest.fixture(scope="module")
def storage(tmp_path_factory, ray_cluster):
    root = tmp_path_factory.mktemp("group-storage")
    train_store_teacher(tiny_spec("warmup", root))
    return root


NUMBERS = ["train_loss", "train_acc", "val_acc", "val_loss", "lr"]
FINAL = ["epochs_run", "test_acc_last", "test_acc_best", "best_epoch", "best_val_acc"]


@pytest.mark.ray
def test_each_member_gives_the_rows_and_numbers_of_its_separate_trial(storage):
    from dfa_ray.results import load

    methods = ["vanilla", "kd", "at", "dfa", "dfa:last"]
    grouped, lines = run(tiny_spec("shared", storage, search={
        "enabled": True, "epochs": 1, "num_samples": 1, "options": {"batch_size": 256}, "scheduler": {"type": "fifo"}},
        distill={"methods": methods, "epochs": 2}))
    assert sum("shared-teacher group trial(s)" in line for line in lines) == 2, lines  # baselines, dfa
    # the same distillations, one trial per job, with the genotype the first sweep searched
    alone, _ = run(tiny_spec("alone", storage, distill={"methods": methods, "epochs": 2, "share_teacher": False,
                                                        "genotype_from": {"sweep": "shared"}}))
    assert len(grouped.grids[f"distill:{PAIR}"]) == 1 and len(grouped.grids[f"distill-dfa:{PAIR}"]) == 1
    assert len(alone.grids[f"distill:{PAIR}"]) == 3
    frames = {}
    for name, outcome in (("grouped", grouped), ("alone", alone)):
        epochs, trials = load(outcome.sweep_dir)
        frames[name] = (epochs[epochs.stage == "distill"], trials[trials.stage == "distill"])
    (ge, gt), (ae, at) = frames["grouped"], frames["alone"]
    assert sorted(gt.method) == sorted(methods) and gt.trial_id.is_unique and (gt.status == "completed").all()
    assert ge.groupby("method").epoch.apply(sorted).to_dict() == {m: [1, 2] for m in methods}
    assert not ge.duplicated(["trial_id", "epoch"]).any()
    # bit for bit: same threads (cpu 1), same seeds -> the same per-epoch and final numbers
    key = ["method", "seed", "epoch"]
    g = ge.sort_values(key).reset_index(drop=True)[key + NUMBERS]
    a = ae.sort_values(key).reset_index(drop=True)[key + NUMBERS]
    assert_frame_equal(g, a, check_exact=True)
    gs = gt.sort_values("method").reset_index(drop=True)[["method", "seed"] + FINAL]
    as_ = at.sort_values("method").reset_index(drop=True)[["method", "seed"] + FINAL]
    assert_frame_equal(gs, as_, check_exact=True)
    # a member's rows say what ran, as a separate trial's do: resolved options, opt.* columns
    kd = ge[ge.method == "kd"]
    assert (kd["opt.temperature"] == 4.0).all() and (ae[ae.method == "kd"]["opt.temperature"] == 4.0).all()
    cfg = json.loads(gt.set_index("method").loc["kd", "config"])
    assert cfg["method"] == "kd" and cfg["method_options.temperature"] == 4.0
    assert set(json.loads(at.set_index("method").loc["kd", "config"])) == set(cfg)
    assert '"kind": "search"' in gt.set_index("method").loc["dfa", "genotype"]
    # every member ended compacted, in its own files
    results = grouped.sweep_dir / "results"
    assert not list(results.glob("epochs/distill/running/*.parquet"))
    assert len(list(results.glob("epochs/distill/*.parquet"))) == len(methods)
    assert any("vanilla s0 " in line and "epoch 2/2" in line for line in lines), "a progress line per member"


@pytest.mark.ray
def test_a_diverged_member_ends_alone_and_the_others_complete(storage):
    from dfa_ray.results import load

    outcome, lines = run(tiny_spec("nanmember", storage, distill={
        "methods": ["vanilla", "kd", "at"], "epochs": 2, "options": NAN_KD}))
    epochs, trials = load(outcome.sweep_dir)
    t = trials.set_index("method")
    assert t.loc["kd", "status"] == "errored" and "non-finite" in t.loc["kd", "reason"], t[["status", "reason"]]
    assert "epoch 1" in t.loc["kd", "reason"] and t.loc["kd", "epochs_run"] == 1
    assert (t.drop(index="kd").status == "completed").all() and t.drop(index="kd").test_acc_last.notna().all()
    assert sorted(epochs[epochs.method != "kd"].groupby("method").epoch.max()) == [2, 2]
    assert (epochs.method == "kd").sum() == 0  # its only result was the divergence, not an epoch
    assert any("non-finite" in line and "kd" in line for line in lines)
    # one group trial, which ran to its end once (not retried into the same NaN)
    logs = list((outcome.sweep_dir / "tune" / "distill-resnet14-to-resnet8").glob("*/result.json"))
    assert len(logs) == 1
    entries = [json.loads(line) for line in logs[0].read_text().splitlines()]
    assert [e["training_iteration"] for e in entries] == [1, 2]
    assert set(entries[1]["members"]) == {"vanilla", "at"} and "kd" in entries[1]["ended"]


EPOCHS = 12  # of the killed driver's sweep


def snapshot_iteration(experiment: Path) -> int:
    """The highest training iteration any trial has in the experiment's latest Tune snapshot
    (0 while there is none): what a re-run restores from. Checkpoints are written every
    iteration, so iteration >= 2 in the snapshot means a restore that skips epoch 1."""
    best = 0
    for state_file in experiment.glob("experiment_state-*.json"):
        try:
            trial_data = json.loads(state_file.read_text())["trial_data"]
            for _trial_json, runtime_json in trial_data:
                best = max(best, int(json.loads(runtime_json)["last_result"].get("training_iteration", 0)))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a snapshot being replaced: read the next one
    return best


@pytest.mark.ray
def test_a_group_whose_driver_is_killed_resumes_from_its_checkpoint(storage, tmp_path):
    from dfa_ray.results import load

    # distillation batches of 64: epochs long enough for the driver to be killed mid-run (the
    # teacher's recipe stays the stored teacher's)
    spec_path = write_spec(tmp_path / "spec.yaml", tiny_spec("groupkill", storage, recipe={"batch_size": 64},
                                                             teachers={"seed": 0, "recipe": {"batch_size": 256}},
                                                             distill={"methods": ["vanilla", "kd"], "seeds": [0, 1],
                                                                      "epochs": EPOCHS}))
    ray_tmp = tempfile.mkdtemp(prefix="dfa-ray-groupkill-")
    # Tune's experiment snapshot every second: the killed driver's snapshot names a checkpoint
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "DFA_RAY_TEST_MARKER": ray_tmp, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    command = [sys.executable, "-m", "dfa_ray.cli", "sweep", str(spec_path)]
    sweep_dir = storage / "groupkill"
    experiment = sweep_dir / "tune" / "distill-resnet14-to-resnet8"
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True, cwd=tmp_path)
    try:  # killed as soon as Tune's snapshot names a group's second checkpointed epoch (waiting
        # for the snapshot rather than for a fixed time keeps this independent of the machine's speed)
        wait_for(lambda: snapshot_iteration(experiment) >= 2, timeout=240, interval=0.1,
                 what="a snapshot naming two checkpointed epochs of a group")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        end_processes_mentioning(ray_tmp)  # the local Ray that driver started, and nothing else
    rows = 2 * 2 * EPOCHS  # 2 methods x 2 seeds
    assert (load(sweep_dir)[0].stage == "distill").sum() < rows, "the sweep finished before the driver was killed"
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    end_processes_mentioning(ray_tmp)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming experiment distill" in second.stdout
    epochs, trials = load(sweep_dir)
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert len(epochs) == rows  # each once
    assert epochs.groupby("trial_id").epoch.apply(sorted).apply(lambda e: e == list(range(1, EPOCHS + 1))).all()
    assert len(trials) == 4 and trials.trial_id.is_unique and (trials.status == "completed").all()
    assert sorted(zip(trials.method, trials.seed)) == [("kd", 0), ("kd", 1), ("vanilla", 0), ("vanilla", 1)]
    # a group went on from its checkpoint, not from its first epoch: Tune counts the
    # iterations since that restore, from 1 again
    restored = []
    for log in experiment.glob("*/result.json"):
        for line in log.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry["training_iteration"] > entry.get("iterations_since_restore", entry["training_iteration"]):
                restored.append(entry["training_iteration"])
    assert restored and min(restored) > 1, "no group trial was restored from a checkpoint"
