"""Faults injected into real sweeps (local Ray inside the loopback-only network namespace):
a worker node killed on a two-node loopback cluster, a truncated or foreign newest checkpoint,
every checkpoint broken, a loss that turns NaN/inf, a results file truncated mid-write.

After each fault: every finished trial's rows are present once, no row is duplicated, and the
trial count and stage coverage equal those of an undisturbed run of the same spec (run once in
this module). The killed trial process and the killed driver are in test_sweep_ray.py.
Each test records what it saw for the reliability table (tests/reliability.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch  # noqa: F401  (torch before ray)

from dfa_ray.localray import end_processes_mentioning
from raytest import (assert_loopback_only, free_port, listening, local_ray,
                     stop_started_nodes, tiny_spec, train_store_teacher, wait_for, write_spec)
from reliability import record

pytestmark = pytest.mark.ray
EPOCHS = 4  # distillation epochs of every sweep here


def fault_spec(name: str, storage: Path, **distill) -> dict:
    """The one spec every fault runs (and the undisturbed baseline): a 2-sample FIFO search and
    vanilla / kd / dfa distilled for EPOCHS epochs; 5 trials."""
    return tiny_spec(
        name, storage,
        recipe={"epochs": 2, "batch_size": 64},
        teachers={"seed": 0, "recipe": {"batch_size": 256}},
        search={"enabled": True, "epochs": 2, "num_samples": 2, "scheduler": {"type": "fifo"},
                "options": {"batch_size": 256}},
        distill={"methods": ["vanilla", "kd", "dfa"], "seeds": [0], "epochs": EPOCHS, **distill},
        resources={"cpu": 1, "gpu": 0, "max_concurrent": 2, "max_failures": 2},
    )


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    """One storage for the module, with the spec's teacher already in its store."""
    assert_loopback_only()
    root = tmp_path_factory.mktemp("fault-storage")
    train_store_teacher(fault_spec("warmup", root))
    return root


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray for the in-process sweeps (started lazily: the two-node test runs first)."""
    with local_ray("dfa-ray-faults-") as ray:
        yield ray


def run(spec_dict, **kwargs):
    from dfa_ray.spec import parse_spec
    from dfa_ray.sweep import run_sweep

    lines: list[str] = []
    outcome = run_sweep(parse_spec(spec_dict), log=lines.append, **kwargs)
    return outcome, lines


def coverage(sweep_dir: Path) -> dict:
    """What a sweep's results hold, independent of trial ids: trials per (stage, pair, method,
    seed), their statuses, and the epochs present per trial key."""
    from dfa_ray.results import ResultsFileWarning, load

    with warnings.catch_warnings():
        warnings.simplefilter("error", ResultsFileWarning)  # every file must be readable here
        epochs, trials = load(sweep_dir)
    key = lambda r: (r.stage, r.pair, r.method, int(r.seed))  # noqa: E731
    by_id = {r.trial_id: key(r) for r in trials.itertuples()}
    return {
        "trials": Counter(key(r) for r in trials.itertuples()),
        "status": Counter((key(r), r.status) for r in trials.itertuples()),
        "stages": sorted(set(trials.stage)),
        "epochs": Counter((by_id.get(r.trial_id, key(r)), int(r.epoch)) for r in epochs.itertuples()),
        "duplicates": raw_duplicates(sweep_dir),
        "epoch_rows": len(epochs),
        "frames": (epochs, trials),
    }


def raw_duplicates(sweep_dir: Path) -> int:
    """Rows sharing a key across all files as written (load() would hide them: it keeps the
    newest row per key)."""
    import pyarrow.parquet as pq

    count = 0
    for table, key in (("epochs", ("stage", "trial_id", "epoch")), ("trials", ("stage", "trial_id"))):
        seen: Counter = Counter()
        for path in (sweep_dir / "results" / table).rglob("*.parquet"):
            for row in pq.read_table(path, columns=list(key)).to_pylist():
                seen[tuple(row[k] for k in key)] += 1
        count += sum(n - 1 for n in seen.values() if n > 1)
    return count


@pytest.fixture(scope="module")
def baseline(storage, ray_cluster):
    """The undisturbed run of the same spec (its coverage, taken before anything touches it)."""
    spec = fault_spec("undisturbed", storage)
    outcome, _ = run(spec)
    cov = coverage(outcome.sweep_dir)
    cov["spec"], cov["sweep_dir"] = spec, outcome.sweep_dir
    assert cov["duplicates"] == 0
    assert set(status for (_, status) in cov["status"]) == {"completed"}
    assert cov["stages"] == ["distill", "search"]
    assert sum(cov["trials"].values()) == 5 and cov["epoch_rows"] == 2 * 2 + 3 * EPOCHS
    return cov


def compare_with_baseline(cov: dict, base: dict, errored: set = frozenset()) -> int:
    """Assert nothing is lost or duplicated against the undisturbed run; returns lost rows.
    `errored`: trial keys expected to end errored (their epochs are not compared)."""
    assert cov["duplicates"] == 0, "a row is duplicated"
    assert cov["trials"] == base["trials"], "trial count differs from the undisturbed run"
    assert cov["stages"] == base["stages"], "stage coverage differs from the undisturbed run"
    wanted = Counter({k: n for k, n in base["epochs"].items() if k[0] not in errored})
    have = Counter({k: n for k, n in cov["epochs"].items() if k[0] not in errored})
    lost = sum((wanted - have).values())
    assert not (have - wanted), f"rows the undisturbed run does not have: {have - wanted}"
    return lost


# -- 1. a worker node killed during a sweep ------------------------------------------------------------
def cluster_nodes(address: str, env: dict) -> list[dict]:
    code = ("import torch, ray, json; ray.init(address=%r, logging_level='ERROR');"
            "print(json.dumps([{'id': n['NodeID'], 'alive': n['Alive'], 'head': 'node:__internal_head__' in "
            "n['Resources']} for n in ray.nodes()]))" % address)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=90)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else []
    except (json.JSONDecodeError, IndexError):
        return []


def running_on(sweep_dir: Path, node_id: str) -> list[dict]:
    """Search and distill trials whose latest summary says: running on `node_id`, not at their
    last epoch (the sweep's graph runs searches and baselines at once, either may be there)."""
    import pyarrow.parquet as pq

    out = []
    for path in [*(sweep_dir / "results" / "trials").glob("distill__*.parquet"),
                 *(sweep_dir / "results" / "trials").glob("search__*.parquet")]:
        try:
            row = pq.read_table(path).to_pylist()[0]
        except Exception:  # noqa: BLE001 - a file being replaced: look again next time
            continue
        machine = json.loads(row["machine"] or "{}")
        if row["status"] == "running" and machine.get("node_id") == node_id and 1 <= row["epochs_run"] < row["epochs_planned"]:
            out.append(row)
    return out


def kill_node(marker: str) -> int:
    """SIGKILL a node: every process mentioning its temp dir (`ray start`, raylet, agents) and
    all their descendants (the worker processes running trials rename themselves `ray::...`,
    so their command line no longer names the temp dir). Nothing else is touched."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    roots = set()
    for pid in parents:
        try:
            text = Path(f"/proc/{pid}/cmdline").read_bytes() + Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in text and pid != os.getpid():
            roots.add(pid)
    doomed = set(roots)
    grew = True
    while grew:
        children = {pid for pid, ppid in parents.items() if ppid in doomed and pid not in doomed}
        grew = bool(children)
        doomed |= children
    doomed.discard(os.getpid())
    killed = 0
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    return killed


def trial_nodes(experiment: Path, pattern: str = "*/result.json") -> dict[str, list[str]]:
    """Per trial folder of a Tune experiment (or of every experiment, with `pattern`): the
    node of every result, in order."""
    out = {}
    for log in experiment.glob(pattern):
        nodes = []
        for line in log.read_text().splitlines():
            try:
                nodes.append(json.loads(line).get("node_id"))
            except json.JSONDecodeError:
                continue
        out[log.parent.name] = nodes
    return out


def test_a_killed_worker_node_does_not_stop_the_sweep(storage, tmp_path, request):
    assert_loopback_only()
    # one trial per job: the victims are found by their trial ids in Tune's trial folders
    spec = fault_spec("workerkill", storage, share_teacher=False)
    spec_path = write_spec(tmp_path / "spec.yaml", spec)
    sweep_dir = storage / "workerkill"
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    ray = str(venv_bin / "ray")
    head_tmp = tempfile.mkdtemp(prefix="dfa-ray-fhead-")
    worker_tmp = tempfile.mkdtemp(prefix="dfa-ray-fworker-")
    port = free_port()
    started: list[subprocess.Popen] = []
    driver = None
    driver_log = tmp_path / "driver.log"
    killed = 0
    try:
        started.append(subprocess.Popen(
            [ray, "start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={head_tmp}",
             "--disable-usage-stats", "--num-cpus=1", "--block"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        wait_for(lambda: listening(port), timeout=120, what="the head node")
        started.append(subprocess.Popen(
            [ray, "start", f"--address=127.0.0.1:{port}", f"--temp-dir={worker_tmp}", "--num-cpus=1",
             "--disable-usage-stats", "--block"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        nodes: list[dict] = []

        def two_nodes() -> bool:
            nodes[:] = cluster_nodes(f"127.0.0.1:{port}", env)
            return sum(n["alive"] for n in nodes) == 2

        wait_for(two_nodes, timeout=120, interval=2, what="two live nodes")
        worker_id = next(n["id"] for n in nodes if not n["head"])
        head_id = next(n["id"] for n in nodes if n["head"])

        with open(driver_log, "w") as log:  # a file, not a pipe: a full pipe would block the driver
            driver = subprocess.Popen(
                [sys.executable, "-m", "dfa_ray.cli", "sweep", str(spec_path), "--address", f"127.0.0.1:{port}"],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
        wait_for(lambda: driver.poll() is not None or bool(running_on(sweep_dir, worker_id)), timeout=300,
                 interval=0.3, what="a search or distillation trial running on the worker node")
        assert driver.poll() is None, "the driver ended before the worker node was killed:\n" + driver_log.read_text()[-3000:]
        victims = running_on(sweep_dir, worker_id)
        killed = kill_node(worker_tmp)  # the worker node: `ray start`, raylet, agents, trial processes
        assert killed > 0
        driver.wait(timeout=420)
        output = driver_log.read_text()
        assert driver.returncode == 0, output[-4000:]
    finally:
        if driver is not None and driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        stop_started_nodes(started)  # exactly the nodes this test started
        end_processes_mentioning(head_tmp)
        kill_node(worker_tmp)
        for folder in (head_tmp, worker_tmp):
            shutil.rmtree(folder, ignore_errors=True)

    cov = coverage(sweep_dir)
    epochs, trials = cov["frames"]
    distill = trials[trials.stage == "distill"]
    assert len(distill) == 3 and (distill.status == "completed").all(), distill[["method", "status", "reason"]]
    for trial_id, rows in epochs[epochs.stage == "distill"].groupby("trial_id"):
        assert sorted(rows.epoch) == list(range(1, EPOCHS + 1)), f"{trial_id}: epochs {sorted(rows.epoch)}"
    # the killed trial went on on the head, from its checkpoint (not from epoch 1 again)
    nodes = trial_nodes(sweep_dir / "tune", "*/*/result.json")
    victim_ids = {v["trial_id"] for v in victims}
    moved = {name: seq for name, seq in nodes.items() if any(tid in name for tid in victim_ids)}
    assert moved, f"no result log for the killed trial(s) {victim_ids}: {sorted(nodes)}"
    for name, seq in moved.items():
        assert worker_id in seq and seq[-1] == head_id, f"{name} did not move to the head: {seq}"
    lost = compare_with_baseline(cov, request.getfixturevalue("baseline"))
    assert lost == 0
    record("worker node killed during a sweep (two-node loopback cluster)", 1,
           f"{killed} worker-node processes killed while {len(victims)} trial(s) ran there; sweep finished; "
           f"{len(moved)} trial(s) retried on the head; {len(distill)} distill trials completed, "
           f"{cov['epoch_rows']} epoch rows, none duplicated", lost)


# -- 2. truncated / foreign / all-broken checkpoints (the trainable's restore, no Ray) ------------------
@pytest.fixture(scope="module")
def trial_checkpoints(storage, ray_cluster, tmp_path_factory):
    """A kd trial that ran two epochs, with checkpoint_000001 and checkpoint_000002 saved, and the
    metrics of its epochs 1 and 2 (a restored trial must reproduce them exactly). The trainable
    runs in this process; Ray is only up because `step()` asks Ray for its node id (which,
    outside a connected process, would start a Ray of its own)."""
    from dfa_ray.data import load_dataset
    from dfa_ray.spec import parse_spec
    from dfa_ray.sweep import teacher_jobs

    spec = parse_spec(fault_spec("checkpoints", storage))
    data = load_dataset("digits")
    folders, jobs = teacher_jobs(spec, data)
    assert not jobs, "the teacher is in the store"
    from dfa_ray.engine.recipes import get_recipe

    config = {"sweep": "checkpoints", "stage": "distill", "dataset": "digits",
              "data_spec": {"name": "digits", "root": None, "options": {}}, "fast": {}, "plugins": [],
              "seed": 0, "cpu": 1, "gpu": 0, "teacher": "resnet14", "student": "resnet8",
              "teacher_path": str(folders["resnet14"]), "method": "kd", "genotype": None, "method_options": {},
              "recipe": get_recipe("quick", {"epochs": EPOCHS, "batch_size": 256}).model_dump(mode="json")}
    first = make_trainable(config, data)
    pristine = tmp_path_factory.mktemp("pristine-trial")
    metrics = {}
    for epoch in (1, 2):
        metrics[epoch] = first.step()
        folder = pristine / f"checkpoint_{epoch:06d}"
        folder.mkdir()
        first.save_checkpoint(str(folder))
    return config, data, pristine, metrics


def make_trainable(config, data):
    """The Trainable as a Tune actor builds it (setup with the dataset), without the actor."""
    from dfa_ray.tune.trainables import DistillTrainable

    trainable = DistillTrainable.__new__(DistillTrainable)
    trainable.setup(dict(config), data=data)
    return trainable


def fresh_trial(pristine: Path, tmp_path: Path, name: str) -> tuple[Path, Path]:
    trial = tmp_path / name
    shutil.copytree(pristine, trial)
    return trial / "checkpoint_000001", trial / "checkpoint_000002"


def restore(config, data, checkpoint: Path):
    trainable = make_trainable(config, data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainable.load_checkpoint(str(checkpoint))  # must not raise, whatever the files hold
    return trainable, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


CUTS = (0.0, 0.5, 0.999)  # empty file (disk full), half written, the last bytes missing


def test_a_truncated_newest_checkpoint_falls_back_to_the_older_one(trial_checkpoints, tmp_path):
    from dfa_ray.tune.trainables import STATE_FILE

    config, data, pristine, metrics = trial_checkpoints
    for cut in CUTS:
        older, newest = fresh_trial(pristine, tmp_path, f"cut-{cut}")
        truncate(newest / STATE_FILE, cut)
        trainable, messages = restore(config, data, newest)
        assert any(str(newest) in m and f"older checkpoint {older}" in m for m in messages), messages
        assert trainable.run.epoch == 1
        again = trainable.step()  # continues bit-for-bit from epoch 1
        assert again["epoch"] == 2 and again["train_loss"] == metrics[2]["train_loss"]
    record("newest checkpoint of a trial truncated", len(CUTS),
           f"cut to {', '.join(f'{c:.1%}' for c in CUTS)} of its bytes: each time a warning and epoch 2 "
           "re-run from checkpoint_000001 with the same loss", 0)


def test_a_foreign_newest_checkpoint_falls_back_to_the_older_one(trial_checkpoints, tmp_path):
    from dfa_ray.tune.trainables import STATE_FILE

    config, data, pristine, metrics = trial_checkpoints
    older, newest = fresh_trial(pristine, tmp_path, "foreign")
    torch.save({"epoch": 7, "weights": torch.zeros(3)}, newest / STATE_FILE)  # readable, not a trial state
    trainable, messages = restore(config, data, newest)
    assert any(f"older checkpoint {older}" in m for m in messages), messages
    assert trainable.run.epoch == 1
    assert trainable.step()["train_loss"] == metrics[2]["train_loss"]
    record("newest checkpoint replaced by a torch file of another structure", 1,
           "a warning; continued from checkpoint_000001 (epoch 2 reproduced)", 0)


def test_with_every_checkpoint_broken_the_trial_starts_over(trial_checkpoints, tmp_path):
    from dfa_ray.tune.trainables import STATE_FILE

    config, data, pristine, metrics = trial_checkpoints
    for cut in CUTS:
        older, newest = fresh_trial(pristine, tmp_path, f"all-{cut}")
        truncate(older / STATE_FILE, cut)
        truncate(newest / STATE_FILE, cut)
        trainable, messages = restore(config, data, newest)
        assert any("starts over" in m and str(newest) in m for m in messages), messages
        assert trainable.run.epoch == 0
        again = trainable.step()
        assert again["epoch"] == 1 and again["train_loss"] == metrics[1]["train_loss"]
    record("every checkpoint of a trial truncated", len(CUTS),
           f"cut to {', '.join(f'{c:.1%}' for c in CUTS)}: each time a warning, the trial restarts at epoch 0 "
           "and reproduces epoch 1; no exception", 0)


def test_a_reused_actor_runs_the_next_trial_as_a_fresh_one_would(trial_checkpoints):
    """The sweep reuses actors (reuse_actors=True): `reset_config` must keep nothing of the
    trial before it. Another trial (vanilla, seed 1), then the kd trial in the same process,
    reproduces the kd trial's epochs exactly; a paused trial resumed in a reused actor (reset,
    then Tune loads its checkpoint) continues it exactly."""
    config, data, pristine, metrics = trial_checkpoints
    other = {**config, "method": "vanilla", "seed": 1}
    trainable = make_trainable(other, data)
    assert trainable.step()["train_loss"] != metrics[1]["train_loss"]
    assert trainable.reset_config(dict(config)) is True
    assert trainable.run.epoch == 0 and trainable.settings.method == "kd"
    replay = [trainable.step() for _ in (1, 2)]
    for epoch, result in zip((1, 2), replay):
        for key in ("train_loss", "val_acc", "val_loss"):
            assert result[key] == metrics[epoch][key], (epoch, key)
    trainable.reset_config(dict(other))
    trainable.step()
    trainable.reset_config(dict(config))
    trainable.load_checkpoint(str(pristine / "checkpoint_000001"))
    assert trainable.run.epoch == 1
    assert trainable.step()["train_loss"] == metrics[2]["train_loss"]


# -- 3. a loss that turns NaN / inf ------------------------------------------------------------------
def test_a_nonfinite_loss_errors_that_trial_and_the_sweep_goes_on(storage, baseline):
    from dfa_ray.spec import parse_spec

    # 1e39 is a finite float64 that the spec accepts; as float32 it is inf, so the kd loss
    # (w_kl * KL) is inf or NaN from the first batch on: deterministic, no monkeypatching.
    # one trial per job: kd's own Tune trial log is checked below (a diverged member of a
    # shared-teacher group: tests/test_group_ray.py)
    spec = fault_spec("nonfinite", storage, options={"kd": {"w_kl": 1e39}}, share_teacher=False)
    assert parse_spec(spec).distill.options["kd"]["w_kl"] == 1e39
    outcome, lines = run(spec)
    cov = coverage(outcome.sweep_dir)
    epochs, trials = cov["frames"]
    distill = trials[trials.stage == "distill"].set_index("method")
    kd = distill.loc["kd"]
    assert kd.status == "errored", distill[["status", "reason"]]
    assert "non-finite" in kd.reason and "epoch 1" in kd.reason, kd.reason
    assert kd.epochs_run == 1
    assert (distill.drop(index="kd").status == "completed").all()
    assert (trials[trials.stage == "search"].status == "completed").all()
    assert any("non-finite" in line for line in lines), "the progress lines report it"
    # ended once, not retried into the same NaN
    kd_logs = [log for log in (outcome.sweep_dir / "tune" / "distill-resnet14-to-resnet8").glob("*/result.json")
               if kd.trial_id in log.parent.name]
    assert len(kd_logs) == 1, kd_logs
    kd_results = [json.loads(line) for line in kd_logs[0].read_text().splitlines()]
    assert len(kd_results) == 1 and "nonfinite" in kd_results[0]
    # the report lists it, with its reason
    from dfa_ray_analysis.report import write_report

    report = write_report(outcome.sweep_dir, outcome.sweep_dir / "report").read_text()
    errored_section = report.split("## Errored trials", 1)[1].split("\n## ", 1)[0]
    assert kd.trial_id in errored_section and "non-finite" in errored_section
    kd_key = ("distill", "resnet14->resnet8", "kd", 0)
    lost = compare_with_baseline(cov, baseline, errored={kd_key})
    assert lost == 0
    record("loss turns NaN/inf (kd with w_kl 1e39 overflows float32)", 1,
           f"kd errored: {kd.reason.split(';')[0]}; vanilla, dfa and 2 search trials completed; "
           f"{cov['epoch_rows']} epoch rows, none duplicated; the report lists it under Errored trials", lost)


# -- 4. a results file truncated mid-write ---------------------------------------------------------
def damage_and_resume(spec: dict, sweep_dir: Path, path: Path) -> dict:
    """Cut `path` in half (what a crash mid-write leaves where renames are not atomic), read the
    results (the reader must skip it with a warning), then run the same sweep again."""
    from dfa_ray.results import ResultsFileWarning, load

    assert path.exists()
    truncate(path, 0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        damaged = load(sweep_dir)
    skipped = [str(w.message) for w in caught if issubclass(w.category, ResultsFileWarning)]
    _, lines = run(spec)  # the same sweep again
    return {"skipped": skipped, "damaged": damaged, "lines": lines, "after": coverage(sweep_dir)}


@pytest.fixture(scope="module")
def finished_sweep(baseline):
    """The undisturbed sweep, once its coverage is taken, is the finished sweep whose files the
    two tests below damage (one sweep less to run)."""
    return baseline["spec"], baseline["sweep_dir"], baseline


def test_a_truncated_results_file_is_skipped_then_rewritten_on_resume(finished_sweep, baseline):
    from dfa_ray.results import ResultsWriter

    spec, sweep_dir, before = finished_sweep
    epochs, _ = before["frames"]
    victim = epochs[(epochs.stage == "distill") & (epochs.method == "vanilla") & (epochs.epoch == 2)].iloc[0]
    # a finished trial's epochs are one compacted file: truncating it loses all of them
    path = ResultsWriter(sweep_dir).trial_epochs_path("distill", victim.trial_id)
    t = damage_and_resume(spec, sweep_dir, path)
    assert any(str(path) in m for m in t["skipped"]), t["skipped"]
    assert len(t["damaged"][0]) == before["epoch_rows"] - EPOCHS
    assert any("resuming experiment distill" in line for line in t["lines"])
    cov = t["after"]  # coverage() raises if any file is still unreadable
    epochs, _ = cov["frames"]
    row = epochs[(epochs.trial_id == victim.trial_id) & (epochs.epoch == 2)]
    assert len(row) == 1, "the truncated row was not written again"
    assert row.iloc[0].train_loss == victim.train_loss
    lost = compare_with_baseline(cov, baseline)
    assert lost == 0 and cov["epoch_rows"] == before["epoch_rows"]
    record("results file of an epoch truncated mid-write", 1,
           f"load() skipped it with a ResultsFileWarning ({len(t['damaged'][0])} of {before['epoch_rows']} rows); "
           "the same sweep run again rewrote it from Tune's result.json, once", lost)


def test_a_truncated_trial_summary_is_skipped_then_rewritten_on_resume(finished_sweep, baseline):
    from dfa_ray.results import ResultsWriter

    spec, sweep_dir, before = finished_sweep
    _, trials = before["frames"]
    summary = trials[(trials.stage == "distill") & (trials.method == "kd")].iloc[0]
    path = ResultsWriter(sweep_dir).trial_path("distill", summary.trial_id)
    t = damage_and_resume(spec, sweep_dir, path)
    assert any(str(path) in m for m in t["skipped"]), t["skipped"]
    assert len(t["damaged"][1]) == len(trials) - 1
    cov = t["after"]
    _, trials_after = cov["frames"]
    row = trials_after[trials_after.trial_id == summary.trial_id]
    assert len(row) == 1, "the truncated trial summary was not written again"
    assert row.iloc[0].status == "completed" and row.iloc[0].test_acc_last == summary.test_acc_last
    lost = compare_with_baseline(cov, baseline)
    assert lost == 0
    record("results file of a trial summary truncated mid-write", 1,
           "load() skipped it with a ResultsFileWarning; the same sweep run again rewrote the summary, once", lost)
