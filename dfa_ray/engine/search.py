"""Stage 1: the DFA search loop, steppable one epoch at a time (what SearchTrainable calls).

The training set is split (stratified, seeded) into a *weight* split and an *architecture*
split; the test set is never touched. Each step pairs a weight batch with an architecture
batch and runs `dfa.search_step` (architecture step, weight step, TS-connector step). After
each epoch the student is evaluated on the architecture split: that accuracy (`val_acc`) is
what ASHA and model selection use. The search ends by deriving a genotype.

Precision: the search runs in fp32 even where bf16 autocast is on for training, because the
second-order update differentiates through a finite difference with epsilon ~ 0.01/||v||,
which bf16's 8-bit mantissa would swamp.
"""

from __future__ import annotations

import time
from typing import Iterator

import torch
from torch import nn

from dfa_ray.data import Dataset, DeviceLoader, ImageSet
from dfa_ray.data.split import stratified_split
from dfa_ray.dfa.genotype import Genotype, genotype_from_search
from dfa_ray.dfa.options import SearchOptions
from dfa_ray.dfa.search_step import build_search, make_cosine_scheduler, search_step
from dfa_ray.engine.checkpoint import capture_rng_state, restore_rng_state
from dfa_ray.engine.evaluate import evaluate
from dfa_ray.engine.runtime import FastPath, machine_info, resolve_device, seed_everything
from dfa_ray.engine.training import Logger, NonFiniteLossError, load_trainable_state, trainable_state
from dfa_ray.errors import ConfigError
from dfa_ray.models import create_model

# metrics of `search_step` averaged over an epoch, under the names the results store uses
_EPOCH_MEANS = {
    "loss_train": "l_train", "loss_st": "l_st", "loss_ts": "l_ts", "loss_ce": "loss_ce", "loss_feat": "loss_feat",
    "loss_upper": "loss_upper", "loss_reg": "loss_reg", "loss_ts_connector": "loss_ts_connector",
    "acc": "train_acc", "arch_acc": "arch_batch_acc",
}


class SearchRun:
    """Searches the aggregation of one teacher-student pair for `epochs` epochs."""

    def __init__(
        self,
        teacher: nn.Module,
        teacher_name: str,
        student_name: str,
        data: Dataset,
        options: SearchOptions,
        epochs: int,
        seed: int,
        device: str | torch.device = "auto",
        fast: FastPath = FastPath(),
        log: Logger | None = None,
        trial_id: str | None = None,
        split_seed: int = 0,
    ) -> None:
        if epochs < 1:
            raise ConfigError(f"search epochs = {epochs} is invalid; it must be at least 1")
        if options.warmup_epochs >= epochs:
            raise ConfigError(f"search option warmup_epochs={options.warmup_epochs} is invalid; allowed: an integer "
                              f"below the search's epochs ({epochs}), so that beta is searched at all")
        self.device = resolve_device(device)
        self.fast = FastPath(channels_last=fast.channels_last, bf16=False, compile=False,
                             cudnn_benchmark=fast.cudnn_benchmark).resolved(self.device)
        self.options, self.epochs, self.seed, self.log = options, epochs, seed, log
        self.teacher_name, self.student_name, self.dataset = teacher_name, student_name, data.info.name
        self.trial_id = trial_id
        seed_everything(seed)
        student = create_model(student_name, num_classes=data.info.num_classes, in_channels=data.info.in_channels)
        parts = build_search(teacher, student, options, image_size=data.info.image_size, seed=seed,
                             teacher_name=teacher_name, student_name=student_name)
        self.net = parts.net.to(self.device)
        if self.fast.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.architect = parts.architect
        self.weight_optimizer, self.ts_optimizer = parts.weight_optimizer, parts.ts_optimizer
        self.schedulers = [make_cosine_scheduler(o, options, epochs) for o in (self.weight_optimizer, self.ts_optimizer)]
        self.weight_loader, self.arch_loader, self.arch_eval = self._loaders(data, split_seed)
        self.epoch = 0
        self.history: list[dict] = []

    @property
    def pairing(self):
        return self.net.pairing

    @property
    def warming_up(self) -> bool:
        """In the first `warmup_epochs` epochs only the weights and connectors train."""
        return self.epoch < self.options.warmup_epochs

    def progress(self, step: int, steps: int) -> float:
        """Share of the architecture search done at `step` of this epoch, in [0, 1]: the
        groupwise schedule divides the epochs after the warm-up between the groups."""
        warmup = self.options.warmup_epochs
        return max(0.0, ((self.epoch - warmup) * steps + step) / ((self.epochs - warmup) * steps))

    @property
    def done(self) -> bool:
        return self.epoch >= self.epochs

    def _loaders(self, data: Dataset, split_seed: int) -> tuple[DeviceLoader, DeviceLoader, DeviceLoader]:
        weight_idx, arch_idx = stratified_split(data.train.labels, self.options.arch_fraction, split_seed)
        if len(weight_idx) == 0 or len(arch_idx) == 0:
            raise ConfigError(f"search option arch_fraction={self.options.arch_fraction} leaves an empty split of "
                              f"the {len(data.train)} training images")
        info = data.info
        common = dict(mean=info.mean, std=info.std, device=self.device, channels_last=bool(self.fast.channels_last))
        aug = dict(train=True, padding=info.crop_padding, flip=info.flip, batch_size=self.options.batch_size)
        weights: ImageSet = data.train.subset(weight_idx)
        arch: ImageSet = data.train.subset(arch_idx)
        # different seeds for the two streams so a weight batch and its architecture batch are not aligned
        return (DeviceLoader(weights, seed=self.seed, **aug, **common),
                DeviceLoader(arch, seed=self.seed + 1_000_003, **aug, **common),
                DeviceLoader(arch, train=False, batch_size=256, **common))

    def _arch_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Architecture batches for this epoch, cycling if the split is the smaller one."""
        self.arch_loader.set_epoch(self.epoch)
        while True:
            yield from self.arch_loader
            self.arch_loader.set_epoch(self.epoch)

    def step(self) -> dict:
        if self.done:
            raise RuntimeError("the search has already finished all its epochs")
        start = time.perf_counter()
        self.net.train()
        self.weight_loader.set_epoch(self.epoch)
        steps = len(self.weight_loader)
        lr = self.weight_optimizer.param_groups[0]["lr"]
        sums: dict[str, torch.Tensor] = {}
        active_seen: list[int] = []
        seen = 0
        for i, (weight_batch, arch_batch) in enumerate(zip(self.weight_loader, self._arch_batches())):
            active = self.net.active_groups(self.progress(i, steps))
            for g in active:
                if g not in active_seen:
                    active_seen.append(g)
            metrics = search_step(self.net, self.architect, weight_batch, arch_batch, self.weight_optimizer,
                                  self.ts_optimizer, active_groups=active, arch_step=not self.warming_up)
            n = weight_batch[1].shape[0]
            seen += n
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0) + value.detach().double() * n
        train_seconds = time.perf_counter() - start
        for scheduler in self.schedulers:
            scheduler.step()
        self.epoch += 1
        means = {_EPOCH_MEANS.get(k, k): (v / max(seen, 1)).item() for k, v in sums.items()}
        if not torch.isfinite(torch.tensor(means.get("l_train", 0.0))):
            raise NonFiniteLossError(self.epoch, {k: v for k, v in means.items() if k.startswith("l")})
        if "train_acc" in means:
            means["train_acc"] *= 100.0
        if "arch_batch_acc" in means:
            means["arch_batch_acc"] *= 100.0
        self.net.eval()
        val = evaluate(self.net.student, self.arch_eval, self.device)
        result = {
            "epoch": self.epoch, "lr": lr, "train_loss": means.get("l_train", float("nan")), **means,
            "val_acc": val["acc"], "val_loss": val["loss"], "val_top5": val["top5"],
            "alphas": [[float(a) for a in alpha] for alpha in self.net.alphas()],
            "active_groups": active_seen,
            "images_per_s": self.weight_loader.num_samples / max(train_seconds, 1e-9),
            "seconds": time.perf_counter() - start,
        }
        self.history.append(result)
        if self.log:
            self.log(format_search_progress(self.student_name, result, self.epochs))
        return result

    def run(self) -> Genotype:
        while not self.done:
            self.step()
        return self.genotype()

    def genotype(self, mode: str | None = None) -> Genotype:
        """The derived aggregation (by the option `derive` unless `mode` is given)."""
        return genotype_from_search(self.net, self.teacher_name, self.student_name, self.dataset, mode=mode,
                                    trial_id=self.trial_id)

    # -- checkpointing ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "net": trainable_state(self.net),
            "architect": self.architect.state_dict(),
            "weight_optimizer": self.weight_optimizer.state_dict(),
            "ts_optimizer": self.ts_optimizer.state_dict(),
            "schedulers": [s.state_dict() for s in self.schedulers],
            "history": self.history,
            "rng": capture_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        load_trainable_state(self.net, state["net"])
        self.architect.load_state_dict(state["architect"])
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
        self.ts_optimizer.load_state_dict(state["ts_optimizer"])
        for scheduler, s in zip(self.schedulers, state["schedulers"]):
            scheduler.load_state_dict(s)
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        restore_rng_state(state["rng"])

    def machine(self) -> dict:
        return {**machine_info(self.device), "fast_path": self.fast.to_dict()}


def format_search_progress(student: str, m: dict, epochs: int) -> str:
    alphas = " | ".join(" ".join(f"{a:.2f}" for a in alpha) for alpha in m["alphas"])
    return (f"[search {student}] epoch {m['epoch']:>3}/{epochs}  lr {m['lr']:.4g}  L_train {m.get('l_train', 0):.4f}  "
            f"L_ST {m.get('l_st', float('nan')):.4f}  L_TS {m.get('l_ts', float('nan')):.4f}  "
            f"val(arch split) {m['val_acc']:5.1f}%  groups {m['active_groups']}  alpha [{alphas}]")
