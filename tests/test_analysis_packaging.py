"""The analysis installs as `dfa_ray_analysis` (from the folder `analysis/`), not as a top-level
`analysis` that would clash with any other package of that name, and the package list of
pyproject.toml names every package folder of the repository."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def package_folders(root: Path, name: str) -> set[str]:
    return {".".join([name, *p.parent.relative_to(root).parts]) for p in root.rglob("__init__.py")
            if "__pycache__" not in p.parts}


def test_pyproject_lists_every_package_and_maps_the_analysis_folder():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    expected = package_folders(REPO / "dfa_ray", "dfa_ray") | package_folders(REPO / "analysis", "dfa_ray_analysis")
    assert listed == expected, (f"pyproject.toml [tool.setuptools] packages: add {sorted(expected - listed)}, "
                                f"remove {sorted(listed - expected)}")
    assert config["package-dir"] == {"dfa_ray_analysis": "analysis"}
    assert "analysis" not in listed


def test_installed_import_name_from_outside_the_repository(tmp_path):
    code = ("import importlib.util, dfa_ray_analysis, dfa_ray_analysis.report\n"
            "print(dfa_ray_analysis.__file__)\n"
            "print(importlib.util.find_spec('analysis'))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    where, analysis = done.stdout.splitlines()
    assert Path(where) == REPO / "analysis" / "__init__.py"
    assert analysis == "None"  # no top-level `analysis` is installed


def test_no_stale_import_of_the_old_name():
    stale = []
    for folder in ("analysis", "dfa_ray", "tests", "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                s = line.strip()
                if s.startswith(("from analysis.", "from analysis import", "import analysis")):
                    stale.append(f"{path.relative_to(REPO)}:{n}: {s}")
    assert not stale, "imports of the old top-level name (use dfa_ray_analysis):\n" + "\n".join(stale)
