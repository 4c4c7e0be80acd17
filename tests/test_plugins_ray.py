"""A plug-in model from a module outside the package, in a real local-Ray sweep whose teacher
was imported from a RepDistiller checkpoint (not trained), run through the public API from a
YAML spec written with YAML 1.2 numbers.

The plug-in lives in a folder of this test's own (not in the package, not installed); it is on
PYTHONPATH before the local Ray starts, as a cluster would ship it (docs/plugins.md). It
appends the id of every process that imports it to a file beside it, so the test sees that
the search and distillation trials (Ray worker processes) imported it themselves.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest
import torch  # noqa: F401  (torch before ray)

from raytest import local_ray

pytestmark = pytest.mark.ray

PLUGIN = "dfa_ray_test_plugin_tinynet"
PLUGIN_SOURCE = '''
"""A user's own model: three groups of one conv-BN-ReLU block each (8, 16, 32 channels)."""
import os
from pathlib import Path

import torch
from torch import nn

import dfa_ray
from dfa_ray.models import GroupedModel
from dfa_ray.models.base import GroupedBlock

with open(Path(__file__).with_suffix(".pids"), "a") as f:
    f.write(f"{os.getpid()}\\n")


class Unit(GroupedBlock):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.final_act = nn.ReLU()

    def forward_pre(self, x):
        return self.bn(self.conv(x))


class TinyNet(GroupedModel):
    def __init__(self, num_classes, in_channels):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        cin = 8
        for g, width in enumerate((8, 16, 32)):
            self.groups.append(nn.ModuleList([Unit(cin, width, 1 if g == 0 else 2)]))
            cin = width
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)
        self._declare_groups(channels=(8, 16, 32), strides=(1, 2, 4))
        self.min_size = 4

    def forward_head(self, h, pre_logits=False):
        h = torch.flatten(self.pool(h), 1)
        return h if pre_logits else self.fc(h)


@dfa_ray.register_model("plugin_tinynet")
def plugin_tinynet(num_classes=100, in_channels=3):
    return TinyNet(num_classes, in_channels)
'''


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user_code")
    (folder / f"{PLUGIN}.py").write_text(textwrap.dedent(PLUGIN_SOURCE))
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(folder), *([old] if old else [])])
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def ray_cluster(plugin_dir):
    with local_ray("dfa-ray-plugins-") as ray:  # started after PYTHONPATH names the plug-in
        yield ray


def repdistiller_resnet8_for_digits(path):
    """A RepDistiller-format checkpoint of a resnet8 for digits (10 classes, 1 channel), with
    RepDistiller's parameter names (tests/data) and random weights."""
    from dfa_ray.importer import FAMILY_RULES, SourceInfo
    from dfa_ray.models import create_model

    names = [k for k, _ in json.loads((__import__("pathlib").Path(__file__).parent / "data" /
                                       "repdistiller_state_dict_keys.json").read_text())["models"]["resnet8"]]
    ours = create_model("resnet8", num_classes=10, in_channels=1).state_dict()
    info = SourceInfo(frozenset(names))
    state = {k: ours[FAMILY_RULES["resnet"](k, info)].clone() for k in names}
    torch.save({"epoch": 240, "model": state, "accuracy": torch.tensor(12.5)}, path)


def test_plugin_model_and_imported_teacher_in_a_real_sweep(ray_cluster, plugin_dir, tmp_path):
    import dfa_ray

    storage = tmp_path / "runs"
    ckpt = tmp_path / "ckpt_epoch_240.pth"
    repdistiller_resnet8_for_digits(ckpt)
    digits = dfa_ray.load_dataset("digits")
    folder, metrics = dfa_ray.import_teacher(ckpt, "repdistiller", "resnet8", digits, storage=storage)
    stamp = (folder / "checkpoint.pt").stat().st_mtime_ns

    spec_path = tmp_path / "plugin.yaml"
    spec_path.write_text(textwrap.dedent(f"""\
        name: plugin-sweep
        storage: {storage}
        plugins: [{PLUGIN}]
        data: {{name: digits}}
        protocol: quick
        recipe: {{epochs: 1, batch_size: 256, lr: 5e-2, weight_decay: 5e-4}}
        teachers: {{from: imported}}
        pairs: [{{teacher: resnet8, student: plugin_tinynet}}]
        search:
          epochs: 1
          num_samples: 1
          scheduler: {{type: fifo}}
          options: {{arch_lr: 3e-4, batch_size: 128}}
        distill: {{methods: [kd, dfa], seeds: [0], epochs: 1}}
        resources: {{cpu: 1, gpu: 0, max_concurrent: 2, max_failures: 0}}
        """))
    spec = dfa_ray.load_spec(spec_path)
    assert spec.search.options["arch_lr"] == 3e-4 and isinstance(spec.recipe["lr"], float)
    lines: list[str] = []
    outcome = dfa_ray.run_sweep(spec_path, log=lines.append)

    assert any(f"teacher resnet8: taken from the store ({folder})" in line for line in lines), lines
    assert not any("training" in line and "teacher(s)" in line for line in lines)
    assert (folder / "checkpoint.pt").stat().st_mtime_ns == stamp  # used as it is, not retrained
    epochs, trials = dfa_ray.load_results(outcome.sweep_dir)
    assert set(trials.stage) == {"search", "distill"}  # no teacher trial
    assert (trials.status == "completed").all(), trials[["stage", "method", "status"]]
    assert set(trials.student) == {"plugin_tinynet"} and set(trials.teacher) == {"resnet8"}
    assert sorted(trials[trials.stage == "distill"].method) == ["dfa", "kd"]
    assert trials[trials.stage == "distill"].test_acc_last.notna().all()
    assert json.loads(trials[trials.stage == "distill"].iloc[0].config)["teacher_path"] == str(folder)
    assert outcome.genotypes["resnet8->plugin_tinynet"]["groups"]

    pids = {int(p) for p in (plugin_dir / f"{PLUGIN}.pids").read_text().split()}
    assert os.getpid() in pids  # the driver imported it before validating the spec
    assert pids - {os.getpid()}, "no Ray worker imported the plug-in"
