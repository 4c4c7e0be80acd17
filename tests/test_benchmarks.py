"""The benchmarks' own arithmetic and bookkeeping (not their timings: those are measured by
`make bench`, never by tests): the data-path ceiling, the alternation of rounds, the ASHA
comparison's reproducibility check, the thread arguments of `make bench`, and the summary
table read back from the committed results file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `benchmarks` is a folder of the repository, not an installed package

from benchmarks import run_all  # noqa: E402
from benchmarks.asha_saving import check_same_trajectories  # noqa: E402
from benchmarks.distill_step import alternate_rounds, ceiling_figures  # noqa: E402


def test_ceiling_figures_bound_what_a_loader_can_give():
    figures = ceiling_figures(ours=120.0, reference=100.0, compute_runs=[110.0, 130.0, 125.0])
    assert figures["reference_compute_img_s"] == 125.0  # the median
    assert figures["reference_data_share"] == pytest.approx(0.2)  # 1 - 100 / 125
    assert figures["loader_ceiling_ratio"] == 1.25
    assert figures["engine_vs_reference_compute"] == 0.96
    # a reference faster than its own compute alone (noise) is a data share of 0, not negative
    assert ceiling_figures(100.0, 101.0, [100.0])["reference_data_share"] == 0.0


class FakeReference:
    """Stands in for ReferenceLoop: records the order of calls, returns a distinct value each."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def __call__(self, batches: int, compute_only: bool = False) -> float:
        self.calls.append("compute" if compute_only else "ref")
        return float(len(self.calls))


def test_rounds_alternate_and_the_warm_up_round_is_dropped():
    calls: list[str] = []

    def ours() -> float:
        calls.append("ours")
        return float(len(calls))

    kept_ours, kept_ref, kept_compute = alternate_rounds(ours, FakeReference(calls), batches=3, rounds=2)
    assert calls == ["ours", "ref", "compute", "compute", "ref", "ours", "ours", "ref", "compute"]
    # round 0 (calls 1-3) is the warm-up; the values are the call numbers of rounds 1 and 2
    assert kept_ours == [6.0, 7.0] and kept_ref == [5.0, 8.0] and kept_compute == [4.0, 9.0]


def trial(lr: float, lam: float, accs: list[float]) -> dict:
    return {"lr": lr, "lam": lam, "epochs": len(accs), "val_acc": accs[-1], "val_acc_by_epoch": accs}


def test_the_asha_comparison_requires_reproducible_trials():
    fifo = [trial(0.1, 1.0, [50.0, 80.0, 90.0]), trial(0.01, 3.0, [40.0, 70.0, 85.0])]
    check_same_trajectories([trial(0.1, 1.0, [50.0]), trial(0.01, 3.0, [40.0, 70.0, 85.0])], fifo)
    with pytest.raises(RuntimeError, match=r"lr 0\.01, lam 3 learned differently under ASHA"):
        check_same_trajectories([trial(0.1, 1.0, [50.0]), trial(0.01, 3.0, [40.0, 71.0])], fifo)


def test_make_bench_tells_the_threaded_benchmarks_their_threads():
    assert run_all.thread_arguments("distill_step", 0) == ["--threads", "0"]  # its own CPU default is 1
    assert run_all.thread_arguments("search_step", 1) == ["--threads", "1"]
    assert run_all.thread_arguments("asha_saving", 1) == []  # its trials set their own threads
    assert set(run_all.THREADED) <= set(run_all.BENCHMARKS)


def test_the_committed_results_file_reads_back_into_the_summary_table():
    files = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    assert files, "benchmarks/results/ holds the figures the README quotes"
    for path in files:
        data = json.loads(path.read_text())
        rows = run_all._latest_rows(data)
        present = {name for name in run_all.EXTRACTORS if isinstance(data.get(name), dict)}
        assert set(rows) == present, f"{path.name}: reports no extractor understands: {present - set(rows)}"
        for name, found in rows.items():
            assert found, name
            assert all(r["met"] in ("yes", "NO", "-") for r in found), name
        table = run_all.table([r for found in rows.values() for r in found])
        assert table.splitlines()[0].split() == ["what", "ours", "reference", "ratio", "target", "met", "device"]
        if "ray_overhead" in rows:
            assert "engine, fresh process" in table and "reused actor" in table


def test_the_shared_teacher_benchmark_runs_both_sides_and_reports_its_ceiling():
    from benchmarks import shared_teacher

    # a smoke run with tiny settings (its timings mean nothing here): both sides train, the
    # report holds the MAC ceiling k (T + 3S) / (T + 3kS) and the summary table reads it
    report = shared_teacher.main(["--pairs", "resnet8->resnet8", "--methods", "kd", "at", "dfa:last",
                                  "--batch-size", "4", "--batches", "1", "--rounds", "1", "--threads", "1",
                                  "--device", "cpu", "--no-record"])
    (x,) = report["results"]
    assert x["k"] == 3 and x["teacher_macs"] == x["student_macs"] > 0
    assert x["ceiling"] == round(3 * 4 / (1 + 9), 2)  # T == S: 3 (T + 3T) / (T + 9T)
    assert x["group_img_s"] > 0 and x["separate_img_s"] > 0 and len(x["group_s"]) == 1
    assert x["judged_on"] == "cpu_time" and x["cpu_ratio"] > 0
    assert sorted(x["member_s"]) == ["at", "dfa:last", "kd"] and x["teacher_s"] > 0
    t, m = x["teacher_s"], sum(x["member_s"].values())
    assert x["measured_ceiling"] == pytest.approx((3 * t + m) / (t + m), abs=0.01)
    assert shared_teacher.ceiling(6, 1083, 177) == pytest.approx(6 * (1083 + 531) / (1083 + 3186))
    (row,) = run_all.EXTRACTORS["shared_teacher"](report)
    assert row["what"] == "shared teacher, 3 methods resnet8->resnet8, batch 4" and row["met"] == "-"
    assert "shared_teacher" in run_all.BENCHMARKS and run_all.thread_arguments("shared_teacher", 1) == ["--threads", "1"]


def test_the_cluster_benchmark_names_the_chain_that_ended_last_with_its_planned_times():
    """critical_chain walks back from the node that ended last through the dependency that ended
    last, and sets each node's measured span beside its span in the plan's list schedule."""
    from types import SimpleNamespace

    from benchmarks.cluster_schedule import critical_chain
    from dfa_ray.plan import SimNode, simulate

    def node(id_, deps, seconds):
        sim = SimNode(id_, tuple(deps), ((seconds,),), 1.0)
        return SimpleNamespace(id=id_, depends_on=tuple(deps), sim_node=lambda: sim)

    plan = SimpleNamespace(nodes=[node("search:a", [], 10.0), node("distill:a", [], 4.0),
                                  node("distill-dfa:a", ["search:a"], 20.0)])
    t0 = 1000.0
    spans = {"search:a": [t0 + 1, t0 + 15], "distill:a": [t0, t0 + 40], "distill-dfa:a": [t0 + 18, t0 + 45]}
    schedule = simulate([n.sim_node() for n in plan.nodes], 2)
    chain = critical_chain(plan, schedule, spans, t0, scale=2.0)
    assert [c["node"] for c in chain] == ["search:a", "distill-dfa:a"]
    assert chain[0] == {"node": "search:a", "start_s": 1.0, "end_s": 15.0, "planned_start_s": 0.0,
                        "planned_end_s": 20.0}
    assert (chain[1]["start_s"], chain[1]["end_s"]) == (18.0, 45.0)
    assert (chain[1]["planned_start_s"], chain[1]["planned_end_s"]) == (20.0, 60.0)
