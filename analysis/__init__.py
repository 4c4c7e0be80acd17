"""Analysis of dfa-ray sweep results: pandas over the Parquet tables, no torch, no Ray.

Installed as `dfa_ray_analysis` from the repository folder `analysis/` (a generic top-level
name like `analysis` would clash with other packages). One module, one job:
    loading      read a results folder (and the sweep's spec.json), or several joined, into
                 decoded frames; which sweep each number came from
    stats        the statistics on plain numbers (scipy.stats): t intervals, paired comparisons,
                 Wilcoxon / sign tests across pairs, Holm's correction
    robustness   per pair x method accuracy over seeds with intervals; DFA against each baseline
                 (paired, by the interval rule), win/tie/loss with tests across pairs, the verdict
                 against the best baseline, ranks, and the gain against the teacher-student gap
    search       search-stage analysis: option effects, alpha, ASHA's savings
    published    published numbers (CRD benchmark, DKD, Overhaul, DFA, the DFA author's baselines)
                 as data, each with its source's reporting rule, matched to pairs
    tables       paper-style tables (Markdown, LaTeX, CSV)
    plots        figures returned as matplotlib Figures (or drawn into a given ax), saved as PNG
                 and PDF
    bundle       every analysis of the results, computed once for the report
    reading      the report's verdict and short reading of the numbers, in sentences
    missing      what a report lacks (stages, planned cells, running trials, single seeds)
    markdown     Markdown formatting helpers
    report       `write_report(results, out_dir)`: report.md with tables, figures and a reading
    model_params parameter counts of the model zoo (a torch-free copy of `dfa-ray models`)

Everything here runs wherever the Parquet files are: a laptop with pandas, pyarrow, scipy and
matplotlib is enough (tests/test_analysis.py checks that torch, Ray and the pydantic sweep
spec stay unimported). docs/analysis.md explains the statistics and the reporting rules.
"""

from __future__ import annotations

__all__ = ["bundle", "loading", "markdown", "missing", "model_params", "plots", "published", "reading", "report",
           "robustness", "search", "stats", "tables"]
