"""Spec numbers follow YAML 1.2 (`3e-4`, `1e2`, `.5` are floats), with the safe loader, the
duplicate-key refusal and the size limits kept."""

from __future__ import annotations

import math

import pytest

from dfa_ray.cli import parse_assignments
from dfa_ray.errors import ConfigError
from dfa_ray.spec import MAX_SPEC_BYTES, load_spec, yaml_value

HEAD = "name: y\npairs: [{teacher: resnet14, student: resnet8}]\n"


def spec_file(tmp_path, body: str):
    path = tmp_path / "spec.yaml"
    path.write_text(HEAD + body)
    return path


@pytest.mark.parametrize("text,value", [
    ("3e-4", 3e-4), ("5e-4", 5e-4), ("1e2", 100.0), (".5", 0.5), ("-2.5E+3", -2500.0), ("1.", 1.0),
    ("+1e-2", 0.01), ("0.05", 0.05),
])
def test_floats_as_written(text, value):
    got = yaml_value(text)
    assert type(got) is float and got == value


@pytest.mark.parametrize("text,value", [("12", 12), ("012", 12), ("0x1F", 31), ("0o17", 15), ("-3", -3), ("+7", 7)])
def test_integers_are_yaml_12(text, value):
    got = yaml_value(text)
    assert type(got) is int and got == value


def test_yaml_11_oddities_are_strings_now():
    # YAML 1.1 reads 1:30 as 90 (base 60) and 1_000 as 1000; YAML 1.2 as strings
    assert yaml_value("1:30") == "1:30" and yaml_value("1_000") == "1_000"
    assert math.isinf(yaml_value(".inf")) and yaml_value("-.inf") < 0 and math.isnan(yaml_value(".nan"))
    assert yaml_value("true") is True and yaml_value("null") is None and yaml_value("e5") == "e5"


def test_spec_numbers_validate_as_floats(tmp_path):
    spec = load_spec(spec_file(tmp_path, "recipe: {lr: 5e-2, weight_decay: 5e-4}\n"
                                         "search:\n  options: {arch_lr: 3e-4, lam: 1e2, gamma_ts: .5}\n"))
    assert spec.search.options == {"arch_lr": 3e-4, "lam": 100.0, "gamma_ts": 0.5}
    assert all(type(v) is float for v in spec.search.options.values())
    assert spec.recipe == {"lr": 0.05, "weight_decay": 5e-4} and type(spec.recipe["lr"]) is float
    space = load_spec(spec_file(tmp_path, "search:\n  space: {arch_lr: {loguniform: [1e-4, 1e-2]}}\n")).search.space
    assert space["arch_lr"].values == (1e-4, 1e-2)


def test_set_on_the_command_line_reads_numbers_the_same_way():
    assert parse_assignments(["lr=5e-4", "epochs=1e2", "x=.5", "name=crd"], "--set") == {
        "lr": 5e-4, "epochs": 100.0, "x": 0.5, "name": "crd"}


def test_safety_is_kept(tmp_path):
    with pytest.raises(ConfigError, match="found duplicate key 'search'"):
        load_spec(spec_file(tmp_path, "search: {epochs: 2}\nsearch: {epochs: 3}\n"))
    with pytest.raises(ConfigError, match="is a YAML tag that builds objects"):
        load_spec(spec_file(tmp_path, "recipe: !!python/object/apply:os.system ['true']\n"))
    big = tmp_path / "big.yaml"
    big.write_text(HEAD + "#" * MAX_SPEC_BYTES)
    with pytest.raises(ConfigError, match="a spec is at most"):
        load_spec(big)
    laughs = "a: &a [1e2, 1e2, 1e2, 1e2, 1e2, 1e2, 1e2, 1e2, 1e2, 1e2]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcde", "bcdef"))
    with pytest.raises(ConfigError, match="more than 100000 values"):
        load_spec(spec_file(tmp_path, laughs))
    with pytest.raises(ConfigError, match=r"spec\.yaml:3:.*has 5000 digits"):
        load_spec(spec_file(tmp_path, "seed: " + "9" * 5000 + "\n"))
