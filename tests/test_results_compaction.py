"""Compaction of a finished trial's epoch files, option columns, the older flat layout, and the
one atomic-write helper: the results folder of a finished study holds few files, reads the same
through pandas and load(), and loses or duplicates no row whatever step a crash interrupts."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dfa_ray import atomic
from dfa_ray.results import (
    COLUMNS_FILE,
    EPOCH_SCHEMA,
    TRIAL_SCHEMA,
    Compaction,
    ResultsFileWarning,
    ResultsWriter,
    compact,
    load,
    scalar_options,
)


def ident(stage: str, trial_id: str, options: dict | None = None) -> dict:
    return {"sweep": "s", "stage": stage, "trial_id": trial_id, "pair": "resnet20->resnet8", "teacher": "resnet20",
            "student": "resnet8", "dataset": "digits", "method": "kd" if stage == "distill" else "search", "seed": 0,
            "config": {"x": 1}, **({"options": options} if options is not None else {})}


def run_trial(writer: ResultsWriter, stage: str, trial_id: str, epochs: int, status: str = "completed",
              options: dict | None = None, acc: float = 10.0) -> None:
    for epoch in range(1, epochs + 1):
        writer.write_epoch({**ident(stage, trial_id, options), "epoch": epoch, "val_acc": acc * epoch})
    writer.write_trial({**ident(stage, trial_id, options), "status": status, "epochs_run": epochs,
                        "epochs_planned": epochs})


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def assert_pandas_reads_like_load(sweep: Path) -> None:
    """pandas.read_parquet of each table folder: the columns, dtypes and rows of load()."""
    epochs, trials = load(sweep)
    for name, frame, key in (("epochs", epochs, ["stage", "trial_id", "epoch"]), ("trials", trials, ["stage", "trial_id"])):
        raw = pd.read_parquet(sweep / "results" / name)
        assert list(raw.columns) == list(frame.columns), name
        assert list(raw.dtypes) == list(frame.dtypes), (name, raw.dtypes, frame.dtypes)
        raw = raw.sort_values(key, kind="stable").reset_index(drop=True)
        pd.testing.assert_frame_equal(raw, frame, check_like=False)


# --- compaction -----------------------------------------------------------------------------------
def test_a_finished_trial_is_one_file_with_every_epoch(tmp_path):
    writer = ResultsWriter(tmp_path)
    run_trial(writer, "distill", "d_1", 4)
    before, _ = load(tmp_path)
    assert len(files(writer.epochs_dir / "distill" / "running")) == 4
    target = writer.compact_trial("distill", "d_1")
    assert target == writer.epochs_dir / "distill" / "distill__d_1.parquet"
    assert files(writer.results_dir) == ["epochs/distill/distill__d_1.parquet", "trials/distill__d_1.parquet"]
    after, _ = load(tmp_path)
    pd.testing.assert_frame_equal(before, after)
    assert after.epoch.tolist() == [1, 2, 3, 4] and after.val_acc.tolist() == [10.0, 20.0, 30.0, 40.0]
    assert pq.read_table(target).num_rows == 4
    assert writer.compact_trial("distill", "d_1") is None  # nothing left to merge
    assert_pandas_reads_like_load(tmp_path)


def test_a_crash_between_writing_the_merged_file_and_deleting_the_epoch_files(tmp_path):
    writer = ResultsWriter(tmp_path)
    run_trial(writer, "search", "s_1", 3)
    running = writer.epochs_dir / "search" / "running"
    saved = tmp_path / "saved"
    shutil.copytree(running, saved)
    writer.compact_trial("search", "s_1")
    shutil.copytree(saved, running, dirs_exist_ok=True)  # as if the deletes never happened
    epochs, _ = load(tmp_path)
    assert epochs.epoch.tolist() == [1, 2, 3] and epochs.val_acc.tolist() == [10.0, 20.0, 30.0]
    assert compact(tmp_path) == Compaction(trials=1, files_removed=3)
    assert files(running) == []
    assert pq.read_table(writer.trial_epochs_path("search", "s_1")).num_rows == 3
    assert compact(tmp_path) == Compaction(trials=0, files_removed=0)  # idempotent
    pd.testing.assert_frame_equal(load(tmp_path)[0], epochs)


def test_an_epoch_written_again_after_compaction_wins_and_is_compacted_again(tmp_path):
    writer = ResultsWriter(tmp_path)
    run_trial(writer, "distill", "d_1", 3)
    writer.compact_trial("distill", "d_1")
    # the errored trial is resumed from its epoch-1 checkpoint and replays epoch 2
    writer.write_epoch({**ident("distill", "d_1"), "epoch": 2, "val_acc": 99.0})
    writer.write_trial({**ident("distill", "d_1"), "status": "running", "epochs_run": 2, "epochs_planned": 3})
    epochs, _ = load(tmp_path)
    assert epochs.val_acc.tolist() == [10.0, 99.0, 30.0]
    assert compact(tmp_path).trials == 0  # still running: left alone
    writer.write_trial({**ident("distill", "d_1"), "status": "completed", "epochs_run": 3, "epochs_planned": 3})
    assert compact(tmp_path) == Compaction(trials=1, files_removed=1)
    merged = pq.read_table(writer.trial_epochs_path("distill", "d_1")).to_pandas()
    assert merged.epoch.tolist() == [1, 2, 3] and merged.val_acc.tolist() == [10.0, 99.0, 30.0]
    assert files(writer.epochs_dir / "distill" / "running") == []


def test_a_truncated_compacted_file_is_skipped_then_replaced(tmp_path):
    writer = ResultsWriter(tmp_path)
    run_trial(writer, "distill", "d_1", 3)
    run_trial(writer, "distill", "d_2", 2)
    target = writer.compact_trial("distill", "d_1")
    writer.compact_trial("distill", "d_2")
    target.write_bytes(target.read_bytes()[:40])
    with pytest.warns(ResultsFileWarning, match="distill__d_1.parquet"):
        epochs, _ = load(tmp_path)
    assert epochs.trial_id.tolist() == ["d_2", "d_2"]
    assert writer.trial_epochs("distill", "d_1") == set() and writer.trial_epochs("distill", "d_2") == {1, 2}
    for epoch in (1, 2, 3):  # what restore_missing_rows does from Tune's result.json
        writer.write_epoch({**ident("distill", "d_1"), "epoch": epoch, "val_acc": 10.0 * epoch})
    with pytest.warns(ResultsFileWarning, match="compacting trial d_1: skipping unreadable"):
        writer.compact_trial("distill", "d_1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        epochs, _ = load(tmp_path)
    assert epochs.groupby("trial_id").epoch.apply(list).to_dict() == {"d_1": [1, 2, 3], "d_2": [1, 2]}


def test_a_study_holds_two_files_per_finished_trial(tmp_path):
    writer = ResultsWriter(tmp_path)
    for n in range(3):
        run_trial(writer, "search", f"s_{n}", 4, status="pruned" if n else "completed", options={"lam": 1.0 + n})
        run_trial(writer, "distill", f"d_{n}", 5, options={"T": 4.0})
    run_trial(writer, "distill", "d_running", 2, status="running", options={"T": 2.0})
    assert compact(tmp_path) == Compaction(trials=6, files_removed=3 * 4 + 3 * 5)
    names = files(writer.results_dir)
    assert len(names) == 2 * 6 + 3 + 2  # 6 finished trials, the running one (2 epochs + summary), 2 column files
    assert "epochs/distill/running/distill__d_running__00002.parquet" in names
    epochs, trials = load(tmp_path)
    assert len(epochs) == 3 * 4 + 3 * 5 + 2 and not epochs.duplicated(["stage", "trial_id", "epoch"]).any()
    assert len(trials) == 7
    assert_pandas_reads_like_load(tmp_path)


# --- option columns -------------------------------------------------------------------------------
def test_options_are_typed_columns_unified_across_files(tmp_path):
    writer = ResultsWriter(tmp_path)
    run_trial(writer, "search", "s_1", 2, options={"gamma_ts": 0.5, "lam": 10, "derive": "topk:2", "preact": True,
                                                   "order": np.int64(2)})
    # a sampled float for an option the first trial wrote as an int: the column widens to double
    run_trial(writer, "search", "s_2", 1, options={"gamma_ts": 2.0, "lam": 2.5, "derive": "argmax", "preact": False,
                                                   "order": 1})
    run_trial(writer, "distill", "d_1", 2, options={"T": 4.0, "w_ce": 0.5})
    run_trial(writer, "teacher", "t_1", 1)  # no options
    for when in ("running", "compacted"):
        epochs, trials = load(tmp_path)
        opt = [c for c in epochs.columns if c.startswith("opt.")]
        assert list(epochs.columns) == EPOCH_SCHEMA.names + opt
        assert opt == ["opt.T", "opt.derive", "opt.gamma_ts", "opt.lam", "opt.order", "opt.preact", "opt.w_ce"]
        assert list(trials.columns) == TRIAL_SCHEMA.names + opt
        assert epochs["opt.lam"].dtype == np.dtype("float64") and epochs["opt.gamma_ts"].dtype == np.dtype("float64")
        by = epochs.set_index(["trial_id", "epoch"])
        assert by.loc[("s_1", 1), "opt.lam"] == 10.0 and by.loc[("s_2", 1), "opt.lam"] == 2.5
        assert by.loc[("s_1", 2), "opt.derive"] == "topk:2" and by.loc[("s_1", 1), "opt.preact"] is True
        assert by.loc[("s_2", 1), "opt.order"] == 1 and by.loc[("s_1", 1), "opt.order"] == 2
        assert by.loc[("d_1", 1), "opt.T"] == 4.0 and pd.isna(by.loc[("d_1", 1), "opt.lam"])
        assert pd.isna(by.loc[("t_1", 1), "opt.T"]) and pd.isna(by.loc[("s_1", 1), "opt.T"])
        assert trials.set_index("trial_id").loc["d_1", "opt.w_ce"] == 0.5
        assert_pandas_reads_like_load(tmp_path)
        if when == "running":
            assert compact(tmp_path).trials == 4
    schema = pq.read_schema(writer.epochs_dir / COLUMNS_FILE)
    assert schema.field("opt.lam").type == pa.float64() and schema.field("opt.order").type == pa.int64()
    assert schema.field("opt.preact").type == pa.bool_() and schema.field("opt.derive").type == pa.string()


def test_an_empty_results_folder_reads_through_pandas_too(tmp_path):
    writer = ResultsWriter(tmp_path)
    run_trial(writer, "teacher", "t_1", 1)
    assert not (writer.epochs_dir / COLUMNS_FILE).exists()  # no options: no columns file needed
    assert_pandas_reads_like_load(tmp_path)


def test_non_scalar_options_are_refused_and_scalar_options_keeps_the_scalars(tmp_path):
    writer = ResultsWriter(tmp_path)
    with pytest.raises(ValueError, match=r"option 'arch_betas' is a list, not a number, bool or string"):
        writer.write_epoch({**ident("search", "s_1", {"arch_betas": [0.5, 0.999]}), "epoch": 1})
    with pytest.raises(ValueError, match="options is a mapping"):
        writer.write_epoch({**ident("search", "s_1"), "options": [("lam", 1)], "epoch": 1})
    assert scalar_options({"lam": np.float32(2.0), "arch_betas": (0.5, 0.9), "derive": None, "flag": np.bool_(True),
                           "nested": {"a": 1, "b": [1]}, "name": "x"}) == {
        "lam": 2.0, "flag": True, "nested.a": 1, "name": "x"}
    assert type(scalar_options({"flag": np.bool_(True)})["flag"]) is bool
    writer.write_epoch({**ident("search", "s_1", {"lam": 1.0, "skip": None}), "epoch": 1})
    assert "opt.skip" not in load(tmp_path)[0].columns


# --- older layouts ----------------------------------------------------------------------------------
def test_the_flat_layout_of_older_versions_is_read_and_compacted(tmp_path):
    """Before compaction, every epoch was `epochs/<stage>__<trial>__<epoch>.parquet`."""
    writer = ResultsWriter(tmp_path)
    old = ResultsWriter(tmp_path / "scratch")
    for epoch in (1, 2):
        old.write_epoch({**ident("distill", "d_old"), "epoch": epoch, "val_acc": 5.0 * epoch})
    for path in sorted(old.epochs_dir.rglob("*.parquet")):
        shutil.move(path, writer.epochs_dir / path.name)  # the names were the same, one folder up
    old.write_trial({**ident("distill", "d_old"), "status": "completed", "epochs_run": 2, "epochs_planned": 2})
    shutil.move(old.trial_path("distill", "d_old"), writer.trial_path("distill", "d_old"))
    assert files(writer.epochs_dir) == ["distill__d_old__00001.parquet", "distill__d_old__00002.parquet"]
    run_trial(writer, "distill", "d_new", 1, options={"T": 4.0})  # a newer trial of the resumed sweep
    epochs, trials = load(tmp_path)
    assert epochs[["trial_id", "epoch", "val_acc"]].values.tolist() == [["d_new", 1, 10.0], ["d_old", 1, 5.0],
                                                                         ["d_old", 2, 10.0]]
    assert sorted(trials.trial_id) == ["d_new", "d_old"]
    assert_pandas_reads_like_load(tmp_path)
    assert compact(tmp_path) == Compaction(trials=2, files_removed=3)
    assert files(writer.epochs_dir) == [COLUMNS_FILE, "distill/distill__d_new.parquet", "distill/distill__d_old.parquet"]
    pd.testing.assert_frame_equal(load(tmp_path)[0], epochs)


# --- the callback compacts when a trial ends ---------------------------------------------------------
def test_the_results_callback_compacts_a_trial_when_it_ends(tmp_path):
    from dfa_ray.tune.callbacks import ResultsCallback

    callback = ResultsCallback(tmp_path)
    config = {"stage": "search", "sweep": "s", "dataset": "digits", "seed": 0, "teacher": "resnet20",
              "student": "resnet8", "epochs": 3, "options": {"lam": 10.0, "gamma_ts": 0.5, "arch_betas": [0.5, 0.9]}}
    done = SimpleNamespace(trial_id="s_0", config=config, checkpoint=None, error_file=None)
    failed = SimpleNamespace(trial_id="s_1", config=config, checkpoint=None, error_file=None)
    for trial in (done, failed):
        callback.on_trial_start(0, [], trial)
    for epoch in (1, 2, 3):
        callback.on_trial_result(0, [], done, {"epoch": epoch, "val_acc": 10.0 * epoch, "l_st": 0.5})
    callback.on_trial_result(0, [], failed, {"epoch": 1, "val_acc": 1.0})
    assert len(files(callback.writer.epochs_dir / "search" / "running")) == 4
    callback.on_trial_complete(0, [], done)
    callback.on_trial_error(0, [], failed)
    assert files(callback.writer.results_dir) == [
        f"epochs/{COLUMNS_FILE}", "epochs/search/search__s_0.parquet", "epochs/search/search__s_1.parquet",
        f"trials/{COLUMNS_FILE}", "trials/search__s_0.parquet", "trials/search__s_1.parquet"]
    epochs, trials = load(tmp_path)
    assert epochs[["trial_id", "epoch"]].values.tolist() == [["s_0", 1], ["s_0", 2], ["s_0", 3], ["s_1", 1]]
    assert (epochs["opt.lam"] == 10.0).all() and (epochs["opt.gamma_ts"] == 0.5).all()
    assert "opt.arch_betas" not in epochs.columns  # a list: only in the JSON config
    assert json.loads(epochs.config.iloc[0])["options.arch_betas"] == [0.5, 0.9]
    assert trials.set_index("trial_id").status.to_dict() == {"s_0": "completed", "s_1": "errored"}
    assert (trials["opt.lam"] == 10.0).all()


def test_a_running_summary_is_written_at_the_first_result_then_at_most_every_interval(tmp_path, monkeypatch):
    """Every epoch row is written; the running summary at the first result, then only once
    RUNNING_SUMMARY_INTERVAL_S has passed; the final summary whenever the trial ends."""
    from dfa_ray.tune import callbacks as cb

    now = [1000.0]
    monkeypatch.setattr(cb.time, "monotonic", lambda: now[0])
    callback = cb.ResultsCallback(tmp_path)
    config = {"stage": "search", "sweep": "s", "dataset": "digits", "seed": 0, "teacher": "resnet20",
              "student": "resnet8", "epochs": 5, "options": {"lam": 10.0}}
    trial = SimpleNamespace(trial_id="s_0", config=config, checkpoint=None, error_file=None)
    callback.on_trial_start(0, [], trial)

    def summary() -> tuple[str, int]:
        row = pq.read_table(callback.writer.trial_path("search", "s_0")).to_pylist()[0]
        return row["status"], row["epochs_run"]

    steps = {1: 0.0, 2: 1.0, 3: cb.RUNNING_SUMMARY_INTERVAL_S - 0.5, 4: cb.RUNNING_SUMMARY_INTERVAL_S + 0.1}
    seen = []
    for epoch, at in steps.items():
        now[0] = 1000.0 + at
        callback.on_trial_result(0, [], trial, {"epoch": epoch, "val_acc": 10.0 * epoch})
        seen.append(summary())
    assert seen == [("running", 1), ("running", 1), ("running", 1), ("running", 4)]
    assert len(files(callback.writer.epochs_dir / "search" / "running")) == 4  # every epoch has its row
    now[0] += 1.0
    callback.on_trial_result(0, [], trial, {"epoch": 5, "val_acc": 50.0})
    assert summary() == ("running", 4)
    callback.on_trial_complete(0, [], trial)
    assert summary() == ("completed", 5)
    assert load(tmp_path)[0].epoch.tolist() == [1, 2, 3, 4, 5]


# --- one atomic-write helper -------------------------------------------------------------------------
def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "sub" / "x.json"
    atomic.atomic_write_json(path, {"b": 1, "a": [1, 2]})
    assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'

    def half_then_fail(handle):
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_write(path, half_then_fail)
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}  # the old file, whole
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # no temporary left
    atomic.atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"


def test_every_atomic_writer_is_the_one_helper():
    import dfa_ray.engine.checkpoint as checkpoint

    assert checkpoint.atomic_write_json is atomic.atomic_write_json
    assert checkpoint.atomic_write_bytes is atomic.atomic_write_bytes
    root = Path(atomic.__file__).parent
    hand_rolled = [str(p.relative_to(root)) for p in root.rglob("*.py")
                   if p.name != "atomic.py" and "os.replace(" in p.read_text()]
    assert hand_rolled == [], f"write through dfa_ray.atomic instead: {hand_rolled}"


def test_discard_trial_deletes_every_row_of_that_trial_only(tmp_path):
    """A trial to be run again under a new id (its experiment is started over) leaves no row:
    neither its compacted epochs, nor its one-row files, nor its summary; others keep theirs."""
    writer = ResultsWriter(tmp_path)
    run_trial(writer, "search", "aaaaa_00000", 3)
    writer.compact_trial("search", "aaaaa_00000")
    run_trial(writer, "search", "aaaaa_00001", 2, status="running")  # one-row files only
    run_trial(writer, "search", "bbbbb_00000", 2)
    assert writer.discard_trial("search", "aaaaa_00000") and writer.discard_trial("search", "aaaaa_00001")
    assert not writer.discard_trial("search", "aaaaa_00000")  # nothing left to delete
    assert not writer.discard_trial("distill", "bbbbb_00000")  # same id, other stage: not its rows
    epochs, trials = load(tmp_path)
    assert sorted(epochs.trial_id.unique()) == ["bbbbb_00000"] and sorted(epochs.epoch) == [1, 2]
    assert trials.trial_id.tolist() == ["bbbbb_00000"]
