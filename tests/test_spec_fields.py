"""The spec's typed option models and its newer fields: a bad search option, recipe field or
method option is reported by the model itself at its field path; `distill.share_teacher` and
the `run:` section (loggers, their options, Tune callbacks) with their defaults and errors."""

from __future__ import annotations

import copy
import sys
import textwrap
from typing import Any

import pytest

from dfa_ray import spec_checks
from dfa_ray.dfa.options import SearchOptions
from dfa_ray.engine.recipes import Recipe, get_recipe
from dfa_ray.errors import ConfigError
from dfa_ray.option_models import FIELD_ERRORS
from dfa_ray.spec import MlflowOptions, NoLoggerOptions, WandbOptions, apply_overrides, parse_spec

BASE: dict[str, Any] = {"name": "fields", "pairs": [{"teacher": "resnet20", "student": "resnet8"}]}


def problems(overrides: dict[str, Any], base: dict[str, Any] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_spec(apply_overrides(base or BASE, overrides))
    return [line.strip() for line in str(info.value).splitlines()[1:]]


# --- bad option values, at their field path, from the models ------------------------------
@pytest.mark.parametrize("overrides, expected", [
    ({"search.options.gamma_ts": "big"}, "search.options.gamma_ts: must be a finite number (got 'big')"),
    ({"search.options.arch_betas": [0.5, 1.5]},
     "search.options.arch_betas: must be two numbers in [0, 1), e.g. [0.5, 0.999] (got [0.5, 1.5])"),
    ({"search.options.lr": 0.01, "search.options.lr_min": 0.1},
     "search.options.lr_min: must be a number <= lr (0.01) (got 0.1)"),
    ({"search.space.lam": {"choice": [1, 10, -1]}}, "search.space.lam.choice[2]: must be a number >= 0 (got -1)"),
    ({"search.space.arch_fraction": {"uniform": [0.2, 1.0]}},
     "search.space.arch_fraction.uniform[1]: must be a number strictly between 0 and 1 (got 1.0)"),
    ({"search.space.lr": {"choice": [0.1, 0.0001]}},
     "search.space.lr.choice[1]: makes search option lr_min invalid: it must be a number <= lr (0.0001) "
     "(it is 0.001) (got 0.0001)"),
    ({"recipe.lr": -0.1}, "recipe.lr: must be a number > 0 (got -0.1)"),
    ({"recipe.epochs": True}, "recipe.epochs: must be an integer >= 1 (got True)"),
    ({"recipe.milestones": [0.5, 2]},
     "recipe.milestones: must be a list of fractions of the epochs, each in (0, 1), e.g. [0.5, 0.75] (got [0.5, 2])"),
    ({"recipe.name": "crd"}, "recipe.name: the recipe's name is its protocol; set `protocol` instead (got 'crd')"),
    ({"teachers.recipe.crop": "centre"}, "teachers.recipe.crop: must be pad | resized (got 'centre')"),
    ({"distill.options.kd.temperature": 0}, "distill.options.kd.temperature: must be a number > 0 (got 0)"),
    ({"distill.options.kd.T": 4},
     "distill.options.kd.T: unknown option 'T' of method kd; valid options: w_ce, w_kl, temperature"),
])
def test_bad_option_values_are_reported_at_their_field_path(overrides, expected):
    assert expected in problems(overrides)


def test_every_bad_option_is_reported_at_once():
    lines = problems({"search.options.rho": "x", "search.options.order": 3, "recipe.lr": 0, "recipe.flip": "maybe"})
    assert [line.split(":")[0] for line in lines] == [
        "recipe.lr", "recipe.flip", "search.options.rho", "search.options.order"]


def test_models_outside_the_spec_raise_one_config_error():
    with pytest.raises(ConfigError, match=r"^search option lam=-1 is invalid; allowed: a number >= 0$"):
        SearchOptions.model_validate({"lam": -1})
    with pytest.raises(ConfigError, match=r"^recipe 'quick': momentum = 1.0 is invalid; allowed: a number in \[0, 1\)$"):
        get_recipe("quick", {"momentum": 1.0})
    with pytest.raises(ConfigError, match="recipe field epochs is required"):
        Recipe(name="x", batch_size=1, lr=0.1)
    # the spec's context gets pydantic's own error, with the location
    with pytest.raises(Exception) as info:
        SearchOptions.model_validate({"lam": -1}, context=FIELD_ERRORS)
    assert info.value.errors()[0]["loc"] == ("lam",)


def test_recorded_options_and_recipes_parse_back_from_json():
    import json

    options = SearchOptions(arch_betas=(0.9, 0.99), derive="topk:2", lam=3)
    record = json.loads(json.dumps(options.model_dump(mode="json")))
    assert record["arch_betas"] == [0.9, 0.99]
    assert SearchOptions.model_validate(record) == options and SearchOptions.model_validate(record).arch_betas == (0.9, 0.99)
    recipe = get_recipe("crd", {"epochs": 24, "milestones": "0.5,0.75", "padding": "none"})
    assert recipe.milestones == (0.5, 0.75) and recipe.milestone_epochs() == [12, 18] and recipe.padding is None
    again = Recipe.model_validate(json.loads(json.dumps(recipe.model_dump(mode="json"))))
    assert again == recipe and isinstance(again.milestones, tuple)
    # what the sweep driver and trials still call (aliases until the sweep rewrite)
    assert SearchOptions.model_validate(options.model_dump(mode="json")) == options and Recipe(**recipe.model_dump(mode="json")) == recipe


# --- distill.share_teacher -------------------------------------------------------------------
def test_share_teacher_defaults_to_true_and_is_a_strict_bool():
    assert parse_spec(BASE).distill.share_teacher is True
    assert parse_spec(apply_overrides(BASE, {"distill.share_teacher": False})).distill.share_teacher is False
    assert problems({"distill.share_teacher": "no"}) == [
        "distill.share_teacher: Input should be a valid boolean (got 'no')"]


# --- run: loggers, logger options, callbacks ---------------------------------------------------
@pytest.fixture
def installed(monkeypatch):
    """Which logger packages count as installed (the machine's own set must not decide a test)."""
    present: set[str] = set()
    monkeypatch.setattr(spec_checks, "installed", lambda package: package in present)
    return present


def test_run_defaults_are_empty():
    run = parse_spec(BASE).run
    assert run.loggers == () and run.callbacks == ()
    assert run.options_for("mlflow") == MlflowOptions() and run.logger_kwargs("wandb") == {
        "tags": [], "excludes": [], "log_config": False, "upload_checkpoints": False}
    assert parse_spec(BASE).to_dict()["run"]["logger_options"] == {
        "csv": None, "json": None, "tensorboard": None, "mlflow": None, "wandb": None}


def test_loggers_with_their_options(installed):
    installed.update({"mlflow", "wandb"})
    spec = parse_spec(apply_overrides(BASE, {
        "run.loggers": ["csv", "json", "mlflow", "wandb"],
        "run.logger_options": {"json": {}, "mlflow": {"tracking_uri": "file:///tmp/ml", "experiment_name": "dfa",
                                                      "tags": {"who": "me"}},
                               "wandb": {"project": "dfa", "group": "g1", "mode": "offline"}},
    }))
    assert spec.run.loggers == ("csv", "json", "mlflow", "wandb")
    assert spec.run.logger_kwargs("mlflow") == {"tracking_uri": "file:///tmp/ml", "experiment_name": "dfa",
                                                "tags": {"who": "me"}, "save_artifact": False,
                                                "log_params_on_trial_end": False}
    wandb = spec.run.options_for("wandb")
    assert isinstance(wandb, WandbOptions) and (wandb.project, wandb.group, wandb.mode) == ("dfa", "g1", "offline")
    assert spec.run.options_for("json") == NoLoggerOptions()
    assert parse_spec(spec.to_dict()) == spec  # `json` keeps its YAML name through the round trip


@pytest.mark.parametrize("overrides, expected", [
    ({"run.loggers": ["csv", "neptune"]},
     "run.loggers[1]: Input should be 'csv', 'json', 'tensorboard', 'mlflow' or 'wandb' (got 'neptune')"),
    ({"run.loggers": ["csv", "csv"]}, "run.loggers[1]: duplicate of loggers[0] (got 'csv')"),
    ({"run.loggers": ["mlflow"], "run.logger_options.mlflow.tracking_url": "x"},
     "run.logger_options.mlflow.tracking_url: unknown key 'tracking_url'; allowed keys: tracking_uri, registry_uri"),
    ({"run.loggers": ["wandb"], "run.logger_options.wandb.mode": "cloud"},
     "run.logger_options.wandb.mode: Input should be 'online', 'offline' or 'disabled' (got 'cloud')"),
    ({"run.loggers": ["csv"], "run.logger_options.csv.path": "x"},
     "run.logger_options.csv.path: unknown key 'path'; this section takes no keys"),
    ({"run.logger_options.comet": {}}, "run.logger_options.comet: unknown key 'comet'; allowed keys: csv, json, "
                                       "tensorboard, mlflow, wandb"),
    ({"run.loggers": ["csv"], "run.logger_options.mlflow": {"experiment_name": "x"}},
     "run.logger_options.mlflow: options for logger 'mlflow', which is not in run.loggers"),
])
def test_logger_mistakes_name_the_field(installed, overrides, expected):
    installed.update({"mlflow", "wandb", "tensorboardX"})
    lines = problems(overrides)
    assert any(line.startswith(expected) for line in lines), lines


@pytest.mark.parametrize("logger, package", [("tensorboard", "tensorboardX"), ("mlflow", "mlflow"), ("wandb", "wandb")])
def test_a_logger_whose_package_is_missing_names_the_extra(installed, logger, package):
    assert problems({"run.loggers": ["csv", logger]}) == [
        f"run.loggers[1]: logger '{logger}' needs the {package} package, which is not installed: "
        f"pip install 'dfa-ray[{logger}]' (got '{logger}')"]
    installed.add(package)
    assert parse_spec(apply_overrides(BASE, {"run.loggers": ["csv", logger]})).run.loggers == ("csv", logger)


def test_callbacks_must_import_and_be_tune_callbacks(tmp_path, monkeypatch):
    (tmp_path / "spec_cb_mod.py").write_text(textwrap.dedent("""
        from ray.tune import Callback

        class Counts(Callback):
            pass

        class NotOne:
            pass
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "spec_cb_mod", raising=False)
    spec = parse_spec(apply_overrides(BASE, {"run.callbacks": ["spec_cb_mod:Counts"]}))
    assert spec.run.callbacks == ("spec_cb_mod:Counts",)
    assert problems({"run.callbacks": ["spec_cb_mod:Counts", "spec_cb_mod.Counts"]}) == [
        "run.callbacks[1]: must be an import path package.module:ClassName (got 'spec_cb_mod.Counts')"]
    lines = problems({"run.callbacks": ["spec_cb_mod:NotOne", "spec_cb_mod:Missing", "no_such_pkg_xyz.mod:C"]})
    assert lines[0] == "run.callbacks[0]: spec_cb_mod:NotOne is not a ray.tune.Callback subclass (got 'spec_cb_mod:NotOne')"
    assert lines[1] == "run.callbacks[1]: module 'spec_cb_mod' has no 'Missing' (got 'spec_cb_mod:Missing')"
    assert lines[2].startswith("run.callbacks[2]: cannot import module 'no_such_pkg_xyz.mod' (ModuleNotFoundError:")
    assert "install it or add its folder to PYTHONPATH" in lines[2]


def test_no_callbacks_no_ray_import():
    import subprocess

    code = ("import sys; from dfa_ray.spec import parse_spec; "
            "parse_spec({'name': 'x', 'pairs': [{'teacher': 'resnet20', 'student': 'resnet8'}]}); "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_base_is_untouched():
    before = copy.deepcopy(BASE)
    parse_spec(apply_overrides(BASE, {"run.loggers": ["csv"]}))
    assert BASE == before
