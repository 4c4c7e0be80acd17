"""The aggregation genotype: what stage 1 hands to stage 2, as a small versioned JSON file.

A genotype names its pair and dataset, and per paired group the teacher and student group
indices, the candidate names (the teacher's block names) and the fixed aggregation weights;
it records how it was made (search options and derivation, or a reference kind) and the
search trial id. Stage 2 refuses a genotype made for another pair, dataset or model shape
(`validate_for`), so a wrong file fails with a message instead of distilling nonsense.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from dfa_ray.dfa.aggregation import Aggregation
from dfa_ray.dfa.options import parse_derive
from dfa_ray.dfa.pairing import GroupPairing, pair_groups
from dfa_ray.errors import CheckpointError, ConfigError

GENOTYPE_VERSION = 1
REFERENCE_KINDS = ("last", "average", "random")
_TOL = 1e-4  # tolerance on sum(weights) == 1


@dataclass(frozen=True)
class GenotypeGroup:
    student_group: int
    teacher_group: int
    candidates: tuple[str, ...]
    weights: tuple[float, ...]


@dataclass(frozen=True)
class Genotype:
    """One aggregation per paired student group. `kind` is `search` or a reference kind."""

    teacher: str
    student: str
    dataset: str
    groups: tuple[GenotypeGroup, ...]
    kind: str = "search"
    derive: str | None = "softmax"
    image_size: int = 32
    options: dict[str, Any] = field(default_factory=dict)
    trial_id: str | None = None
    version: int = GENOTYPE_VERSION
    source: str | None = field(default=None, compare=False)  # the file it was loaded from

    # -- (de)serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "kind": self.kind,
            "teacher": self.teacher,
            "student": self.student,
            "dataset": self.dataset,
            "image_size": self.image_size,
            "derive": self.derive,
            "trial_id": self.trial_id,
            "options": dict(self.options),
            "groups": [
                {
                    "student_group": g.student_group,
                    "teacher_group": g.teacher_group,
                    "candidates": list(g.candidates),
                    "weights": list(g.weights),
                }
                for g in self.groups
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: Any, source: str | None = None) -> "Genotype":
        where = f"genotype {source}" if source else "genotype"
        if not isinstance(d, dict):
            raise CheckpointError(f"{where}: expected a JSON object, got {type(d).__name__}")
        version = d.get("version")
        if version != GENOTYPE_VERSION:
            raise CheckpointError(
                f"{where}: version {version!r} is not supported (this dfa-ray reads version "
                f"{GENOTYPE_VERSION}); re-derive it from its search trial"
            )
        try:
            groups = tuple(
                GenotypeGroup(
                    student_group=int(g["student_group"]),
                    teacher_group=int(g["teacher_group"]),
                    candidates=tuple(str(c) for c in g["candidates"]),
                    weights=tuple(float(w) for w in g["weights"]),
                )
                for g in d["groups"]
            )
            geno = cls(
                teacher=str(d["teacher"]),
                student=str(d["student"]),
                dataset=str(d["dataset"]),
                groups=groups,
                kind=str(d.get("kind", "search")),
                derive=d.get("derive"),
                image_size=int(d.get("image_size", 32)),
                options=dict(d.get("options") or {}),
                trial_id=d.get("trial_id"),
                version=int(version),
                source=source,
            )
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as e:
            raise CheckpointError(f"{where}: malformed ({type(e).__name__}: {e}); expected the fields of Genotype.to_dict()") from None
        geno.check_weights()
        return geno

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (dfa_ray.atomic: a temporary file in the same folder, then os.replace)."""
        from dfa_ray.atomic import atomic_write_text

        return atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Genotype":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CheckpointError(f"genotype {path}: no such file; run the search or give the right path") from None
        except UnicodeDecodeError as e:
            raise CheckpointError(f"genotype {path}: not UTF-8 text ({e.reason} at byte {e.start}); the file is "
                                  "corrupt, re-derive it") from None
        except OSError as e:
            raise CheckpointError(f"genotype {path}: cannot be read ({e.strerror or e})") from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"genotype {path}: not valid JSON ({e}); the file is corrupt, re-derive it") from None
        return cls.from_dict(d, source=str(path))

    # -- checks -----------------------------------------------------------------------------
    def _where(self) -> str:
        return f"genotype {self.source}" if self.source else "genotype (not from a file)"

    def check_weights(self) -> None:
        for g in self.groups:
            w = g.weights
            if len(w) != len(g.candidates) or not w:
                raise CheckpointError(
                    f"{self._where()}: group S{g.student_group} has {len(w)} weights for "
                    f"{len(g.candidates)} candidates"
                )
            if any(not math.isfinite(x) or x < 0 for x in w) or abs(sum(w) - 1) > _TOL:
                raise CheckpointError(
                    f"{self._where()}: weights of group S{g.student_group} must be >= 0 and sum to 1, got {list(w)}"
                )

    def validate_for(
        self,
        teacher_name: str,
        student_name: str,
        dataset: str,
        teacher_model: nn.Module,
        student_model: nn.Module,
        image_size: int | None = None,
        transfer: bool = False,
    ) -> "Genotype":
        """Refuse a genotype made for another pair or dataset, or whose groups and candidate
        counts do not match these models. Returns self.

        `transfer=True` accepts a genotype searched on another dataset (the paper's DFA-T:
        search on CIFAR-100, distil on CINIC-10) as long as the architectures are the same;
        the caller records the transfer with the results."""
        mine = f"{self.teacher} -> {self.student} on {self.dataset}"
        theirs = f"{teacher_name} -> {student_name} on {dataset}"
        if (self.teacher, self.student) != (teacher_name, student_name):
            raise CheckpointError(
                f"{self._where()} was made for {mine}, not for {theirs}; use the genotype of "
                f"the pair's own search (or a reference genotype: {', '.join(REFERENCE_KINDS)})"
            )
        if self.dataset != dataset and not transfer:
            raise CheckpointError(
                f"{self._where()} was searched on {self.dataset}, not on {dataset}; to distil with it on "
                f"{dataset} on purpose (genotype transfer, DFA-T), pass --transfer (CLI) or set "
                f"distill.genotype_from (spec)"
            )
        pairing = pair_groups(teacher_model, student_model, image_size or self.image_size, teacher_name, student_name)
        self.check_pairing(pairing, what=f"for {theirs}")
        return self

    def check_pairing(self, pairing: GroupPairing, what: str = "") -> None:
        """The genotype's groups must be the pairing's: same indices, same candidate counts."""
        head = f"{self._where()} ({self.teacher} -> {self.student}) does not fit the models {what}".rstrip()
        if len(self.groups) != len(pairing):
            raise CheckpointError(f"{head}: it has {len(self.groups)} groups, the pairing {len(pairing)}")
        for g, p in zip(self.groups, pairing):
            if (g.student_group, g.teacher_group) != (p.student_group, p.teacher_group):
                raise CheckpointError(
                    f"{head}: group pairs S{g.student_group}-T{g.teacher_group} vs the models' "
                    f"S{p.student_group}-T{p.teacher_group}"
                )
            if len(g.candidates) != p.num_candidates:
                raise CheckpointError(
                    f"{head}: teacher group T{g.teacher_group} has {len(g.candidates)} candidates "
                    f"in the genotype and {p.num_candidates} in the model"
                )

    def weight_tensors(self) -> list[torch.Tensor]:
        return [torch.tensor(g.weights, dtype=torch.float32) for g in self.groups]


# -- making genotypes ---------------------------------------------------------------------
def derive(aggregation: Aggregation | Sequence[torch.Tensor], mode: str = "softmax") -> list[list[float]]:
    """Fixed weights from the betas: `softmax` (alpha as is), `argmax` (one-hot on the largest
    beta, the first on ties), `topk:K` (alpha restricted to the K largest, renormalised)."""
    kind, k = parse_derive(mode)
    betas = list(aggregation.betas) if isinstance(aggregation, Aggregation) else list(aggregation)
    out = []
    for beta in betas:
        beta = beta.detach().double().cpu()
        alpha = torch.softmax(beta, dim=0)
        if kind == "argmax":
            w = torch.zeros_like(alpha)
            w[int(torch.argmax(beta))] = 1.0
        elif kind == "topk":
            w = torch.zeros_like(alpha)
            idx = torch.topk(beta, min(k, beta.numel())).indices
            w[idx] = alpha[idx]
            w = w / w.sum()
        else:
            w = alpha
        out.append([float(x) for x in w])
    return out


def genotype_from_search(
    net: Any,
    teacher: str,
    student: str,
    dataset: str,
    mode: str | None = None,
    trial_id: str | None = None,
) -> Genotype:
    """The genotype of a `SearchNet` (derivation `mode`, default the net's option `derive`)."""
    mode = mode or net.options.derive
    weights = derive(net.aggregation, mode)
    groups = tuple(
        GenotypeGroup(p.student_group, p.teacher_group, tuple(p.candidates), tuple(w))
        for p, w in zip(net.pairing, weights)
    )
    return Genotype(
        teacher=teacher, student=student, dataset=dataset, groups=groups, kind="search",
        derive=mode, image_size=net.pairing.image_size, options=net.options.model_dump(mode="json"), trial_id=trial_id,
    )


def reference_genotype(
    kind: str, pairing: GroupPairing, teacher: str, student: str, dataset: str, seed: int = 0
) -> Genotype:
    """Genotypes that need no search: `last` (one-hot on the last candidate: classic
    stage-wise feature distillation), `average` (uniform), `random` (Dirichlet(1), seeded)."""
    if kind not in REFERENCE_KINDS:
        raise ConfigError(f"reference genotype {kind!r} is unknown; valid kinds: {', '.join(REFERENCE_KINDS)}")
    gen = torch.Generator().manual_seed(int(seed))
    groups = []
    for p in pairing:
        n = p.num_candidates
        if kind == "last":
            w = [0.0] * (n - 1) + [1.0]
        elif kind == "average":
            w = [1.0 / n] * n
        else:  # Dirichlet(1, ..., 1) = normalised Exp(1) draws, from our own generator
            e = -torch.log(torch.rand(n, generator=gen, dtype=torch.float64).clamp_min(1e-300))
            w = [float(x) for x in e / e.sum()]
        groups.append(GenotypeGroup(p.student_group, p.teacher_group, tuple(p.candidates), tuple(w)))
    return Genotype(
        teacher=teacher, student=student, dataset=dataset, groups=tuple(groups), kind=kind,
        derive=None, image_size=pairing.image_size, options={"seed": int(seed)} if kind == "random" else {},
    )
