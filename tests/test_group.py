"""Shared-teacher groups (engine/group.py, docs/shared_teacher.md): one teacher forward per
batch for several students, and each member ends exactly where its separate run ends (every
metric but the timings, and every weight) on the CPU; a group resumed from its state ends
where an uninterrupted one ends; a member whose loss diverges ends alone; the CLI's
`distill --method a,b,c` writes one single-run folder per method; the MAC counter against a
hand count."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from dfa_ray.cli import main
from dfa_ray.engine import group as group_module
from dfa_ray.engine.distill import build_distill_run
from dfa_ray.engine.group import GroupMember, build_group_run, strip_timing
from dfa_ray.engine.recipes import get_recipe
from dfa_ray.engine.training import trainable_state
from dfa_ray.engine.views import TeacherRequest, teacher_outputs
from dfa_ray.models import create_model
from dfa_ray.models.flops import count_macs

RECIPE = get_recipe("quick", {"epochs": 2, "batch_size": 256})
# a logit method, a post-ReLU feature method, DFA on pre-activation features (so the shared
# forward computes both kinds at once), an init stage (AB: its tick runs alone), CRD (the
# embedding, and random negatives drawn from the torch RNG every batch) and the student alone
MEMBERS = [
    GroupMember("vanilla", "vanilla"),
    GroupMember("kd", "kd"),
    GroupMember("at", "at", {"w_feat": 50.0}),
    GroupMember("dfa:last", "dfa", genotype="last"),
    GroupMember("ab", "ab", {"init_epochs": 1}),
    GroupMember("crd", "crd", {"nce_k": 64}),
]


def build_group(digits, teacher, members=MEMBERS):
    return build_group_run(teacher, "resnet20", "resnet8", digits, RECIPE, members, seed=0, device="cpu")


def weights_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = trainable_state(a), trainable_state(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def separate(digits, digits_teacher):
    _, teacher, _ = digits_teacher
    runs = {}
    for m in MEMBERS:
        run = build_distill_run(teacher, "resnet20", "resnet8", digits, RECIPE, m.method, seed=0, options=m.options,
                                genotype=m.genotype, device="cpu")
        run.run()
        runs[m.key] = run
    return runs


@pytest.fixture(scope="module")
def grouped(digits, digits_teacher):
    """(the group run to the end, the rows each step returned)."""
    _, teacher, _ = digits_teacher
    group = build_group(digits, teacher)
    steps = []
    while not group.done:
        steps.append(group.step())
    return group, steps


# -- one teacher pass ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "vgg8"])
def test_both_feature_kinds_in_one_pass_equal_each_kind_alone(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=3).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        logits, pre, post = model.forward_groups_both(x)
        l_pre, f_pre = model.forward_groups(x, preact=True)
        l_post, f_post = model.forward_groups(x, preact=False)
    assert torch.equal(logits, l_pre) and torch.equal(logits, l_post)
    for mine, theirs in ((pre, f_pre), (post, f_post)):
        assert [len(g) for g in mine] == [len(g) for g in theirs]
        assert all(torch.equal(a, b) for ga, gb in zip(mine, theirs) for a, b in zip(ga, gb))
    if name == "wrn_16_1":  # the two kinds really differ there (BN'd vs raw sums)
        assert not torch.equal(pre[0][0], post[0][0])
    out = teacher_outputs(model, x, TeacherRequest(features=frozenset({True, False}), embedding=True, stem=True))
    _, _, emb = model.forward_groups_embedding(x, preact=False)
    assert torch.equal(out.embedding, emb) and torch.equal(out.logits, logits)
    assert (out.stem is None) == (name == "vgg8")  # VGG's stem is the identity: no stem map, as FSP reads it
    only_logits = teacher_outputs(model, x, TeacherRequest())
    assert only_logits.features == {} and torch.equal(only_logits.logits, model(x))


def test_the_group_asks_the_teacher_for_the_union_of_its_members_needs(digits, digits_teacher, monkeypatch):
    _, teacher, _ = digits_teacher
    asked = []
    real = group_module.teacher_outputs

    def recording(model, x, request):
        asked.append(request)
        return real(model, x, request)

    monkeypatch.setattr(group_module, "teacher_outputs", recording)
    recipe = get_recipe("quick", {"epochs": 1, "batch_size": 512})

    def one_epoch(*members):
        asked.clear()
        group_run = build_group_run(teacher, "resnet20", "resnet8", digits, recipe, list(members), seed=0,
                                    device="cpu")
        group_run.step()
        return set(asked), len(asked)

    batches = group_run_batches(digits, recipe)
    assert one_epoch(GroupMember("vanilla", "vanilla")) == (set(), 0)  # nobody needs the teacher
    assert one_epoch(GroupMember("vanilla", "vanilla"), GroupMember("kd", "kd")) == ({TeacherRequest()}, batches)
    both = one_epoch(GroupMember("kd", "kd"), GroupMember("at", "at"), GroupMember("dfa", "dfa", genotype="last"),
                     GroupMember("pkt", "pkt"))
    # one pass per batch with both kinds (at: post-ReLU, dfa: pre-activation) and the embedding (pkt)
    assert both == ({TeacherRequest(features=frozenset({True, False}), embedding=True)}, batches)


def group_run_batches(digits, recipe) -> int:
    from dfa_ray.engine.training import split_train

    train, _ = split_train(digits, recipe)
    return -(-len(train) // recipe.batch_size)


# -- bit for bit ---------------------------------------------------------------------------------
def test_every_member_equals_its_separate_run_bit_for_bit(separate, grouped):
    group, steps = grouped
    # tick 0 is AB's init epoch (epoch -1 of the loader) alone; then the two main epochs for all
    assert group.epochs == 3 and [sorted(s) for s in steps] == [["ab"]] + [sorted(m.key for m in MEMBERS)] * 2
    for key, run in separate.items():
        member = group.members[key].run
        assert [strip_timing(r) for r in member.history] == [strip_timing(r) for r in run.history], key
        assert [s[key] for s in steps if key in s] == member.history  # step() returns the rows it records
        assert member.final == run.final, key
        assert weights_equal(member.task, run.task), key
        assert group.members[key].task.config == run.task.config
    # the teacher actually taught: KD's loss term is there, the CE-only student has none
    assert separate["kd"].history[0]["loss_kd"] > 0 and separate["vanilla"].history[0]["loss_kd"] == 0
    assert group.members["ab"].run.history[0]["phase"] == "init"


def test_a_group_resumed_from_its_state_ends_where_an_uninterrupted_one_ends(digits, digits_teacher, grouped):
    _, teacher, _ = digits_teacher
    first = build_group(digits, teacher)
    first.step()
    first.step()  # AB's init tick and main epoch 1
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)  # as a checkpoint file holds it
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    torch.manual_seed(123)  # the caller's RNG must not matter
    resumed = build_group(digits, teacher)
    resumed.load_state_dict(state)
    assert resumed.tick == 2
    resumed.run()
    reference, _ = grouped
    for key in reference.members:
        a, b = resumed.members[key].run, reference.members[key].run
        assert [strip_timing(r) for r in a.history] == [strip_timing(r) for r in b.history], key
        assert a.final == b.final and weights_equal(a.task, b.task), key


def test_a_diverging_member_ends_alone_with_its_reason(digits, digits_teacher, grouped):
    _, teacher, _ = digits_teacher
    keep = [m for m in MEMBERS if m.key in ("vanilla", "kd", "dfa:last")]
    # a KD weight of 1e38 overflows float32 in the first epoch
    members = keep[:2] + [GroupMember("kd_huge", "kd", {"w_kl": 1e38})] + keep[2:]
    group = build_group(digits, teacher, members)
    first = group.step()
    assert first["kd_huge"]["done"] is True and first["kd_huge"]["epoch"] == 1
    assert "the training loss became non-finite in epoch 1" in first["kd_huge"]["nonfinite"]
    assert group.members["kd_huge"].ended == first["kd_huge"]["nonfinite"]
    assert {"vanilla", "kd", "dfa:last"} <= set(first)
    second = group.step()
    assert "kd_huge" not in second and group.done
    reference, _ = grouped
    for m in keep:
        a, b = group.members[m.key].run, reference.members[m.key].run
        assert [strip_timing(r) for r in a.history] == [strip_timing(r) for r in b.history], m.key
        assert weights_equal(a.task, b.task), m.key


def test_member_keys_must_be_unique(digits, digits_teacher):
    _, teacher, _ = digits_teacher
    from dfa_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="group member key\\(s\\) kd appear more than once"):
        build_group(digits, teacher, [GroupMember("kd", "kd"), GroupMember("kd", "kd")])


# -- the command line ---------------------------------------------------------------------------
def test_cli_distills_a_group_into_one_single_run_folder_per_method(digits_teacher, tmp_path: Path, capsys):
    folder, _, _ = digits_teacher
    common = ["--teacher", str(folder), "--student", "resnet8", "--epochs", "1", "--quiet"]
    assert main(["distill", *common, "--method", "vanilla,kd,at,dfa:last", "--opt", "at.w_feat=50",
                 "--out", str(tmp_path / "g")]) == 0
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["at", "dfa-last", "kd", "vanilla"]
    for name in ("at", "dfa-last", "kd", "vanilla"):
        assert sorted(p.name for p in (tmp_path / "g" / name).iterdir()) == ["checkpoint.pt", "metrics.json"]
    grouped = json.loads((tmp_path / "g" / "at" / "metrics.json").read_text())
    assert grouped["method"] == "at" and grouped["options"]["w_feat"] == 50.0 and grouped["finished"] is True
    assert json.loads((tmp_path / "g" / "dfa-last" / "metrics.json").read_text())["genotype"] == "last"
    # the same method alone writes the same folder: same run (fingerprint), same numbers
    assert main(["distill", *common, "--method", "at", "--opt", "w_feat=50", "--out", str(tmp_path / "one")]) == 0
    alone = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert alone["fingerprint"] == grouped["fingerprint"] and alone["final"] == grouped["final"]
    assert [strip_timing(r) for r in alone["history"]] == [strip_timing(r) for r in grouped["history"]]
    out = capsys.readouterr().out
    assert "with vanilla, kd, at, dfa:last sharing one teacher forward per batch" in out
    assert f"saved in {tmp_path / 'g' / 'dfa-last'}" in out


def test_cli_group_finishes_the_others_when_one_member_diverges(digits_teacher, tmp_path: Path, capsys):
    folder, _, _ = digits_teacher
    code = main(["distill", "--teacher", str(folder), "--student", "resnet8", "--epochs", "1", "--quiet",
                 "--method", "vanilla,kd", "--opt", "kd.w_kl=1e38", "--out", str(tmp_path / "g")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("dfa-ray distill: error: kd: the training loss became non-finite in epoch 1")
    assert json.loads((tmp_path / "g" / "vanilla" / "metrics.json").read_text())["finished"] is True
    assert not (tmp_path / "g" / "kd" / "metrics.json").exists()  # no finite epoch to keep


@pytest.mark.parametrize("args, message", [
    (["--method", "kd,at", "--opt", "w_feat=5"], "--opt 'w_feat=5' is ambiguous with several methods (kd, at); write "
                                                 "METHOD.KEY=VALUE"),
    (["--method", "kd,at", "--opt", "fitnet.w_feat=5"], "'fitnet' is not one of the methods of --method (kd, at)"),
    (["--method", "kd,at", "--opt", "at.nope=5"], "unknown option(s) nope for method at"),
    (["--method", "kd,kd"], "--method lists kd more than once"),
    (["--method", "kd,,at"], "has an empty entry"),
    (["--method", "kd,dfa"], "--method dfa needs --genotype"),
    (["--method", "kd,at:last"], "only dfa takes a reference genotype after ':'"),
    (["--method", "kd,nope"], "unknown distillation method 'nope'"),
])
def test_cli_group_mistakes_are_one_line_and_exit_2(digits_teacher, tmp_path: Path, capsys, args, message):
    folder, _, _ = digits_teacher
    code = main(["distill", "--teacher", str(folder), "--student", "resnet8", *args, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())  # nothing trained


# -- MACs ----------------------------------------------------------------------------------------
def test_count_macs_matches_a_hand_count():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),             # 8x8x4 outputs x 3*3*3 = 6912
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2),  # 4x4x8 outputs x (4/2)*3*3 = 2304
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 5),                           # 5 outputs x 8 = 40
    )
    net.train()
    assert count_macs(net, (3, 8, 8)) == 6912 + 2304 + 40
    assert net.training  # its mode is restored
    # a custom forward counts what it runs: the first conv alone
    assert count_macs(net, (3, 8, 8), forward=lambda m, x: m[0](x)) == 6912
    with pytest.raises(ValueError, match="input_shape is \\(channels, height, width\\)"):
        count_macs(net, (1, 3, 8, 8))
    # the zoo's published sizes: resnet32x4 ~1.08 GMACs and resnet8x4 ~0.18 GMACs at 32 px
    assert round(count_macs(create_model("resnet32x4", num_classes=100), (3, 32, 32)) / 1e6) == 1083
    assert round(count_macs(create_model("resnet8x4", num_classes=100), (3, 32, 32)) / 1e6) == 177
