"""The fast path and several trials per GPU (issue 6), checked without a GPU.

- The fast path (channels_last + bf16 autocast) and the plain fp32 NCHW path reach the same
  accuracy on a short digits run, within noise (the CPU supports bf16 autocast, slowly).
- The fast path is on by default where the hardware supports it: channels_last on CUDA and
  the CPU, bf16 autocast and cudnn.benchmark on CUDA only.
- A trial's device comes from Ray's assignment: a CPU-only trial never gets a GPU, and a
  fractional GPU caps the PyTorch allocator at that fraction of the card.
- The spec's `fast` section is validated and reaches every trial's config.
"""

from __future__ import annotations

import math

import pytest
import torch

from dfa_ray.engine.recipes import get_recipe
from dfa_ray.engine.runtime import FastPath
from dfa_ray.engine.teacher import build_teacher_run
from dfa_ray.errors import ConfigError
from dfa_ray.spec import FastSpec, parse_spec
from dfa_ray.tune.device import choose_device, memory_fraction, trial_device

from raytest import tiny_spec


# --- numerics: fast path vs plain fp32 ------------------------------------------------------
def _digits_run(digits, fast: FastPath):
    run = build_teacher_run("resnet8", digits, get_recipe("quick", {"epochs": 4, "batch_size": 64}), seed=0,
                            device="cpu", fast=fast)
    final = run.run()
    return run, final


def test_fast_path_and_plain_fp32_reach_the_same_accuracy_on_digits(digits):
    fast_run, fast = _digits_run(digits, FastPath(channels_last=True, bf16=True, compile=False))
    plain_run, plain = _digits_run(digits, FastPath(channels_last=False, bf16=False, compile=False))
    # the switches did what they say
    assert fast_run.fast.channels_last and fast_run.fast.bf16
    assert not plain_run.fast.channels_last and not plain_run.fast.bf16
    conv = next(m for m in fast_run.student.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x, *_ = next(iter(fast_run.loaders.train))
    assert x.is_contiguous(memory_format=torch.channels_last) and x.dtype == torch.float32
    # every loss finite, both runs learn, and they agree within noise
    for run in (fast_run, plain_run):
        assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["val_loss"]) for h in run.history)
        assert run.history[-1]["train_loss"] < 0.5 * run.history[0]["train_loss"]
    assert plain["test_acc_last"] > 85.0 and fast["test_acc_last"] > 85.0
    assert abs(fast["test_acc_last"] - plain["test_acc_last"]) <= 3.0
    assert abs(fast_run.history[-1]["train_loss"] - plain_run.history[-1]["train_loss"]) < 0.15


@pytest.mark.parametrize("method, genotype", [("kd", None), ("dfa", "average")])
def test_teacher_runs_once_per_batch_frozen_in_eval_on_the_fast_path(digits, method, genotype):
    from dfa_ray.engine.distill import build_distill_run
    from dfa_ray.engine.teacher import freeze
    from dfa_ray.models import create_model

    teacher = freeze(create_model("resnet14", num_classes=10, in_channels=1))
    calls: list[bool] = []
    # the stem runs once per teacher forward, whether through forward() or forward_groups()
    teacher.stem.register_forward_hook(lambda module, inputs, output: calls.append(torch.is_grad_enabled()))
    recipe = get_recipe("quick", {"epochs": 1, "batch_size": 256})
    run = build_distill_run(teacher, "resnet14", "resnet8", digits, recipe, method, seed=0, genotype=genotype,
                            device="cpu", fast=FastPath(channels_last=True, bf16=False))
    run.step()
    assert len(calls) == len(run.loaders.train)  # one teacher forward per batch, shared by every loss
    assert not any(calls)  # always under no_grad
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    conv = next(m for m in teacher.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_fast_path_defaults_are_on_where_the_hardware_supports_them(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    on_cuda = FastPath().resolved(torch.device("cuda", 0))
    assert (on_cuda.channels_last, on_cuda.bf16, on_cuda.cudnn_benchmark, on_cuda.compile) == (True, True, True, False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert FastPath().resolved(torch.device("cuda", 0)).bf16 is False  # e.g. a V100: fp32 there
    # the CPU: NHWC (oneDNN runs it natively, and faster), fp32 (no native bf16 on most CPUs)
    on_cpu = FastPath().resolved(torch.device("cpu"))
    assert (on_cpu.channels_last, on_cpu.bf16, on_cpu.cudnn_benchmark, on_cpu.compile) == (True, False, False, False)
    # an explicit switch wins over "auto" on either device
    assert FastPath(channels_last=True, bf16=True).resolved(torch.device("cpu")).channels_last is True
    assert FastPath(channels_last=False).resolved(torch.device("cuda", 0)).channels_last is False


# --- the trial's device from Ray's assignment ---------------------------------------------
def test_device_is_chosen_from_rays_assignment():
    assert choose_device([], 0.25, True) == torch.device("cpu")  # no GPU assigned
    assert choose_device(["0"], 0.25, True) == torch.device("cuda", 0)  # a quarter of GPU 0
    assert choose_device([3], 1.0, True) == torch.device("cuda", 0)  # Ray renumbers: the trial sees one GPU
    assert choose_device(["0"], 0.0, True) == torch.device("cpu")  # a CPU-only trial never touches a GPU
    assert choose_device(["0"], 0.5, False) == torch.device("cpu")  # assigned, but CUDA does not work here


def test_memory_cap_follows_the_gpu_fraction():
    assert memory_fraction(0.25) == 0.25
    assert memory_fraction(0.5) == 0.5
    assert memory_fraction(1) is None  # a whole GPU: no cap
    assert memory_fraction(2) is None
    assert memory_fraction(0) is None


class _FakeCuda:
    """Records what a trial asks of torch.cuda, with no GPU anywhere."""

    def __init__(self, monkeypatch, gpu_ids: list, available: bool = True) -> None:
        import ray

        self.caps: list[tuple[float, object]] = []
        monkeypatch.setattr(ray, "get_gpu_ids", lambda: list(gpu_ids))
        monkeypatch.setattr(ray, "is_initialized", lambda: True)  # as inside a Ray trial
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction",
                            lambda fraction, device=None: self.caps.append((fraction, device)))


def test_trial_device_caps_the_allocator_at_the_gpu_fraction(monkeypatch):
    cuda = _FakeCuda(monkeypatch, gpu_ids=["0"])
    assert trial_device(0.25) == torch.device("cuda", 0)
    assert cuda.caps == [(0.25, torch.device("cuda", 0))]


def test_trial_device_with_a_whole_gpu_sets_no_cap(monkeypatch):
    cuda = _FakeCuda(monkeypatch, gpu_ids=["0"])
    assert trial_device(1.0) == torch.device("cuda", 0)
    assert cuda.caps == []


@pytest.mark.parametrize("gpu_ids, fraction", [([], 0.0), (["0", "1"], 0.0), ([], 0.25)])
def test_cpu_only_trial_never_touches_the_gpu(monkeypatch, gpu_ids, fraction):
    # Ray 2.60 shows a 0-GPU trial every GPU of its node: the fraction decides, not visibility.
    cuda = _FakeCuda(monkeypatch, gpu_ids=gpu_ids)
    assert trial_device(fraction) == torch.device("cpu")
    assert cuda.caps == []


# --- the spec's fast section ----------------------------------------------------------------
def _spec(tmp_path, **fast):
    data = tiny_spec("fast", tmp_path / "runs")
    if fast:
        data["fast"] = fast
    return parse_spec(data)


def test_spec_fast_section_defaults_to_auto(tmp_path):
    spec = _spec(tmp_path)
    assert spec.fast == FastSpec()
    assert spec.fast.model_dump() == {"channels_last": None, "bf16": None, "compile": False, "cudnn_benchmark": None}
    assert parse_spec(spec.to_dict()) == spec


def test_spec_fast_section_reaches_the_trial_config(tmp_path):
    from dfa_ray.sweep import common_config

    spec = _spec(tmp_path, channels_last=True, bf16=False, compile=None, cudnn_benchmark=None)
    for stage in ("teacher", "search", "distill"):
        fast = common_config(spec, stage)["fast"]
        assert fast == {"channels_last": True, "bf16": False, "compile": None, "cudnn_benchmark": None}
        # what the trainables do with it (`FastPath(**config["fast"])`)
        resolved = FastPath(**fast).resolved(torch.device("cpu"))
        assert resolved.channels_last is True and resolved.bf16 is False and not resolved.compile
    plain = _spec(tmp_path, channels_last=False)
    assert FastPath(**common_config(plain, "distill")["fast"]).resolved(torch.device("cpu")).channels_last is False


@pytest.mark.parametrize("fast, message", [
    ({"channels_last": "yes"}, "fast.channels_last: expected true, false or null"),
    ({"bf16": 1}, "fast.bf16: expected true, false or null"),
    ({"compile": "on"}, "fast.compile: expected true, false or null"),
    ({"amp": True}, "fast.amp: unknown key 'amp'; allowed keys: channels_last, bf16, compile, cudnn_benchmark"),
    ("on", "fast: expected a mapping with keys channels_last, bf16, compile, cudnn_benchmark"),
])
def test_spec_fast_section_is_validated(tmp_path, fast, message):
    data = tiny_spec("fast", tmp_path / "runs")
    data["fast"] = fast
    with pytest.raises(ConfigError) as err:
        parse_spec(data)
    assert message in str(err.value)
