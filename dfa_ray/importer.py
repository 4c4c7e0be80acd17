"""Teachers from RepDistiller and mdistiller checkpoints: `dfa-ray import-teacher`.

Both codebases save a dict whose `model` entry is the network's state dict (RepDistiller's
`train_teacher.py`: `{'epoch', 'model', 'accuracy', 'optimizer'}`; mdistiller's released
`cifar_teachers.tar`: `<model>_vanilla/ckpt_epoch_240.pth`, same `model` entry). dfa-ray's zoo
has the same parameters with the same shapes, under other names (its blocks live in `stem`,
`groups.<g>.<i>`, `transitions.<g>` so that the layer groups are explicit). This module maps
the names, family by family (`FAMILY_RULES`), checks that *every* tensor of the checkpoint found
a place with the right shape and that every tensor of our model was filled (else one error
listing what did not map), measures the test accuracy on the dataset given, and writes a
teacher folder exactly like `dfa-ray teacher --out` (so `dfa-ray search/distill --teacher`
and sweeps read it unchanged), with where it came from recorded in its meta data.

Where it goes: `--out DIR`, or by default the teacher store `<storage>/teachers/
<model>-<dataset>-imported-<sha256[:12]>` (`--storage`, default ./runs). A sweep uses it with
`teachers.from: imported` (the one imported teacher of each model and dataset in its store) or
`teachers.from: {resnet56: <folder in the store, or an absolute path>}`.

The two formats name parameters identically at the commits the tests' fixtures were made from
(RepDistiller b84f547, mdistiller a08d46f); they stay separate formats because mdistiller names
some models differently (`vgg8_bn`, `mobile_half`) and stores its accuracy as `best_acc`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from dfa_ray.errors import CheckpointError, ConfigError

FORMATS = ("repdistiller", "mdistiller")
IMPORTED_TAG = "imported"
# mdistiller's `cifar_model_dict` names of the zoo's models (the others are spelled as ours).
MDISTILLER_NAMES = {"vgg8_bn": "vgg8", "vgg11_bn": "vgg11", "vgg13_bn": "vgg13", "vgg16_bn": "vgg16",
                    "vgg19_bn": "vgg19", "mobile_half": "MobileNetV2"}
# the entry each format keeps the accuracy it measured in (percent), recorded for comparison
REPORTED_ACCURACY = {"repdistiller": ("accuracy", "best_acc"), "mdistiller": ("best_acc", "accuracy")}

Rule = Callable[[str, "SourceInfo"], "str | None"]


@dataclass(frozen=True)
class SourceInfo:
    """What a family's rule may need to know about the whole checkpoint besides one name."""

    keys: frozenset[str]

    def units(self, prefix: str, period: int) -> int:
        """How many units of `period` Sequential entries a block `prefix.` holds (VGG)."""
        idx = {int(m.group(1)) for k in self.keys if (m := re.match(re.escape(prefix) + r"\.(\d+)\.", k))}
        return (max(idx) // period + 1) if idx else 0


def _sub(rules: Iterable[tuple[str, str]]) -> Rule:
    """A rule from (regex, replacement) pairs tried in order; group numbers may be shifted by
    one with `{g-1}` (RepDistiller's `layer1` is our group 0)."""
    compiled = [(re.compile(rx), repl) for rx, repl in rules]

    def rule(key: str, _: SourceInfo) -> str | None:
        for rx, repl in compiled:
            m = rx.fullmatch(key)
            if m:
                groups = m.groupdict()
                if "g" in groups:
                    groups["g0"] = str(int(groups["g"]) - 1)
                return repl.format(**groups)
        return None

    return rule


# CIFAR ResNet (resnet8..110, resnet8x4, resnet32x4): conv1/bn1 are our stem, layer<g> group g-1.
_RESNET = _sub([
    (r"conv1\.(?P<p>\w+)", "stem.0.{p}"),
    (r"bn1\.(?P<p>\w+)", "stem.1.{p}"),
    (r"layer(?P<g>\d+)\.(?P<rest>\d+\..+)", "groups.{g0}.{rest}"),
    (r"fc\.(?P<p>\w+)", "fc.{p}"),
])
# ResNet50 and ShuffleV1: the same layout, the classifier is `linear`.
_RESNET_LINEAR = _sub([
    (r"conv1\.(?P<p>\w+)", "stem.0.{p}"),
    (r"bn1\.(?P<p>\w+)", "stem.1.{p}"),
    (r"layer(?P<g>\d+)\.(?P<rest>\d+\..+)", "groups.{g0}.{rest}"),
    (r"linear\.(?P<p>\w+)", "linear.{p}"),
])
# ShuffleV2: plus the last 1x1 conv and its BN before the classifier.
_SHUFFLEV2 = _sub([
    (r"conv1\.(?P<p>\w+)", "stem.0.{p}"),
    (r"bn1\.(?P<p>\w+)", "stem.1.{p}"),
    (r"layer(?P<g>\d+)\.(?P<rest>\d+\..+)", "groups.{g0}.{rest}"),
    (r"conv2\.(?P<p>\w+)", "conv_last.{p}"),
    (r"bn2\.(?P<p>\w+)", "bn_last.{p}"),
    (r"linear\.(?P<p>\w+)", "linear.{p}"),
])
# WRN: block<g>.layer.<i> is group g-1 block i; convShortcut is our shortcut; the final BN is `bn`.
_WRN = _sub([
    (r"conv1\.(?P<p>\w+)", "stem.{p}"),
    (r"block(?P<g>\d+)\.layer\.(?P<i>\d+)\.convShortcut\.(?P<p>\w+)", "groups.{g0}.{i}.shortcut.{p}"),
    (r"block(?P<g>\d+)\.layer\.(?P<rest>\d+\..+)", "groups.{g0}.{rest}"),
    (r"bn1\.(?P<p>\w+)", "bn.{p}"),
    (r"fc\.(?P<p>\w+)", "fc.{p}"),
])


def _vgg(key: str, info: SourceInfo) -> str | None:
    """VGG-BN: block<b> is a Sequential of (conv, bn, relu) units, so entry k is unit k // 3
    (k % 3 == 0 the conv, 1 the BN). Blocks 3 and 4 have no pool between them and form our
    group 3: block 4's units follow block 3's."""
    if m := re.fullmatch(r"classifier\.(\w+)", key):
        return f"classifier.{m.group(1)}"
    m = re.fullmatch(r"block(\d)\.(\d+)\.(\w+)", key)
    if not m:
        return None
    block, entry, param = int(m.group(1)), int(m.group(2)), m.group(3)
    part = {0: "conv", 1: "bn"}.get(entry % 3)
    if part is None or block > 4:
        return None
    unit = entry // 3
    group = min(block, 3)
    if block == 4:
        unit += info.units("block3", 3)
    return f"groups.{group}.{unit}.{part}.{param}"


# MobileNetV2 (CRD's mobile_half): RepDistiller's `blocks.<s>` are the seven stages; ours put
# stage 0 in the stem, stages 3 and 5 in the transitions of groups 2 and 3 (see
# dfa_ray/models/mobilenetv2.py), the others are the four groups.
_MBV2_STAGE = {0: "stem.{i1}", 1: "groups.0.{i}", 2: "groups.1.{i}", 3: "transitions.2.{i}", 4: "groups.2.{i}",
               5: "transitions.3.{i}", 6: "groups.3.{i}"}


def _mobilenetv2(key: str, _: SourceInfo) -> str | None:
    if m := re.fullmatch(r"conv1\.(\d)\.(\w+)", key):
        return f"stem.0.{m.group(1)}.{m.group(2)}"
    if m := re.fullmatch(r"blocks\.(\d)\.(\d+)\.(.+)", key):
        stage, i, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        if stage not in _MBV2_STAGE:
            return None
        return _MBV2_STAGE[stage].format(i=i, i1=i + 1) + "." + rest
    if m := re.fullmatch(r"conv2\.(\d)\.(\w+)", key):
        return f"conv_last.{m.group(1)}.{m.group(2)}"
    if m := re.fullmatch(r"classifier\.0\.(\w+)", key):
        return f"classifier.{m.group(1)}"
    return None


def _family(model: str) -> str | None:
    if re.fullmatch(r"resnet\d+(x4)?", model):
        return "resnet"
    if model.startswith("wrn_"):
        return "wrn"
    if re.fullmatch(r"vgg\d+", model):
        return "vgg"
    return model if model in ("ResNet50", "ShuffleV1", "ShuffleV2", "MobileNetV2") else None


def family_of(model: str) -> str:
    """The family whose naming rules apply to a zoo model."""
    family = _family(model)
    if family is None:
        raise ConfigError(f"--model {model!r}: dfa-ray has no name mapping from RepDistiller/mdistiller for it; "
                          f"importable: {', '.join(importable_models())}")
    return family


FAMILY_RULES: dict[str, Rule] = {
    "resnet": _RESNET, "ResNet50": _RESNET_LINEAR, "ShuffleV1": _RESNET_LINEAR, "ShuffleV2": _SHUFFLEV2,
    "wrn": _WRN, "vgg": _vgg, "MobileNetV2": _mobilenetv2,
}
# One table per format: they agree today, and a format that renames a layer changes only its own.
FORMAT_RULES: dict[str, dict[str, Rule]] = {fmt: dict(FAMILY_RULES) for fmt in FORMATS}


def importable_models() -> list[str]:
    """The zoo models a checkpoint of either codebase can be imported into."""
    from dfa_ray.models import MODELS

    return [name for name in MODELS.names() if _family(name) is not None]


def canonical_model(model: str, fmt: str) -> str:
    """Our name for `--model`: mdistiller's own names (`vgg8_bn`, `mobile_half`) are accepted."""
    return MDISTILLER_NAMES.get(model, model) if fmt == "mdistiller" else model


def map_state_dict(source: Mapping[str, Any], model: str, fmt: str, target: Mapping[str, Any]) -> dict[str, Any]:
    """The checkpoint's tensors under our names, checked against `target` (our model's state
    dict): every source tensor maps to a target name with the same shape, and every target
    name is filled. Otherwise one CheckpointError lists what did not map (up to 8 of each kind).
    A DataParallel `module.` prefix is dropped first."""
    if fmt not in FORMAT_RULES:
        raise ConfigError(f"--format {fmt!r}: unknown; formats: {', '.join(FORMATS)}")
    rule = FORMAT_RULES[fmt][family_of(model)]
    keys = {k.removeprefix("module."): v for k, v in source.items()}
    info = SourceInfo(frozenset(keys))
    out: dict[str, Any] = {}
    unmapped, wrong_shape, twice = [], [], []
    for key, tensor in keys.items():
        ours = rule(key, info)
        if ours is None or ours not in target:
            unmapped.append(key if ours is None else f"{key} (-> {ours}, which {model} does not have)")
            continue
        want, got = tuple(target[ours].shape), tuple(getattr(tensor, "shape", ()))
        if want != got:
            wrong_shape.append(f"{key} {list(got)} (-> {ours} needs {list(want)})")
            continue
        if ours in out:
            twice.append(f"{key} (-> {ours} again)")
            continue
        out[ours] = tensor
    missing = [k for k in target if k not in out]
    if unmapped or wrong_shape or twice or missing:
        parts = []
        for label, items in (("without a place", unmapped), ("of the wrong shape", wrong_shape),
                             ("mapped twice", twice), (f"of {model} left empty", missing)):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items) - 8} more)" if len(items) > 8 else "")
                parts.append(f"{len(items)} tensor(s) {label}: {shown}")
        hint = ("; the class count differs: pass the dataset the teacher was trained on (--data)"
                if any(re.search(r"(fc|linear|classifier)(\.0)?\.weight", w) for w in wrong_shape) else
                f"; is it a {fmt} {model}? (check --model and --format)")
        raise CheckpointError(f"the checkpoint does not map onto dfa-ray's {model}: " + "; ".join(parts) + hint)
    return out


def read_source_checkpoint(path: str | os.PathLike[str], fmt: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state dict, the checkpoint's other scalar entries) of a RepDistiller/mdistiller file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        text = str(exc).strip().splitlines()
        raise CheckpointError(f"checkpoint {path} cannot be read as a {fmt} checkpoint ({type(exc).__name__}: "
                              f"{text[0][:160] if text else ''})") from None
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        state, extra = raw["model"], {k: v for k, v in raw.items() if k != "model"}
    elif isinstance(raw, dict) and raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
        state, extra = raw, {}  # a bare state dict (torch.save(model.state_dict()))
    else:
        found = ", ".join(map(str, list(raw)[:8])) if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(f"checkpoint {path} holds no state dict under 'model' (found: {found}); "
                              f"a {fmt} teacher checkpoint is a dict whose 'model' entry is the state dict")
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint {path}: 'model' has entries that are not tensors: {', '.join(bad[:8])}")
    return state, extra


def _reported_accuracy(extra: Mapping[str, Any], fmt: str) -> float | None:
    for key in REPORTED_ACCURACY[fmt]:
        value = extra.get(key)
        try:
            number = float(value)  # RepDistiller stores a 0-d tensor
        except (TypeError, ValueError):
            continue
        return number
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def store_folder(storage: str | os.PathLike[str], model: str, dataset: str, sha256: str) -> Path:
    from dfa_ray.names import safe_name

    return Path(storage).absolute() / "teachers" / f"{safe_name(model)}-{safe_name(dataset)}-{IMPORTED_TAG}-{sha256[:12]}"


def test_accuracy(model: Any, data: Any, device: Any = "cpu", batch_size: int = 256) -> dict[str, float]:
    """Top-1/top-5 (percent) and mean loss of `model` on the dataset's test split, with the
    dataset's own normalisation (the one every dfa-ray run of it uses)."""
    from dfa_ray.data import DeviceLoader
    from dfa_ray.engine.evaluate import evaluate

    loader = DeviceLoader(data.test, batch_size=batch_size, mean=data.info.mean, std=data.info.std, train=False,
                          device=device)
    model.eval()
    return evaluate(model, loader, loader.device)


def import_teacher(checkpoint: str | os.PathLike[str], fmt: str, model: str, data: Any,
                   out: str | os.PathLike[str] | None = None, storage: str | os.PathLike[str] | None = None,
                   device: str = "cpu") -> tuple[Path, dict[str, Any]]:
    """Convert a RepDistiller/mdistiller checkpoint into a dfa-ray teacher folder.

    `data` is a loaded `dfa_ray.data.Dataset` (its classes and channels size our model; its test
    split measures the accuracy). The folder is `out`, or the store folder under `storage`
    (default ./runs). Returns (folder, its metrics: `final.test_acc_last` is the measured
    accuracy). Importing the same file into the same folder again is a no-op; a folder that
    holds another teacher is refused.
    """
    import torch

    from dfa_ray.engine.checkpoint import atomic_write_json, save_checkpoint
    from dfa_ray.engine.runtime import resolve_device
    from dfa_ray.engine.teacher import CHECKPOINT_KIND, CHECKPOINT_NAME, CHECKPOINT_VERSION, METRICS_NAME, \
        fingerprint, freeze
    from dfa_ray.models import create_model

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: unknown; formats: {', '.join(FORMATS)}")
    name = canonical_model(model, fmt)
    from dfa_ray.models import MODELS

    MODELS.get(name)  # an unknown model: the registry's error, listing the valid names
    path = Path(checkpoint)
    state, extra = read_source_checkpoint(path, fmt)
    sha = _sha256(path)
    folder = Path(out) if out is not None else store_folder(storage or "./runs", name, data.info.name, sha)
    target_file = folder / CHECKPOINT_NAME
    if target_file.exists():
        from dfa_ray.engine.teacher import read_teacher_checkpoint

        try:
            _, old = read_teacher_checkpoint(folder)
        except CheckpointError:
            old = {}
        source = (old.get("meta") or {}).get("source") or {}
        if source.get("sha256") == sha and old["meta"].get("model") == name and \
                old["meta"].get("dataset") == data.info.name:
            import json

            return folder, json.loads((folder / METRICS_NAME).read_text())
        raise CheckpointError(f"{folder} already holds another teacher; choose another --out (or delete it)")
    net = create_model(name, num_classes=data.info.num_classes, in_channels=data.info.in_channels)
    mapped = map_state_dict(state, name, fmt, net.state_dict())
    net.load_state_dict(mapped)
    freeze(net)
    dev = resolve_device(device)
    measured = test_accuracy(net.to(dev), data, dev)
    epoch = extra.get("epoch")
    epoch = int(epoch) if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0 else 0
    source = {"format": fmt, "checkpoint": str(path.absolute()), "sha256": sha, "model_as_named": model,
              "epoch": epoch, "reported_accuracy": _reported_accuracy(extra, fmt)}
    # `recipe` keeps the teacher checkpoint's schema (a dict with an integer `epochs`); it says
    # the weights were imported, and its sha makes the fingerprint differ between two imports.
    meta = {"model": name, "num_classes": data.info.num_classes, "in_channels": data.info.in_channels,
            "image_size": data.info.image_size, "dataset": data.info.name,
            "recipe": {"name": f"{IMPORTED_TAG}:{fmt}", "epochs": epoch, "source_sha256": sha[:16]},
            "seed": 0, "source": source}
    final = {"test_acc_last": measured["acc"], "test_top5_last": measured["top5"], "test_loss_last": measured["loss"],
             "test_acc_best": measured["acc"], "test_top5_best": measured["top5"], "best_epoch": epoch,
             "epochs_run": epoch}
    save_checkpoint(target_file, {"kind": CHECKPOINT_KIND, "version": CHECKPOINT_VERSION, "meta": meta,
                                  "run": {"epoch": epoch},
                                  "model": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}})
    metrics = {**meta, "fingerprint": fingerprint(meta), "history": [], "final": final, "finished": True,
               "imported": True, "torch": torch.__version__}
    atomic_write_json(folder / METRICS_NAME, metrics)
    return folder, metrics


# -- the teacher store: which imported teacher a sweep uses --------------------------------------
def imported_in_store(store: Path, model: str, dataset: str) -> list[Path]:
    """The imported teachers of `model` on `dataset` in a teacher store, oldest name first."""
    from dfa_ray.names import safe_name

    pattern = f"{safe_name(model)}-{safe_name(dataset)}-{IMPORTED_TAG}-*"
    return sorted(p for p in store.glob(pattern) if (p / "checkpoint.pt").is_file())


def resolve_spec_teachers(source: Any, store: Path, models: Iterable[str], dataset: str) -> dict[str, Path]:
    """The folder of each teacher a spec's `teachers.from` says to take rather than train:
    `"imported"` -> the one imported teacher of each model in the store; a mapping -> the
    folder named for each model listed (a store folder name or an absolute path);
    `"train"` -> none. ConfigError (naming `teachers.from`) when one is missing or ambiguous."""
    from dfa_ray.engine.teacher import read_teacher_checkpoint

    chosen: dict[str, Path] = {}
    if source == "imported":
        for model in models:
            found = imported_in_store(store, model, dataset)
            if not found:
                raise ConfigError(f"teachers.from: imported, but {store} has no imported {model} for {dataset}; run "
                                  f"`dfa-ray import-teacher CKPT --format repdistiller|mdistiller --model {model} "
                                  f"--data {dataset} --storage {store.parent}` first")
            if len(found) > 1:
                raise ConfigError(f"teachers.from: imported, but {store} has {len(found)} imported {model} teachers "
                                  f"({', '.join(p.name for p in found)}); name one: teachers.from: {{{model}: FOLDER}}")
            chosen[model] = found[0]
    elif isinstance(source, Mapping):
        for model, folder in source.items():
            path = Path(folder) if Path(folder).is_absolute() else store / folder
            chosen[model] = path
    for model, path in chosen.items():
        try:
            _, state = read_teacher_checkpoint(path)
        except CheckpointError as exc:
            raise ConfigError(f"teachers.from.{model}: {exc}") from None
        meta = state["meta"]
        if meta["model"] != model or "model" not in state:
            raise ConfigError(f"teachers.from.{model}: {path} holds a {'finished ' if 'model' in state else 'unfinished '}"
                              f"{meta['model']!r}, not a finished {model!r}")
        if meta["dataset"] != dataset:
            raise ConfigError(f"teachers.from.{model}: {path} is a teacher for {meta['dataset']!r}, the spec's data "
                              f"is {dataset!r}")
    return chosen


# -- the command -----------------------------------------------------------------------------
def cmd_import_teacher(args: argparse.Namespace) -> int:
    from dfa_ray.data import load_dataset
    from dfa_ray.spec import yaml_value

    options = {}
    for item in args.data_opt or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--data-opt {item!r}: expected KEY=VALUE")
        options[key.strip()] = yaml_value(raw) if raw.strip() else ""
    data = load_dataset(args.data, root=args.data_root, download=args.download, **options)
    folder, metrics = import_teacher(args.checkpoint, args.format, args.model, data, out=args.out,
                                     storage=args.storage, device=args.device)
    final, source = metrics["final"], metrics["source"]
    reported = source.get("reported_accuracy")
    note = f" (the checkpoint reports {reported:.2f}%)" if isinstance(reported, (int, float)) else ""
    print(f"imported {source['format']} {metrics['model']} for {metrics['dataset']}: test accuracy "
          f"{final['test_acc_last']:.2f}%{note}; teacher folder {folder}", flush=True)
    return 0


def add_import_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register `import-teacher` on the `dfa-ray` sub-command parsers; returns its parser."""
    p = subparsers.add_parser(
        "import-teacher", help="turn a RepDistiller or mdistiller teacher checkpoint into a dfa-ray teacher folder",
        description="Map the parameter names of a RepDistiller / mdistiller checkpoint (a dict whose 'model' entry is "
                    "the state dict) onto dfa-ray's model, check every tensor, measure the test accuracy and write "
                    "a teacher folder (default: the teacher store under --storage).")
    p.add_argument("checkpoint", metavar="CKPT", help="the .pth file (e.g. mdistiller's resnet56_vanilla/ckpt_epoch_240.pth)")
    p.add_argument("--format", required=True, choices=FORMATS, help="the codebase that wrote it")
    p.add_argument("--model", required=True, help="its architecture (dfa-ray's name; mdistiller's vgg8_bn, mobile_half too)")
    p.add_argument("--data", required=True, help="the dataset it was trained on (its test split measures the accuracy)")
    p.add_argument("--data-root", default=None, help="folder of the dataset files")
    p.add_argument("--download", action="store_true", help="download the dataset first (connected machines only)")
    p.add_argument("--data-opt", action="append", metavar="KEY=VALUE", help="dataset option (repeatable)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", default=None, help="write the teacher folder here")
    where.add_argument("--storage", default=None,
                       help="storage whose teacher store gets it (default ./runs): <storage>/teachers/<model>-<data>-imported-<sha>")
    p.add_argument("--device", default="cpu", help="device for measuring the accuracy: cpu | cuda | auto")
    p.add_argument("--plugin", action="append", metavar="MODULE", help="import this module first (repeatable)")
    p.set_defaults(handler=cmd_import_teacher)
    return p


__all__ = ["FORMATS", "FAMILY_RULES", "add_import_command", "canonical_model", "family_of", "import_teacher",
           "imported_in_store", "map_state_dict", "read_source_checkpoint", "resolve_spec_teachers", "store_folder"]
