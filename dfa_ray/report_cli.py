"""`dfa-ray report SWEEP [SWEEP ...] --out DIR`: write the report of one sweep's results, or of
several sweeps joined into one.

Kept apart from cli.py so the command's wiring is one call (`add_report_command(sub)`); the
work is done by `dfa_ray_analysis.report.write_report`, which imports neither torch nor Ray.
"""

from __future__ import annotations

import argparse
from typing import Any

from dfa_ray.errors import ConfigError, DfaRayError

TIE_RULES = ("ci", "band")


def cmd_report(args: argparse.Namespace) -> int:
    try:
        from dfa_ray_analysis.report import write_report
    except ImportError as exc:  # the analysis package is not installed next to dfa_ray
        raise DfaRayError(f"the report needs the `dfa_ray_analysis` package of dfa-ray ({exc}); reinstall with "
                          "`pip install -e .` from the repository") from exc
    if len(args.sweep_dirs) > 1 and args.out is None:
        raise ConfigError("--out: a report of several sweeps needs an output folder; give --out DIR")
    path = write_report(args.sweep_dirs if len(args.sweep_dirs) > 1 else args.sweep_dirs[0], args.out,
                        rule=args.tie_rule)
    print(path, flush=True)
    return 0


def add_report_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register `report` on the `dfa-ray` sub-command parsers; returns its parser."""
    p = subparsers.add_parser(
        "report",
        help="write report.md (verdict, paper-style tables, tests, figures) of one or several sweeps' results",
        description="Write report.md, tables/ (Markdown, LaTeX, CSV) and figures/ (PNG and PDF) for the results of "
                    "one sweep, or of several joined on (dataset x protocol, pair, method, seed) into one report "
                    "that says which sweep each number came from; prints the path of report.md. A sweep still "
                    "running, or with a stage or seeds missing, gets the report of what is there and a 'Missing' "
                    "section.",
    )
    p.add_argument("sweep_dirs", nargs="+", metavar="SWEEP",
                   help="a sweep folder <storage>/<name>, or its results/ folder; several for one joined report")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for report.md, tables/ and figures/ (default with one sweep: <storage>/<name>/report; "
                        "required with several)")
    p.add_argument("--tie-rule", choices=TIE_RULES, default="ci",
                   help="how DFA vs a baseline on one pair is called a win, tie or loss: ci (default: the 95 %% "
                        "interval of the paired difference over seeds) or band (|difference of means| against the "
                        "pooled seed std, a fixed 0.3 points with one seed each)")
    p.set_defaults(handler=cmd_report)
    return p


__all__ = ["add_report_command", "cmd_report"]
