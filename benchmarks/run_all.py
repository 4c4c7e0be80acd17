"""`make bench`: every benchmark in turn, then one summary table.

Each benchmark runs as its own process (`python -m benchmarks.<name>`): a crash, a hang (see
`--timeout`) or a thread setting in one cannot touch the others. Its output is shown as it
comes; its report is the last JSON line it prints, merged into
`benchmarks/results/<machine>.json` with `benchmarks.common.record` (the benchmarks that
record themselves are recorded again, harmlessly; `search_step` does not record itself). A
benchmark that fails prints its error and the rest still run; the exit status is non-zero
when any failed. Targets that are missed are reported in the table, not treated as failures.

Threads (`--threads`): by default every CPU benchmark uses torch's default, all cores, both
sides alike: the machine as a researcher runs the reference loop on it. Measure on a quiet
machine: with 2 threads on 2 cores, another busy process makes every parallel op wait for a
descheduled thread and a figure can drop several-fold (see benchmarks/loader.py); on a shared
machine `--threads 1` (`OMP_NUM_THREADS=1` and each benchmark's `--threads 1`) is robust. The
Ray benchmarks' trials run with one thread each (a 1-CPU trial's setting) either way.

Run it inside the loopback-only network namespace (the Makefile does), because the Ray
benchmarks start a local Ray: `scripts/loopback-ns .venv/bin/python -m benchmarks.run_all`.

    python -m benchmarks.run_all [--only distill_step ray_overhead] [--skip search_step]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

from benchmarks.common import machine, machine_tag, record

ROOT = Path(__file__).resolve().parent.parent
# name -> extra arguments (the benchmark's defaults are the protocol's)
BENCHMARKS: dict[str, list[str]] = {
    "loader": [],
    "train_step": [],
    "distill_step": [],
    "search_step": [],
    "ray_overhead": [],
    "asha_saving": [],
    "gpu_sharing": [],
    "method_costs": [],
    "shared_teacher": [],
    "step_costs": [],  # ~2 min on the 2-core CPU; rewrites dfa_ray/cost_model.json (dfa-ray plan's costs)
}
Row = dict[str, Any]
THREADED = ("loader", "distill_step", "search_step", "method_costs", "shared_teacher")  # those with a --threads option


# -- running one benchmark ---------------------------------------------------------------------
def run_one(name: str, extra: list[str], timeout: float | None,
            env_extra: dict[str, str] | None = None) -> tuple[dict | None, str | None, float]:
    """(report, error, seconds). Streams the benchmark's output; the report is its last JSON line."""
    cmd = [sys.executable, "-m", f"benchmarks.{name}", *extra]
    print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)  # its own process group: a timeout ends all it started
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            time.sleep(5)

    timer = threading.Timer(timeout, stop) if timeout else None
    if timer:
        timer.start()
    report: dict | None = None
    tail: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            tail = (tail + [line.rstrip()])[-20:]
            text = line.strip()
            if text.startswith("{") and text.endswith("}"):
                try:
                    parsed = json.loads(text)
                except json.JSONDecodeError:
                    continue
                if isinstance(parsed, dict) and parsed.get("benchmark"):
                    report = parsed
        rc = proc.wait()
    finally:
        if timer:
            timer.cancel()
    seconds = time.perf_counter() - start
    if timed_out.is_set():
        return report, f"timed out after {timeout:.0f} s", seconds
    if rc != 0:
        last = next((t for t in reversed(tail) if t.strip()), "")
        return report, f"exit status {rc}: {last[:300]}", seconds
    if report is None:
        return None, "finished without printing its JSON report", seconds
    return report, None, seconds


def thread_arguments(name: str, threads: int) -> list[str]:
    """`--threads N` for the benchmarks that set torch's threads themselves (distill_step's
    own default is 1 on a CPU, so it is always told)."""
    return ["--threads", str(threads)] if name in THREADED else []


# -- the summary table: one extractor per benchmark ---------------------------------------------
def _ratio_row(what: str, ours: str, ref: str, ratio: str, target: str, met: bool | None, device: str) -> Row:
    return {"what": what, "ours": ours, "reference": ref, "ratio": ratio, "target": target,
            "met": "-" if met is None else ("yes" if met else "NO"), "device": device}


def _device(report: dict) -> str:
    m = report.get("machine", {})
    dev = m.get("device", "?")
    name = m.get("device_name") or m.get("gpu") or m.get("cpu") or ""
    threads = m.get("torch_threads") or m.get("threads")
    return f"{dev} {name}".strip() + (f", {threads} thr" if threads and dev == "cpu" else "")


def rows_loader(r: dict) -> list[Row]:
    return [_ratio_row(f"loader, batch {x['batch_size']}", f"{x['device_loader_img_s']:,} img/s",
                       f"{x['torchvision_img_s']:,} img/s", f"{x['ratio']}x", "", None, _device(r)) for x in r["results"]]


def _ceiling_row(x: dict, device: str) -> list[Row]:
    """The reference's compute alone: what share of its step its data path takes."""
    if "reference_compute_img_s" not in x:
        return []
    return [_ratio_row("  reference's compute alone (no data path)", f"{x['engine_img_s']} img/s",
                       f"{x['reference_compute_img_s']} img/s", f"{x['engine_vs_reference_compute']}x",
                       f"data path {100 * x['reference_data_share']:.1f} % of the reference's step", None, device)]


def rows_train_step(r: dict) -> list[Row]:
    target = r.get("target_ratio_cpu")
    cpu = r.get("machine", {}).get("device", "cpu") == "cpu"
    out = []
    for x in r["results"]:
        out.append(_ratio_row(f"train step {x['model']}, batch {x['batch_size']}", f"{x['engine_img_s']} img/s",
                              f"{x['reference_img_s']} img/s", f"{x['ratio']}x",
                              f">= {target}x" if target and cpu else "",
                              (x["ratio"] >= target) if target and cpu else None, _device(r)))
        out.extend(_ceiling_row(x, _device(r)))
    return out


def rows_distill_step(r: dict) -> list[Row]:
    out = []
    for x in r["results"]:
        what = f"teacher step {x['pair'].split('->')[0]}" if x["step"] == "teacher" else f"{x['step']} step {x['pair']}"
        t = x.get("target_ratio")
        out.append(_ratio_row(f"{what}, batch {x['batch_size']}", f"{x['engine_img_s']} img/s",
                              f"{x['reference_img_s']} img/s", f"{x['ratio']}x", f">= {t}x" if t else "", x.get("met"),
                              _device(r)))
        out.extend(_ceiling_row(x, _device(r)))
    for s in r.get("search", []):
        for o in (1, 2):
            out.append(_ratio_row(f"DFA search step order {o} {s['pair']} (joint)", f"{s[f'order{o}_img_s']} img/s",
                                  f"{s['distill_img_s']} img/s (distil step)", f"{s[f'order{o}_cost_vs_distill']}x cost",
                                  "", None, _device(r)))
    return out


def rows_search_step(r: dict) -> list[Row]:
    targets = r.get("targets", {"order1": 3.0, "order2": 5.0})
    out = []
    for x in r["results"]:
        batch = x["batch"]
        for o in (1, 2):
            for schedule in ("groupwise", "joint"):
                key = f"order{o}_{schedule}"
                if f"{key}_s" not in x:
                    continue
                t = targets[f"order{o}"]
                out.append(_ratio_row(f"DFA search step order {o} {schedule} {x['pair']}",
                                      f"{batch / x[f'{key}_s']:.1f} img/s",
                                      f"{batch / x['distill_s']:.1f} img/s (distil step)",
                                      f"{x[f'{key}_ratio']:.2f}x cost", f"<= {t}x cost", x[f"{key}_ratio"] <= t,
                                      _device(r)))
    return out


def rows_ray_overhead(r: dict) -> list[Row]:
    t, dev = r["target_percent"], _device(r)
    return [_ratio_row(f"Ray overhead, one {r['engine_fresh_s']:.0f} s trial ({r['epochs']} epochs)",
                       f"{r['tune_fit_s']} s through Tune", f"{r['engine_fresh_s']} s engine, fresh process",
                       f"{r['overhead_s']:+} s = {r['vs_fresh_percent']} %", f"<= {t} %",
                       r["vs_fresh_percent"] <= t, dev),
            _ratio_row("  each further trial of a slot (reused actor)", f"{r['further_trial_s']:+} s",
                       f"{r['engine_s']} s engine, warm process", f"{r['further_trial_percent']} %", f"<= {t} %",
                       r["further_trial_percent"] <= t, dev),
            _ratio_row("  one trial vs the engine in a warm process", f"{r['overhead_warm_s']:+} s", "",
                       f"{r['vs_warm_percent']} %", "", None, dev)]


def rows_asha_saving(r: dict) -> list[Row]:
    a, f = r["asha_best"], r["fifo_best"]
    return [
        _ratio_row(f"ASHA epochs, {r['trials']} search trials x {r['epochs_per_trial']}", f"{r['asha_epochs']} epochs",
                   f"{r['fifo_epochs']} epochs (FIFO)", f"{100 * r['epoch_share']:.1f} %",
                   f"<= {100 * r['targets']['epoch_share']:.0f} %", r["met"]["epochs"], _device(r)),
        _ratio_row("ASHA best held-out accuracy", f"{a['val_acc']:.2f} % (lr {a['lr']:g}, lam {a['lam']:g})",
                   f"{f['val_acc']:.2f} % (lr {f['lr']:g}, lam {f['lam']:g})",
                   "same setting" if r["same_setting"] else f"{r['points_behind']:+.2f} pts",
                   f"same or within {r['targets']['points']} pts", r["met"]["best"], _device(r)),
    ]


def rows_method_costs(r: dict) -> list[Row]:
    return [_ratio_row(f"{x['method']}{' init stage' if x['phase'] == 'init' else ''} step {x['pair']}, "
                       f"batch {x['batch_size']}", f"{x['img_s']} img/s", f"{x['kd_img_s']} img/s (KD step)",
                       f"{x['cost_vs_kd']}x cost", "", None, _device(r)) for x in r["results"] if x["method"] != "kd"]


def rows_shared_teacher(r: dict) -> list[Row]:
    out = []
    for x in r["results"]:
        t = x.get("target_ratio")
        cpu_time = x.get("judged_on") == "cpu_time"
        ratio = f"{x['cpu_ratio']}x CPU time ({x['ratio']}x wall)" if cpu_time else f"{x['ratio']}x"
        out.append(_ratio_row(f"shared teacher, {x['k']} methods {x['pair']}, batch {x['batch_size']}",
                              f"{x['group_img_s']} img/s (group)", f"{x['separate_img_s']} img/s (separate)", ratio,
                              f">= {t}x (MAC ceiling {x['ceiling']}x)" if t else f"MAC ceiling {x['ceiling']}x",
                              x.get("met"), _device(r)))
    return out


def rows_gpu_sharing(r: dict) -> list[Row]:
    if r.get("skipped"):
        return [_ratio_row(name, r["skipped"], "", "", "", None, _device(r)) for name in r.get("figures", [])]
    out = []
    base = r["sharing"][0]["aggregate_img_s"] if r.get("sharing") else None
    for x in r.get("sharing", []):
        t = r["targets"]["speedup_4_vs_1"] if x["trials"] == 4 else None
        ratio = x["aggregate_img_s"] / base if base else float("nan")
        out.append(_ratio_row(f"aggregate, {x['trials']} trial(s) per GPU", f"{x['aggregate_img_s']} img/s",
                              f"{base} img/s (1 trial)", f"{ratio:.2f}x", f">= {t}x" if t else "",
                              None if t is None else ratio >= t, r.get("card", _device(r))))
    full = r.get("full_distillation")
    if full:
        t = r["targets"]["full_s"]
        out.append(_ratio_row(f"full {full['epochs']}-epoch KD {full['pair']}, CIFAR-100 size",
                              f"{full['wall_s'] / 60:.1f} min", "", "", f"< {t / 60:.0f} min", full["wall_s"] < t,
                              r.get("card", _device(r))))
    return out


def rows_step_costs(r: dict) -> list[Row]:
    return [_ratio_row(f"step cost {x['model']}, batch {r['batch_size']} at {r['image_size']}px",
                       f"{x['train_ms_per_image']} ms/img train", f"{x['forward_ms_per_image']} ms/img forward",
                       "", "", None, _device(r)) for x in r["results"]]


EXTRACTORS: dict[str, Callable[[dict], list[Row]]] = {
    "loader": rows_loader, "train_step": rows_train_step, "distill_step": rows_distill_step,
    "search_step": rows_search_step, "ray_overhead": rows_ray_overhead, "asha_saving": rows_asha_saving,
    "gpu_sharing": rows_gpu_sharing, "method_costs": rows_method_costs,
    "shared_teacher": rows_shared_teacher, "step_costs": rows_step_costs,
}


def table(rows: list[Row]) -> str:
    head = {"what": "what", "ours": "ours", "reference": "reference", "ratio": "ratio", "target": "target",
            "met": "met", "device": "device"}
    cols = list(head)
    widths = {c: max(len(str(r[c])) for r in [head, *rows]) for c in cols}
    lines = ["  ".join(str(r[c]).ljust(widths[c]) for c in cols).rstrip() for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * widths[c] for c in cols))
    return "\n".join(lines)


def _results(device: torch.device) -> dict:
    path = ROOT / "benchmarks" / "results" / f"{machine_tag(device)}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _latest_rows(data: dict) -> dict[str, list[Row]]:
    rows: dict[str, list[Row]] = {}
    for name, extract in EXTRACTORS.items():
        if isinstance(data.get(name), dict):
            try:
                rows[name] = extract(data[name])
            except (KeyError, TypeError, ValueError, ZeroDivisionError):
                continue  # a report from an older version of that benchmark
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these")
    parser.add_argument("--skip", nargs="+", default=[], choices=list(BENCHMARKS), help="leave these out")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per benchmark (0: none)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads of every CPU benchmark (0: torch's default, all cores)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    names = [n for n in (args.only or BENCHMARKS) if n not in args.skip]
    info = machine(device)
    print(f"machine: {info}")
    try:
        print(f"load average before: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    except OSError:
        pass
    env_extra = {"OMP_NUM_THREADS": str(args.threads)} if args.threads > 0 else {}
    if device.type == "cpu":
        print(f"CPU: every benchmark runs with {args.threads or 'all'} torch thread(s), both sides alike")
    rows: list[Row] = []
    status: dict[str, dict] = {}
    for name in names:
        report, error, seconds = run_one(name, BENCHMARKS[name] + thread_arguments(name, args.threads),
                                         args.timeout or None, env_extra)
        found: list[Row] = []
        if report is not None:
            record(report, device)
            try:
                found = EXTRACTORS[name](report)
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
                error = error or f"report not understood ({type(exc).__name__}: {exc})"
        if error:
            print(f"=== {name} FAILED: {error}", flush=True)
            found.append(_ratio_row(name, "FAILED", "", "", "", None, str(device)))
        rows.extend(found)
        status[name] = {"ok": error is None, "error": error, "seconds": round(seconds, 1),
                        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        load_after = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load_after = []
    print("\n=== summary (" + f"machine {machine_tag(device)}: {info['device_name']}, {info['cpu_count']} CPUs, "
          f"torch {info['torch']})")
    print(table(rows) if rows else "(no figures)")
    print(f"load average after: {load_after}")
    failed = [n for n, s in status.items() if not s["ok"]]
    # the recorded summary holds the latest figures of every benchmark in the results file,
    # so `--only X` refreshes X's rows and keeps the others' (`status` says when each last ran)
    data = _results(device)
    previous = data.get("run_all", {})
    summary = {"benchmark": "run_all", "machine": info,
               "status": {**previous.get("status", {}), **status},
               "rows": _latest_rows(data), "load_average_after": load_after}
    print(f"recorded in {record(summary, device)}")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    print(f"all {len(names)} benchmark(s) ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
