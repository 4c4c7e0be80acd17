"""What a shared-teacher group saves: training images/s of k students distilled from one
frozen teacher as one group (`engine.group`: one teacher forward per batch for all) against
the same k methods as separate runs (`build_distill_run`, each with its own teacher forward),
side by side in one process, with the real engine on synthetic data of CIFAR-100's shape,
batch 64 (the CRD protocol).

The ceiling comes from the models' own MAC counts (`dfa_ray.models.flops.count_macs`): a
teacher forward costs T, a student's training step about 3 S (forward, and backward twice
the forward), so separate runs cost k (T + 3 S) per batch, a group T + 3 k S, and the group
can be at most k (T + 3 S) / (T + 3 k S) times faster (what the methods' own losses,
connectors and the RNG bookkeeping add lowers it). The report also gives the share of the
group's time spent in the teacher forward, and where one batch's time goes (the teacher
forward, each member's step) with the ceiling those measured costs allow.

Rounds alternate which side goes first (a drift in the machine's load hits both alike);
round 0 warms up and is dropped; the median of the rounds is reported. Each side is timed by
the wall clock and by the process's CPU time: on a CPU with one torch thread the CPU time is
the compute alone, immune to other processes taking the cores (a shared 2-core machine can
stretch a round's wall time several-fold), so the target is judged on it there
(`cpu_ratio`); on CUDA, on the wall clock (`ratio`).

    python -m benchmarks.shared_teacher [--pairs resnet32x4->resnet8x4 wrn_40_2->wrn_16_2]
                                        [--methods kd fitnet at dfa dfa:last pkt] [--batches 0]
                                        [--rounds 2] [--threads 1] [--device cpu] [--no-record]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import add_step_arguments, emit, machine, resolve_step_arguments, sync
from dfa_ray.data import load_dataset
from dfa_ray.engine.distill import build_distill_run
from dfa_ray.engine.group import GroupMember, build_group_run
from dfa_ray.engine.recipes import get_recipe
from dfa_ray.engine.teacher import freeze
from dfa_ray.engine.views import TeacherRequest, teacher_outputs
from dfa_ray.models import create_model
from dfa_ray.models.flops import count_macs

NUM_CLASSES = 100
PAIRS = ("resnet32x4->resnet8x4", "wrn_40_2->wrn_16_2")
# six teacher-using methods; `dfa` stands for a searched genotype by `average` (every
# candidate weighted, as a search's mix is), `dfa:last` is the reference genotype
METHODS = ("kd", "fitnet", "at", "dfa", "dfa:last", "pkt")
TARGETS = {"resnet32x4->resnet8x4": 1.9, "wrn_40_2->wrn_16_2": 1.5}
TINY_LR = 1e-6  # the cost does not depend on it; random images at a real lr can diverge in a few steps


def members_of(methods: list[str]) -> list[GroupMember]:
    out = []
    for entry in methods:
        name, _, kind = entry.partition(":")
        out.append(GroupMember(key=entry, method=name, genotype=(kind or "average") if name == "dfa" else None))
    return out


def ceiling(k: int, teacher_macs: int, student_macs: int) -> float:
    """k (T + 3S) / (T + 3kS): separate runs' MACs per batch over a group's."""
    return k * (teacher_macs + 3 * student_macs) / (teacher_macs + 3 * k * student_macs)


def timed(fn, device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of fn()."""
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - start, time.process_time() - cpu


def breakdown(group, device: torch.device, repeats: int = 3) -> dict:
    """Where a group's batch goes: the shared teacher forward and each member's own step (its
    student forward, loss, backward and optimiser step), median of `repeats`, timed by CPU time
    on the CPU (wall clock on CUDA). With k members the measured ceiling is (k T + M) / (T + M),
    T the teacher's, M the members' total: what the MAC ceiling becomes with real step costs."""
    cpu = device.type == "cpu"
    loader = group.loaders.train
    loader.set_epoch(1_000)  # any batch of the right shape
    x, y, index = next(iter(loader))
    request = TeacherRequest.merge(m.run.teacher_request() for m in group.members.values())

    def cost(fn) -> float:
        values = []
        for _ in range(repeats):
            sync(device)
            start = time.process_time() if cpu else time.perf_counter()
            fn()
            sync(device)
            values.append((time.process_time() if cpu else time.perf_counter()) - start)
        return statistics.median(values)

    outputs = teacher_outputs(group.teacher, x, request)
    t = cost(lambda: teacher_outputs(group.teacher, x, request))
    members = {}
    for key, m in group.members.items():  # extra steps at the benchmark's tiny lr
        work = m.run.begin_epoch()
        members[key] = cost(lambda: m.run.train_batch(work, x, y, index, teacher=outputs))
    k, total = len(members), sum(members.values())
    return {"teacher_s": round(t, 4), "member_s": {key: round(v, 4) for key, v in members.items()},
            "measured_ceiling": round((k * t + total) / (t + total), 2), "clock": "cpu_time" if cpu else "wall"}


def bench_pair(pair: str, args, device: torch.device) -> dict:
    tname, sname = pair.split("->")
    data = load_dataset("synthetic", num_classes=NUM_CLASSES, n_train=args.batches * args.batch_size, n_test=8,
                        image_size=32, channels=3)
    # every epoch is exactly the synthetic set's batches: no held-out split
    recipe = get_recipe("crd", {"epochs": 100_000, "batch_size": args.batch_size, "holdout_fraction": 0.0,
                                "lr": TINY_LR, "small_model_lr": TINY_LR})
    torch.manual_seed(0)
    teacher = freeze(create_model(tname, num_classes=NUM_CLASSES)).to(device)
    members = members_of(args.methods)
    separate = {m.key: build_distill_run(teacher, tname, sname, data, recipe, m.method, seed=0, genotype=m.genotype,
                                         device=device) for m in members}
    group = build_group_run(teacher, tname, sname, data, recipe, members, seed=0, device=device)
    k = len(members)
    images = k * args.batches * args.batch_size  # per round, on either side
    sep_s, group_s, sep_cpu, group_cpu, teacher_share = [], [], [], [], []
    for r in range(args.rounds + 1):
        def run_separate() -> None:
            for run in separate.values():
                run.step()

        before = group.teacher_seconds
        if r % 2 == 0:
            t_sep, t_group = timed(run_separate, device), timed(group.step, device)
        else:
            t_group, t_sep = timed(group.step, device), timed(run_separate, device)
        if r > 0:
            sep_s.append(t_sep[0])
            group_s.append(t_group[0])
            sep_cpu.append(t_sep[1])
            group_cpu.append(t_group[1])
            teacher_share.append((group.teacher_seconds - before) / t_group[0])
    sep_ips = images / statistics.median(sep_s)
    group_ips = images / statistics.median(group_s)
    t_macs = count_macs(teacher, (3, 32, 32))
    s_macs = count_macs(create_model(sname, num_classes=NUM_CLASSES), (3, 32, 32))
    ratio = group_ips / sep_ips
    cpu_ratio = statistics.median(sep_cpu) / statistics.median(group_cpu)
    judged = cpu_ratio if device.type == "cpu" and args.threads == 1 else ratio
    target = TARGETS.get(pair)
    where = breakdown(group, device)
    return {**where, "pair": pair, "methods": list(args.methods), "k": k, "batch_size": args.batch_size,
            "separate_img_s": round(sep_ips, 1), "group_img_s": round(group_ips, 1), "ratio": round(ratio, 2),
            "cpu_ratio": round(cpu_ratio, 2), "judged_on": "cpu_time" if judged is cpu_ratio else "wall",
            "teacher_macs": t_macs, "student_macs": s_macs, "ceiling": round(ceiling(k, t_macs, s_macs), 2),
            "group_teacher_share": round(statistics.median(teacher_share), 3),
            "target_ratio": target, "met": None if target is None else judged >= target,
            "separate_s": [round(v, 3) for v in sep_s], "group_s": [round(v, 3) for v in group_s],
            "separate_cpu_s": [round(v, 3) for v in sep_cpu], "group_cpu_s": [round(v, 3) for v in group_cpu]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    add_step_arguments(parser, rounds=3, cuda_batches=20)
    args = parser.parse_args(argv)
    device = resolve_step_arguments(args, cuda_batches=20)
    start = time.perf_counter()
    info = machine(device)
    print(f"machine: {info}")
    print(f"{len(args.methods)} methods ({', '.join(args.methods)}), {args.rounds} rounds x {args.batches} batch(es) "
          f"of {args.batch_size} per student, median; separate runs vs one shared-teacher group")
    results = []
    for pair in args.pairs:
        x = bench_pair(pair, args, device)
        results.append(x)
        print(f"{pair:<24} separate {x['separate_img_s']:8.1f} img/s  group {x['group_img_s']:8.1f} img/s  "
              f"{x['ratio']:.2f}x wall, {x['cpu_ratio']:.2f}x CPU time (ceiling {x['ceiling']:.2f}x from T {x['teacher_macs'] / 1e6:.0f} M, "
              f"S {x['student_macs'] / 1e6:.0f} M MACs; teacher {100 * x['group_teacher_share']:.0f} % of the group "
              f"step)  ({info['device_name']}, {info['torch_threads']} thr)", flush=True)
        members = ", ".join(f"{key} {v:.3f}" for key, v in x["member_s"].items())
        print(f"  per batch ({x['clock']}): teacher forward {x['teacher_s']:.3f} s, members' steps {members} s; "
              f"ceiling with these costs {x['measured_ceiling']:.2f}x", flush=True)
    report = {"benchmark": "shared_teacher", "machine": info, "device": str(device), "rounds": args.rounds,
              "batches_per_round": args.batches, "results": results, "wall_s": round(time.perf_counter() - start, 1)}
    emit(report, device, args.no_record)
    return report


if __name__ == "__main__":
    main()
