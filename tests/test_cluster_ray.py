"""A real two-node Ray cluster on loopback: `ray start` a head and a worker (own ports, own
temp dirs, the worker with a custom resource), `ray job submit` a sweep through
experiments/submit.sh, and find trials that ran on each node. Stops only the nodes it started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from dfa_ray.localray import end_processes_mentioning
from raytest import (assert_loopback_only, free_port, listening, stop_started_nodes,
                      tiny_spec, train_store_teacher, wait_for, write_spec)

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parent.parent


def alive_nodes(address: str, env: dict) -> int:
    code = ("import torch, ray; ray.init(address=%r, logging_level='ERROR');"
            "print(sum(n['Alive'] for n in ray.nodes()))" % address)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0


def test_ray_job_submit_on_a_two_node_loopback_cluster(tmp_path):
    from dfa_ray.results import load

    assert_loopback_only()
    storage = tmp_path / "storage"
    spec = tiny_spec("twonode", storage, distill={"methods": ["vanilla", "kd"], "seeds": [0, 1], "epochs": 2})
    train_store_teacher(spec)
    workdir = tmp_path / "job"
    workdir.mkdir()
    write_spec(workdir / "spec.yaml", spec)

    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    ray = str(venv_bin / "ray")
    head_tmp = tempfile.mkdtemp(prefix="dfa-ray-head-")
    worker_tmp = tempfile.mkdtemp(prefix="dfa-ray-worker-")
    port, dashboard = free_port(), free_port()
    started: list[subprocess.Popen] = []
    try:
        started.append(subprocess.Popen(
            [ray, "start", "--head", f"--port={port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
             f"--temp-dir={head_tmp}", "--disable-usage-stats", "--num-cpus=1", "--block"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        wait_for(lambda: listening(dashboard), timeout=120, what="the head node's dashboard")
        started.append(subprocess.Popen(
            [ray, "start", f"--address=127.0.0.1:{port}", f"--temp-dir={worker_tmp}", "--num-cpus=1",
             '--resources={"extra": 1}', "--disable-usage-stats", "--block"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        wait_for(lambda: alive_nodes(f"127.0.0.1:{port}", env) == 2, timeout=120, interval=3, what="two live nodes")

        submit = subprocess.run(
            ["bash", str(REPO / "experiments" / "submit.sh"), "spec.yaml", "--storage", str(storage)],
            cwd=workdir, env={**env, "RAY_DASHBOARD": f"http://127.0.0.1:{dashboard}"},
            capture_output=True, text=True, timeout=480)
        output = submit.stdout + submit.stderr
        assert submit.returncode == 0, output[-4000:]
        assert "succeeded" in output, output[-4000:]
    finally:
        stop_started_nodes(started)  # exactly the nodes this test started
        end_processes_mentioning(head_tmp)
        end_processes_mentioning(worker_tmp)

    _, trials = load(storage / "twonode")
    distill = trials[trials.stage == "distill"]
    assert len(distill) == 4 and (distill.status == "completed").all()
    node_ids = {json.loads(m)["node_id"] for m in distill.machine}
    assert len(node_ids) == 2, f"all trials ran on one node: {node_ids}"
