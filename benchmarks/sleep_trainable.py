"""A test double of the sweep's trainables for benchmarks/cluster_schedule.py: each epoch only
sleeps for the time the cost model gives it, so the real sweep driver can be measured on a
simulated cluster of many GPUs on one small machine.

It goes in through the sweep's own seam (`run_sweep(..., trainables=Trainables(...))`); the
package does not know about it. What it reports is what the driver needs to run the graph as
it would for real: `epoch` (a search reports every epoch, because its scheduler decides at
epochs; teachers and distillations report `chunk` epochs at a time, to keep the driver's
result traffic at a real study's scale rather than hundreds of thousands of tiny results),
`val_acc` (a fixed function of the trial's settings, so SHA has something to rank),
`genotype_json` for searches (what the dfa nodes are built from) and, for teachers, a
teacher-store checkpoint with the fields the store checks (the sweep's finished check reads
it). It declares `takes_data = False`: its workers do not import torch (this module imports
neither torch nor the package; only a finishing teacher does), so sixty-four of them fit in a
small machine's memory.

A shared-teacher group trial (`members` in its config) reports each member's row the way
dfa_ray.tune.trainables.GroupDistillTrainable does.

Timing comes from a JSON file named by DFA_RAY_SIM_COSTS: {"chunk": k, "epoch_seconds":
{node id: seconds per epoch}, "trial_seconds": {"<node id>|<method>,<method>...": seconds of
the whole trial}}, written by the benchmark before it starts Ray (the workers inherit the
environment). A distillation trial takes its own entry when there is one (a group's time
depends on its members: how many, and whether their methods have an init stage), spread over
its epochs; otherwise its node's seconds per epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from ray import tune

COSTS_ENV = "DFA_RAY_SIM_COSTS"


def node_of(config: dict[str, Any]) -> str:
    """The graph node a trial config belongs to (the sweep's node ids)."""
    stage = config["stage"]
    if stage == "teacher":
        return f"teacher:{config['model']}"
    pair = f"{config['teacher']}->{config['student']}"
    if stage == "search":
        return f"search:{pair}"
    method = config["members"][0]["method"] if "members" in config else config.get("method", "")
    base = str(method).partition(":")[0]  # a group's members are all dfa or all baselines
    return f"{'distill-dfa' if base == 'dfa' else 'distill'}:{pair}"


def trial_key(config: dict[str, Any]) -> str:
    """`<node>|<methods>` of a distillation trial (a group's members in order), else the node."""
    methods = [job["method"] for job in config["members"]] if "members" in config else [config.get("method", "")]
    return f"{node_of(config)}|{','.join(methods)}" if config["stage"] == "distill" else node_of(config)


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    job = config.get("job")
    return {**{k: v for k, v in config.items() if k != "job"}, **job} if isinstance(job, dict) else dict(config)


def _score(config: dict[str, Any]) -> float:
    """A made-up accuracy in [50, 90), fixed by the trial's settings."""
    text = json.dumps(config.get("options", {}), sort_keys=True, default=str)
    return 50.0 + int(hashlib.sha1(text.encode()).hexdigest()[:6], 16) % 4000 / 100.0


class SleepTrainable(tune.Trainable):
    """Every stage in one class: the trial config says which."""

    takes_data = False

    def setup(self, config: dict[str, Any]) -> None:
        self._configure(config)

    def _configure(self, config: dict[str, Any]) -> None:
        costs = json.loads(Path(os.environ[COSTS_ENV]).read_text())
        self.flat = _flat(config)
        self.stage = self.flat["stage"]
        self.node = node_of(self.flat)
        self.epochs = int(self.flat["epochs"] if self.stage == "search" else self.flat["recipe"]["epochs"])
        whole = costs.get("trial_seconds", {}).get(trial_key(self.flat))
        self.epoch_s = float(whole) / self.epochs if whole is not None else float(costs["epoch_seconds"][self.node])
        self.chunk = 1 if self.stage == "search" else int(costs["chunk"])
        self.done_epochs = 0

    def step(self) -> dict[str, Any]:
        n = min(self.chunk, self.epochs - self.done_epochs)
        time.sleep(n * self.epoch_s)
        self.done_epochs += n
        done = self.done_epochs >= self.epochs
        score = _score(self.flat) + self.done_epochs / self.epochs
        result: dict[str, Any] = {"epoch": self.done_epochs, "val_acc": score, "train_loss": 1.0,
                                  "seconds": n * self.epoch_s, "sim_node": self.node, "done": done}
        if self.stage == "search":
            result["genotype_json"] = json.dumps({"kind": "search", "groups": [{"weights": [1.0]}],
                                                  "trial_id": self.trial_id, "options": {}})
        if done and self.stage != "search":
            result.update(test_acc_last=score, test_acc_best=score)
        if "members" in self.flat:  # a shared-teacher group: each member's row, as the real group reports it
            rows = {job["method"]: {k: v for k, v in result.items() if k not in ("sim_node",)}
                    for job in self.flat["members"]}
            result = {"members": rows, "method_options": {key: {} for key in rows}, "ended": {},
                      "epoch": self.done_epochs, "seconds": n * self.epoch_s, "done": done}
        if done and self.stage == "teacher":
            write_teacher(Path(self.flat["store_dir"]), self.flat)
        return result

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        (Path(checkpoint_dir) / "sleep.json").write_text(json.dumps({"epochs": self.done_epochs}))

    def load_checkpoint(self, checkpoint: Any) -> None:
        self.done_epochs = int(json.loads((Path(checkpoint) / "sleep.json").read_text())["epochs"])

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        self._configure(new_config)
        return True


def write_teacher(folder: Path, config: dict[str, Any]) -> None:
    """A teacher-store entry the sweep's finished check accepts: the checkpoint's kind, version,
    meta and final-weights fields (no weights: nothing ever loads them here). Imports the
    package's checkpoint writer (and so torch) only in the few workers that finish a teacher."""
    from dfa_ray.engine.checkpoint import save_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(folder / "checkpoint.pt", teacher_state(config))


def teacher_state(config: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "dfa-ray/teacher", "version": 1, "run": {"epoch": int(config["recipe"]["epochs"])},
            "meta": {"model": config["model"], "dataset": config["dataset"], "num_classes": 100, "in_channels": 3,
                     "image_size": 32, "recipe": config["recipe"], "seed": int(config["seed"])},
            "model": {}}
