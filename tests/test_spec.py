"""The sweep spec: valid specs round-trip, every mistake is one ConfigError naming the field,
the value and what is allowed, and no input (however broken) escapes as another exception."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dfa_ray.errors import ConfigError
from dfa_ray.spec import (
    Distribution,
    SweepSpec,
    apply_overrides,
    load_spec,
    parse_spec,
    safe_name,
    tune_space,
)

VALID: dict[str, Any] = {
    "name": "quickstart",
    "storage": "./runs",
    "data": {"name": "digits", "root": None, "options": {}},
    "protocol": "quick",
    "recipe": {"epochs": 10},
    "teachers": {"seed": 0, "recipe": {"lr": 0.1}},
    "pairs": [
        {"teacher": "resnet20", "student": "resnet8"},
        {"teacher": "wrn_16_2", "student": "wrn_16_1"},
    ],
    "search": {
        "enabled": True,
        "epochs": 6,
        "options": {"lam": 5.0},
        "space": {
            "gamma_ts": {"loguniform": [0.1, 10]},
            "rho": {"uniform": [0.0, 0.5]},
            "order": {"randint": [1, 2]},
            "schedule": {"choice": ["groupwise", "joint"]},
        },
        "num_samples": 4,
        "scheduler": {"type": "asha", "grace_period": 2, "reduction_factor": 2},
        "searcher": "random",
        "metric": "val_acc",
        "seed": 0,
    },
    "distill": {
        "methods": ["vanilla", "kd", "fitnet", "at", "dfa", "dfa:last"],
        "seeds": [0, 1],
        "epochs": None,
        "options": {"kd": {"temperature": 4}},
    },
    "resources": {"cpu": 1, "gpu": 0.25, "max_concurrent": 2, "max_failures": 2},
}


def valid() -> dict[str, Any]:
    return copy.deepcopy(VALID)


def write(tmp_path: Path, data: Any, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def config_error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_spec(data)
    return str(info.value)


# --- valid specs --------------------------------------------------------------------------
def test_valid_spec_round_trips(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = load_spec(write(tmp_path, VALID))
    assert isinstance(spec, SweepSpec)
    assert spec.storage == tmp_path / "runs"
    assert [p.name for p in spec.pairs] == ["resnet20->resnet8", "wrn_16_2->wrn_16_1"]
    assert spec.search.space["gamma_ts"] == Distribution(kind="loguniform", values=(0.1, 10.0))
    assert spec.search.mode == "max"
    assert spec.resources.gpu == 0.25
    data = spec.to_dict()
    assert data["search"]["space"]["gamma_ts"] == {"loguniform": [0.1, 10.0]}
    assert data["storage"] == str(tmp_path / "runs")
    # through plain data and through YAML text again: the same spec
    assert parse_spec(data) == spec
    assert load_spec(write(tmp_path, data, "again.yaml")) == spec


def test_spec_is_frozen():
    spec = parse_spec(valid())
    with pytest.raises(ValidationError, match="frozen"):
        spec.name = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        spec.search.epochs = 1  # type: ignore[misc]


def test_defaults_filled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = parse_spec({"name": "mini", "pairs": [{"teacher": "resnet20", "student": "resnet8"}]})
    assert spec.storage == tmp_path / "runs"
    assert spec.sweep_dir == tmp_path / "runs" / "mini"
    assert spec.teacher_store == tmp_path / "runs" / "teachers"
    assert spec.data.name == "digits" and spec.data.root is None and spec.data.options == {}
    assert spec.protocol == "quick" and spec.recipe == {}
    assert spec.teachers.seed == 0
    assert spec.search.enabled and spec.search.epochs == 6 and spec.search.num_samples == 1
    assert spec.search.scheduler.type == "sha" and spec.search.scheduler.grace_period is None
    from dfa_ray.spec import first_rung

    assert first_rung(spec) == 2  # 6 search epochs / 3 groups: the first group's share
    assert spec.search.searcher == "random" and spec.search.metric == "val_acc"
    assert spec.search.space == {} and spec.search.options == {}
    assert spec.distill.methods == ("vanilla", "kd", "fitnet", "at", "dfa")
    assert spec.distill.seeds == (0,) and spec.distill.epochs is None
    assert spec.resources.cpu == 1.0 and spec.resources.gpu == 0.0
    assert spec.resources.max_concurrent is None and spec.resources.max_failures == 2


def test_relative_paths_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = valid()
    data["storage"] = "out/sweeps"
    data["data"]["root"] = "datasets"
    spec = parse_spec(data)
    assert spec.storage == tmp_path / "out" / "sweeps"
    assert spec.data.root == str(tmp_path / "datasets")


def test_storage_override(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, VALID)
    spec = load_spec(path, storage="elsewhere")
    assert spec.storage == tmp_path / "elsewhere"
    assert spec.sweep_dir == tmp_path / "elsewhere" / "quickstart"
    assert spec.teacher_store == tmp_path / "elsewhere" / "teachers"
    assert load_spec(path, storage="/abs/store").storage == Path("/abs/store")


def test_dotted_overrides(tmp_path):
    path = write(tmp_path, VALID)
    spec = load_spec(
        path,
        overrides={
            "search.epochs": 2,
            "pairs.0.student": "resnet14",
            "pairs[1].teacher": "wrn_40_2",
            "search.space.lam": {"choice": [1, 10]},
            "search.options": {},
            "distill.epochs": 3,
            "resources.gpu": 1,
        },
    )
    assert spec.search.epochs == 2
    assert spec.pairs[0].student == "resnet14"
    assert spec.pairs[1].teacher == "wrn_40_2"
    assert spec.search.space["lam"].values == (1, 10)
    assert spec.distill.epochs == 3 and spec.distill_recipe_overrides() == {"epochs": 3}
    assert spec.teacher_recipe_overrides() == {"epochs": 10, "lr": 0.1}
    assert spec.resources.gpu == 1.0
    # the file's data is not changed by the overrides
    assert load_spec(path).search.epochs == 6


def test_override_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"pairs.5.student.*list of 2; use an index 0..1"):
        apply_overrides(VALID, {"pairs.5.student": "x"})
    with pytest.raises(ConfigError, match=r"'name.x'.*name is not a mapping"):
        apply_overrides(VALID, {"name.x": 1})
    with pytest.raises(ConfigError, match=r"expected dotted keys"):
        apply_overrides(VALID, {"search..epochs": 1})
    # an override that creates an unknown key is caught by validation, with its path
    message = config_error(apply_overrides(VALID, {"search.epoch": 2}))
    assert "search.epoch: unknown key 'epoch'" in message and "epochs" in message


# --- invalid specs: one ConfigError naming field, value and what is allowed ---------------
def _set(path: str, value: Any) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        data.update(apply_overrides(data, {path: value}))

    return mutate


def _delete(path: str) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node[part]
        del node[last]

    return mutate


INVALID = {
    "unknown top-level key": (
        _set("colour", "red"),
        ["colour: unknown key 'colour'", "allowed keys: name, storage, data, protocol"],
    ),
    "unknown nested key": (
        _set("search.scheduler.grace", 2),
        ["search.scheduler.grace: unknown key", "allowed keys: type, grace_period, reduction_factor, early_rungs"],
    ),
    "unknown model": (
        _set("pairs.1.student", "resnet9"),
        ["pairs[1].student: unknown model 'resnet9'", "did you mean 'resnet8'", "valid models:", "resnet8x4", "wrn_40_2", "(got 'resnet9')"],
    ),
    "teacher equals student": (
        _set("pairs.0.student", "resnet20"),
        ["pairs[0]: teacher and student are the same model 'resnet20'"],
    ),
    "duplicate pair": (
        _set("pairs.1", {"teacher": "resnet20", "student": "resnet8"}),
        ["pairs[1]: duplicate of pairs[0]", "resnet20->resnet8"],
    ),
    "empty pairs": (_set("pairs", []), ["pairs: must have at least 1 item"]),
    "missing pairs": (_delete("pairs"), ["pairs: required field is missing"]),
    "missing name": (_delete("name"), ["name: required field is missing"]),
    "negative epochs": (_set("search.epochs", -3), ["search.epochs:", "greater than or equal to 1", "(got -3)"]),
    "zero distill epochs": (_set("distill.epochs", 0), ["distill.epochs:", "greater than or equal to 1", "(got 0)"]),
    "huge epochs": (_set("search.epochs", 10**9), ["search.epochs:", "less than or equal to 100000"]),
    "huge recipe epochs": (_set("recipe.epochs", 10**9), ["recipe.epochs: must be at most 100000", "(got 1000000000)"]),
    "float epochs": (_set("search.epochs", 2.5), ["search.epochs: Input should be a valid integer", "(got 2.5)"]),
    "num_samples zero": (_set("search.num_samples", 0), ["search.num_samples:", "greater than or equal to 1"]),
    "loguniform lo <= 0": (
        _set("search.space.gamma_ts", {"loguniform": [0, 10]}),
        ["search.space.gamma_ts: loguniform needs 0 < lo < hi", "(got {'loguniform': [0, 10]})"],
    ),
    "uniform lo >= hi": (
        _set("search.space.rho", {"uniform": [0.5, 0.5]}),
        ["search.space.rho: uniform needs lo < hi"],
    ),
    "unknown distribution": (
        _set("search.space.rho", {"normal": [0, 1]}),
        ["search.space.rho: unknown distribution 'normal'", "allowed: choice, grid, uniform, loguniform, randint"],
    ),
    "randint floats": (
        _set("search.space.order", {"randint": [1.5, 2]}),
        ["search.space.order: randint bounds must be integers"],
    ),
    "empty choice": (_set("search.space.schedule", {"choice": []}), ["search.space.schedule: choice needs 1 to"]),
    "unknown search option": (
        _set("search.space.gamma", {"uniform": [0, 1]}),
        ["search.space.gamma: unknown search option", "valid options:", "gamma_ts", "gamma_st"],
    ),
    "unknown fixed search option": (
        _set("search.options.lamda", 1.0),
        ["search.options.lamda: unknown search option", "did you mean 'lam'", "valid options:"],
    ),
    "invalid fixed search option": (
        _set("search.options.reg", "l1"),
        ["search.options.reg: must be none | entropy | -entropy (got 'l1')"],
    ),
    "searched value outside what the option allows": (
        _set("search.space.order", {"choice": [1, 3]}),
        ["search.space.order.choice[1]: must be 1 (first-order) | 2 (second-order, unrolled) (got 3)"],
    ),
    "option both fixed and searched": (
        _set("search.options.rho", 0.1),
        ["search.space.rho: is also fixed in search.options"],
    ),
    "grid with optuna": (
        lambda d: (_set("search.searcher", "optuna")(d), _set("search.space.rho", {"grid": [0.0, 0.1]})(d)),
        ["search.space.rho: grid is not supported by searcher optuna"],
    ),
    "unknown searcher": (_set("search.searcher", "bayes"), ["search.searcher: Input should be 'random' or 'optuna'"]),
    "unknown scheduler": (_set("search.scheduler.type", "pbt"), ["search.scheduler.type: Input should be 'sha', 'asha' or 'fifo'"]),
    "grace period beyond epochs": (
        _set("search.scheduler.grace_period", 7),
        ["search.scheduler.grace_period: must be at most search.epochs (6)", "(got 7)"],
    ),
    "unknown method": (
        _set("distill.methods", ["kd", "magic"]),
        ["distill.methods[1]: unknown method", "valid methods:", "vanilla", "dfa:last", "dfa:average", "dfa:random", "(got 'magic')"],
    ),
    "unknown reference genotype": (
        _set("distill.methods", ["dfa:best"]),
        ["distill.methods[0]: unknown method", "dfa:random"],
    ),
    "duplicate method": (_set("distill.methods", ["kd", "kd"]), ["distill.methods[1]: duplicate of methods[0]"]),
    "empty methods": (_set("distill.methods", []), ["distill.methods: must have at least 1 item"]),
    "options for unknown method": (
        _set("distill.options.kdd", {"temperature": 4}),
        ["distill.options.kdd: options for an unknown method", "did you mean 'kd'"],
    ),
    "unknown method option": (
        _set("distill.options.kd.temperatur", 2),
        ["distill.options.kd.temperatur: unknown option 'temperatur' of method kd (did you mean 'temperature'?)",
         "valid options:", "temperature"],
    ),
    "invalid method option": (
        _set("distill.options.kd.temperature", -1),
        ["distill.options.kd.temperature: must be a number > 0 (got -1)"],
    ),
    "dfa without search": (
        _set("search.enabled", False),
        ["distill.methods: method 'dfa' distils with the searched genotype, but search.enabled is false"],
    ),
    "negative seed": (_set("distill.seeds", [0, -1]), ["distill.seeds[1]:", "greater than or equal to 0"]),
    "gpu < 0": (_set("resources.gpu", -0.5), ["resources.gpu:", "greater than or equal to 0", "(got -0.5)"]),
    "gpu not a fraction or whole": (
        _set("resources.gpu", 1.5),
        ["resources.gpu: gpu per trial is a fraction in [0, 1] or a whole number of GPUs"],
    ),
    "cpu zero": (_set("resources.cpu", 0), ["resources.cpu:", "greater than 0"]),
    "name with ../": (_set("name", "../escape"), ["name: the sweep name must be", "not starting with '.'", "(got '../escape')"]),
    "absolute name": (_set("name", "/etc/cron.d"), ["name: the sweep name must be", "(got '/etc/cron.d')"]),
    "name with slash": (_set("name", "a/b"), ["name: the sweep name must be"]),
    "dot-dot name": (_set("name", ".."), ["name: the sweep name must be"]),
    "storage URI": (_set("storage", "s3://bucket/x"), ["storage:", "URIs such as s3://... are not supported"]),
    "unknown dataset": (
        _set("data.name", "cifar1000"),
        ["data.name: unknown dataset 'cifar1000'", "valid datasets:", "cifar100", "digits"],
    ),
    "unknown protocol": (_set("protocol", "crd2"), ["protocol: unknown protocol", "valid protocols:", "overhaul"]),
    "unknown recipe field": (
        _set("recipe.learning_rate", 0.1),
        ["recipe.learning_rate: recipe field 'learning_rate' does not exist", "valid fields:", "batch_size"],
    ),
    "invalid teacher recipe": (
        _set("teachers.recipe.batch_size", 0),
        ["teachers.recipe.batch_size: must be an integer >= 1 (got 0)"],
    ),
    "section of the wrong type": (_set("search", [1, 2]), ["search: expected a mapping with keys enabled, epochs"]),
}


@pytest.mark.parametrize("case", list(INVALID), ids=list(INVALID))
def test_invalid_spec_names_field_value_and_allowed(case):
    mutate, expected = INVALID[case]
    data = valid()
    mutate(data)
    message = config_error(data)
    assert message.startswith("invalid sweep spec <spec>:")
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_all_problems_in_one_message():
    data = valid()
    data["pairs"][0]["student"] = "resnet9"
    data["search"]["epochs"] = 0
    data["resources"]["gpu"] = -1
    data["surprise"] = True
    lines = config_error(data).splitlines()[1:]
    assert [line.split(":")[0].strip() for line in lines] == [
        "pairs[0].student",
        "search.epochs",
        "resources.gpu",
        "surprise",
    ]


# --- the YAML file ----------------------------------------------------------------------
def test_yaml_python_tag_refused(tmp_path):
    marker = tmp_path / "pwned"
    text = yaml.safe_dump(VALID, sort_keys=False).replace(
        "name: quickstart", f"name: !!python/object/apply:os.system ['touch {marker}']"
    )
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    message = str(info.value)
    assert f"{path}:1:" in message
    assert "python/object/apply:os.system" in message and "safe loader" in message
    assert not marker.exists()


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "name: x\npairs:\n  - {teacher: resnet20, student: resnet8\nsearch: {}\n")
    with pytest.raises(ConfigError, match=rf"invalid YAML in spec file {path}:4:"):
        load_spec(path)


def test_yaml_duplicate_key_refused(tmp_path):
    path = write(tmp_path, "name: x\nsearch: {epochs: 2}\nsearch: {epochs: 3}\n")
    with pytest.raises(ConfigError, match=rf"{path}:3:.*duplicate key 'search'"):
        load_spec(path)


def test_yaml_anchors_and_merge_keys_allowed(tmp_path):
    text = (
        "name: x\n"
        "base: &b {teacher: resnet20, student: resnet8}\n"
    )
    # an unknown key is still an unknown key; but anchors, aliases and merges work
    path = write(tmp_path, text + "pairs: [*b, {<<: *b, student: resnet14}]\n")
    with pytest.raises(ConfigError, match="base: unknown key"):
        load_spec(path)
    path = write(tmp_path, "name: x\npairs: [&b {teacher: resnet20, student: resnet8}, {<<: *b, student: resnet14}]\n")
    assert [p.student for p in load_spec(path).pairs] == ["resnet8", "resnet14"]


def test_yaml_alias_bomb_refused(tmp_path):
    lines = ["name: x", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    path = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="more than 100000 values"):
        load_spec(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=rf"spec file {tmp_path / 'nope.yaml'} does not exist"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is not a file"):
        load_spec(tmp_path)


@pytest.mark.parametrize(
    "text, fragment",
    [("", "is empty"), ("- a\n- b\n", "must hold a YAML mapping"), ("just text", "must hold a YAML mapping")],
)
def test_file_that_is_not_a_spec(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_spec(write(tmp_path, text))


def test_binary_file_refused(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_spec(path)


# --- names that become paths --------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("resnet20->resnet8", "resnet20-to-resnet8"),
        ("quickstart", "quickstart"),
        ("trial_00001", "trial_00001"),
    ],
)
def test_safe_name_keeps_plain_names_readable(text, expected):
    assert safe_name(text) == expected


@pytest.mark.parametrize("text", ["../x", "/etc/passwd", "..", ".", "", "a/b", "a\\b", "x\x00y", "é" * 200, ".hidden"])
def test_safe_name_never_leaves_its_folder(text, tmp_path):
    name = safe_name(text)
    assert name and len(name) <= 105
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith(".")
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


def test_safe_name_distinct_inputs_stay_distinct():
    names = {safe_name(t) for t in ["a/b", "a_b", "a b", "a:b", "a\\b"]}
    assert len(names) == 5
    assert safe_name("a/b") == safe_name("a/b")


# --- Tune ---------------------------------------------------------------------------------
def test_tune_space_maps_each_kind():
    from ray import tune
    from ray.tune.search.sample import Categorical, Float, Integer

    spec = parse_spec(
        apply_overrides(VALID, {"search.options": {}, "search.space.lam": {"grid": [1, 10, 100]}})
    )
    space = tune_space(spec.search.space)
    assert set(space) == {"gamma_ts", "rho", "order", "schedule", "lam"}
    gamma = space["gamma_ts"]
    assert isinstance(gamma, Float) and (gamma.lower, gamma.upper) == (0.1, 10.0)
    assert type(gamma.get_sampler()).__name__ == "_LogUniform"
    rho = space["rho"]
    assert isinstance(rho, Float) and (rho.lower, rho.upper) == (0.0, 0.5)
    assert type(rho.get_sampler()).__name__ == "_Uniform"
    order = space["order"]  # randint [1, 2] in the spec includes 2: Tune's upper bound is 3
    assert isinstance(order, Integer) and (order.lower, order.upper) == (1, 3)
    assert set(order.sample(size=200)) == {1, 2}
    schedule = space["schedule"]
    assert isinstance(schedule, Categorical) and schedule.categories == ["groupwise", "joint"]
    assert space["lam"] == tune.grid_search([1, 10, 100]) == {"grid_search": [1, 10, 100]}


def test_tune_space_accepts_plain_yaml_and_refuses_bad_entries():
    from ray.tune.search.sample import Float

    assert isinstance(tune_space({"rho": {"uniform": [0, 1]}})["rho"], Float)
    with pytest.raises(ConfigError, match="rho: .*loguniform needs 0 < lo < hi"):
        tune_space({"rho": {"loguniform": [-1, 1]}})


# --- property: broken specs end in ConfigError, never another exception ---------------------
def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, prefix + (i,))
    return out


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 10**6, 10**12, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["resnet8", "resnet20", "dfa", "dfa:last", "../x", "/abs", "", "asha", "optuna", "grid"]),
    st.lists(st.integers(-5, 5), max_size=3),
    st.lists(st.text(max_size=4), max_size=3),
    st.just([]),
    st.just({}),
    st.dictionaries(st.text(max_size=6), st.integers(-3, 3), max_size=2),
    st.sampled_from([{"uniform": [1, 0]}, {"loguniform": [0, 1]}, {"randint": [0, 10**9]}, {"grid": [1, 2]}, {"choice": []}]),
)

MUTATION = st.tuples(st.sampled_from(["replace", "delete", "add_key", "empty"]), st.integers(0, 10**6), JUNK, st.text(max_size=8))


def _mutate(data: dict, mutation: tuple) -> None:
    kind, index, junk, key = mutation
    paths = [p for p in _paths(data) if p]
    if not paths:
        return
    path = paths[index % len(paths)]
    parent: Any = data
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if kind == "replace":
        parent[last] = copy.deepcopy(junk)
    elif kind == "delete":
        if isinstance(parent, dict):
            del parent[last]
        else:
            parent.pop(last)
    elif kind == "add_key":
        target = parent[last] if isinstance(parent[last], dict) else parent
        if isinstance(target, dict):
            target[key] = copy.deepcopy(junk)
    elif kind == "empty":
        value = parent[last]
        parent[last] = type(value)() if isinstance(value, (dict, list, str)) else None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(MUTATION, min_size=1, max_size=3))
def test_broken_specs_give_config_error_only(mutations):
    data = valid()
    for mutation in mutations:
        _mutate(data, mutation)
    try:
        spec = parse_spec(data)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("invalid sweep spec") and len(message.splitlines()) >= 2
    else:
        assert isinstance(spec, SweepSpec)
        assert spec.sweep_dir.parent == spec.storage
        assert parse_spec(spec.to_dict()) == spec


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_gives_config_error_only(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("spec") / "spec.yaml"
    path.write_bytes(text.encode("utf-8", "replace"))
    try:
        load_spec(path)
    except ConfigError:
        pass
