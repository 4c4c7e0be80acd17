"""The epoch loop shared by teacher training and distillation, steppable one epoch at a time.

A *task* is an `nn.Module` with the distiller contract (docs/methods.md):
`forward_train(x, y, index) -> (logits, {name: weighted loss})` (`index`: the samples'
positions in the training split; every term is summed and each is reported by name), an
attribute `student` (the network that is evaluated and kept), `trainable_parameters()` and,
optionally, `on_epoch_start(epoch, epochs)` (0-based epoch about to run; called before every
epoch, also after a resume, so schedules inside a method need no state of their own) and
`init_stage(epochs, lr)` (an `InitStage`: one more phase before the main one). A plain classifier is the task
`PlainClassifier(model)`. One `step()` trains one epoch, evaluates on the held-out validation
split and returns the epoch's metrics; it is what a Ray Trainable calls. Model selection
uses the validation split only; the test split is evaluated once, after the last epoch, on
the last weights and on the weights of the best validation epoch.

An epoch is three calls, `begin_epoch()`, `train_batch(work, x, y, index)` per batch and
`end_epoch(work)`; `step()` is them over the run's own loader. A shared-teacher group
(`engine.group`) makes the same calls for each member, passing the batch's teacher forward to
`train_batch` (`teacher=`), so a member trains exactly as its own run would.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from dfa_ray.data import Dataset, DeviceLoader, holdout_split
from dfa_ray.data.base import ImageSet
from dfa_ray.engine.evaluate import evaluate
from dfa_ray.engine.recipes import Recipe
from dfa_ray.engine.runtime import FastPath, autocast, machine_info, resolve_device
from dfa_ray.engine.checkpoint import capture_rng_state, restore_rng_state
from dfa_ray.engine.views import TeacherOutputs, TeacherRequest
from dfa_ray.errors import CheckpointError, DfaRayError

Logger = Callable[[str], None]


class NonFiniteLossError(DfaRayError):
    """The training loss became NaN or infinite; the run cannot continue."""

    def __init__(self, epoch: int, losses: dict[str, float]) -> None:
        self.epoch = epoch
        self.losses = losses
        shown = ", ".join(f"{k}={v:.4g}" for k, v in losses.items())
        super().__init__(
            f"the training loss became non-finite in epoch {epoch} ({shown}); "
            "lower the learning rate or the loss weights"
        )


class PlainClassifier(nn.Module):
    """The task of training a network alone with cross-entropy (teachers, vanilla students)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.student = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)

    def forward_train(
        self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.student(x)
        return logits, {"loss_ce": F.cross_entropy(logits, y)}

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return self.student.parameters()


@dataclass(frozen=True)
class InitStage:
    """One more phase of a trial, run before the main one (AB, FT and FSP's init stages).

    A task that has one returns it from `init_stage(epochs, lr)` (the run's epoch count and main
    learning rate). The trainer runs `epochs` epochs of `forward(x, y, index) -> (student logits
    or None, {name: weighted loss})` with its own SGD optimiser over `parameters` at the constant
    `lr` (the recipe's momentum and weight decay), before the main optimiser and schedule start.
    Its epochs are rows of their own (`phase` "init"), in the checkpoint and the progress line,
    and a resumed trial continues inside the right phase. `request` and `forward_with(outputs,
    x, y, index)`, when given, are the stage's teacher needs and its forward given a teacher
    forward that answered them (a group shares that forward); without them a group calls
    `forward`, which runs the teacher itself.
    """

    epochs: int
    lr: float
    parameters: list[nn.Parameter]
    forward: Callable[..., tuple[torch.Tensor | None, dict[str, torch.Tensor]]]
    request: TeacherRequest | None = None
    forward_with: Callable[..., tuple[torch.Tensor | None, dict[str, torch.Tensor]]] | None = None


@dataclass
class EpochWork:
    """One epoch in progress: what it trains with and the sums it reports (device tensors, read
    once at the end: one host sync per epoch)."""

    stage: InitStage | None  # None: the main phase
    loader_epoch: int  # the epoch the training loader draws (a function of (seed, epoch) only)
    forward: Callable[..., tuple[torch.Tensor | None, dict[str, torch.Tensor]]]
    forward_with: Callable[..., tuple[torch.Tensor | None, dict[str, torch.Tensor]]] | None
    optimizer: torch.optim.Optimizer
    row_epoch: int
    start: float
    total: torch.Tensor
    correct: torch.Tensor
    sums: dict[str, torch.Tensor]
    seen: int = 0
    counted: int = 0


@dataclass
class Loaders:
    train: DeviceLoader
    val: DeviceLoader | None
    test: DeviceLoader


def make_loaders(
    data: Dataset, recipe: Recipe, seed: int, device: torch.device, channels_last: bool = False
) -> Loaders:
    """Split the training set into train / held-out validation (seeded by the recipe's
    split_seed, so every trial of a study shares one validation split) and put each part on
    the device."""
    info = data.info
    padding = info.crop_padding if recipe.padding is None else recipe.padding
    train_part, val_part = split_train(data, recipe)
    common = dict(mean=info.mean, std=info.std, device=device, channels_last=channels_last)
    train = DeviceLoader(train_part, batch_size=recipe.batch_size, train=True, padding=padding,
                         flip=recipe.flip and info.flip, seed=seed, with_index=True,
                         resized_crop=recipe.resized_crop, **common)
    val = (DeviceLoader(val_part, batch_size=recipe.eval_batch_size, train=False, **common)
           if val_part is not None and len(val_part) > 0 else None)
    test = DeviceLoader(data.test, batch_size=recipe.eval_batch_size, train=False, **common)
    return Loaders(train, val, test)


def split_train(data: Dataset, recipe: Recipe) -> tuple[ImageSet, ImageSet | None]:
    """(training split, held-out validation split or None): what `make_loaders` trains on, so
    a method built before the run can be told the training split's size and labels."""
    if recipe.holdout_fraction > 0:
        return holdout_split(data.train, recipe.holdout_fraction, recipe.split_seed)
    return data.train, None


def build_optimizer(params: Iterable[nn.Parameter], recipe: Recipe, lr: float) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                           weight_decay=recipe.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch."""
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs, eta_min=recipe.lr_min)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=recipe.milestone_epochs(), gamma=recipe.gamma)


class TrainingRun:
    """Trains `task` for `recipe.epochs` epochs, one `step()` per epoch."""

    def __init__(
        self,
        task: nn.Module,
        data: Dataset,
        recipe: Recipe,
        seed: int,
        lr: float | None = None,
        device: str | torch.device = "auto",
        fast: FastPath = FastPath(),
        log: Logger | None = None,
        label: str = "train",
        loaders: Loaders | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.fast = fast.resolved(self.device)
        self.recipe = recipe
        self.seed = seed
        self.log = log
        self.label = label
        self.task = task.to(self.device)
        if self.fast.channels_last:
            self.task = self.task.to(memory_format=torch.channels_last)
        if self.fast.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        # a group passes the loaders it shares (the same data, recipe, seed and device)
        self.loaders = loaders or make_loaders(data, recipe, seed, self.device, bool(self.fast.channels_last))
        self.optimizer = build_optimizer(self.task.trainable_parameters(), recipe, lr or recipe.lr)
        self.scheduler = build_scheduler(self.optimizer, recipe)
        self._forward_train = torch.compile(self.task.forward_train) if self.fast.compile else self.task.forward_train
        with_views = getattr(self.task, "forward_train_with", None) if getattr(self.task, "shared_teacher", False) \
            else None
        self._forward_train_with = (torch.compile(with_views) if self.fast.compile and with_views is not None
                                    else with_views)
        make_stage = getattr(self.task, "init_stage", None)
        stage = make_stage(recipe.epochs, lr or recipe.lr) if make_stage is not None else None
        self.init: InitStage | None = stage if stage is not None and stage.epochs > 0 else None
        self.init_optimizer = build_optimizer(self.init.parameters, recipe, self.init.lr) if self.init else None
        self.init_epoch = 0  # completed epochs of the init stage
        self.epoch = 0  # completed epochs
        self.history: list[dict] = []
        self.best: dict | None = None  # {"epoch", "val_acc", "state"} of the best validation epoch
        self.final: dict | None = None

    @property
    def done(self) -> bool:
        return self.epoch >= self.recipe.epochs

    @property
    def student(self) -> nn.Module:
        return self.task.student

    @property
    def phase(self) -> str:
        """"init" while the task's init stage has epochs left, then "train"."""
        return "init" if self.init is not None and self.init_epoch < self.init.epochs else "train"

    def _row_epoch(self) -> int:
        """The 1-based epoch number of the row just trained, counting the init stage's epochs:
        rows (and Tune's iterations) stay unique and in order across the phases."""
        return self.epoch + (self.init.epochs if self.init is not None else 0)

    def step(self) -> dict:
        """Train one epoch; evaluate; after the last epoch, add the test numbers."""
        work = self.begin_epoch()
        for x, y, index in self.loaders.train:
            self.train_batch(work, x, y, index)
        return self.end_epoch(work)

    def run(self) -> dict:
        while not self.done:
            self.step()
        assert self.final is not None
        return self.final

    # -- one epoch in three calls (a shared-teacher group makes them per member) -------------
    def next_loader_epoch(self) -> int:
        """The epoch the training loader draws for the next epoch of this run: init epochs are
        -1, -2, ... (the main phase then sees the very batches of a run without an init stage,
        epoch for epoch), main epochs 0, 1, ..."""
        return -1 - self.init_epoch if self.phase == "init" else self.epoch

    def shares_teacher(self) -> bool:
        """Whether the next epoch can take a teacher forward computed outside (`teacher=`)."""
        if self.phase == "init":
            assert self.init is not None
            return self.init.forward_with is not None
        return self._forward_train_with is not None

    def teacher_request(self) -> TeacherRequest | None:
        """What the next epoch needs of the teacher per batch (when `shares_teacher()`)."""
        if self.phase == "init":
            assert self.init is not None
            return self.init.request
        return self.task.teacher_request()

    def begin_epoch(self) -> EpochWork:
        """Set the loader's epoch and the task's schedule for the next epoch."""
        if self.done:
            raise RuntimeError("the run has already finished all its epochs")
        start = time.perf_counter()
        self.task.train()
        loader_epoch = self.next_loader_epoch()
        self.loaders.train.set_epoch(loader_epoch)
        if self.phase == "init":
            stage = self.init
            assert stage is not None
            forward, forward_with, optimizer = stage.forward, stage.forward_with, self.init_optimizer
            row_epoch = self.init_epoch + 1
        else:
            stage = None
            hook = getattr(self.task, "on_epoch_start", None)
            if hook is not None:
                hook(self.epoch, self.recipe.epochs)
            forward, forward_with, optimizer = self._forward_train, self._forward_train_with, self.optimizer
            row_epoch = self._row_epoch() + 1
        assert optimizer is not None
        return EpochWork(stage=stage, loader_epoch=loader_epoch, forward=forward, forward_with=forward_with,
                         optimizer=optimizer, row_epoch=row_epoch, start=start,
                         total=torch.zeros((), device=self.device, dtype=torch.float64),
                         correct=torch.zeros((), device=self.device, dtype=torch.long), sums={})

    def train_batch(self, work: EpochWork, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                    teacher: TeacherOutputs | None | bool = False) -> None:
        """One optimiser step. `teacher`: the batch's teacher forward (a TeacherOutputs, or None
        when the epoch needs none), or False (the default) to let the task run it itself."""
        with autocast(self.device, bool(self.fast.bf16)):
            if teacher is False or work.forward_with is None:
                logits, losses = work.forward(x, y, index)
            else:
                logits, losses = work.forward_with(teacher, x, y, index)
            loss = sum(losses.values())
        work.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        work.optimizer.step()
        n = y.shape[0]
        work.seen += n
        work.total += loss.detach().double() * n
        for name, value in losses.items():
            work.sums[name] = work.sums.get(name, 0) + value.detach().double() * n
        if logits is not None:  # an init stage may not run the student (FT's paraphraser)
            work.correct += (logits.detach().argmax(1) == y).sum()
            work.counted += n

    def end_epoch(self, work: EpochWork, train_seconds: float | None = None) -> dict:
        """Close the epoch: its training metrics (NonFiniteLossError if the loss was not
        finite), then the schedule, the evaluation and, after the last epoch, the test.
        `train_seconds`: the epoch's training time when the caller measured it (a group: this
        member's own work plus its share of the teacher's); else the time since `begin_epoch`."""
        train_metrics = self._epoch_metrics(work)
        end_start = time.perf_counter()
        if train_seconds is None:
            train_seconds = end_start - work.start
        if work.stage is not None:
            metrics = self._after_init_epoch(train_metrics, train_seconds)
        else:
            metrics = self._after_train_epoch(train_metrics, train_seconds)
        metrics["seconds"] = train_seconds + (time.perf_counter() - end_start)
        self.history.append(metrics)
        if self.log:
            self.log(format_progress(self.label, metrics,
                                     self.init.epochs if work.stage is not None and self.init else self.recipe.epochs))
        return metrics

    # -- internals -----------------------------------------------------------------------
    def _epoch_metrics(self, work: EpochWork) -> dict:
        # One host sync per epoch: a NaN anywhere in the epoch makes the mean NaN.
        means = {name: (value / max(work.seen, 1)).item() for name, value in work.sums.items()}
        train_loss = work.total.item() / max(work.seen, 1)
        if not math.isfinite(train_loss):
            raise NonFiniteLossError(work.row_epoch, {"train_loss": train_loss, **means})
        acc = 100.0 * work.correct.item() / work.counted if work.counted else float("nan")
        return {"train_loss": train_loss, "train_acc": acc, **means}

    def _after_train_epoch(self, train_metrics: dict, train_seconds: float) -> dict:
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.epoch += 1
        metrics: dict = {"epoch": self._row_epoch(), "lr": lr, **train_metrics}
        if self.init is not None:
            metrics.update(phase="train", phase_epoch=self.epoch)
        metrics["images_per_s"] = self.loaders.train.num_samples / max(train_seconds, 1e-9)
        if self.loaders.val is not None:
            val = self._evaluate(self.loaders.val)
            metrics.update(val_acc=val["acc"], val_top5=val["top5"], val_loss=val["loss"])
            if self.best is None or val["acc"] > self.best["val_acc"]:
                self.best = {"epoch": self._row_epoch(), "val_acc": val["acc"],
                             "state": _cpu_copy(self.student.state_dict())}
        if self.done:
            metrics.update(self._final_test())
        return metrics

    def _after_init_epoch(self, train_metrics: dict, train_seconds: float) -> dict:
        """After an epoch of the init stage: no schedule, no model selection (the
        best-validation weights are chosen in the main phase only)."""
        assert self.init is not None
        self.init_epoch += 1
        metrics: dict = {"epoch": self.init_epoch, "lr": self.init.lr, **train_metrics, "phase": "init",
                         "phase_epoch": self.init_epoch}
        metrics["images_per_s"] = self.loaders.train.num_samples / max(train_seconds, 1e-9)
        if self.loaders.val is not None:
            val = self._evaluate(self.loaders.val)
            metrics.update(val_acc=val["acc"], val_top5=val["top5"], val_loss=val["loss"])
        return metrics

    def _evaluate(self, loader: DeviceLoader) -> dict[str, float]:
        self.task.eval()
        return evaluate(self.student, loader, self.device, bool(self.fast.bf16))

    def _final_test(self) -> dict:
        last = self._evaluate(self.loaders.test)
        result = {"test_acc_last": last["acc"], "test_top5_last": last["top5"], "test_loss_last": last["loss"]}
        if self.best is not None:
            last_state = _cpu_copy(self.student.state_dict())
            self.student.load_state_dict(self.best["state"])
            best = self._evaluate(self.loaders.test)
            self.student.load_state_dict(last_state)
            result.update(test_acc_best=best["acc"], test_top5_best=best["top5"],
                          best_epoch=self.best["epoch"], best_val_acc=self.best["val_acc"])
        else:  # no validation split: "best" is the last epoch
            result.update(test_acc_best=last["acc"], test_top5_best=last["top5"], best_epoch=self.epoch,
                          best_val_acc=float("nan"))
        self.final = {**result, "epochs": self.epoch, "seed": self.seed}
        if self.init is not None:
            self.final["init_epochs"] = self.init_epoch
        return result

    # -- checkpointing ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue bit-for-bit: weights (incl. connectors), optimiser,
        scheduler, epoch, best-so-far, history and RNG states. The data order needs no state:
        it is a function of (seed, epoch)."""
        return {
            "epoch": self.epoch,
            "phase": self.phase,
            "init_epoch": self.init_epoch,
            "init_optimizer": self.init_optimizer.state_dict() if self.init_optimizer is not None else None,
            "task": trainable_state(self.task),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best": self.best,
            "history": self.history,
            "final": self.final,
            "rng": capture_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        load_trainable_state(self.task, state["task"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.init_epoch = int(state.get("init_epoch", 0))
        if self.init_optimizer is not None and state.get("init_optimizer") is not None:
            self.init_optimizer.load_state_dict(state["init_optimizer"])
        self.best = state["best"]
        self.history = list(state["history"])
        self.final = state["final"]
        restore_rng_state(state["rng"])

    def machine(self) -> dict:
        return {**machine_info(self.device), "fast_path": self.fast.to_dict()}


def trainable_state(module: nn.Module) -> dict:
    """The module's state without the frozen teacher (it is loaded from the teacher store and
    would make every checkpoint as large as the teacher)."""
    return _cpu_copy({k: v for k, v in module.state_dict().items() if not k.startswith("teacher.")})


def load_trainable_state(module: nn.Module, state: dict) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("teacher.")]
    if missing or unexpected:
        raise CheckpointError(f"checkpoint does not fit this run: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _cpu_copy(state: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True) if torch.is_tensor(v) else copy.deepcopy(v) for k, v in state.items()}


def format_progress(label: str, m: dict, epochs: int) -> str:
    """One line per epoch: what a person watching a long run wants to see."""
    # a run with an init stage counts each phase's epochs on its own ("init 3/30", "epoch 1/240")
    what = "init" if m.get("phase") == "init" else "epoch"
    parts = [f"[{label}] {what} {m.get('phase_epoch', m['epoch']):>3}/{epochs}", f"lr {m['lr']:.4g}",
             f"loss {m['train_loss']:.4f}", f"train {m['train_acc']:5.1f}%"]
    if "val_acc" in m:
        parts.append(f"val {m['val_acc']:5.1f}%")
    if "test_acc_last" in m:
        parts.append(f"test(last) {m['test_acc_last']:5.1f}%  test(best val) {m['test_acc_best']:5.1f}%")
    parts.append(f"{m['images_per_s']:.0f} img/s")
    return "  ".join(parts)
