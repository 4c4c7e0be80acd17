"""Driver-side Tune callbacks: every result into the Parquet store, and progress lines.

They run in the driver as results arrive, so rows are written even for trials that are
later pruned or crash, and the results folder is complete up to the last reported epoch
whatever happens to the workers. Writes are idempotent on (stage, trial_id, epoch), so a
resumed sweep that replays an epoch replaces its row instead of duplicating it. When a trial
ends (completed, pruned, errored, or stopped by a non-finite loss) its epoch files are compacted
into one (`ResultsWriter.compact_trial`).

A shared-teacher group trial (a GroupTrial config, `GroupDistillTrainable`) is recorded as its
members: each member is a trial of the results of its own, with the id `<group trial id>-<key>`
(`member_trial_id`), the config its separate trial would have (`GroupTrial.member`), its own
epoch rows and summary row (errored alone when its loss diverged, while the others go on), and
its own compaction when it ends. So the Parquet schema and everything that reads it are the
same whether a sweep shares teachers or not.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
from ray import tune

from dfa_ray.results import ResultsFileWarning, ResultsWriter, flatten_config, runtime_versions, scalar_options
from dfa_ray.tune.configs import member_trial_id, parse_trial, resolved_config
from dfa_ray.tune.trainables import effective_config

# Keys of a step result that are not metrics (Tune's bookkeeping and our annotations).
_NOT_METRICS = {
    "done", "trial_id", "experiment_id", "date", "timestamp", "time_this_iter_s", "time_total_s", "pid", "hostname",
    "node_ip", "config", "time_since_restore", "iterations_since_restore", "training_iteration", "checkpoint_dir_name",
    "should_checkpoint", "genotype_json", "device", "node", "node_id", "checkpoint", "nonfinite", "epochs_planned",
    "active_groups", "alphas", "epoch", "seconds", "images_per_s", "lr", "train_loss", "train_acc", "val_acc",
    "val_loss", "loss_ce", "loss_kd", "loss_feat", "l_st", "l_ts", "l_train", "warmup_time", "method_options",
    "members", "ended",
}
_EPOCH_COLUMNS = ("lr", "train_loss", "train_acc", "val_acc", "val_loss", "loss_ce", "loss_kd", "loss_feat", "l_st",
                  "l_ts", "l_train", "seconds", "images_per_s")
_FINAL_KEYS = ("test_acc_last", "test_acc_best", "best_epoch", "best_val_acc")
# Keys of a group's step result that are the group's, not a member's (see member_result).
_GROUP_KEYS = {"members", "method_options", "ended", "epoch", "done", "config", "trial_id"}
# What a trial's own non-finite result lacks: it ends before the run reports where it ran.
_RUN_KEYS = {"device", "node", "node_id"}
_FINISHED = ("completed", "errored", "pruned")
# A running trial's summary row is rewritten at its first result and then at most this often
# (its final row is always written): the epoch rows are the record, the running summary only
# says how far a trial has got, and rewriting it at every epoch of every trial was a quarter of
# a busy driver's time (a 64-slot sweep: 13 searches reporting every epoch, measured).
RUNNING_SUMMARY_INTERVAL_S = 15.0


@dataclass(frozen=True)
class Unit:
    """What the results record as one trial: a plain Tune trial, or one member of a group."""

    trial_id: str
    config: dict[str, Any]  # Tune's config of the trial (a member's: that of its separate trial)
    key: str | None = None  # the member's key in its group; None for a plain trial


def group_members(config: dict[str, Any], trial_id: str) -> list[Unit] | None:
    """The members of a group trial as units, or None when the trial is not a group."""
    flat = effective_config(config)
    if flat.get("stage") != "distill" or "members" not in flat:
        return None
    group = parse_trial(config)
    return [Unit(member_trial_id(trial_id, key), resolved_config(group.member(key)), key) for key in group.keys]


def member_result(result: dict[str, Any], unit: Unit) -> dict[str, Any]:
    """A member's share of a group's step result, as its own trial's step result reads: Tune's
    bookkeeping, where it ran, its metrics, its trial id and resolved options."""
    row = result["members"][unit.key]
    nonfinite = "nonfinite" in row
    out = {k: v for k, v in result.items() if k not in _GROUP_KEYS and not (nonfinite and k in _RUN_KEYS)}
    out.update(row)
    out["trial_id"] = unit.trial_id
    options = (result.get("method_options") or {}).get(unit.key)
    if isinstance(options, dict) and not nonfinite:
        out["method_options"] = options
    return out


def _member_logs(entries: list[dict]) -> list[list[dict]]:
    """A trial's result log as the logs of what the results record: itself, or each member of
    a group (its entries in member form, each with the member's config)."""
    first = next((e for e in entries if isinstance(e, dict) and "config" in e and "trial_id" in e), None)
    units = group_members(first["config"], first["trial_id"]) if first is not None else None
    if units is None:
        return [entries]
    return [[{**member_result(e, unit), "config": unit.config} for e in entries
             if isinstance(e, dict) and isinstance(e.get("members"), dict) and unit.key in e["members"]]
            for unit in units]


def trial_identity(config: dict[str, Any], result: dict[str, Any] | None = None) -> dict[str, Any]:
    """The columns every row carries, from a trial's config. A distill trial's step result
    carries the method's resolved options (`method_options`): they replace the spec's
    overrides in the row's config, so every row says which variant ran. `options` are the
    trial's scalar options, written as `opt.<name>` columns: a search trial's search options
    (fixed and sampled), a distill trial's method options."""
    config = effective_config(config)
    if result and isinstance(result.get("method_options"), dict):
        config = {**config, "method_options": result["method_options"]}
    stage = config["stage"]
    if stage == "teacher":
        teacher, student, pair, method = None, config["model"], config["model"], "teacher"
    else:
        teacher, student = config["teacher"], config["student"]
        pair, method = f"{teacher}->{student}", config.get("method", "search")
        if stage == "distill" and isinstance(config.get("genotype"), str) and not config["genotype"].startswith("{"):
            method = f"{method}:{config['genotype']}"  # a reference genotype, e.g. dfa:last
    return {"sweep": config["sweep"], "stage": stage, "pair": pair, "teacher": teacher, "student": student,
            "dataset": config["dataset"], "method": method, "seed": int(config["seed"]),
            "config": flatten_config(_without_bulk(config)), "options": _trial_options(config)}


def _trial_options(config: dict[str, Any]) -> dict[str, Any]:
    """The options a trial's `opt.<name>` columns show (scalars only; the rest is in config)."""
    if config["stage"] == "search":
        options = config.get("options")
    elif config["stage"] == "distill":
        options = config.get("method_options")
    else:
        options = None  # a teacher has a recipe, no options
    return scalar_options(options) if isinstance(options, dict) else {}


def _without_bulk(config: dict[str, Any]) -> dict[str, Any]:
    """The genotype is stored in its own column, not repeated in every row's config."""
    out = dict(config)
    if isinstance(out.get("genotype"), dict):
        out["genotype"] = "search"
    return out


def epoch_row(ident: dict[str, Any], trial_id: str, epoch: int, result: dict) -> dict[str, Any]:
    return {**ident, "trial_id": trial_id, "epoch": epoch, **{k: result.get(k) for k in _EPOCH_COLUMNS},
            "alphas": result.get("alphas"),
            "extra": {k: v for k, v in result.items()
                      if k not in _NOT_METRICS and (isinstance(v, (int, float)) or k == "phase")}}


def restore_missing_rows(sweep_dir: str | Path, grid: Any) -> int:
    """Rewrite epoch rows that no readable file holds (a crash mid-write, a truncated file)
    from Tune's own per-trial log (`result.json`); returns how many. Then compact every
    finished trial of the grid, so a trial whose compaction a crash interrupted (or whose rows
    were just rewritten) ends as one file too.

    Called after every experiment, so a resumed sweep heals its results store even for trials
    that finished long ago and are not run again.
    """
    writer = ResultsWriter(sweep_dir)
    restored = 0
    for result in grid:
        log_file = Path(result.path) / "result.json" if result.path else None
        if log_file is None or not log_file.exists():
            continue
        for unit_entries in _member_logs(_read_log(log_file)):
            restored += _restore_rows(writer, unit_entries, result.error)
    return restored


def discard_unrecorded_trials(sweep_dir: str | Path, experiment_dir: str | Path) -> int:
    """Delete the result rows of every trial in the folder of an experiment that Tune cannot
    resume (its driver was killed before Tune's first snapshot of it: Tune knows none of its
    trials, so they run again under new ids); returns how many trials had rows."""
    writer = ResultsWriter(sweep_dir)
    discarded = 0
    for log_file in sorted(Path(experiment_dir).glob("*/result.json")):
        for unit_entries in _member_logs(_read_log(log_file)):
            # every entry of one trial's (or member's) log names the same trial and stage
            first = next((e for e in unit_entries if isinstance(e, dict) and "config" in e and "trial_id" in e), None)
            if first is not None:
                discarded += writer.discard_trial(effective_config(first["config"])["stage"], first["trial_id"])
    return discarded


def _read_log(log_file: Path) -> list[dict]:
    """A trial's Tune result log (one JSON object per line)."""
    entries = []
    for line in log_file.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line of a killed trial
    return entries


def _restore_rows(writer: ResultsWriter, entries: list[dict], error: Any) -> int:
    """restore_missing_rows for the log of one recorded trial (a plain trial or a member)."""
    restored = _restore_summary(writer, entries, error)
    present: dict[tuple[str, str], set[int]] = {}  # (stage, trial id) -> epochs some file holds
    for entry in entries:
        if "nonfinite" in entry or "config" not in entry or "trial_id" not in entry:
            continue
        ident = trial_identity(entry["config"], entry)
        key = (ident["stage"], entry["trial_id"])
        if key not in present:
            present[key] = writer.trial_epochs(*key)
        epoch = int(entry.get("epoch") or entry.get("training_iteration") or 0)
        if epoch in present[key]:
            continue
        writer.write_epoch(epoch_row(ident, entry["trial_id"], epoch, entry))
        present[key].add(epoch)
        restored += 1
    for stage, trial_id in present:
        if writer.trial_status(stage, trial_id) not in (None, "running"):
            _compact(writer, stage, trial_id)
    return restored


def _compact(writer: ResultsWriter, stage: str, trial_id: str) -> None:
    """Compact a finished trial's epoch files. A failure is not fatal (its rows stay readable
    in the one-row files; `dfa_ray.results.compact` or the next run merges them), so it warns."""
    try:
        writer.compact_trial(stage, trial_id)
    except (OSError, ValueError, pa.ArrowException) as exc:
        warnings.warn(f"could not compact the results of trial {trial_id} ({stage}): {exc}; its rows stay in "
                      "one file per epoch", ResultsFileWarning, stacklevel=2)


def _readable(path: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)
        return True
    except Exception:  # missing or unreadable
        return False


def _restore_summary(writer: ResultsWriter, entries: list[dict], error: Any) -> int:
    """Rewrite a trial's summary row from its result log when its file is missing or unreadable
    (the trial finished earlier, so no callback will write it again); returns 0 or 1."""
    entries = [e for e in entries if isinstance(e, dict) and "config" in e and "trial_id" in e]
    if not entries:
        return 0
    last = entries[-1]
    ident = trial_identity(last["config"], last)
    if _readable(writer.trial_path(ident["stage"], last["trial_id"])):
        return 0
    config = effective_config(last["config"])
    planned = int(config["epochs"] if config["stage"] == "search" else config["recipe"]["epochs"])
    ran = int(last.get("epoch") or last.get("training_iteration") or 0)
    if "nonfinite" in last:
        status, reason = "errored", last["nonfinite"]
    elif error is not None:
        lines = [line for line in str(error).splitlines() if line.strip()]
        status, reason = "errored", (lines[-1][:2000] if lines else "the trial failed")
    elif ran < planned:
        status, reason = "pruned", f"stopped by the scheduler after epoch {ran} of {planned}"
    else:
        status, reason = "completed", None
    vals = [(e["val_acc"], int(e.get("epoch") or 0)) for e in entries if e.get("val_acc") is not None]
    best = max(vals, key=lambda v: v[0]) if vals else None
    writer.write_trial({
        **ident, "trial_id": last["trial_id"], "status": status, "reason": reason, "epochs_run": ran,
        "epochs_planned": planned, "last_val_acc": last.get("val_acc"),
        "best_val_acc": last.get("best_val_acc", best[0] if best else None),
        "best_epoch": last.get("best_epoch", best[1] if best else None),
        "test_acc_last": last.get("test_acc_last"), "test_acc_best": last.get("test_acc_best"),
        "genotype": last.get("genotype_json") or _genotype_of(last["config"]),
        "checkpoint": last.get("checkpoint"), "wall_seconds": last.get("time_total_s"),
        "node": last.get("node") or last.get("hostname"), "device": last.get("device"),
        "versions": runtime_versions(),
        "machine": {"hostname": last.get("hostname"), "node_ip": last.get("node_ip"), "pid": last.get("pid"),
                    "node_id": last.get("node_id")}})
    return 1


class ResultsCallback(tune.Callback):
    """Writes one Parquet row per epoch and keeps one summary row per trial up to date (per
    member of a group trial: see the module's docstring)."""

    def __init__(self, sweep_dir: str | Path) -> None:
        self.writer = ResultsWriter(sweep_dir)
        self.started: dict[str, float] = {}
        self.last: dict[str, dict] = {}  # by recorded trial id (a member's, or a plain trial's)
        self.best: dict[str, tuple[float, int]] = {}
        self.groups: dict[str, list[Unit] | None] = {}  # Tune trial id -> its members (None: no group)
        self.group_last: dict[str, dict] = {}  # a group trial's last step result
        self.finished: set[str] = set()  # members that ended before their group (diverged)
        self.summarised: dict[str, float] = {}  # recorded trial id -> when its running summary was written

    def _units(self, trial: Any) -> list[Unit] | None:
        if trial.trial_id not in self.groups:
            self.groups[trial.trial_id] = group_members(trial.config, trial.trial_id)
        return self.groups[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started.setdefault(trial.trial_id, time.time())

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        units = self._units(trial)
        if units is None:
            self._record(trial, Unit(trial.trial_id, trial.config), result)
            return
        self.group_last[trial.trial_id] = result
        reported = result.get("members") or {}
        for unit in units:
            if unit.key not in reported:
                continue  # finished, diverged earlier, or waiting out another member's init stage
            row = member_result(result, unit)
            self._record(trial, unit, row)
            if "nonfinite" in row:  # it ends alone; the others go on
                self._finish(trial, unit, "errored", row["nonfinite"])
                self.finished.add(unit.trial_id)

    def _record(self, trial: Any, unit: Unit, result: dict) -> None:
        ident = trial_identity(unit.config, result)
        tid = unit.trial_id
        self.last[tid] = result
        epoch = int(result.get("epoch") or result.get("training_iteration") or 0)
        if "nonfinite" in result:
            return  # not an epoch: the trial ends here, as errored (see on_trial_complete)
        self.writer.write_epoch(epoch_row(ident, tid, epoch, result))
        val = result.get("val_acc")
        if val is not None and (tid not in self.best or val > self.best[tid][0]):
            self.best[tid] = (float(val), epoch)
        now = time.monotonic()
        if tid not in self.summarised or now - self.summarised[tid] >= RUNNING_SUMMARY_INTERVAL_S:
            self.summarised[tid] = now
            self._write_trial(trial, unit, "running", None)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for unit in self._open_units(trial):
            last = self.last.get(unit.trial_id, {})
            planned = _planned_of(unit.config)
            ran = int(last.get("epoch") or last.get("training_iteration") or 0)
            if "nonfinite" in last:
                self._finish(trial, unit, "errored", last["nonfinite"])
            elif unit.key is not None and not last and unit.key in self._ended(trial):
                self._finish(trial, unit, "errored", self._ended(trial)[unit.key].get("reason"))
            elif ran < planned:
                self._finish(trial, unit, "pruned", f"stopped by the scheduler after epoch {ran} of {planned}")
            else:
                self._finish(trial, unit, "completed", None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        ended = self._ended(trial)
        for unit in self._open_units(trial):
            last = self.last.get(unit.trial_id, {})
            if "nonfinite" in last:
                self._finish(trial, unit, "errored", last["nonfinite"])
            elif unit.key in ended:
                self._finish(trial, unit, "errored", ended[unit.key].get("reason"))
            else:
                self._finish(trial, unit, "errored", _error_text(trial))

    # -- helpers -----------------------------------------------------------------------------
    def _ended(self, trial: Any) -> dict[str, dict]:
        """The members of a group trial that diverged, as its last step result lists them."""
        ended = self.group_last.get(trial.trial_id, {}).get("ended")
        return ended if isinstance(ended, dict) else {}

    def _open_units(self, trial: Any) -> list[Unit]:
        """What still needs its final summary when the Tune trial ends: the trial itself, or the
        members that did not end before it. A member that diverged before this driver resumed
        the group reports nothing now: its summary, written then, is kept (only compacted)."""
        units = self._units(trial)
        if units is None:
            return [Unit(trial.trial_id, trial.config)]
        out = []
        ended = self._ended(trial)
        for unit in units:
            if unit.trial_id in self.finished:
                continue
            if (unit.key in ended and unit.trial_id not in self.last
                    and self.writer.trial_status("distill", unit.trial_id) in _FINISHED):
                _compact(self.writer, "distill", unit.trial_id)
                continue
            out.append(unit)
        return out

    @staticmethod
    def _planned(trial: Any) -> int:
        return _planned_of(trial.config)

    def _finish(self, trial: Any, unit: Unit, status: str, reason: str | None) -> None:
        self._write_trial(trial, unit, status, reason)
        # After the final summary row: a crash in between leaves a finished trial with one-row
        # files, which restore_missing_rows (after the experiment) or compact() merges.
        _compact(self.writer, effective_config(unit.config)["stage"], unit.trial_id)

    def _write_trial(self, trial: Any, unit: Unit, status: str, reason: str | None) -> None:
        tid = unit.trial_id
        last = self.last.get(tid, {})
        best = self.best.get(tid)
        row = {**trial_identity(unit.config, last), "trial_id": tid, "status": status, "reason": reason,
               "epochs_run": int(last.get("epoch") or last.get("training_iteration") or 0),
               "epochs_planned": _planned_of(unit.config),
               "last_val_acc": last.get("val_acc"),
               "best_val_acc": last.get("best_val_acc", best[0] if best else None),
               "best_epoch": last.get("best_epoch", best[1] if best else None),
               "test_acc_last": last.get("test_acc_last"), "test_acc_best": last.get("test_acc_best"),
               "genotype": last.get("genotype_json") or _genotype_of(unit.config),
               "checkpoint": last.get("checkpoint") or _checkpoint_path(trial),
               "wall_seconds": time.time() - self.started.get(trial.trial_id, time.time()),
               "node": last.get("node") or last.get("hostname"), "device": last.get("device"),
               "versions": runtime_versions(), "machine": {"hostname": last.get("hostname"),
                                                          "node_ip": last.get("node_ip"), "pid": last.get("pid"),
                                                          "node_id": last.get("node_id")}}
        self.writer.write_trial(row)


def _planned_of(config: dict[str, Any]) -> int:
    """The epochs a trial (or member) is planned to run, from its config."""
    config = effective_config(config)
    if config["stage"] == "search":
        return int(config["epochs"])
    return int(config["recipe"]["epochs"])


def _genotype_of(config: dict[str, Any]) -> str | None:
    genotype = effective_config(config).get("genotype")
    return json.dumps(genotype) if isinstance(genotype, dict) else genotype


def _checkpoint_path(trial: Any) -> str | None:
    checkpoint = getattr(trial, "checkpoint", None)
    return getattr(checkpoint, "path", None) if checkpoint is not None else None


def _error_text(trial: Any) -> str:
    """The last line of the trial's error (the exception), or a generic note."""
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text().strip() if path else ""
    except OSError:
        text = ""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:2000] if lines else "the trial failed (no error text recorded)"


class ProgressCallback(tune.Callback):
    """One short line per epoch result, and one per finished trial."""

    def __init__(self, log: Callable[[str], None] = print) -> None:
        self.log = log
        self.groups: dict[str, list[Unit] | None] = {}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if trial.trial_id not in self.groups:
            self.groups[trial.trial_id] = group_members(trial.config, trial.trial_id)
        units = self.groups[trial.trial_id]
        if units is None:
            self._line(Unit(trial.trial_id, trial.config), result)
            return
        reported = result.get("members") or {}
        for unit in units:  # a line per member, as its own trial would print it
            if unit.key in reported:
                self._line(unit, member_result(result, unit))

    def _line(self, unit: Unit, result: dict) -> None:
        ident = trial_identity(unit.config)
        if "nonfinite" in result:
            self.log(f"[{ident['stage']} {ident['pair']} {ident['method']} {unit.trial_id}] {result['nonfinite']}")
            return
        epoch = result.get("epoch", result.get("training_iteration"))
        planned = _planned_of(unit.config)
        parts = [f"[{ident['stage']} {ident['pair']}"
                 + ("" if ident["stage"] != "distill" else f" {ident['method']} s{ident['seed']}")
                 + f" {unit.trial_id}] epoch {epoch}/{planned}"]
        if result.get("train_loss") is not None:
            parts.append(f"loss {result['train_loss']:.3f}")
        if result.get("val_acc") is not None:
            parts.append(f"val {result['val_acc']:.1f}%")
        if result.get("test_acc_last") is not None:
            parts.append(f"test {result['test_acc_last']:.1f}% (best-val epoch: {result['test_acc_best']:.1f}%)")
        self.log("  ".join(parts))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.log(f"[{trial.config['stage']}] trial {trial.trial_id} failed: {_error_text(trial)}")
