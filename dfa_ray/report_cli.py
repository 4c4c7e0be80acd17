"""`dfa-ray report SWEEP_DIR --out DIR`: write the report of a sweep's results.

Kept apart from cli.py so the command's wiring is one call (`add_report_command(sub)`); the
work is done by `analysis.report.write_report`, which imports neither torch nor Ray.
"""

from __future__ import annotations

import argparse
from typing import Any

from dfa_ray.errors import DfaRayError


def cmd_report(args: argparse.Namespace) -> int:
    try:
        from analysis.report import write_report
    except ImportError as exc:  # the analysis package is not installed next to dfa_ray
        raise DfaRayError(f"the report needs the `analysis` package of dfa-ray ({exc}); reinstall with "
                          "`pip install -e .` from the repository, or run from the repository root") from exc
    path = write_report(args.sweep_dir, args.out)
    print(path, flush=True)
    return 0


def add_report_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register `report` on the `dfa-ray` sub-command parsers; returns its parser."""
    p = subparsers.add_parser(
        "report",
        help="write report.md (paper-style tables, figures, a reading of the numbers) of a sweep's results",
        description="Write report.md, tables/ (Markdown, LaTeX, CSV) and figures/ (PNG) for the results of a sweep; "
                    "prints the path of report.md. A sweep still running, or with a stage or seeds missing, gets "
                    "the report of what is there and a 'Missing' section.",
    )
    p.add_argument("sweep_dir", metavar="SWEEP_DIR",
                   help="the sweep folder <storage>/<name>, or its results/ folder")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for report.md, tables/ and figures/ (default: <storage>/<name>/report)")
    p.set_defaults(handler=cmd_report)
    return p


__all__ = ["add_report_command", "cmd_report"]
