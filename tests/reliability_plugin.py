"""pytest plugin: the reliability table at the end of the run (`make test`).

Load it with `pytest_plugins = ["reliability_plugin"]` in tests/conftest.py (or `-p
reliability_plugin`). For the session it points `$DFA_RAY_RELIABILITY_LOG` at a fresh file
(unless the variable is already set: then it reads what this session appends), watches the
outcome of every test named in `reliability.CASES`, and prints one row per case whose test
ran: the fault or bad input, how many times it was tried, what happened, and whether any
result row was lost.
"""

from __future__ import annotations

import os
import tempfile
import textwrap
from pathlib import Path

import pytest

import reliability

_STATE_KEY = pytest.StashKey[dict]()


def _base_id(nodeid: str) -> str:
    """`tests/x.py::test_y[param]` -> `tests/x.py::test_y`."""
    return nodeid.split("[", 1)[0]


_CONFIG: list[pytest.Config] = []


def pytest_configure(config: pytest.Config) -> None:
    _CONFIG[:] = [config]
    state: dict = {"outcomes": {}, "created": None}
    path = os.environ.get(reliability.LOG_ENV)
    if not path:
        fd, path = tempfile.mkstemp(prefix="dfa-ray-reliability-", suffix=".jsonl")
        os.close(fd)
        os.environ[reliability.LOG_ENV] = path
        state["created"] = path
    state["path"] = path
    state["offset"] = Path(path).stat().st_size if Path(path).exists() else 0
    config.stash[_STATE_KEY] = state


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Keep the worst outcome per test function (over its parameters and phases).
    state = _state(None)
    if state is None:
        return
    base = _base_id(report.nodeid)
    if not any(case.test.endswith(base) or base.endswith(case.test) for case in reliability.CASES):
        return
    rank = {"passed": 0, "skipped": 1, "failed": 2}
    if report.when != "call" and report.outcome == "passed":
        return
    outcome = report.outcome
    previous = state["outcomes"].get(base)
    if previous is None or rank[outcome] > rank[previous]:
        state["outcomes"][base] = outcome


def _state(config: pytest.Config | None) -> dict | None:
    config = config or (_CONFIG[0] if _CONFIG else None)
    if config is None:
        return None
    return config.stash.get(_STATE_KEY, None)


def _outcome_of(case: reliability.Case, outcomes: dict[str, str]) -> str | None:
    for nodeid, outcome in outcomes.items():
        if nodeid.endswith(case.test) or case.test.endswith(nodeid):
            return outcome
    return None


def rows(state: dict) -> list[tuple[str, str, str, str]]:
    """(fault / bad input, tries, outcome, nothing lost) for every case whose test ran."""
    entries: dict[str, list[dict]] = {}
    for entry in reliability.read_log(state["path"], state["offset"]):
        entries.setdefault(entry["name"], []).append(entry)
    out = []
    for case in reliability.CASES:
        outcome = _outcome_of(case, state["outcomes"])
        if outcome is None:
            continue
        recorded = entries.get(case.name, [])
        if outcome == "skipped":
            out.append((case.name, "0", "skipped", "-"))
            continue
        if recorded:
            tries = str(sum(e["tries"] for e in recorded))
            text = "; ".join(e["outcome"] for e in recorded)
            lost = [e["lost_rows"] for e in recorded if e["lost_rows"] is not None]
        else:
            tries, text, lost = str(case.tries), case.expect, [0] if case.rows_at_stake else []
        if outcome == "failed":
            text = f"FAILED ({text})" if recorded else "FAILED"
            nothing_lost = "?" if case.rows_at_stake else "-"
        elif case.rows_at_stake:
            total = sum(lost)
            nothing_lost = "yes" if total == 0 else f"NO: {total} row(s) lost"
        else:
            nothing_lost = "-"
        out.append((case.name, tries, text, nothing_lost))
    return out


def format_table(table: list[tuple[str, str, str, str]], width: int = 100) -> list[str]:
    """One line per case (fault / bad input, tries, nothing lost), its outcome wrapped below."""
    header = ("fault / bad input", "tries", "nothing lost")
    width = max(60, width)
    tries_w = max([len(header[1])] + [len(r[1]) for r in table])
    lost_w = max([len(header[2])] + [len(r[3]) for r in table])
    name_w = min(max([len(header[0])] + [len(r[0]) for r in table]), width - tries_w - lost_w - 4)
    lines = [f"{header[0]:<{name_w}}  {header[1]:>{tries_w}}  {header[2]}", "-" * (name_w + tries_w + lost_w + 4)]
    for name, tries, outcome, lost in table:
        names = textwrap.wrap(name, name_w, subsequent_indent="") or [""]
        lines.append(f"{names[0]:<{name_w}}  {tries:>{tries_w}}  {lost}")
        lines.extend(f"  {more}" for more in names[1:])
        lines.extend(textwrap.wrap(outcome, width - 4, initial_indent="    ", subsequent_indent="    "))
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    state = _state(config)
    if state is None:
        return
    table = rows(state)
    if not table:
        return
    terminalreporter.section("Reliability: fault / bad input, tries, outcome, nothing lost")
    for line in format_table(table, width=terminalreporter._tw.fullwidth):
        terminalreporter.write_line(line)
    ran = len(table)
    terminalreporter.write_line(f"{ran} of {len(reliability.CASES)} cases ran (docs/reliability.md lists all of them)")


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE_KEY, None)
    if state and state.get("created"):
        try:
            os.unlink(state["created"])
        except OSError:
            pass
        if os.environ.get(reliability.LOG_ENV) == state["created"]:
            del os.environ[reliability.LOG_ENV]
