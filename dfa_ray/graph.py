"""Run a dependency graph of jobs, each as soon as the jobs it depends on have succeeded.

The sweep's nodes (a teacher, a pair's search, a pair's distillations) are Tune experiments
that spend their time waiting on Ray, so each runs in a thread of the driver and Ray shares
the cluster among all of them. A node that fails does not stop the nodes that do not depend
on it; its dependants are skipped, each with the reason. Nothing here knows about Ray or Tune.

Interrupting the driver (Ctrl-C) raises KeyboardInterrupt in the caller while the node threads
(daemons) die with the process: every node is resumable from what it has written (Tune's
experiment state, the checkpoints, the results), exactly as after a killed driver.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence

from dfa_ray.engine.checkpoint import first_line

Status = Literal["done", "failed", "skipped"]


class NodeFailed(Exception):
    """A node ends without its product (e.g. a teacher that did not finish); the message says why."""


@dataclass(frozen=True)
class Node:
    """One job of the graph: `run(products of its dependencies by id) -> its product`."""

    id: str
    run: Callable[[Mapping[str, Any]], Any]
    depends_on: tuple[str, ...] = ()


@dataclass
class NodeOutcome:
    id: str
    status: Status
    product: Any = None
    reason: str | None = None
    started: float | None = None  # time.time() when it started (None: never ran)
    ended: float | None = None


@dataclass
class GraphOutcome:
    nodes: dict[str, NodeOutcome] = field(default_factory=dict)

    def with_status(self, status: Status) -> list[NodeOutcome]:
        return [n for n in self.nodes.values() if n.status == status]

    def product(self, node_id: str) -> Any:
        outcome = self.nodes.get(node_id)
        return outcome.product if outcome is not None and outcome.status == "done" else None


def check_graph(nodes: Sequence[Node]) -> None:
    """Unique ids, known dependencies, no cycle (a bug of the caller: ValueError)."""
    ids = [n.id for n in nodes]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate node ids in {ids}")
    known = set(ids)
    for n in nodes:
        missing = [d for d in n.depends_on if d not in known]
        if missing:
            raise ValueError(f"node {n.id} depends on unknown node(s) {missing}")
    deps = {n.id: set(n.depends_on) for n in nodes}
    done: set[str] = set()
    while deps:
        ready = [i for i, d in deps.items() if d <= done]
        if not ready:
            raise ValueError(f"the graph has a cycle among {sorted(deps)}")
        for i in ready:
            done.add(i)
            del deps[i]


def run_graph(nodes: Sequence[Node], log: Callable[[str], None] = print) -> GraphOutcome:
    """Run every node whose dependencies succeed; returns each node's outcome."""
    check_graph(nodes)
    by_id = {n.id: n for n in nodes}
    outcome = GraphOutcome()
    finished: "queue.Queue[NodeOutcome]" = queue.Queue()
    waiting = dict(by_id)
    running: set[str] = set()

    def work(node: Node, inputs: dict[str, Any], started: float) -> None:
        try:
            product = node.run(inputs)
            result = NodeOutcome(node.id, "done", product, None, started, time.time())
        except NodeFailed as exc:
            result = NodeOutcome(node.id, "failed", None, str(exc), started, time.time())
        except BaseException as exc:  # a node's bug must not take the other nodes down
            reason = f"{type(exc).__name__}: {first_line(exc, 300)}"
            log(f"[graph] {node.id} raised:\n{traceback.format_exc()}")
            result = NodeOutcome(node.id, "failed", None, reason, started, time.time())
        finished.put(result)

    def start_ready() -> None:
        for node_id, node in list(waiting.items()):
            states = [outcome.nodes.get(d) for d in node.depends_on]
            if any(s is not None and s.status != "done" for s in states):
                bad = next(s for s in states if s is not None and s.status != "done")
                why = f"{bad.id} {bad.status}" + (f" ({bad.reason})" if bad.reason else "")
                outcome.nodes[node_id] = NodeOutcome(node_id, "skipped", reason=f"needs {why}")
                del waiting[node_id]
                start_ready()  # its own dependants are skipped in turn
                return
            if all(s is not None for s in states):
                del waiting[node_id]
                running.add(node_id)
                inputs = {d: outcome.nodes[d].product for d in node.depends_on}
                threading.Thread(target=work, args=(node, inputs, time.time()), name=f"node {node_id}",
                                 daemon=True).start()

    start_ready()
    while running:
        try:
            result = finished.get(timeout=0.5)  # a timeout keeps Ctrl-C responsive
        except queue.Empty:
            continue
        running.discard(result.id)
        outcome.nodes[result.id] = result
        start_ready()
    return outcome
