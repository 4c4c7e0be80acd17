"""Analysis of dfa-ray sweep results: pandas over the Parquet tables, no torch, no Ray.

One module, one job:
    loading      read a results folder (and the sweep's spec.json) into decoded frames
    robustness   per pair x method accuracy over seeds; DFA's gains, win/tie/loss, ranks,
                 and the relation between the gain and the teacher-student gap
    search       search-stage analysis: option effects, alpha, ASHA's savings
    published    the published CIFAR-100 numbers (kd_protocol.md) as data, matched to pairs
    tables       paper-style tables (Markdown, LaTeX, CSV)
    plots        PNG figures (matplotlib, Agg)
    bundle       every analysis of one sweep, computed once for the report
    reading      the report's short reading of the numbers, in sentences
    missing      what a report lacks (stages, planned cells, running trials, single seeds)
    markdown     Markdown formatting helpers
    report       `write_report(results, out_dir)`: report.md with tables, figures and a reading
    model_params parameter counts of the model zoo (a torch-free copy of `dfa-ray models`)

Everything here runs wherever the Parquet files are: a laptop with pandas, pyarrow and
matplotlib is enough (tests/test_analysis.py checks that torch and ray stay unimported).
"""

from __future__ import annotations

__all__ = ["bundle", "loading", "markdown", "missing", "model_params", "plots", "published", "reading", "report",
           "robustness", "search", "tables"]
