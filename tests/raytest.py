"""Helpers for tests that start Ray: the loopback-namespace check, tiny sweep specs, a teacher
store trained without Ray, a local Ray started and stopped in the test process, and scoped clean-up of the Ray processes a test started."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import yaml

from dfa_ray.localray import private_ray


def assert_loopback_only() -> None:
    """Ray tests must run where the only interface is loopback (see scripts/loopback-ns)."""
    names = [name for _, name in socket.if_nameindex()]
    assert names == ["lo"], (
        f"network interfaces {names}: Ray tests must run inside a loopback-only network namespace; "
        "run them through `make test` or `scripts/loopback-ns .venv/bin/python -m pytest ...`"
    )


def tiny_spec(name: str, storage: Path, **sections: Any) -> dict[str, Any]:
    """A sweep on digits small enough for a 2-core CI machine."""
    spec: dict[str, Any] = {
        "name": name,
        "storage": str(storage),
        "data": {"name": "digits"},
        "protocol": "quick",
        "recipe": {"epochs": 2, "batch_size": 256},
        "teachers": {"seed": 0},
        "pairs": [{"teacher": "resnet14", "student": "resnet8"}],
        "search": {"enabled": False},
        "distill": {"methods": ["vanilla"], "seeds": [0], "epochs": 2},
        "resources": {"cpu": 1, "gpu": 0, "max_concurrent": 2, "max_failures": 2},
    }
    for key, value in sections.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and isinstance(spec.get(key), dict) else value
    return spec


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


def train_store_teacher(spec_dict: dict[str, Any]) -> Path:
    """Put the spec's teacher into its teacher store without Ray (as a sweep would), so that
    Ray tests spend their time on what they test."""
    from dfa_ray.data import load_dataset
    from dfa_ray.engine.recipes import get_recipe
    from dfa_ray.engine.teacher import train_teacher
    from dfa_ray.spec import parse_spec
    from dfa_ray.sweep import teacher_jobs

    spec = parse_spec(spec_dict)
    data = load_dataset(spec.data.name)
    folders, jobs = teacher_jobs(spec, data)
    for job in jobs:
        recipe = get_recipe(spec.protocol, spec.teacher_recipe_overrides())
        train_teacher(job.model, data, recipe, job.seed, job.store_dir, device="cpu")
    return folders[spec.pairs[0].teacher]


def run_spec(spec_dict: dict[str, Any], **kwargs: Any) -> tuple[Any, list[str]]:
    """run_sweep of a spec dict in this process: (its outcome, the log lines it wrote)."""
    from dfa_ray.spec import parse_spec
    from dfa_ray.sweep import run_sweep

    lines: list[str] = []
    outcome = run_sweep(parse_spec(spec_dict), log=lines.append, **kwargs)
    return outcome, lines


@contextlib.contextmanager
def local_ray(prefix: str) -> Iterator[Any]:
    """A local Ray (2 CPUs) in this process for one test module; stopped with its processes."""
    assert_loopback_only()
    import ray

    with private_ray(prefix, num_cpus=2):
        yield ray


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop_started_nodes(started: list[subprocess.Popen]) -> None:
    """Stop exactly the `ray start --block` nodes a test started (each in its own session):
    SIGTERM their process groups, then SIGKILL what has not exited after 30 s."""
    for proc in started:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc in started:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
