"""The public API: `import dfa_ray` is light, its documented entry points exist with docstrings,
the registration decorators work, and a spec's plug-ins are imported before validation.
(A whole sweep through the API runs in tests/test_plugins_ray.py.)"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import dfa_ray
from dfa_ray.errors import ConfigError

@pytest.fixture(autouse=True)
def _restore_registries():
    """What a test here registers is gone afterwards: the zoo and dataset tables of other test
    modules list exactly the built-in entries."""
    from dfa_ray.data import DATASETS
    from dfa_ray.engine.methods import METHODS
    from dfa_ray.models import MODELS

    saved = [(r, dict(r._entries)) for r in (MODELS, DATASETS, METHODS)]
    yield
    for registry, entries in saved:
        registry._entries = entries


ENTRY_POINTS = ["run_sweep", "load_spec", "parse_spec", "load_results", "create_model", "check_model",
                "register_model", "register_dataset", "register_method", "import_plugins", "import_teacher",
                "load_dataset", "load_teacher"]


def test_import_is_light():
    """Neither torch nor Ray is imported by `import dfa_ray` (a fresh interpreter)."""
    code = ("import sys, dfa_ray; print(dfa_ray.__version__); "
            "print(sorted(m for m in ('torch', 'ray', 'pandas', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == dfa_ray.__version__ and out[1] == "[]"


def test_version_matches_the_installed_distribution():
    assert dfa_ray.__version__ == importlib.metadata.version("dfa-ray")


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_entry_points_are_documented(name):
    obj = getattr(dfa_ray, name)
    assert callable(obj) and obj.__doc__ and len(obj.__doc__.strip()) > 40
    assert name in dfa_ray.__all__ and name in dir(dfa_ray)


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="no attribute 'run_sweeps'"):
        dfa_ray.run_sweeps  # noqa: B018


class _Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride, 1)
        self.final_act = nn.ReLU()

    def forward_pre(self, x):
        return self.conv(x)

    def forward(self, x):
        return self.final_act(self.forward_pre(x))


def _tiny(num_classes=100, in_channels=3, lie_about_channels=False):
    from dfa_ray.models import GroupedModel

    class Tiny(GroupedModel):
        def __init__(self):
            super().__init__()
            self.groups.append(nn.ModuleList([_Block(in_channels, 4, 1)]))
            self.groups.append(nn.ModuleList([_Block(4, 8, 2), _Block(8, 8, 1)]))
            self.fc = nn.Linear(8, num_classes)
            self._declare_groups(channels=(4, 9 if lie_about_channels else 8), strides=(1, 2))
            self.min_size = 2

        def forward_head(self, h, pre_logits=False):
            h = h.mean((2, 3))
            return h if pre_logits else self.fc(h)

    return Tiny()


def test_register_model_and_check_its_contract():
    from dfa_ray.models import MODELS, create_model

    @dfa_ray.register_model
    def api_test_tiny(num_classes=100, in_channels=3):
        return _tiny(num_classes, in_channels)

    @dfa_ray.register_model("api_test_liar")
    def liar(num_classes=100, in_channels=3):
        return _tiny(num_classes, in_channels, lie_about_channels=True)

    assert "api_test_tiny" in MODELS and "api_test_liar" in MODELS
    net = create_model("api_test_tiny", num_classes=7, in_channels=1)
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 7)
    dfa_ray.check_model("api_test_tiny", num_classes=7, in_channels=1)
    with pytest.raises(ConfigError, match=r"group 1 block 0 output has shape \(2, 8, 16, 16\), group_info promises "
                                          r"\(2, 9, 16, 16\)"):
        dfa_ray.check_model("api_test_liar")
    with pytest.raises(ValueError, match="registered twice"):
        dfa_ray.register_model("api_test_tiny")(api_test_tiny)
    for name in MODELS.names():  # the zoo keeps the contract too (a few, to stay fast)
        if name in ("resnet8", "wrn_16_1", "vgg8", "MobileNetV2", "ShuffleV2"):
            dfa_ray.check_model(name)


def test_register_dataset():
    from dfa_ray.data import DATASETS, Dataset, DatasetInfo, ImageSet

    @dfa_ray.register_dataset("api_test_blobs")
    class Blobs:
        def default_root(self):
            return None

        def is_present(self, root):
            return True

        def describe(self):
            return "two classes of constant images"

        def load(self, root=None, download=False, **options):
            images = torch.cat([torch.zeros(4, 1, 8, 8), torch.full((4, 1, 8, 8), 255.0)]).to(torch.uint8)
            labels = torch.tensor([0] * 4 + [1] * 4)
            split = ImageSet(images, labels)
            return Dataset(DatasetInfo("api_test_blobs", 2, 1, 8, (0.5,), (0.5,), crop_padding=1), split, split)

    assert "api_test_blobs" in DATASETS
    data = dfa_ray.load_dataset("api_test_blobs")
    assert data.info.num_classes == 2 and len(data.train) == 8


def test_register_method_is_the_engine_s():
    from dfa_ray.engine.methods import register_method

    assert dfa_ray.register_method.__doc__ and callable(register_method)
    with pytest.raises(TypeError, match="needs a `name`"):
        dfa_ray.register_method(type("NoName", (), {"name": ""}))


def test_spec_plugins_are_imported_before_validation(tmp_path, monkeypatch):
    (tmp_path / "api_test_plugin_ok.py").write_text(textwrap.dedent("""
        import dfa_ray
        from test_api import _tiny

        @dfa_ray.register_model("api_test_from_spec")
        def f(num_classes=100, in_channels=3):
            return _tiny(num_classes, in_channels)
        """))
    (tmp_path / "api_test_plugin_broken.py").write_text("import dfa_ray\nraise RuntimeError('half written')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    pairs = [{"teacher": "resnet8", "student": "api_test_from_spec"}]
    spec = dfa_ray.parse_spec({"name": "p", "plugins": ["api_test_plugin_ok"], "pairs": pairs})
    assert spec.plugins == ("api_test_plugin_ok",) and spec.pairs[0].student == "api_test_from_spec"
    assert spec.to_dict()["plugins"] == ["api_test_plugin_ok"]
    with pytest.raises(ConfigError, match=r"plugins\[0\] 'no_such_mod_xyz': no module of that name"):
        dfa_ray.parse_spec({"name": "p", "plugins": ["no_such_mod_xyz"], "pairs": pairs})
    with pytest.raises(ConfigError, match=r"plugins\[1\] 'api_test_plugin_broken': importing it failed: "
                                          r"RuntimeError: half written \(.*api_test_plugin_broken.py:2\)"):
        dfa_ray.parse_spec({"name": "p", "plugins": ["api_test_plugin_ok", "api_test_plugin_broken"], "pairs": pairs})
    with pytest.raises(ConfigError, match=r"plugins\[0\] 'os; rm': not a module name"):
        dfa_ray.parse_spec({"name": "p", "plugins": ["os; rm"], "pairs": pairs})


def test_run_sweep_takes_a_spec_a_mapping_or_a_path(tmp_path, monkeypatch):
    """Without starting Ray: the three forms reach the sweep as the same validated spec."""
    import dfa_ray.sweep

    seen = []
    monkeypatch.setattr(dfa_ray.sweep, "run_sweep", lambda spec, **kw: seen.append((spec, kw)) or "outcome")
    data = {"name": "api", "pairs": [{"teacher": "resnet14", "student": "resnet8"}]}
    path = tmp_path / "api.yaml"
    path.write_text("name: api\npairs: [{teacher: resnet14, student: resnet8}]\n")
    storage = tmp_path / "store"
    assert dfa_ray.run_sweep(data, storage=storage) == "outcome"
    dfa_ray.run_sweep(path, storage=storage, overrides={"search.epochs": 3}, address="auto")
    dfa_ray.run_sweep(dfa_ray.load_spec(path), storage=storage)
    specs = [s for s, _ in seen]
    assert all(s.storage == storage for s in specs)
    assert [s.search.epochs for s in specs] == [6, 3, 6] and seen[1][1]["address"] == "auto"
    assert specs[0] == specs[2]
