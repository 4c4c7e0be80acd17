"""`dfa-ray import-teacher`: RepDistiller / mdistiller checkpoints -> dfa-ray teacher folders.

The parameter names and shapes of every model of both codebases are in tests/data/ (JSON made
from their model code at the commits named inside). The reference each import is checked
against is built independently of the importer's name rules: the codebases define their
layers in the order the forward pass runs them, so the i-th tensor of their state dict belongs
to the i-th parameter of our model *in execution order* (found with forward hooks).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dfa_ray.cli import main
from dfa_ray.data import load_dataset
from dfa_ray.engine.teacher import load_teacher, read_teacher_checkpoint
from dfa_ray.errors import CheckpointError, ConfigError
from dfa_ray.importer import MDISTILLER_NAMES, import_teacher, map_state_dict, store_folder
from dfa_ray.models import create_model

DATA = Path(__file__).parent / "data"
FIXTURES = {fmt: json.loads((DATA / f"{fmt}_state_dict_keys.json").read_text())["models"]
            for fmt in ("repdistiller", "mdistiller")}
CASES = [(fmt, model) for fmt, models in FIXTURES.items() for model in models]


@pytest.fixture(scope="module")
def cifar_like():
    """100 classes of RGB images like CIFAR-100's, but 16 px and 20 test images: the deepest
    models of the zoo stay fast, and every one of them takes 16 px."""
    return load_dataset("synthetic", num_classes=100, n_train=100, n_test=20, image_size=16)


def random_checkpoint(entries, seed: int = 0, classes: int | None = None) -> dict:
    """A state dict with the fixture's names and shapes; BN variances positive, weights small
    enough that a 110-layer net's logits stay finite."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in entries:
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(240)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=g) + 0.5
        else:
            state[name] = 0.1 * torch.randn(shape, generator=g)
    return state


def execution_order_keys(model: torch.nn.Module, x: torch.Tensor) -> list[str]:
    """Our state dict's names, ordered by when the forward pass first runs their module."""
    order: list[str] = []
    hooks = []
    for name, module in model.named_modules():
        if list(module.children()) or not (list(module.parameters(recurse=False)) or
                                           list(module.buffers(recurse=False))):
            continue
        hooks.append(module.register_forward_pre_hook(
            lambda _m, _a, name=name: order.append(name) if name not in order else None))
    model.eval()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    state = model.state_dict()
    return [k for n in order for k in state if k.rsplit(".", 1)[0] == n]


def reference_model(name: str, source: dict, x: torch.Tensor) -> torch.nn.Module:
    model = create_model(name, num_classes=100, in_channels=3)
    ours = execution_order_keys(model, x)
    assert len(ours) == len(source) == len(model.state_dict())
    model.load_state_dict({o: t for o, t in zip(ours, source.values())})
    return model.eval()


@pytest.mark.parametrize("fmt,model", CASES, ids=[f"{f}-{m}" for f, m in CASES])
def test_every_model_imports_with_the_same_logits(fmt, model, cifar_like, tmp_path):
    entries = FIXTURES[fmt][model]
    source = random_checkpoint(entries, seed=len(model))
    ckpt = tmp_path / "ckpt_epoch_240.pth"
    accuracy_key = "best_acc" if fmt == "mdistiller" else "accuracy"
    torch.save({"epoch": 240, "model": source, accuracy_key: torch.tensor(71.5), "optimizer": {}}, ckpt)
    as_named = next((k for k, v in MDISTILLER_NAMES.items() if v == model), model) if fmt == "mdistiller" else model
    folder, metrics = import_teacher(ckpt, fmt, as_named, cifar_like, out=tmp_path / "teacher")

    imported, meta = load_teacher(folder, cifar_like, expect_model=model)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    ref = reference_model(model, source, x[:1])
    with torch.no_grad():
        want, got = ref(x), imported(x)
    assert torch.isfinite(want).all()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))

    # the accuracy recorded is the reference's own top-1 on the test split, (x/255 - mean)/std
    test = cifar_like.test
    mean = torch.tensor(cifar_like.info.mean).view(1, -1, 1, 1)
    std = torch.tensor(cifar_like.info.std).view(1, -1, 1, 1)
    with torch.no_grad():
        pred = ref((test.images.float() / 255 - mean) / std).argmax(1)
    expected = 100.0 * (pred == test.labels).float().mean().item()
    assert metrics["final"]["test_acc_last"] == pytest.approx(expected, abs=1e-6)
    assert json.loads((folder / "metrics.json").read_text())["final"]["test_acc_last"] == pytest.approx(expected)
    assert meta["source"]["format"] == fmt and meta["source"]["reported_accuracy"] == pytest.approx(71.5)
    assert meta["model"] == model and meta["num_classes"] == 100 and meta["recipe"]["epochs"] == 240


@pytest.fixture()
def resnet8_ckpt(tmp_path):
    source = random_checkpoint(FIXTURES["repdistiller"]["resnet8"])
    path = tmp_path / "resnet8.pth"
    torch.save({"epoch": 240, "model": source, "accuracy": 60.0}, path)
    return path, source


def test_a_tensor_that_does_not_map_is_named(resnet8_ckpt, cifar_like, tmp_path):
    path, source = resnet8_ckpt
    broken = dict(source)
    broken["layer9.0.conv1.weight"] = broken.pop("layer1.0.conv1.weight")  # no such group
    broken["layer2.0.bn1.weight"] = torch.zeros(5)  # wrong shape
    torch.save({"model": broken}, path)
    with pytest.raises(CheckpointError) as err:
        import_teacher(path, "repdistiller", "resnet8", cifar_like, out=tmp_path / "t")
    text = str(err.value)
    assert "\n" not in text
    assert "layer9.0.conv1.weight" in text and "layer2.0.bn1.weight [5]" in text
    assert "groups.0.0.conv1.weight" in text  # our tensor left empty
    assert not (tmp_path / "t" / "checkpoint.pt").exists()


def test_another_class_count_says_to_pass_the_dataset(resnet8_ckpt, tmp_path):
    path, _ = resnet8_ckpt
    digits_like = load_dataset("synthetic", num_classes=10, n_train=20, n_test=20, image_size=16)
    with pytest.raises(CheckpointError, match=r"fc\.weight \[100, 64\] .*needs \[10, 64\].*--data"):
        import_teacher(path, "repdistiller", "resnet8", digits_like, out=tmp_path / "t")


def test_wrong_model_is_refused(resnet8_ckpt, cifar_like, tmp_path):
    path, _ = resnet8_ckpt
    with pytest.raises(CheckpointError, match="does not map onto dfa-ray's resnet14"):
        import_teacher(path, "repdistiller", "resnet14", cifar_like, out=tmp_path / "t")
    with pytest.raises(ConfigError, match="unknown model 'resnet9'"):
        import_teacher(path, "repdistiller", "resnet9", cifar_like, out=tmp_path / "t")


def test_dataparallel_prefix_and_bare_state_dict(resnet8_ckpt, cifar_like, tmp_path):
    _, source = resnet8_ckpt
    target = create_model("resnet8").state_dict()
    mapped = map_state_dict({f"module.{k}": v for k, v in source.items()}, "resnet8", "mdistiller", target)
    assert set(mapped) == set(target)
    bare = tmp_path / "bare.pth"
    torch.save(source, bare)
    folder, _ = import_teacher(bare, "mdistiller", "resnet8", cifar_like, out=tmp_path / "t")
    assert (folder / "checkpoint.pt").is_file()


def test_store_folder_by_default_and_reimport_is_a_no_op(resnet8_ckpt, cifar_like, tmp_path):
    path, _ = resnet8_ckpt
    folder, first = import_teacher(path, "repdistiller", "resnet8", cifar_like, storage=tmp_path / "runs")
    assert folder.parent == (tmp_path / "runs" / "teachers").absolute()
    assert folder.name.startswith("resnet8-synthetic-imported-")
    assert folder == store_folder(tmp_path / "runs", "resnet8", "synthetic", first["source"]["sha256"])
    stamp = (folder / "checkpoint.pt").stat().st_mtime_ns
    again, second = import_teacher(path, "repdistiller", "resnet8", cifar_like, storage=tmp_path / "runs")
    assert again == folder and second == first and (folder / "checkpoint.pt").stat().st_mtime_ns == stamp
    other = tmp_path / "other.pth"
    torch.save({"model": random_checkpoint(FIXTURES["repdistiller"]["resnet8"], seed=5)}, other)
    with pytest.raises(CheckpointError, match="already holds another teacher"):
        import_teacher(other, "repdistiller", "resnet8", cifar_like, out=folder)
    _, state = read_teacher_checkpoint(folder)
    assert state["meta"]["source"]["sha256"] == first["source"]["sha256"]


def test_not_a_checkpoint(tmp_path, cifar_like):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="cannot be read as a repdistiller checkpoint"):
        import_teacher(junk, "repdistiller", "resnet8", cifar_like, out=tmp_path / "t")
    torch.save({"epoch": 3, "state_dict": {}}, junk)
    with pytest.raises(CheckpointError, match="holds no state dict under 'model' .*epoch, state_dict"):
        import_teacher(junk, "repdistiller", "resnet8", cifar_like, out=tmp_path / "t")


def test_command_line(resnet8_ckpt, tmp_path, capsys):
    path, _ = resnet8_ckpt
    rc = main(["import-teacher", str(path), "--format", "repdistiller", "--model", "resnet8", "--data", "synthetic",
               "--data-opt", "num_classes=100", "--data-opt", "n_train=100", "--data-opt", "n_test=20",
               "--data-opt", "image_size=16",
               "--storage", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert rc == 0
    folders = list((tmp_path / "runs" / "teachers").glob("resnet8-synthetic-imported-*"))
    assert len(folders) == 1 and f"teacher folder {folders[0]}" in out
    acc = json.loads((folders[0] / "metrics.json").read_text())["final"]["test_acc_last"]
    assert f"test accuracy {acc:.2f}% (the checkpoint reports 60.00%)" in out


def test_a_spec_finds_its_imported_teacher(resnet8_ckpt, cifar_like, tmp_path):
    from dfa_ray.importer import resolve_spec_teachers

    path, _ = resnet8_ckpt
    store = tmp_path / "runs" / "teachers"
    with pytest.raises(ConfigError, match=r"teachers.from: imported, but .* has no imported resnet8 for synthetic; "
                                          r"run `dfa-ray import-teacher CKPT"):
        resolve_spec_teachers("imported", store, ["resnet8"], "synthetic")
    folder, _ = import_teacher(path, "repdistiller", "resnet8", cifar_like, storage=tmp_path / "runs")
    assert resolve_spec_teachers("imported", store, ["resnet8"], "synthetic") == {"resnet8": folder}
    assert resolve_spec_teachers("train", store, ["resnet8"], "synthetic") == {}
    assert resolve_spec_teachers({"resnet8": folder.name}, store, ["resnet8", "resnet14"], "synthetic") == {
        "resnet8": folder}
    with pytest.raises(ConfigError, match=r"teachers.from.resnet8: .* is a teacher for 'synthetic', the spec's data "
                                          r"is 'digits'"):
        resolve_spec_teachers({"resnet8": str(folder)}, store, ["resnet8"], "digits")
    with pytest.raises(ConfigError, match=r"teachers.from.resnet14: .* holds a finished 'resnet8'"):
        resolve_spec_teachers({"resnet14": str(folder)}, store, ["resnet14"], "synthetic")
    other = tmp_path / "other.pth"
    torch.save({"model": random_checkpoint(FIXTURES["repdistiller"]["resnet8"], seed=9)}, other)
    import_teacher(other, "repdistiller", "resnet8", cifar_like, storage=tmp_path / "runs")
    with pytest.raises(ConfigError, match=r"has 2 imported resnet8 teachers .*name one: teachers.from: \{resnet8: FOLDER\}"):
        resolve_spec_teachers("imported", store, ["resnet8"], "synthetic")
