"""benchmarks/method_costs.py's bookkeeping (not its timings, which `make bench` measures): the
round-robin drops its warm-up round and files each step under its phase, and the summary table
shows one line per method and phase, its cost relative to KD's step."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `benchmarks` is a folder of the repository, not an installed package

from benchmarks import run_all  # noqa: E402
from benchmarks.method_costs import round_robin  # noqa: E402


class FakeRun:
    """Steps report 10, 20, 30, ... img/s; the first `init` steps are in the init phase."""

    def __init__(self, init: int = 0, with_phase: bool = True) -> None:
        self.n, self.init, self.with_phase = 0, init, with_phase

    def step(self) -> dict:
        self.n += 1
        m = {"images_per_s": 10.0 * self.n}
        if self.with_phase:
            m["phase"] = "init" if self.n <= self.init else "train"
        return m


def test_round_robin_drops_the_warm_up_and_files_steps_by_phase():
    kept = round_robin({"kd": FakeRun(with_phase=False), "ab": FakeRun(init=2)}, rounds=3)
    assert kept["kd"] == {"train": [20.0, 30.0, 40.0]}
    assert kept["ab"] == {"init": [20.0], "train": [30.0, 40.0]}


def test_summary_rows_give_each_method_its_cost_relative_to_kd():
    report = {"machine": {"device": "cpu", "device_name": "x86_64", "torch_threads": 1}, "results": [
        {"pair": "a->b", "method": "kd", "phase": "train", "batch_size": 64, "img_s": 100.0, "kd_img_s": 100.0,
         "cost_vs_kd": 1.0},
        {"pair": "a->b", "method": "ft", "phase": "init", "batch_size": 64, "img_s": 50.0, "kd_img_s": 100.0,
         "cost_vs_kd": 2.0}]}
    rows = run_all.EXTRACTORS["method_costs"](report)
    assert [r["what"] for r in rows] == ["ft init stage step a->b, batch 64"]
    assert rows[0]["ratio"] == "2.0x cost" and rows[0]["reference"] == "100.0 img/s (KD step)"
    assert "method_costs" in run_all.BENCHMARKS and run_all.thread_arguments("method_costs", 1) == ["--threads", "1"]
