"""The sweep as a dependency graph on a real local Ray: concurrent searches, baselines that do
not wait for the search, a killed driver resumed mid-graph, a failed teacher that skips only its
own pairs. The cluster declares 4 logical CPUs (on a 2-core machine), so that the two pairs'
searches and baselines can all hold a slot at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile

import pandas as pd
import pytest
import torch  # noqa: F401  (torch before ray)

from dfa_ray.localray import end_processes_mentioning, private_ray
from raytest import assert_loopback_only, tiny_spec, train_store_teacher, wait_for, write_spec

pytestmark = pytest.mark.ray

PAIRS = [{"teacher": "resnet14", "student": "resnet8"}, {"teacher": "resnet14", "student": "resnet20"}]


@pytest.fixture(scope="module")
def ray4():
    assert_loopback_only()
    with private_ray("dfa-ray-graph-", num_cpus=4):
        yield


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    root = tmp_path_factory.mktemp("graph-storage")
    train_store_teacher(tiny_spec("warmup", root))  # resnet14 in the store
    return root


def graph_spec(name, storage, **sections):
    sections.setdefault("pairs", PAIRS)
    return tiny_spec(name, storage, **{
        "search": {"enabled": True, "epochs": 3, "num_samples": 1, "options": {"batch_size": 256},
                   "scheduler": {"type": "fifo"}},
        "distill": {"methods": ["vanilla", "dfa"], "seeds": [0], "epochs": 1},
        "resources": {"cpu": 1, "gpu": 0, "max_concurrent": None, "max_failures": 1},
        **sections})


def spans(epochs: pd.DataFrame) -> pd.DataFrame:
    """Per trial: when its first epoch started and its last ended (from the rows' timestamps)."""
    e = epochs.assign(end=epochs.written_at, start=epochs.written_at - pd.to_timedelta(epochs.seconds, unit="s"))
    return e.groupby(["stage", "pair", "method", "trial_id"]).agg(start=("start", "min"), end=("end", "max")).reset_index()


def test_searches_of_two_pairs_overlap_and_baselines_do_not_wait_for_them(ray4, storage):
    from dfa_ray.results import load
    from dfa_ray.spec import parse_spec
    from dfa_ray.sweep import run_sweep

    lines: list[str] = []
    outcome = run_sweep(parse_spec(graph_spec("overlap", storage)), log=lines.append)
    assert not outcome.failed and not outcome.skipped, (outcome.failed, outcome.skipped)
    assert set(outcome.grids) == {"search:resnet14->resnet8", "search:resnet14->resnet20",
                                  "distill:resnet14->resnet8", "distill:resnet14->resnet20",
                                  "distill-dfa:resnet14->resnet8", "distill-dfa:resnet14->resnet20"}
    assert all(len(grid) == 1 for node, grid in outcome.grids.items() if node.startswith(("search", "distill:")))
    epochs, trials = load(outcome.sweep_dir)
    s = spans(epochs)
    search = s[s.stage == "search"].set_index("pair")
    a, b = search.loc["resnet14->resnet8"], search.loc["resnet14->resnet20"]
    assert a.start < b.end and b.start < a.end, f"the two searches ran one after the other:\n{search}"
    baselines = s[(s.stage == "distill") & (s.method == "vanilla")]
    assert baselines.start.min() < search.end.max(), "the baselines waited for the searches"
    # each dfa run started after its own pair's search had ended
    dfa = s[(s.stage == "distill") & (s.method == "dfa")].set_index("pair")
    for pair in dfa.index:
        assert dfa.loc[pair, "start"] > search.loc[pair, "end"]
    assert (trials.status == "completed").all() and len(trials) == 2 + 4


def test_a_failed_teacher_skips_exactly_its_pairs_and_the_other_pair_finishes(ray4, storage):
    from dfa_ray.results import load
    from dfa_ray.spec import parse_spec
    from dfa_ray.sweep import run_sweep

    folder = next((storage / "teachers").glob("resnet14-digits-*"))
    # resnet14 is taken as it is; resnet20 is trained with a learning rate that makes its loss
    # non-finite in its first epoch, so its teacher node fails
    spec = graph_spec("teacherfail", storage, pairs=[{"teacher": "resnet14", "student": "resnet8"},
                                                     {"teacher": "resnet20", "student": "resnet8"}],
                      teachers={"seed": 0, "from": {"resnet14": str(folder)}, "recipe": {"lr": 1.0e12}})
    lines: list[str] = []
    outcome = run_sweep(parse_spec(spec), log=lines.append)
    assert len(outcome.failed) == 1 and outcome.failed[0].startswith("teacher:resnet20: teacher resnet20 did not "
                                                                     "finish training")
    skipped = sorted(s.split(":", 2)[0] + ":" + s.split(":", 2)[1] for s in outcome.skipped)
    assert skipped == ["distill-dfa:resnet20->resnet8", "distill:resnet20->resnet8", "search:resnet20->resnet8"]
    assert all("needs teacher:resnet20 failed" in s or "needs search:resnet20->resnet8 skipped" in s
               for s in outcome.skipped)
    _, trials = load(outcome.sweep_dir)
    done = trials[trials.pair == "resnet14->resnet8"]
    assert sorted(done.method) == ["dfa", "search", "vanilla"] and (done.status == "completed").all()
    teacher = trials[trials.stage == "teacher"]
    assert teacher.status.tolist() == ["errored"] and "non-finite" in teacher.reason.iloc[0]
    assert not (trials.pair == "resnet20->resnet8").any()


def test_a_driver_killed_mid_graph_is_finished_by_the_same_command(storage, tmp_path):
    """The driver is killed while searches run; the same command then finishes every node, with
    each epoch row exactly once (uses its own local Ray, started by the driver)."""
    from dfa_ray.results import load

    spec = graph_spec("graphkill", storage, search={"enabled": True, "epochs": 3, "num_samples": 2,
                                                    "options": {"batch_size": 256}, "scheduler": {"type": "fifo"}},
                      distill={"methods": ["vanilla", "kd", "dfa"], "seeds": [0], "epochs": 2})
    spec_path = write_spec(tmp_path / "spec.yaml", spec)
    ray_tmp = tempfile.mkdtemp(prefix="dfa-ray-graphkill-")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "DFA_RAY_TEST_MARKER": ray_tmp}
    command = [sys.executable, "-m", "dfa_ray.cli", "sweep", str(spec_path)]
    sweep_dir = storage / "graphkill"

    def searching_pairs() -> int:
        try:
            epochs, _ = load(sweep_dir)
        except Exception:  # no results folder yet
            return 0
        return epochs[epochs.stage == "search"].pair.nunique()

    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True, cwd=tmp_path)
    try:
        # both searches have begun (on a loaded machine one can be epochs ahead of the other)
        wait_for(lambda: searching_pairs() == 2, timeout=240, what="an epoch of each pair's search")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        end_processes_mentioning(ray_tmp)  # the local Ray that driver started, and nothing else
    epochs, _ = load(sweep_dir)
    assert len(epochs) < 2 * 2 * 3 + 2 * 3 * 2, "the sweep finished before the driver was killed"
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    end_processes_mentioning(ray_tmp)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming experiment search-resnet14-to-resnet8" in second.stdout
    assert "resuming experiment search-resnet14-to-resnet20" in second.stdout
    epochs, trials = load(sweep_dir)
    assert not epochs.duplicated(["stage", "trial_id", "epoch"]).any()
    search = epochs[epochs.stage == "search"]
    distill = epochs[epochs.stage == "distill"]
    assert len(search) == 2 * 2 * 3 and len(distill) == 2 * 3 * 2  # pairs x trials x epochs, each once
    assert search.groupby("trial_id").epoch.apply(sorted).apply(lambda e: e == [1, 2, 3]).all()
    assert distill.groupby("trial_id").epoch.apply(sorted).apply(lambda e: e == [1, 2]).all()
    assert len(trials) == 4 + 6 and (trials.status == "completed").all()


def test_an_experiment_stopped_before_tunes_first_snapshot_is_run_again_in_full(ray4, storage):
    """A driver killed after Tune created an experiment's folder (tuner.pkl, trial folders, the
    trials' first rows) but before Tune's first snapshot of its trials: Tune's own restore of
    such a folder runs ONE sample. The sweep runs the experiment again with all its samples and
    drops the rows of the trials nobody can resume (same state made here by deleting the
    snapshot of a finished search)."""
    from dfa_ray.results import load
    from dfa_ray.spec import parse_spec
    from dfa_ray.sweep import run_sweep

    spec = parse_spec(graph_spec("nosnapshot", storage, pairs=PAIRS[:1],
                                 search={"enabled": True, "epochs": 2, "num_samples": 2,
                                         "options": {"batch_size": 256}, "scheduler": {"type": "fifo"}},
                                 distill={"methods": ["vanilla"], "seeds": [0], "epochs": 1}))
    outcome = run_sweep(spec, log=lambda line: None)
    assert not outcome.failed
    first, _ = load(outcome.sweep_dir)
    old_ids = set(first[first.stage == "search"].trial_id)
    assert len(old_ids) == 2
    experiment = outcome.sweep_dir / "tune" / "search-resnet14-to-resnet8"
    for state in [*experiment.glob("experiment_state-*.json"), *experiment.glob("basic-variant-state-*")]:
        state.unlink()
    assert (experiment / "tuner.pkl").exists() and len(list(experiment.glob("*/result.json"))) == 2

    lines: list[str] = []
    outcome = run_sweep(spec, log=lines.append)
    assert not outcome.failed
    epochs, trials = load(outcome.sweep_dir)
    search = epochs[epochs.stage == "search"]
    assert not set(search.trial_id) & old_ids, "rows of the trials that were started over are still there"
    assert search.groupby("trial_id").epoch.apply(sorted).tolist() == [[1, 2], [1, 2]]
    assert len(outcome.grids["search:resnet14->resnet8"]) == 2
    assert sorted(trials[trials.stage == "search"].status) == ["completed", "completed"]
    assert any("search-resnet14-to-resnet8: the stopped run ended before Tune recorded its trials; starting it "
               "over (discarded the rows of 2 unrecorded trial(s))" in line for line in lines), lines
