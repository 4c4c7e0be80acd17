"""The cost model of `dfa-ray plan`: seconds per epoch of each stage, from measured step times.

Why a file of measurements and not a formula of FLOPs: what a sweep costs is wall time on the
machine it runs on, and step times per image (measured by `benchmarks/step_costs.py`) are the
closest cheap stand-in. The package ships one (`cost_model.json`, recording where and when it
was measured); `dfa-ray plan --cost-model FILE` takes another, e.g. one measured on a GPU.

An epoch's estimate is images x per-image cost:
- teacher epoch: its training images x the teacher's train step, plus its held-out images x
  the teacher's forward (the validation pass every epoch);
- search epoch: the weight split x (the student's train step + the teacher's forward) x the
  search factor (the bi-level step's cost over a distillation step, by order and schedule,
  from `benchmarks/search_step.py`), plus the architecture split x the student's forward (its
  per-epoch evaluation);
- distillation epoch: the training images x (the student's train step + the teacher's forward;
  vanilla has no teacher), plus the held-out images x the student's forward.
The step times are measured at 32x32; another image size is scaled by its area (convolution
work grows with the pixels; fixed per-step overheads do not, so small images come out low).

Images per epoch come from a table of the built-in datasets' sizes (no data is read), with
the recipe's hold-out (`holdout_fraction`, rounded per class as `data.split` does) or the
search's architecture split (`arch_fraction`) taken off.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from dfa_ray.errors import ConfigError

COST_MODEL_KIND = "dfa-ray/cost-model"
COST_MODEL_VERSION = 1
DEFAULT_PATH = Path(__file__).resolve().parent / "cost_model.json"


# -- what the file holds ------------------------------------------------------------------
@dataclass(frozen=True)
class ModelCost:
    """Seconds per image of one model at the cost model's batch and image size."""

    train_s_per_image: float  # forward + cross-entropy + backward + SGD step
    forward_s_per_image: float  # eval mode, no_grad


@dataclass(frozen=True)
class SearchFactors:
    """Cost of one search step over one DFA distillation step of the same pair and batch."""

    order1_groupwise: float
    order1_joint: float
    order2_groupwise: float
    order2_joint: float
    source: str

    def factor(self, order: int, schedule: str) -> float:
        return float(getattr(self, f"order{order}_{'joint' if schedule == 'joint' else 'groupwise'}"))


# When no search_step figures exist: about 2x (first order) and 3.5x (second order), the
# ratios benchmarks/search_step.py measured on the 2-core CPU for two CRD pairs.
DEFAULT_SEARCH_FACTORS = SearchFactors(order1_groupwise=2.0, order1_joint=2.4, order2_groupwise=3.3,
                                       order2_joint=3.7, source="default (no search_step figures found)")


@dataclass(frozen=True)
class CostModel:
    kind: str
    version: int
    machine: dict[str, Any]
    torch: str
    device: str
    threads: int
    batch_size: int
    image_size: int
    num_classes: int
    steps: int
    date: str
    note: str
    models: dict[str, ModelCost]
    search: SearchFactors
    path: str | None = field(default=None, compare=False)  # where it was read from (not saved)

    # -- reading and writing --------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None) -> "CostModel":
        """The cost model in `path` (default: the packaged one); ConfigError naming the file."""
        path = Path(path) if path is not None else DEFAULT_PATH
        flag = "--cost-model " if path != DEFAULT_PATH else "the packaged cost model "
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{flag}{path} does not exist; give a file written by "
                              "`python -m benchmarks.step_costs --out FILE`") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{flag}{path} cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
        except ValueError as exc:
            raise ConfigError(f"{flag}{path} is not JSON ({exc}); give a file written by benchmarks/step_costs.py") \
                from None
        try:
            return cls.from_dict(doc, str(path))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{flag}{path} is not a dfa-ray cost model ({exc}); re-measure it with "
                              "`python -m benchmarks.step_costs`") from None

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], path: str | None = None) -> "CostModel":
        if not isinstance(doc, Mapping) or doc.get("kind") != COST_MODEL_KIND:
            raise ValueError(f"its kind is not {COST_MODEL_KIND!r}")
        if doc.get("version") != COST_MODEL_VERSION:
            raise ValueError(f"version {doc.get('version')!r}, this dfa-ray reads version {COST_MODEL_VERSION}")
        models = {}
        for name, m in dict(doc["models"]).items():
            cost = ModelCost(train_s_per_image=float(m["train_s_per_image"]),
                             forward_s_per_image=float(m["forward_s_per_image"]))
            if not (cost.train_s_per_image > 0 and cost.forward_s_per_image > 0
                    and math.isfinite(cost.train_s_per_image) and math.isfinite(cost.forward_s_per_image)):
                raise ValueError(f"model {name}: step times must be positive numbers")
            models[str(name)] = cost
        s = dict(doc["search"])
        search = SearchFactors(**{k: float(s[k]) for k in ("order1_groupwise", "order1_joint", "order2_groupwise",
                                                            "order2_joint")}, source=str(s.get("source", "")))
        image_size = int(doc["image_size"])
        if image_size < 1:
            raise ValueError("image_size must be >= 1")
        return cls(kind=doc["kind"], version=int(doc["version"]), machine=dict(doc["machine"]), torch=str(doc["torch"]),
                   device=str(doc["device"]), threads=int(doc.get("threads", 0)), batch_size=int(doc["batch_size"]),
                   image_size=image_size, num_classes=int(doc.get("num_classes", 0)),
                   steps=int(doc.get("steps", 0)), date=str(doc["date"]), note=str(doc.get("note", "")),
                   models=models, search=search, path=path)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("path")
        return out

    def save(self, path: str | Path) -> Path:
        from dfa_ray.engine.checkpoint import atomic_write_json

        path = Path(path)
        atomic_write_json(path, self.to_dict())
        return path

    # -- what the plan asks -----------------------------------------------------------------
    def describe(self) -> str:
        """`cpu x86_64 (2 CPUs, 1 torch thread), torch 2.x, batch 64 at 32x32, 2026-...`."""
        m = self.machine
        where = f"{self.device} {m.get('device_name', '')}".strip()
        cpus = f", {m['cpu_count']} CPUs" if self.device == "cpu" and m.get("cpu_count") else ""
        threads = f", {self.threads} torch thread(s)" if self.device == "cpu" else ""
        return f"{where}{cpus}{threads}, torch {self.torch}, batch {self.batch_size} at {self.image_size}x" \
               f"{self.image_size}, measured {self.date}"

    def cost(self, model: str) -> ModelCost | None:
        return self.models.get(model)

    def area_scale(self, image_size: int) -> float:
        return (image_size * image_size) / float(self.image_size * self.image_size)


# -- dataset sizes without reading data ---------------------------------------------------------
@dataclass(frozen=True)
class DatasetSize:
    """The training split's images per class, the test split's size and the image size."""

    name: str
    train_per_class: tuple[int, ...]
    test: int
    image_size: int
    source: str

    @property
    def train(self) -> int:
        return sum(self.train_per_class)


def _balanced(n: int, k: int) -> tuple[int, ...]:
    return tuple(n // k + (1 if c < n % k else 0) for c in range(k))


def _held(per_class: tuple[int, ...], fraction: float) -> tuple[int, ...]:
    """Per class, how many `data.split.stratified_split` moves out: floor(n_c * f + 0.5)."""
    return tuple(int(math.floor(n * float(fraction) + 0.5)) for n in per_class)


# scikit-learn's load_digits: images per class 0..9 (its documentation's table)
DIGITS_PER_CLASS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)
DIGITS_TEST_FRACTION = 0.2  # dfa_ray/data/digits.py: TEST_FRACTION


def dataset_size(name: str, options: Mapping[str, Any] | None = None) -> DatasetSize:
    """The size of a built-in dataset (with its size options), from the datasets' published
    sizes; ConfigError for a dataset this table does not know (a plug-in's)."""
    opts = dict(options or {})
    if name == "digits":
        test = _held(DIGITS_PER_CLASS, DIGITS_TEST_FRACTION)
        return DatasetSize(name, tuple(n - t for n, t in zip(DIGITS_PER_CLASS, test)), sum(test), 8,
                           "scikit-learn load_digits: 1,797 images; dfa_ray/data/digits.py's stratified 80/20 split")
    if name == "cifar10":
        return DatasetSize(name, (5000,) * 10, 10000, 32, "CIFAR-10 (Krizhevsky 2009): 50,000 train / 10,000 test")
    if name == "cifar100":
        return DatasetSize(name, (500,) * 100, 10000, 32, "CIFAR-100 (Krizhevsky 2009): 50,000 train / 10,000 test")
    if name == "cinic10":
        return DatasetSize(name, (9000,) * 10, 90000, 32,
                           "CINIC-10 (Darlow et al. 2018): 90,000 train / 90,000 valid / 90,000 test")
    if name == "fashion_mnist":
        train, test = (6000,) * 10, 10000
        size, test_size = int(opts.get("train_size", 0) or 0), int(opts.get("test_size", 0) or 0)
        if 0 < size < sum(train):  # dfa_ray/data/fashion_mnist.py: a stratified subset of size/n
            train = _held(train, size / sum(train))
        if 0 < test_size < test:
            test = sum(_held((1000,) * 10, test_size / test))
        return DatasetSize(name, train, test, 28,
                           "Fashion-MNIST (Xiao et al. 2017): 60,000 train / 10,000 test, with the spec's train_size")
    if name == "synthetic":
        from dfa_ray.data.synthetic import DEFAULTS

        o = {**DEFAULTS, **opts}
        return DatasetSize(name, _balanced(int(o["n_train"]), int(o["num_classes"])), int(o["n_test"]),
                           int(o["image_size"]), "dfa_ray/data/synthetic.py: the spec's n_train, n_test, image_size")
    raise ConfigError(f"data.name {name!r}: `dfa-ray plan` knows the sizes of the built-in datasets only "
                      "(digits, cifar10, cifar100, cinic10, fashion_mnist, synthetic); plan with one of those")


def split_sizes(size: DatasetSize, fraction: float) -> tuple[int, int]:
    """(kept, held out) images of the training split when `fraction` of each class is held out."""
    held = sum(_held(size.train_per_class, fraction)) if fraction > 0 else 0
    return size.train - held, held


__all__ = [
    "COST_MODEL_KIND", "COST_MODEL_VERSION", "CostModel", "DEFAULT_PATH", "DEFAULT_SEARCH_FACTORS", "DatasetSize",
    "ModelCost", "SearchFactors", "dataset_size", "split_sizes",
]
