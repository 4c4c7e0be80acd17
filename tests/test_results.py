"""The Parquet results store: fixed schema across stages, idempotent atomic writes, a reader that
survives damaged files, and a documented schema that cannot drift from the code."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from dfa_ray import results as results_mod
from dfa_ray.errors import DfaRayError
from dfa_ray.results import (
    COMMON_FIELDS,
    EPOCH_SCHEMA,
    TRIAL_SCHEMA,
    ResultsFileWarning,
    ResultsWriter,
    flatten_config,
    load,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "results.md"


def common(stage: str, trial_id: str, **kw) -> dict:
    pair = {"teacher": "resnet20", "search": "resnet20->resnet8", "distill": "resnet20->resnet8"}[stage]
    row = {
        "sweep": "demo",
        "stage": stage,
        "trial_id": trial_id,
        "pair": pair,
        "teacher": None if stage == "teacher" else "resnet20",
        "student": "resnet20" if stage == "teacher" else "resnet8",
        "dataset": "digits",
        "method": {"teacher": "teacher", "search": "search", "distill": "kd"}[stage],
        "seed": 0,
        "config": {"recipe": {"epochs": 2, "lr": 0.05}, "search": {"lam": 10.0}},
    }
    row.update(kw)
    return row


def write_three_stages(writer: ResultsWriter) -> None:
    for epoch in (1, 2):
        writer.write_epoch(
            {**common("teacher", "t_00000"), "epoch": epoch, "lr": 0.05, "train_loss": 1.0 / epoch,
             "train_acc": 50.0 + epoch, "val_acc": 60.0 + epoch, "val_loss": 0.9, "loss_ce": 1.0 / epoch,
             "seconds": 1.5, "images_per_s": 900.0}
        )
        writer.write_epoch(
            {**common("search", "s_00000"), "epoch": epoch, "lr": 0.025, "val_acc": 40.0 + epoch,
             "l_st": 0.5, "l_ts": 2.0, "l_train": 3.0, "alphas": [[0.2, 0.8], [0.5, 0.5], [1.0]],
             "seconds": 2.0, "images_per_s": np.float32(400.0)}
        )
        writer.write_epoch(
            {**common("distill", "d_00000"), "epoch": np.int64(epoch), "lr": 0.05, "val_acc": 70.0 + epoch,
             "loss_ce": 0.4, "loss_kd": 0.3, "grad_norm": 1.25, "seconds": 1.0, "images_per_s": 1000}
        )


def expected_dtype_ok(arrow_type: pa.DataType, dtype) -> bool:
    if pa.types.is_string(arrow_type):
        return pd.api.types.is_string_dtype(dtype)
    if pa.types.is_int64(arrow_type):
        return dtype == np.dtype("int64")
    if pa.types.is_float64(arrow_type):
        return dtype == np.dtype("float64")
    if pa.types.is_timestamp(arrow_type):
        return str(dtype) == "datetime64[us, UTC]"
    raise AssertionError(arrow_type)


def assert_schema_frame(df: pd.DataFrame, schema: pa.Schema) -> None:
    assert list(df.columns) == schema.names
    for field in schema:
        assert expected_dtype_ok(field.type, df[field.name].dtype), (field.name, df[field.name].dtype)


# --- writing and reading back -----------------------------------------------------------
def test_three_stages_concatenate(tmp_path):
    writer = ResultsWriter(tmp_path / "sweep")
    write_three_stages(writer)
    folder = tmp_path / "sweep" / "results" / "epochs"
    # one file per (trial, epoch) while the trials run, under their stage
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "distill/running/distill__d_00000__00001.parquet", "distill/running/distill__d_00000__00002.parquet",
        "search/running/search__s_00000__00001.parquet", "search/running/search__s_00000__00002.parquet",
        "teacher/running/teacher__t_00000__00001.parquet", "teacher/running/teacher__t_00000__00002.parquet",
    ]
    raw = pd.read_parquet(folder)
    epochs, trials = load(tmp_path / "sweep")
    for df in (raw, epochs):
        assert len(df) == 6
        assert_schema_frame(df, EPOCH_SCHEMA)
    assert_schema_frame(trials, TRIAL_SCHEMA)
    assert len(trials) == 0
    # load() sorts by (stage, trial_id, epoch)
    assert list(zip(epochs.stage, epochs.epoch)) == [
        ("distill", 1), ("distill", 2), ("search", 1), ("search", 2), ("teacher", 1), ("teacher", 2)
    ]
    by_stage = {stage: df for stage, df in epochs.groupby("stage")}
    teacher, search, distill = by_stage["teacher"], by_stage["search"], by_stage["distill"]
    assert teacher.teacher.isna().all() and teacher.pair.tolist() == ["resnet20"] * 2
    assert (teacher.method == "teacher").all() and (search.method == "search").all()
    assert teacher.val_acc.tolist() == [61.0, 62.0]
    assert teacher.loss_kd.isna().all() and teacher.alphas.isna().all()
    assert json.loads(search.alphas.iloc[0]) == [[0.2, 0.8], [0.5, 0.5], [1.0]]
    assert search.images_per_s.tolist() == [400.0, 400.0]
    assert search.l_st.tolist() == [0.5, 0.5] and search.loss_ce.isna().all()
    assert distill.loss_kd.tolist() == [0.3, 0.3]
    assert json.loads(distill.extra.iloc[0]) == {"grad_norm": 1.25}
    assert teacher.extra.isna().all()
    assert json.loads(distill.config.iloc[0]) == {"recipe.epochs": 2, "recipe.lr": 0.05, "search.lam": 10.0}
    assert str(epochs.written_at.dt.tz) == "UTC"
    assert epochs.seed.tolist() == [0] * 6


def test_trial_rows(tmp_path):
    writer = ResultsWriter(tmp_path / "sweep", defaults={"sweep": "demo"})
    base = {k: v for k, v in common("search", "s_00001").items() if k != "sweep"}
    writer.write_trial({**base, "status": "running", "epochs_run": 1, "epochs_planned": 6})
    writer.write_trial(
        {**base, "status": "pruned", "reason": "stopped by ASHA at epoch 2", "epochs_run": 2, "epochs_planned": 6,
         "last_val_acc": 41.0, "best_val_acc": np.float64(42.0), "best_epoch": 1, "genotype": {"groups": [[0.5, 0.5]]},
         "checkpoint": "/x/ckpt", "wall_seconds": 12.5, "node": "127.0.0.1", "device": "cpu",
         "versions": results_mod.runtime_versions(), "machine": {"cpus": 2}, "final_l_st": 0.25}
    )
    writer.write_trial(
        {**common("teacher", "t_00000"), "status": "completed", "epochs_run": 2, "epochs_planned": 2,
         "test_acc_last": 95.0, "test_acc_best": 96.0}
    )
    writer.write_trial(
        {**common("distill", "d_00000"), "status": "errored", "reason": "loss is nan at epoch 3",
         "epochs_run": 2, "epochs_planned": 5}
    )
    raw = pd.read_parquet(tmp_path / "sweep" / "results" / "trials")
    _, trials = load(tmp_path / "sweep" / "results")
    for df in (raw, trials):
        assert len(df) == 3  # the running row was replaced by the pruned one
        assert_schema_frame(df, TRIAL_SCHEMA)
    row = trials.set_index("trial_id").loc["s_00001"]
    assert row.status == "pruned" and row.reason == "stopped by ASHA at epoch 2"
    assert row.best_epoch == 1.0 and row.best_val_acc == 42.0 and row.epochs_run == 2
    assert json.loads(row.genotype) == {"groups": [[0.5, 0.5]]}
    assert json.loads(row.extra) == {"final_l_st": 0.25}
    assert set(json.loads(row.versions)) == {"python", "torch", "ray", "dfa_ray"}
    assert row.sweep == "demo"
    teacher = trials.set_index("trial_id").loc["t_00000"]
    assert math.isnan(teacher.best_epoch) and teacher.test_acc_best == 96.0
    assert trials.set_index("trial_id").loc["d_00000"].status == "errored"


def test_rewriting_an_epoch_replaces_it(tmp_path):
    writer = ResultsWriter(tmp_path)
    for epoch in (1, 2, 3):
        writer.write_epoch({**common("distill", "d_1"), "epoch": epoch, "val_acc": 10.0 * epoch})
    # a trial restored from its epoch-1 checkpoint writes epochs 2 and 3 again
    for epoch in (2, 3):
        writer.write_epoch({**common("distill", "d_1"), "epoch": epoch, "val_acc": 11.0 * epoch})
    for df in (pd.read_parquet(tmp_path / "results" / "epochs"), load(tmp_path)[0]):
        assert sorted(df.epoch.tolist()) == [1, 2, 3]
        assert sorted(df.val_acc.tolist()) == [10.0, 22.0, 33.0]
    assert not df.duplicated(["trial_id", "epoch"]).any()


def test_truncated_file_is_skipped_with_a_warning_then_repaired(tmp_path):
    writer = ResultsWriter(tmp_path)
    paths = [writer.write_epoch({**common("search", "s_2"), "epoch": e, "val_acc": float(e)}) for e in (1, 2, 3)]
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 2])  # a crash mid-write of a non-atomic writer
    with pytest.warns(ResultsFileWarning, match=re.escape(str(paths[1]))):
        epochs, _ = load(tmp_path)
    assert epochs.epoch.tolist() == [1, 3]
    assert_schema_frame(epochs, EPOCH_SCHEMA)
    # the resumed trial writes the row again: readable, no warning
    writer.write_epoch({**common("search", "s_2"), "epoch": 2, "val_acc": 2.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        epochs, _ = load(tmp_path)
    assert epochs.epoch.tolist() == [1, 2, 3]


def test_every_file_damaged_gives_empty_typed_table(tmp_path):
    writer = ResultsWriter(tmp_path)
    path = writer.write_trial({**common("teacher", "t_1"), "status": "running", "epochs_run": 0, "epochs_planned": 3})
    path.write_bytes(b"PAR1 not really")
    with pytest.warns(ResultsFileWarning, match="t_1"):
        _, trials = load(tmp_path)
    assert len(trials) == 0
    assert_schema_frame(trials, TRIAL_SCHEMA)


def test_temporary_files_are_invisible(tmp_path):
    writer = ResultsWriter(tmp_path)
    writer.write_epoch({**common("teacher", "t_1"), "epoch": 1})
    (writer.epochs_dir / ".teacher__t_1__00002.parquet.123.abcd.tmp").write_bytes(b"half a fi")
    assert len(pd.read_parquet(writer.epochs_dir)) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load(tmp_path)[0]) == 1


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    writer = ResultsWriter(tmp_path)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(results_mod.pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        writer.write_epoch({**common("teacher", "t_1"), "epoch": 1, "options": {"lam": 1.0}})
    assert [p for p in writer.results_dir.rglob("*") if p.is_file()] == []


def test_trial_ids_cannot_escape_the_results_folder(tmp_path):
    writer = ResultsWriter(tmp_path / "sweep")
    path = writer.write_epoch({**common("distill", "../../../evil"), "epoch": 1})
    assert path.parent == writer.epochs_dir / "distill" / "running"
    writer.write_trial({**common("distill", "../../../evil"), "status": "completed", "epochs_run": 1,
                        "epochs_planned": 1})
    compacted = writer.compact_trial("distill", "../../../evil")
    assert compacted is not None and compacted.parent == writer.epochs_dir / "distill"
    assert not (tmp_path / "evil").exists()
    assert load(tmp_path / "sweep")[0].trial_id.tolist() == ["../../../evil"]


def test_empty_results_have_every_column(tmp_path):
    ResultsWriter(tmp_path)
    epochs, trials = load(tmp_path)
    assert len(epochs) == 0 and len(trials) == 0
    assert_schema_frame(epochs, EPOCH_SCHEMA)
    assert_schema_frame(trials, TRIAL_SCHEMA)


def test_folder_that_is_not_results(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DfaRayError, match=rf"{re.escape(str(tmp_path))} is not a dfa-ray results folder"):
        load(tmp_path)
    with pytest.raises(DfaRayError, match=rf"{re.escape(str(tmp_path / 'missing'))} is not a folder"):
        load(tmp_path / "missing")
    with pytest.raises(DfaRayError, match="is not a folder"):
        load(tmp_path / "notes.txt")


# --- programming errors are ValueErrors ----------------------------------------------------
@pytest.mark.parametrize(
    "change, message",
    [
        ({"trial_id": None}, "lacks required column(s) trial_id"),
        ({"epoch": None}, "lacks required column(s) epoch"),
        ({"stage": "train"}, "stage 'train' is not one of teacher, search, distill"),
        ({"epoch": 1.5}, "'epoch' is an integer, got 1.5"),
        ({"epoch": -1}, "epoch -1 is negative"),
        ({"seed": True}, "'seed' is an integer"),
        ({"val_acc": "high"}, "'val_acc' is a number, got 'high'"),
        ({"written_at": "today"}, "'written_at' is a datetime"),
    ],
)
def test_bad_epoch_rows_raise_value_error(tmp_path, change, message):
    row = {**common("distill", "d_1"), "epoch": 1, **change}
    with pytest.raises(ValueError, match=re.escape(message)):
        ResultsWriter(tmp_path).write_epoch(row)


def test_bad_trial_rows_raise_value_error(tmp_path):
    writer = ResultsWriter(tmp_path)
    with pytest.raises(ValueError, match=r"lacks required column\(s\) status, epochs_run, epochs_planned"):
        writer.write_trial(common("distill", "d_1"))
    with pytest.raises(ValueError, match="status 'done' is not one of completed, pruned, errored, running"):
        writer.write_trial({**common("distill", "d_1"), "status": "done", "epochs_run": 1, "epochs_planned": 1})


def test_written_at_is_utc(tmp_path):
    writer = ResultsWriter(tmp_path)
    naive = datetime(2024, 1, 2, 3, 4, 5)
    writer.write_epoch({**common("teacher", "t_1"), "epoch": 1, "written_at": naive})
    epochs, _ = load(tmp_path)
    assert epochs.written_at.iloc[0] == pd.Timestamp(naive, tz="UTC")
    assert epochs.written_at.iloc[0].tzinfo is not None
    assert datetime.now(timezone.utc) > epochs.written_at.iloc[0]


def test_flatten_config():
    from dfa_ray.dfa.options import SearchOptions

    flat = flatten_config(
        {"a": {"b": {"c": 1}, "d": [1, 2]}, "e": "x", "f": {}, "g": (0.5, 0.9), "opts": SearchOptions(lam=3.0)}
    )
    assert flat["a.b.c"] == 1 and flat["a.d"] == [1, 2] and flat["e"] == "x" and flat["f"] == {}
    assert flat["g"] == [0.5, 0.9]
    assert flat["opts.lam"] == 3.0 and flat["opts.arch_betas"] == [0.5, 0.999]
    assert all(not isinstance(v, dict) or v == {} for v in flat.values())


# --- the documentation is the schema ----------------------------------------------------
def _doc_tables() -> dict[str, list[tuple[str, str, bool]]]:
    """{heading: [(column, type, nullable)]} of every column table in docs/results.md."""
    tables: dict[str, list[tuple[str, str, bool]]] = {}
    heading = None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
        elif line.startswith("| ") and heading and not line.startswith("| column"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert cells[2] in ("yes", "no"), line
            tables.setdefault(heading, []).append((cells[0], cells[1], cells[2] == "yes"))
    return tables


def _schema_rows(fields) -> list[tuple[str, str, bool]]:
    return [(f.name, str(f.type), f.nullable) for f in fields]


def test_docs_table_equals_the_schemas():
    tables = _doc_tables()
    common_rows = tables["Columns of every row (both tables)"]
    epoch_rows = tables["epochs: one row per trial per epoch"]
    trial_rows = tables["trials: one row per trial"]
    assert common_rows == _schema_rows(COMMON_FIELDS)
    assert common_rows + epoch_rows == _schema_rows(EPOCH_SCHEMA)
    assert common_rows + trial_rows == _schema_rows(TRIAL_SCHEMA)


@pytest.mark.parametrize("module", ["dfa_ray.results", "dfa_ray_analysis.report", "dfa_ray_analysis"])
def test_reading_results_imports_neither_torch_ray_pydantic_nor_the_spec(module):
    code = (
        f"import sys, {module}; "
        "bad = [m for m in ('torch', 'ray', 'pydantic', 'dfa_ray.spec') if m in sys.modules]; "
        "assert not bad, bad; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
