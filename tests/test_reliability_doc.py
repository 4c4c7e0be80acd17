"""docs/reliability.md matches what the tests do: its table lists exactly the cases of
tests/reliability.py (name, kind, tries, nothing-lost, test), every test it names exists, and
each hypothesis test runs as many examples as the table says."""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest

import reliability
from reliability import CASES, Tally, read_log, record

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "reliability.md"
HEADER = ["fault / bad input", "kind", "tries", "what happened", "nothing lost", "test"]


def doc_rows() -> list[dict[str, str]]:
    lines = [line.strip() for line in DOC.read_text().splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("| fault / bad input"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    assert header == HEADER, header
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == len(HEADER), f"a table row with {len(cells)} cells: {line}"
        rows.append(dict(zip(HEADER, cells)))
    return rows


def test_the_doc_table_lists_exactly_the_declared_cases():
    rows = doc_rows()
    assert [r["fault / bad input"] for r in rows] == [c.name for c in CASES]
    for row, case in zip(rows, CASES):
        assert row["kind"] == case.kind, case.name
        assert int(row["tries"]) == case.tries, f"{case.name}: the doc says {row['tries']} tries, the test {case.tries}"
        assert row["test"] == f"`{case.test}`", case.name
        assert row["nothing lost"] == ("yes" if case.rows_at_stake else "n/a"), case.name
        assert row["what happened"], case.name


def _function(test: str) -> ast.FunctionDef:
    path, _, name = test.partition("::")
    tree = ast.parse((REPO / path).read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise AssertionError(f"{test} does not exist")


@pytest.mark.parametrize("case", CASES, ids=[c.test.split("::")[1] + ":" + c.name[:30] for c in CASES])
def test_every_declared_test_exists_and_runs_the_declared_tries(case):
    node = _function(case.test)
    decorators = {ast.unparse(d).split("(")[0] for d in node.decorator_list}
    assert ("given" in decorators) == case.hypothesis, f"{case.test}: hypothesis={case.hypothesis} in CASES"
    if case.hypothesis:
        module = importlib.import_module(Path(case.test.split("::")[0]).stem)
        settings = getattr(module, node.name)._hypothesis_internal_use_settings
        assert settings.max_examples == case.tries, (
            f"{case.test} runs {settings.max_examples} examples, CASES and the doc say {case.tries}")
    else:
        # a fault test records its own tries; a test in another file is counted by its outcome
        source = ast.unparse(node)
        assert "record(" in source or case.test.split("::")[0] not in (
            "tests/test_faults_ray.py", "tests/test_malformed.py"), f"{case.test} never calls record()"


def test_record_and_tally_write_the_log(tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv(reliability.LOG_ENV, str(log))
    fault = next(c for c in CASES if not c.hypothesis)
    record(fault.name, fault.tries, "ok", 0)
    with pytest.raises(AssertionError, match="declares"):
        record(fault.name, fault.tries + 1, "ok", 0)
    with pytest.raises(KeyError):
        record("a fault nobody declared", 1, "ok")
    prop = next(c for c in CASES if c.hypothesis)
    tally = Tally(prop.name)
    for outcome in ("error", "error", "valid"):
        tally.add(outcome)
    tally.flush()
    log.open("a").write("{torn line\n")
    entries = read_log(log)
    assert [(e["name"], e["tries"], e["outcome"], e["lost_rows"]) for e in entries] == [
        (fault.name, fault.tries, "ok", 0), (prop.name, 3, "error 2, valid 1", None)]
    assert json.loads(log.read_text().splitlines()[0])["name"] == fault.name


def test_the_plugin_prints_one_row_per_case_that_ran(tmp_path):
    import reliability_plugin as plugin

    log = tmp_path / "log.jsonl"
    fault = next(c for c in CASES if c.rows_at_stake and c.test.startswith("tests/test_faults_ray.py"))
    other = next(c for c in CASES if c.test.startswith("tests/test_sweep_ray.py"))
    failed = next(c for c in CASES if c.hypothesis)
    record_line = {"name": fault.name, "tries": fault.tries, "outcome": "seen", "lost_rows": 2}
    log.write_text(json.dumps(record_line) + "\n")
    state = {"path": str(log), "offset": 0,
             "outcomes": {fault.test: "passed", other.test: "passed", failed.test: "failed"}}
    table = {name: (tries, outcome, lost) for name, tries, outcome, lost in plugin.rows(state)}
    assert table[fault.name] == (str(fault.tries), "seen", "NO: 2 row(s) lost")
    assert table[other.name] == (str(other.tries), other.expect, "yes")
    assert table[failed.name][1] == "FAILED"
    lines = plugin.format_table(plugin.rows(state), width=80)
    assert lines[0].split() == ["fault", "/", "bad", "input", "tries", "nothing", "lost"]
    assert all(len(line) <= 80 for line in lines)
