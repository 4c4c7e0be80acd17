"""The Parquet results of a sweep: the fixed schema, writing rows as trials report, reading back.

Layout, under `<sweep_dir>/results/`:
    epochs/<stage>__<trial>__<epoch:05d>.parquet   one row: one epoch of one trial
    trials/<stage>__<trial>.parquet                one row: the trial's summary, rewritten as it runs
`pandas.read_parquet(<results>/epochs)` reads a whole table; `load()` does the same and also
skips (with a warning) a file that is truncated or corrupt.

Why one file per (trial, epoch) rather than one file per trial rewritten with every epoch so far:
- idempotent by construction: writing epoch 7 of a trial again (a trial restored from an older
  checkpoint, a resumed sweep) replaces exactly that file, so no row is ever duplicated and
  nothing has to be read back first;
- a write is O(1) and touches one small file: no read-modify-write of a growing file on a
  shared filesystem from the driver's callback, and a crash mid-write (the file is written to a
  hidden temporary name, fsynced and renamed over the target with `os.replace`) loses at most
  the row being written, which the resumed trial writes again.
The cost is many small files (trials x epochs); pyarrow reads tens of thousands in seconds.

Every file of every stage has the same explicit schema (`EPOCH_SCHEMA`, `TRIAL_SCHEMA`,
documented with units in docs/results.md and checked against it by a test), so teacher, search
and distill rows concatenate. This module imports neither torch nor Ray: `analysis/` reads
results wherever the files are.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from dfa_ray.errors import DfaRayError

STAGES = ("teacher", "search", "distill")
STATUSES = ("completed", "pruned", "errored", "running")


def _f(name: str, type_: pa.DataType, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable)


_STR, _I64, _F64 = pa.string(), pa.int64(), pa.float64()
_TS = pa.timestamp("us", tz="UTC")

# Carried by every row of both tables, so any row can be traced to its trial and settings.
COMMON_FIELDS = [
    _f("sweep", _STR, False),
    _f("stage", _STR, False),  # teacher | search | distill
    _f("trial_id", _STR, False),
    _f("pair", _STR, False),  # "teacher->student"; the model name for teachers
    _f("teacher", _STR),  # null for teacher trials
    _f("student", _STR, False),  # the trained model (the teacher itself for teacher trials)
    _f("dataset", _STR, False),
    _f("method", _STR, False),  # "teacher", "search", or the distillation method
    _f("seed", _I64, False),
    _f("config", _STR, False),  # JSON object of the trial's full flattened config (dotted keys)
    _f("written_at", _TS, False),
]

EPOCH_SCHEMA = pa.schema(
    COMMON_FIELDS
    + [
        _f("epoch", _I64, False),  # 1-based, as Tune's training_iteration
        _f("lr", _F64),
        _f("train_loss", _F64),
        _f("train_acc", _F64),  # %
        _f("val_acc", _F64),  # % on the held-out split (the architecture split for search)
        _f("val_loss", _F64),
        _f("loss_ce", _F64),
        _f("loss_kd", _F64),
        _f("loss_feat", _F64),
        _f("l_st", _F64),
        _f("l_ts", _F64),
        _f("l_train", _F64),
        _f("seconds", _F64),  # wall seconds of the epoch
        _f("images_per_s", _F64),
        _f("alphas", _STR),  # JSON [[w, ...] per group]; search only
        _f("extra", _STR),  # JSON object of any other reported metrics
    ]
)

TRIAL_SCHEMA = pa.schema(
    COMMON_FIELDS
    + [
        _f("status", _STR, False),  # completed | pruned | errored | running
        _f("reason", _STR),
        _f("epochs_run", _I64, False),
        _f("epochs_planned", _I64, False),
        _f("last_val_acc", _F64),
        _f("best_val_acc", _F64),
        _f("best_epoch", _F64),  # an epoch number; double so that "none yet" is NaN in pandas
        _f("test_acc_last", _F64),
        _f("test_acc_best", _F64),
        _f("genotype", _STR),
        _f("checkpoint", _STR),
        _f("wall_seconds", _F64),
        _f("node", _STR),
        _f("device", _STR),
        _f("versions", _STR),
        _f("machine", _STR),
        _f("extra", _STR),
    ]
)

# Columns holding JSON text: a dict/list given for them is serialised.
JSON_COLUMNS = frozenset({"config", "alphas", "extra", "genotype", "versions", "machine"})
EPOCH_KEY = ("stage", "trial_id", "epoch")
TRIAL_KEY = ("stage", "trial_id")


class ResultsFileWarning(UserWarning):
    """A results file could not be read and was skipped."""


# --- config and JSON --------------------------------------------------------------------
def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"search": {"lam": 1}}` -> `{"search.lam": 1}`; lists and scalars are kept as values.

    Dataclasses (SearchOptions, Recipe) and pydantic models are expanded like mappings.
    """
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        value = _as_mapping(value)
        if isinstance(value, Mapping) and value:
            out.update(flatten_config(value, name))
        elif isinstance(value, Mapping):
            out[name] = {}
        else:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def _as_mapping(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "model_dump") and callable(value.model_dump):
        return value.model_dump(mode="json")
    return value


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, tensors
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    mapped = _as_mapping(obj)
    if mapped is not obj:
        return mapped
    return str(obj)  # Path, datetime, enums: their text


def to_json(value: Any) -> str:
    """Deterministic JSON (sorted keys); NaN/inf kept as JSON's NaN/Infinity tokens."""
    return json.dumps(value, sort_keys=True, default=_json_default)


def runtime_versions() -> dict[str, str | None]:
    """python, torch, ray, dfa_ray versions, read from package metadata (imports neither)."""
    import platform
    from importlib import metadata

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "torch": version("torch"),
        "ray": version("ray"),
        "dfa_ray": version("dfa-ray"),
    }


# --- coercion -----------------------------------------------------------------------------
def _scalar(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()  # numpy scalar, 0-d tensor
        except (TypeError, ValueError):
            return value
    return value


def _coerce(column: str, value: Any, field: pa.Field) -> Any:
    value = _scalar(value)
    if value is None or (isinstance(value, float) and math.isnan(value) and not pa.types.is_floating(field.type)):
        if not field.nullable:
            raise ValueError(f"results column {column!r} must not be null")
        return None
    kind = field.type
    if pa.types.is_string(kind):
        if column in JSON_COLUMNS and not isinstance(value, str):
            if column == "config" and isinstance(value, Mapping):
                value = flatten_config(value)
            return to_json(value)
        if column not in JSON_COLUMNS and not isinstance(value, str):
            value = str(value)
        return value
    if pa.types.is_int64(kind):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"results column {column!r} is an integer, got {value!r}")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"results column {column!r} is an integer, got {value!r}")
            value = int(value)
        return value
    if pa.types.is_floating(kind):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"results column {column!r} is a number, got {value!r}")
        return float(value)
    if pa.types.is_timestamp(kind):
        if not isinstance(value, datetime):
            raise ValueError(f"results column {column!r} is a datetime, got {value!r}")
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    raise AssertionError(f"no coercion for {kind}")  # pragma: no cover - schema is fixed


def _prepare(row: Mapping[str, Any], schema: pa.Schema, kind: str) -> dict[str, Any]:
    """Check and coerce one row; keys outside the schema go into the JSON `extra` column."""
    if not isinstance(row, Mapping):
        raise ValueError(f"a {kind} row is a mapping, got {type(row).__name__}")
    data = dict(row)
    data.setdefault("written_at", datetime.now(timezone.utc))
    required = [f.name for f in schema if not f.nullable]
    missing = [name for name in required if data.get(name) is None]
    if missing:
        raise ValueError(
            f"{kind} row lacks required column(s) {', '.join(missing)}; "
            f"required: {', '.join(required)} (see docs/results.md)"
        )
    if data["stage"] not in STAGES:
        raise ValueError(f"{kind} row: stage {data['stage']!r} is not one of {', '.join(STAGES)}")
    if kind == "trial" and data["status"] not in STATUSES:
        raise ValueError(f"trial row: status {data['status']!r} is not one of {', '.join(STATUSES)}")
    extra_in = data.pop("extra", None)
    if isinstance(extra_in, str):
        extra_in = json.loads(extra_in)
    extra = dict(extra_in or {})
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in schema.names:
            out[key] = _coerce(key, value, schema.field(key))
        else:
            extra[str(key)] = _scalar(value)
    out["extra"] = to_json(extra) if extra else None
    if kind == "epoch" and out["epoch"] < 0:
        raise ValueError(f"epoch row: epoch {out['epoch']} is negative")
    return out


# --- writing ------------------------------------------------------------------------------
def _atomic_write(table: pa.Table, path: Path) -> None:
    """Write to a hidden temporary file (readers skip names starting with '.'), fsync, rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class ResultsWriter:
    """Writes the rows of one sweep under `<sweep_dir>/results/`; safe to re-run on resume.

    `defaults` are merged under every row (e.g. `{"sweep": name, "dataset": "cifar100"}`).
    Missing required columns or ill-typed values raise ValueError: a bug in the caller, not a
    user mistake.
    """

    def __init__(self, sweep_dir: str | os.PathLike[str], defaults: Mapping[str, Any] | None = None) -> None:
        self.results_dir = Path(sweep_dir) / "results"
        self.epochs_dir = self.results_dir / "epochs"
        self.trials_dir = self.results_dir / "trials"
        self.defaults = dict(defaults or {})
        self.epochs_dir.mkdir(parents=True, exist_ok=True)
        self.trials_dir.mkdir(parents=True, exist_ok=True)

    def epoch_path(self, stage: str, trial_id: str, epoch: int) -> Path:
        from dfa_ray.names import safe_name

        return self.epochs_dir / f"{safe_name(stage)}__{safe_name(trial_id)}__{int(epoch):05d}.parquet"

    def trial_path(self, stage: str, trial_id: str) -> Path:
        from dfa_ray.names import safe_name

        return self.trials_dir / f"{safe_name(stage)}__{safe_name(trial_id)}.parquet"

    def write_epoch(self, row: Mapping[str, Any]) -> Path:
        """Write (or replace) the row of one epoch of one trial; returns its file."""
        clean = _prepare({**self.defaults, **row}, EPOCH_SCHEMA, "epoch")
        path = self.epoch_path(clean["stage"], clean["trial_id"], clean["epoch"])
        _atomic_write(pa.Table.from_pylist([clean], schema=EPOCH_SCHEMA), path)
        return path

    def write_trial(self, row: Mapping[str, Any]) -> Path:
        """Write (or replace) the summary row of one trial; returns its file."""
        clean = _prepare({**self.defaults, **row}, TRIAL_SCHEMA, "trial")
        path = self.trial_path(clean["stage"], clean["trial_id"])
        _atomic_write(pa.Table.from_pylist([clean], schema=TRIAL_SCHEMA), path)
        return path


# --- reading ------------------------------------------------------------------------------
def results_dir(path: str | os.PathLike[str]) -> Path:
    """The results folder of `path` (a sweep folder or its results/ folder); DfaRayError if none."""
    p = Path(path)
    hint = (
        "expected a sweep folder (<storage>/<name>) holding results/epochs and results/trials, "
        "or that results/ folder"
    )
    if not p.is_dir():
        raise DfaRayError(f"{p} is not a folder; {hint}")
    for candidate in (p, p / "results"):
        if (candidate / "epochs").is_dir() or (candidate / "trials").is_dir():
            return candidate
    raise DfaRayError(f"{p} is not a dfa-ray results folder (no epochs/ or trials/ in it or in results/); {hint}")


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Reorder/cast a file's columns to `schema`; columns it lacks (an older file) are null."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema.with_metadata(None))


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    # names starting with '.' or '_' are temporary files or metadata, as for pyarrow's own discovery
    return sorted(
        f for f in folder.iterdir() if f.suffix == ".parquet" and not f.name.startswith((".", "_")) and f.is_file()
    )


def _read(folder: Path, schema: pa.Schema) -> pa.Table:
    files = _files(folder)
    if not files:
        return schema.empty_table()
    try:
        return pads.dataset([str(f) for f in files], schema=schema, format="parquet").to_table()
    except (pa.ArrowException, OSError, ValueError):
        pass  # some file is damaged: read them one by one, skipping the bad ones
    tables = []
    for f in files:
        try:
            tables.append(_conform(pq.read_table(f), schema))
        except (pa.ArrowException, OSError, ValueError) as exc:
            warnings.warn(f"skipping unreadable results file {f}: {exc}", ResultsFileWarning, stacklevel=3)
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _frame(table: pa.Table, key: Iterable[str]) -> pd.DataFrame:
    df = table.to_pandas()
    key = list(key)
    if len(df):
        # Files are unique per key; this guards against copies under other names (e.g. an
        # older layout), keeping the newest write.
        df = df.sort_values("written_at", kind="stable").drop_duplicates(key, keep="last")
        df = df.sort_values(key, kind="stable")
    return df.reset_index(drop=True)


def load(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(epochs, trials) DataFrames of a sweep; `path` is the sweep folder or its results/ folder.

    Unreadable (truncated, corrupt) files are skipped with a ResultsFileWarning naming them;
    empty tables still have every documented column and dtype.
    """
    root = results_dir(path)
    epochs = _frame(_read(root / "epochs", EPOCH_SCHEMA), EPOCH_KEY)
    trials = _frame(_read(root / "trials", TRIAL_SCHEMA), TRIAL_KEY)
    return epochs, trials


__all__ = [
    "COMMON_FIELDS",
    "EPOCH_SCHEMA",
    "JSON_COLUMNS",
    "STAGES",
    "STATUSES",
    "TRIAL_SCHEMA",
    "ResultsFileWarning",
    "ResultsWriter",
    "flatten_config",
    "load",
    "results_dir",
    "runtime_versions",
    "to_json",
]
