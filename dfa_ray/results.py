"""The Parquet results of a sweep: the fixed schema, writing rows as trials report, reading back.

Layout, under `<sweep_dir>/results/` (docs/results.md has the why and every column):
    epochs/0-columns.parquet                              no rows: every column of the table
    epochs/<stage>/running/<stage>__<trial>__<epoch:05d>.parquet   one epoch of a trial still running
    epochs/<stage>/<stage>__<trial>.parquet                        every epoch of a finished trial
    trials/0-columns.parquet                              no rows: every column of the table
    trials/<stage>__<trial>.parquet                       the trial's summary row, rewritten as it runs
`pandas.read_parquet(<results>/epochs)` reads a whole table with the same columns and dtypes as
`load()`; `load()` also skips (with a warning) a file that is truncated or corrupt and keeps the
newest row of a key when two files hold it.

While a trial runs, each epoch is its own file, so writing epoch 7 again (a trial restored from
an older checkpoint, a resumed sweep) replaces exactly that file: idempotent without reading
anything back, O(1) per write, and a crash mid-write loses at most the row being written.
When the trial ends, `ResultsWriter.compact_trial` merges its epoch files into one file
(written atomically first, the per-epoch files deleted after), so a finished study holds two
files per trial instead of one per epoch: reading 5,000 one-row files takes seconds, one file
of 5,000 rows a few hundredths of one. A crash between the two steps leaves the same rows
twice with the same `written_at`, which `load()` reads once and `compact()` later cleans up.

Every file of every stage has the explicit fixed schema (`EPOCH_SCHEMA`, `TRIAL_SCHEMA`,
documented with units in docs/results.md and checked against it by a test) plus one `opt.<name>`
column per scalar option of its trial; reading unifies the option columns across files (a file
without one reads as null). This module imports neither torch, Ray nor the spec: `analysis/`
reads results wherever the files are.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from dfa_ray.atomic import atomic_write
from dfa_ray.errors import DfaRayError
from dfa_ray.names import safe_name

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

# A row's `options` (the trial's scalar options) become these columns, one per option.
OPTION_PREFIX = "opt."
# Zero rows, every column of its table (the fixed schema, then every option column written so
# far): pandas and pyarrow take a folder's columns from the first file they find, in path
# order, and "0" sorts before every stage name.
COLUMNS_FILE = "0-columns.parquet"
RUNNING_DIR = "running"  # epochs/<stage>/running/: the one-row files of trials not yet compacted
FINISHED = ("completed", "pruned", "errored")


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
    return dict(_runtime_versions())


@functools.lru_cache(maxsize=1)
def _runtime_versions() -> dict[str, str | None]:
    # once per process: the sweep's driver records the versions with every trial summary,
    # and a metadata lookup walks sys.path (8 % of a busy driver's time, measured)
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


# --- option columns -----------------------------------------------------------------------
OptionValue = bool | int | float | str


def scalar_options(options: Mapping[str, Any] | None, prefix: str = "") -> dict[str, OptionValue]:
    """The scalar entries of a trial's options, as a row's `options` takes them.

    Numbers, bools and strings are kept (numpy scalars as Python ones); nested mappings (and
    dataclasses, pydantic models) are flattened to dotted names; lists, None and anything else
    are left out: they are in the row's JSON `config` column, which holds everything.
    """
    out: dict[str, OptionValue] = {}
    for key, value in (options or {}).items():
        name = f"{prefix}.{key}" if prefix else str(key)
        value = _scalar(_as_mapping(value))
        if isinstance(value, Mapping):
            out.update(scalar_options(value, name))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
    return out


def option_column(name: str) -> str:
    """The column of option `name`: `opt.<name>`."""
    return OPTION_PREFIX + name


def _option_type(value: OptionValue) -> pa.DataType:
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return _I64 if -(2**63) <= value < 2**63 else _F64
    if isinstance(value, float):
        return _F64
    return _STR


def _merge_types(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """One type for an option column that files wrote differently: an int and a float option
    (a search space `choice: [1, 2.5]`) read as double; any other mix as text."""
    if a == b:
        return a
    if {a, b} == {_I64, _F64}:
        return _F64
    return _STR


def _option_value(value: OptionValue, type_: pa.DataType) -> Any:
    if type_ == _F64:
        return float(value)
    if type_ == _STR and not isinstance(value, str):
        return to_json(value)
    return value


def _options(options: Any, kind: str) -> dict[str, OptionValue]:
    """Check a row's `options` mapping: names are text, values scalars (None: left out)."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ValueError(f"{kind} row: options is a mapping of option name -> scalar, got {type(options).__name__}")
    out: dict[str, OptionValue] = {}
    for name, value in options.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{kind} row: option name {name!r} is not a non-empty string")
        value = _scalar(value)
        if value is None:
            continue
        if not isinstance(value, (bool, int, float, str)):
            raise ValueError(
                f"{kind} row: option {name!r} is a {type(value).__name__}, not a number, bool or string; "
                "pass scalar_options(...) of the trial's options (the rest belongs in config)"
            )
        out[name] = value
    return out


def _prepare(row: Mapping[str, Any], schema: pa.Schema, kind: str) -> dict[str, Any]:
    """Check and coerce one row; keys outside the schema go into the JSON `extra` column, the
    entries of `options` become `opt.<name>` keys (scalars, typed when the row is written)."""
    if not isinstance(row, Mapping):
        raise ValueError(f"a {kind} row is a mapping, got {type(row).__name__}")
    data = dict(row)
    options = _options(data.pop("options", None), kind)
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
    out.update((option_column(name), value) for name, value in options.items())
    return out


# --- writing ------------------------------------------------------------------------------
def _write_table(table: pa.Table, path: Path) -> Path:
    """Atomically (dfa_ray.atomic): the hidden temporary is skipped by every reader."""
    return atomic_write(path, lambda handle: pq.write_table(table, handle))


def _table_schema(base: pa.Schema, option_types: Mapping[str, pa.DataType]) -> pa.Schema:
    """The fixed schema, then the option columns in name order."""
    return pa.schema(list(base) + [pa.field(name, option_types[name]) for name in sorted(option_types)])


def _option_types(schema: pa.Schema) -> dict[str, pa.DataType]:
    return {f.name: f.type for f in schema if f.name.startswith(OPTION_PREFIX)}


# A one-row epoch file, in running/ or (older versions) flat in epochs/. File names start with
# the stage, never with the '_' or '.' that readers skip (a safe trial name may).
_EPOCH_FILE = re.compile(r"(?P<stage>[^_]+)__(?P<trial>.+)__(?P<epoch>\d+)\.parquet")


@dataclasses.dataclass(frozen=True)
class Compaction:
    """What `compact()` did: trials whose epoch files were merged, files removed."""

    trials: int
    files_removed: int


class ResultsWriter:
    """Writes the rows of one sweep under `<sweep_dir>/results/`; safe to re-run on resume.

    `defaults` are merged under every row (e.g. `{"sweep": name, "dataset": "cifar100"}`).
    A row may carry `options`: a mapping of the trial's scalar options (`scalar_options`), written
    as `opt.<name>` columns. Missing required columns or ill-typed values raise ValueError: a bug
    in the caller, not a user mistake.
    """

    def __init__(self, sweep_dir: str | os.PathLike[str], defaults: Mapping[str, Any] | None = None) -> None:
        self._open(Path(sweep_dir) / "results", defaults)

    @classmethod
    def at(cls, results: str | os.PathLike[str]) -> "ResultsWriter":
        """A writer for an existing results folder (`results_dir`): a sweep folder or results/ itself."""
        writer = cls.__new__(cls)
        writer._open(results_dir(results), None)
        return writer

    def _open(self, root: Path, defaults: Mapping[str, Any] | None) -> None:
        self.results_dir = root
        self.epochs_dir = root / "epochs"
        self.trials_dir = root / "trials"
        self.defaults = dict(defaults or {})
        # folder -> option columns its COLUMNS_FILE lists (read on first use)
        self._known: dict[Path, dict[str, pa.DataType]] = {}
        self.epochs_dir.mkdir(parents=True, exist_ok=True)
        self.trials_dir.mkdir(parents=True, exist_ok=True)

    # -- paths -------------------------------------------------------------------------------
    def epoch_path(self, stage: str, trial_id: str, epoch: int) -> Path:
        """The one-row file of an epoch of a running trial."""
        stage = safe_name(stage)
        return self.epochs_dir / stage / RUNNING_DIR / f"{stage}__{safe_name(trial_id)}__{int(epoch):05d}.parquet"

    def trial_epochs_path(self, stage: str, trial_id: str) -> Path:
        """The file holding every epoch of a finished (compacted) trial."""
        return self.epochs_dir / safe_name(stage) / f"{safe_name(stage)}__{safe_name(trial_id)}.parquet"

    def trial_path(self, stage: str, trial_id: str) -> Path:
        return self.trials_dir / f"{safe_name(stage)}__{safe_name(trial_id)}.parquet"

    def _loose_epoch_files(self, stage: str, trial_id: str) -> list[Path]:
        """The trial's one-row epoch files: running/, and the flat layout of older versions
        (`epochs/<stage>__<trial>__<epoch>.parquet`), oldest layout first."""
        key = (safe_name(stage), safe_name(trial_id))
        return [p for folder in (self.epochs_dir, self.epochs_dir / key[0] / RUNNING_DIR) for p in _listing(folder)
                if (m := _EPOCH_FILE.fullmatch(p.name)) and (m["stage"], m["trial"]) == key]

    # -- writing -----------------------------------------------------------------------------
    def write_epoch(self, row: Mapping[str, Any]) -> Path:
        """Write (or replace) the row of one epoch of one trial; returns its file."""
        clean = _prepare({**self.defaults, **row}, EPOCH_SCHEMA, "epoch")
        path = self.epoch_path(clean["stage"], clean["trial_id"], clean["epoch"])
        return _write_table(self._row_table(clean, EPOCH_SCHEMA, self.epochs_dir), path)

    def write_trial(self, row: Mapping[str, Any]) -> Path:
        """Write (or replace) the summary row of one trial; returns its file."""
        clean = _prepare({**self.defaults, **row}, TRIAL_SCHEMA, "trial")
        path = self.trial_path(clean["stage"], clean["trial_id"])
        return _write_table(self._row_table(clean, TRIAL_SCHEMA, self.trials_dir), path)

    def discard_trial(self, stage: str, trial_id: str) -> bool:
        """Delete every row of a trial (its epochs and its summary), for a trial that will be
        run again under another id; returns whether there was any."""
        paths = [self.trial_epochs_path(stage, trial_id), *self._loose_epoch_files(stage, trial_id),
                 self.trial_path(stage, trial_id)]
        found = [p for p in paths if p.exists()]
        for path in found:
            path.unlink(missing_ok=True)
        return bool(found)

    def _row_table(self, clean: dict[str, Any], base: pa.Schema, folder: Path) -> pa.Table:
        options = {k: v for k, v in clean.items() if k.startswith(OPTION_PREFIX)}
        types = self._register(folder, base, {column: _option_type(v) for column, v in options.items()})
        for column, value in options.items():
            clean[column] = _option_value(value, types[column])
        return pa.Table.from_pylist([clean], schema=_table_schema(base, types))

    def _known_columns(self, folder: Path) -> dict[str, pa.DataType]:
        # setdefault: a writer unpickled from an older version's Tune experiment lacks the cache
        known = self.__dict__.setdefault("_known", {})
        if folder not in known:
            try:
                known[folder] = _option_types(pq.read_schema(folder / COLUMNS_FILE))
            except (pa.ArrowException, OSError, ValueError):  # none yet, or damaged: written anew when needed
                known[folder] = {}
        return known[folder]

    def _register(self, folder: Path, base: pa.Schema, types: Mapping[str, pa.DataType]) -> dict[str, pa.DataType]:
        """The types to write a row's option columns with, consistent with the folder's columns
        file; the file is rewritten (before the row is written, so pandas never misses a column)
        when the row adds a column or widens one (an int option that is now a float)."""
        known = self._known_columns(folder)
        out = {name: _merge_types(known[name], t) if name in known else t for name, t in types.items()}
        if all(known.get(name) == t for name, t in out.items()):
            return out
        self._known.pop(folder)  # another writer of this sweep may have added columns since: read again
        merged = dict(self._known_columns(folder))
        for name, t in out.items():
            merged[name] = _merge_types(merged[name], t) if name in merged else t
        _write_table(_table_schema(base, merged).empty_table(), folder / COLUMNS_FILE)
        self._known[folder] = merged
        return {name: merged[name] for name in out}

    # -- compaction --------------------------------------------------------------------------
    def trial_epochs(self, stage: str, trial_id: str) -> set[int]:
        """The epochs of a trial that some readable file holds (unreadable files count as absent)."""
        found: set[int] = set()
        for path in [self.trial_epochs_path(stage, trial_id), *self._loose_epoch_files(stage, trial_id)]:
            try:
                found.update(int(e) for e in pq.read_table(path, columns=["epoch"]).column("epoch").to_pylist())
            except (pa.ArrowException, OSError, ValueError):
                continue
        return found

    def trial_status(self, stage: str, trial_id: str) -> str | None:
        """The status of the trial's summary row; None when it has none (or it is unreadable)."""
        try:
            statuses = pq.read_table(self.trial_path(stage, trial_id), columns=["status"]).column("status")
        except (pa.ArrowException, OSError, ValueError):
            return None
        return statuses[0].as_py() if len(statuses) else None

    def compact_trial(self, stage: str, trial_id: str) -> Path | None:
        """Merge the epoch files of a finished trial into `trial_epochs_path`; returns it, or
        None when there was nothing to merge. Idempotent.

        The merged file holds the newest row of each epoch (a resumed trial's re-written epoch
        wins over the copy compacted earlier) and is written atomically before any one-row file
        is deleted, so a crash at any point leaves every row readable; only files that were
        read are deleted. A compacted file that cannot be read is replaced (its rows are lost
        already; `restore_missing_rows` writes them again from Tune's logs).
        """
        return self._compact(stage, trial_id, self._loose_epoch_files(stage, trial_id))[0]

    def _compact(self, stage: str, trial_id: str, loose: list[Path]) -> tuple[Path | None, int]:
        if not loose:
            return None, 0
        target = self.trial_epochs_path(stage, trial_id)
        tables, read = [], []
        for path in ([target] if target.exists() else []) + loose:
            try:
                tables.append(pq.read_table(path))
            except (pa.ArrowException, OSError, ValueError) as exc:
                warnings.warn(f"compacting trial {trial_id}: skipping unreadable results file {path}: {exc}",
                              ResultsFileWarning, stacklevel=3)
                continue
            if path != target:
                read.append(path)
        if not read:
            return None, 0
        schema = _unified(EPOCH_SCHEMA, [t.schema for t in tables])
        newest: dict[int, dict[str, Any]] = {}
        for table in tables:  # compacted first, then loose files: on equal times the later wins
            for row in _conform(table, schema).to_pylist():
                old = newest.get(row["epoch"])
                if old is None or row["written_at"] >= old["written_at"]:
                    newest[row["epoch"]] = row
        self._register(self.epochs_dir, EPOCH_SCHEMA, _option_types(schema))
        rows = [newest[e] for e in sorted(newest)]
        _write_table(pa.Table.from_pylist(rows, schema=schema), target)
        for path in read:
            path.unlink(missing_ok=True)
        return target, len(read)


def _listing(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.suffix == ".parquet" and p.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return []


def compact(path: str | os.PathLike[str]) -> Compaction:
    """Compact every finished trial of a sweep (`path`: the sweep folder or its results/ folder).

    A trial is finished when its summary row says completed, pruned or errored; its one-row
    epoch files (of this layout, or the flat layout of older versions) are merged into one file
    per trial, as the sweep's callback does when a trial ends. Running trials are left alone.
    Idempotent: a second call finds nothing to do. Safe to call after any experiment.
    """
    writer = ResultsWriter.at(path)
    trials = _frame(_read(writer.trials_dir, TRIAL_SCHEMA), TRIAL_KEY)
    finished = {(safe_name(r.stage), safe_name(r.trial_id)): (r.stage, r.trial_id)
                for r in trials.itertuples() if r.status in FINISHED}
    loose: dict[tuple[str, str], list[Path]] = {}
    # older versions' flat layout first, then running/ (the newer rows win a tie on written_at)
    for folder in [writer.epochs_dir] + [writer.epochs_dir / safe_name(s) / RUNNING_DIR for s in STAGES]:
        for p in _listing(folder):
            if m := _EPOCH_FILE.fullmatch(p.name):
                loose.setdefault((m["stage"], m["trial"]), []).append(p)
    done = removed = 0
    for key, files in sorted(loose.items()):
        if key in finished:
            target, n = writer._compact(*finished[key], files)
            done, removed = done + (target is not None), removed + n
    return Compaction(trials=done, files_removed=removed)


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


def _unified(base: pa.Schema, schemas: Iterable[pa.Schema]) -> pa.Schema:
    """`base`, then every option column any of `schemas` has (merged types, name order).
    Other columns outside `base` (none are written) are not read."""
    types: dict[str, pa.DataType] = {}
    for schema in schemas:
        for name, t in _option_types(schema).items():
            if name not in base.names:
                types[name] = _merge_types(types[name], t) if name in types else t
    return _table_schema(base, types)


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
    """Every Parquet file under `folder`, at any depth (both layouts), in path order.

    Names starting with '.' or '_' (temporary files, metadata) are skipped at every level, as
    pyarrow's own discovery does."""
    if not folder.is_dir():
        return []
    out = []
    for parent, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        out += [Path(parent) / n for n in names if n.endswith(".parquet") and not n.startswith((".", "_"))]
    return sorted(out)


def _read(folder: Path, schema: pa.Schema) -> pa.Table:
    files = _files(folder)
    if not files:
        return schema.empty_table()
    try:
        dataset = pads.dataset([str(f) for f in files], format="parquet")
        full = _unified(schema, [fragment.physical_schema for fragment in dataset.get_fragments()])
        return dataset.replace_schema(full).to_table()
    except (pa.ArrowException, OSError, ValueError):
        pass  # some file is damaged: read them one by one, skipping the bad ones
    tables = []
    for f in files:
        try:
            tables.append(pq.read_table(f))
        except (pa.ArrowException, OSError, ValueError) as exc:
            warnings.warn(f"skipping unreadable results file {f}: {exc}", ResultsFileWarning, stacklevel=3)
    full = _unified(schema, [t.schema for t in tables])
    return pa.concat_tables([_conform(t, full) for t in tables]) if tables else full.empty_table()


def _frame(table: pa.Table, key: Iterable[str]) -> pd.DataFrame:
    df = table.to_pandas()
    key = list(key)
    if len(df):
        # One key can be in two files: a crash between writing a trial's compacted file and
        # deleting its one-row files, an epoch re-written after compaction, the flat layout of
        # an older version next to this one. The newest write is the row.
        df = df.sort_values("written_at", kind="stable").drop_duplicates(key, keep="last")
        df = df.sort_values(key, kind="stable")
    return df.reset_index(drop=True)


def load(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(epochs, trials) DataFrames of a sweep; `path` is the sweep folder or its results/ folder.

    Columns: the fixed schema, then one `opt.<name>` column per option any trial has (null where
    a trial has no such option). Unreadable (truncated, corrupt) files are skipped with a
    ResultsFileWarning naming them; empty tables still have every documented column and dtype.
    """
    root = results_dir(path)
    epochs = _frame(_read(root / "epochs", EPOCH_SCHEMA), EPOCH_KEY)
    trials = _frame(_read(root / "trials", TRIAL_SCHEMA), TRIAL_KEY)
    return epochs, trials


__all__ = [
    "COLUMNS_FILE",
    "COMMON_FIELDS",
    "Compaction",
    "EPOCH_SCHEMA",
    "JSON_COLUMNS",
    "OPTION_PREFIX",
    "STAGES",
    "STATUSES",
    "TRIAL_SCHEMA",
    "compact",
    "ResultsFileWarning",
    "ResultsWriter",
    "flatten_config",
    "load",
    "option_column",
    "results_dir",
    "runtime_versions",
    "scalar_options",
    "to_json",
]
