"""The reliability catalogue: every fault and bad input the tests try, and a log of what happened.

`CASES` declares each case once: its name (as docs/reliability.md and the `make test` summary
show it), its kind, how many times its test tries it, the test that does, and what must
happen. Tests call `record(name, tries, outcome, lost_rows)` (or count hypothesis examples
with a `Tally`) and the entry is appended as one JSON line to `$DFA_RAY_RELIABILITY_LOG` (a
temporary file when unset; `reliability_plugin` sets it for the session and prints the table
at the end). Tests that live in other files and do not record anything (the killed trial and
driver of test_sweep_ray.py, the spec properties of test_spec.py) are listed too: the plugin
reports them from their pass/fail outcome and their declared tries.

`tests/test_reliability_doc.py` checks that the table in docs/reliability.md lists exactly
these names, kinds, tries and tests, and that every test named here exists (and, for
hypothesis tests, runs as many examples as declared).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

LOG_ENV = "DFA_RAY_RELIABILITY_LOG"
KINDS = ("fault", "bad input", "safety")


@dataclass(frozen=True)
class Case:
    name: str  # the fault or bad input, as the table shows it
    kind: str  # fault | bad input | safety
    tries: int  # injections of the fault; hypothesis: max_examples
    test: str  # pytest node id without parameters: tests/<file>.py::<function>
    expect: str  # what happens (the doc's "what happened" column)
    rows_at_stake: bool = False  # True: the case checks that no result row is lost
    hypothesis: bool = False  # tries is the test's hypothesis max_examples


_F = "tests/test_faults_ray.py::"
_M = "tests/test_malformed.py::"
_S = "tests/test_spec.py::"
_R = "tests/test_sweep_ray.py::"

CASES: tuple[Case, ...] = (
    # -- faults (real Ray, loopback-only network namespace) -----------------------------------
    Case("trial process killed (SIGKILL) after epoch 2", "fault", 1,
         _R + "test_a_killed_trial_process_is_retried_from_its_checkpoint",
         "retried from its checkpoint, continues after epoch 2; epochs 1-5 once; trial completed", True),
    Case("driver killed (SIGKILL of its process group), same command run again", "fault", 1,
         _R + "test_a_killed_driver_is_resumed_by_the_same_command",
         "resumed by the same command; 4 trials completed, 24 epoch rows, each once", True),
    Case("driver killed after Tune created an experiment, before its first snapshot of the trials", "fault", 1,
         "tests/test_graph_ray.py::test_an_experiment_stopped_before_tunes_first_snapshot_is_run_again_in_full",
         "the experiment runs again with all its samples (Tune's own restore would run one); the rows of its "
         "unrecorded trials are dropped; every epoch once", True),
    Case("worker node killed during a sweep (two-node loopback cluster)", "fault", 1,
         _F + "test_a_killed_worker_node_does_not_stop_the_sweep",
         "the sweep finishes; the worker's trial is retried on the head from its checkpoint; every trial "
         "completed, every epoch once, same trials and stages as an undisturbed run", True),
    Case("newest checkpoint of a trial truncated", "fault", 3,
         _F + "test_a_truncated_newest_checkpoint_falls_back_to_the_older_one",
         "warning; continues from the older checkpoint (epoch 1) and reproduces epoch 2 exactly", True),
    Case("newest checkpoint replaced by a torch file of another structure", "fault", 1,
         _F + "test_a_foreign_newest_checkpoint_falls_back_to_the_older_one",
         "warning; continues from the older checkpoint (epoch 1)", True),
    Case("every checkpoint of a trial truncated", "fault", 3,
         _F + "test_with_every_checkpoint_broken_the_trial_starts_over",
         "warning; the trial starts over at epoch 0 and reproduces epoch 1 exactly; no exception", True),
    Case("loss turns NaN/inf (kd with w_kl 1e39 overflows float32)", "fault", 1,
         _F + "test_a_nonfinite_loss_errors_that_trial_and_the_sweep_goes_on",
         "the kd trial ends as errored with the reason and epoch 1 (trials table, progress lines, report); "
         "vanilla, dfa and the search complete; same trials and stages as an undisturbed run", True),
    Case("results file of an epoch truncated mid-write", "fault", 1,
         _F + "test_a_truncated_results_file_is_skipped_then_rewritten_on_resume",
         "load() skips it with a ResultsFileWarning; running the sweep again rewrites the row, once", True),
    Case("results file of a trial summary truncated mid-write", "fault", 1,
         _F + "test_a_truncated_trial_summary_is_skipped_then_rewritten_on_resume",
         "load() skips it with a ResultsFileWarning; running the sweep again rewrites the summary, once", True),
    # -- bad input: hypothesis properties -----------------------------------------------------
    Case("CIFAR-10 batch file corrupted (truncated, flipped, random, inserted bytes)", "bad input", 80,
         _M + "test_corrupt_cifar_batch_files", "DataError naming the file, or a valid dataset", hypothesis=True),
    Case("CIFAR batch pickle of the wrong structure (types, keys, shapes, labels)", "bad input", 80,
         _M + "test_cifar_batches_of_the_wrong_structure", "DataError naming the file, or a valid dataset",
         hypothesis=True),
    Case("Fashion-MNIST IDX file corrupted (bytes, header, type code, gzip)", "bad input", 80,
         _M + "test_corrupt_idx_files", "DataError naming the file, or a valid dataset", hypothesis=True),
    Case("CINIC-10 cache corrupted (bytes) or an image file corrupted", "bad input", 40,
         _M + "test_corrupt_cinic_cache_or_images",
         "cache ignored with a warning and rebuilt (same arrays), or DataError naming the image", hypothesis=True),
    Case("CINIC-10 cache of the wrong content (arrays of other shapes, types, labels)", "bad input", 40,
         _M + "test_cinic_cache_of_the_wrong_content",
         "cache ignored with a warning and rebuilt (same arrays); only arrays of exactly the written shape, "
         "type and label range are used", hypothesis=True),
    Case("teacher checkpoint.pt corrupted (truncated, flipped, random bytes)", "bad input", 60,
         _M + "test_corrupt_teacher_checkpoints", "CheckpointError naming the file, or a valid teacher",
         hypothesis=True),
    Case("teacher checkpoint.pt: a valid torch file of the wrong structure", "bad input", 80,
         _M + "test_teacher_checkpoints_of_the_wrong_structure",
         "CheckpointError naming the file, or a valid teacher", hypothesis=True),
    Case("genotype JSON mutated (types, missing/extra keys, NaN/negative weights, lengths, version)",
         "bad input", 120, _M + "test_mutated_genotype_json",
         "CheckpointError naming the file, or a valid genotype", hypothesis=True),
    Case("genotype file corrupted (truncated, flipped, random bytes)", "bad input", 60,
         _M + "test_corrupt_genotype_files", "CheckpointError naming the file, or a valid genotype",
         hypothesis=True),
    Case("broken sweep spec (wrong types, unknown keys, empty lists, bad ranges, huge values)", "bad input", 200,
         _S + "test_broken_specs_give_config_error_only",
         "ConfigError naming every wrong field, or a valid spec", hypothesis=True),
    Case("arbitrary text as a sweep spec file", "bad input", 60,
         _S + "test_arbitrary_text_gives_config_error_only", "ConfigError naming the file", hypothesis=True),
    Case("extreme numbers in every numeric field of a spec", "bad input", 120,
         _M + "test_extreme_numbers_in_a_spec",
         "ConfigError naming the field, or a spec whose recipes and Tune space build", hypothesis=True),
    Case("inputs the properties found escaping as other exceptions (regression cases)", "bad input", 11,
         _M + "test_known_bad_inputs",
         "each ends in the project's error naming the file or field (CINIC cache: warning, rebuilt)"),
    # -- safety -----------------------------------------------------------------------------
    Case("pickle that runs code (reduce -> os.system) as checkpoint, teacher, trial state, "
         "CIFAR batch, CINIC cache", "safety", 5,
         _M + "test_code_executing_pickles_are_refused",
         "refused (error or warning naming the file); the marker file is never created"),
    Case("names with '..', '/', absolute paths (sweep, pair, trial, stage)", "safety", 150,
         _M + "test_no_spec_or_trial_name_writes_outside_storage",
         "ConfigError, or every path under <storage>; nothing written outside it", hypothesis=True),
    Case("YAML tag that calls os.system in a spec", "safety", 1,
         _S + "test_yaml_python_tag_refused", "ConfigError naming the file and line; nothing runs"),
)

BY_NAME: dict[str, Case] = {c.name: c for c in CASES}
assert len(BY_NAME) == len(CASES), "duplicate case names"
assert all(c.kind in KINDS for c in CASES)


def tries(name: str) -> int:
    """The declared tries of a case (hypothesis tests use it as max_examples)."""
    return BY_NAME[name].tries


def log_path() -> Path:
    """Where entries go: $DFA_RAY_RELIABILITY_LOG, else a per-user temporary file."""
    path = os.environ.get(LOG_ENV)
    if not path:
        path = str(Path(tempfile.gettempdir()) / f"dfa-ray-reliability-{os.getuid()}.jsonl")
        os.environ[LOG_ENV] = path
    return Path(path)


def record(name: str, tries: int, outcome: str, lost_rows: int | None = None) -> dict:
    """Append one entry. A fault test must record the tries it declares (`CASES`)."""
    case = BY_NAME.get(name)
    if case is None:
        raise KeyError(f"{name!r} is not in tests/reliability.py CASES; add it there and to docs/reliability.md")
    if not case.hypothesis and tries != case.tries:
        raise AssertionError(f"{name!r}: the test tried it {tries} time(s), CASES declares {case.tries}")
    entry = {"name": name, "tries": int(tries), "outcome": str(outcome),
             "lost_rows": None if lost_rows is None else int(lost_rows),
             "test": os.environ.get("PYTEST_CURRENT_TEST", ""), "time": time.time()}
    path = log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
    return entry


def read_log(path: str | os.PathLike | None = None, offset: int = 0) -> list[dict]:
    """Entries written after byte `offset` (torn or foreign lines are skipped)."""
    path = Path(path) if path else log_path()
    if not path.exists():
        return []
    with open(path, "rb") as fh:
        fh.seek(offset)
        text = fh.read().decode("utf-8", "replace")
    out = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("name") in BY_NAME:
            out.append(entry)
    return out


class Tally:
    """Counts the examples of a hypothesis test by outcome; `flush()` records them once."""

    def __init__(self, name: str) -> None:
        if name not in BY_NAME:
            raise KeyError(f"{name!r} is not in tests/reliability.py CASES")
        self.name = name
        self.outcomes: Counter[str] = Counter()

    @property
    def tries(self) -> int:
        return sum(self.outcomes.values())

    def add(self, outcome: str) -> None:
        self.outcomes[outcome] += 1

    def flush(self) -> dict | None:
        if not self.tries:
            return None
        text = ", ".join(f"{outcome} {n}" for outcome, n in sorted(self.outcomes.items(), key=lambda kv: -kv[1]))
        entry = record(self.name, self.tries, text, None)
        self.outcomes.clear()
        return entry
