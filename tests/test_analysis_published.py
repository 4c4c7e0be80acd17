"""The published numbers as data: every number of the CRD benchmark, DKD, Overhaul, DFA and the DFA
author's baselines is there, each with its source's reporting rule, and our method names reach
their published columns in the report's tables (every method of the results is a row)."""

from __future__ import annotations

import pytest

from dfa_ray.results import ResultsWriter
from dfa_ray_analysis import robustness as R
from dfa_ray_analysis import tables as T
from dfa_ray_analysis.loading import METHOD_ORDER, load_results, method_label
from dfa_ray_analysis.published import METHOD_COLUMNS, PUBLISHED, SOURCES, protocol_deviations, published_for
from analysis_fixtures import CRD_CONFIG, P1, distill_trial, pair_name

# our methods: those the engine has and those being added
OUR_METHODS = ("vanilla", "kd", "fitnet", "at", "sp", "pkt", "rkd", "cc", "nst", "dkd", "crd", "crd+kd", "vid", "ofd",
               "ab", "ft", "fsp", "reviewkd", "dfa", "dfa:last", "dfa:average", "dfa:random")


def number(protocol, dataset, teacher, student, column):
    entry = published_for(teacher, student, dataset, protocol)
    assert entry is not None, (protocol, dataset, teacher, student)
    return entry.numbers[column]


def test_every_published_number_is_there():
    by = {}
    for p in PUBLISHED:
        by.setdefault((p.protocol, p.dataset), []).append(p)
    # CRD: 13 pairs x 17 columns, less FSP on the 6 cross-family pairs and wrn_40_2->wrn_40_1, and DKD on
    # resnet110->resnet20 and ResNet50->vgg8 (not published)
    assert len(by[("crd", "cifar100")]) == 13
    assert sum(len(p.numbers) for p in by[("crd", "cifar100")]) == 13 * 17 - 7 - 2
    # Overhaul / DFA: 4 students x (teacher, alone, Overhaul) + 3 DFA numbers
    assert sum(len(p.numbers) for p in by[("overhaul", "cifar100")]) == 4 * 3 + 3
    # the DFA author's code: 3 WRN students and 3 ShuffleV2 width pairs, 6 columns each
    assert sum(len(p.numbers) for p in by[("dfa_author", "cifar100")]) == 18
    assert sum(len(p.numbers) for p in by[("dfa_author", "cinic10")]) == 18
    assert len({(p.protocol, p.dataset, p.teacher, p.student) for p in PUBLISHED}) == len(PUBLISHED)


@pytest.mark.parametrize("args, value", [
    (("crd", "cifar100", "wrn_40_2", "wrn_16_2", "T"), 75.61),
    (("crd", "cifar100", "resnet110", "resnet32", "S"), 71.14),
    (("crd", "cifar100", "resnet32x4", "resnet8x4", "CRD"), 75.51),
    (("crd", "cifar100", "vgg13", "MobileNetV2", "AT"), 59.40),
    (("crd", "cifar100", "wrn_40_2", "ShuffleV1", "CRD"), 76.05),
    (("crd", "cifar100", "wrn_40_2", "wrn_40_1", "SP"), 72.43),
    (("crd", "cifar100", "resnet56", "resnet20", "CC"), 69.63),
    (("crd", "cifar100", "resnet110", "resnet20", "VID"), 70.16),
    (("crd", "cifar100", "ResNet50", "vgg8", "RKD"), 71.50),
    (("crd", "cifar100", "resnet32x4", "ShuffleV2", "PKT"), 74.69),
    (("crd", "cifar100", "ResNet50", "MobileNetV2", "AB"), 67.20),
    (("crd", "cifar100", "vgg13", "MobileNetV2", "FT"), 61.78),
    (("crd", "cifar100", "vgg13", "vgg8", "FSP"), 70.23),
    (("crd", "cifar100", "vgg13", "MobileNetV2", "NST"), 58.16),
    (("crd", "cifar100", "resnet32x4", "ShuffleV1", "CRD+KD"), 75.12),
    (("crd", "cifar100", "resnet32x4", "ShuffleV2", "DKD"), 77.07),
    (("crd", "cifar100", "wrn_40_2", "wrn_16_2", "DKD"), 76.23),
    (("overhaul", "cifar100", "wrn_28_4", "wrn_28_2", "Overhaul"), 78.02),
    (("overhaul", "cifar100", "wrn_28_4", "resnet56", "Student alone"), 72.32),
    (("overhaul", "cifar100", "wrn_28_4", "wrn_16_2", "DFA"), 75.85),
    (("dfa_author", "cifar100", "wrn_28_4", "wrn_16_4", "T"), 79.17),
    (("dfa_author", "cifar100", "wrn_28_4", "wrn_28_2", "SP"), 77.0),
    (("dfa_author", "cifar100", "wrn_28_4", "wrn_16_2", "Margin (Overhaul)"), 75.41),
    (("dfa_author", "cinic10", "ShuffleV2_2.0", "ShuffleV2", "KD"), 85.78),
    (("dfa_author", "cinic10", "ShuffleV2", "ShuffleV2_0.5", "Margin (Overhaul)"), 79.69),
])
def test_numbers_from_the_papers(args, value):
    assert number(*args).value == value


def test_not_published_is_absent_not_zero():
    assert "FSP" not in published_for("wrn_40_2", "wrn_40_1", "cifar100", "crd").numbers  # N/A in the benchmark
    assert "DKD" not in published_for("resnet110", "resnet20", "cifar100", "crd").numbers
    assert "DFA" not in published_for("wrn_28_4", "resnet56", "cifar100", "overhaul").numbers


def test_each_number_carries_its_sources_reporting_rule():
    assert number("crd", "cifar100", "vgg13", "vgg8", "KD").source.rule == "the last epoch"
    assert number("crd", "cifar100", "vgg13", "vgg8", "DKD").source.rule == "the best epoch on the test set, mean of 5 runs"
    assert number("overhaul", "cifar100", "wrn_28_4", "wrn_16_4", "Overhaul").source.rule == "the median of 5 final models"
    assert number("dfa_author", "cifar100", "wrn_28_4", "wrn_16_4", "KD").source.rule == "the best epoch on the test set"
    dfa = number("overhaul", "cifar100", "wrn_28_4", "wrn_16_4", "DFA")
    assert dfa.source.key == "dfa_paper" and "inferred" in dfa.source.caveat
    assert {s.mark for s in SOURCES.values()} == set("abcde")  # one tag per source
    for entry in PUBLISHED:
        for n in entry.numbers.values():
            assert n.source.rule and n.source.citation


def test_our_methods_map_to_the_published_columns():
    crd = published_for("resnet32x4", "resnet8x4", "cifar100", "crd")
    expected = {"vanilla": 72.50, "kd": 73.33, "fitnet": 73.50, "at": 73.44, "sp": 72.94, "cc": 72.97, "vid": 73.09,
                "rkd": 71.90, "pkt": 73.64, "ab": 73.17, "ft": 72.86, "fsp": 72.62, "nst": 73.30, "crd": 75.51,
                "crd+kd": 75.46, "dkd": 76.32, "teacher": 79.42}
    assert {m: crd.for_method(m).value for m in expected} == expected
    for m in ("dfa", "dfa:last", "ofd", "reviewkd"):
        assert crd.for_method(m) is None  # no such column in the benchmark
    overhaul = published_for("wrn_28_4", "wrn_16_4", "cifar100", "overhaul")
    assert overhaul.for_method("ofd").value == 79.11 and overhaul.for_method("dfa").value == 79.74
    author = published_for("wrn_28_4", "wrn_16_2", "cifar100", "dfa_author")
    assert [author.for_method(m).value for m in ("vanilla", "kd", "at", "sp", "ofd")] == [73.42, 74.02, 73.1, 74.12,
                                                                                          75.41]
    mapped = {m for cols in METHOD_COLUMNS.values() for m in cols} - {"teacher"}
    assert mapped <= set(OUR_METHODS)  # no column mapped to a method name we do not have
    assert set(OUR_METHODS) <= set(METHOD_ORDER) and all(method_label(m) != m for m in OUR_METHODS if m != "dfa")


def test_protocol_recipes_per_dataset():
    assert protocol_deviations({"recipe.epochs": 200, "recipe.gamma": 0.1}, "dfa_author") == ["gamma 0.1 (protocol: 0.2)"]
    assert protocol_deviations({"recipe.epochs": 200}, "dfa_author", "cinic10") == ["epochs 200 (protocol: 140)"]
    assert protocol_deviations({"recipe.epochs": 1}, "quick") == []


def test_tables_show_every_method_of_the_results_beside_its_published_number(tmp_path):
    w = ResultsWriter(tmp_path, {"sweep": "many"})
    methods = {"vanilla": 73.0, "dkd": 76.0, "crd+kd": 75.5, "sp": 73.9, "reviewkd": 75.9, "newkd": 74.4, "dfa": 75.0}
    for method, acc in methods.items():
        distill_trial(w, P1, method, 0, acc, config=CRD_CONFIG)
    results = load_results(tmp_path)
    summary = R.method_summary(results.trials)
    table = T.paper_table(summary, R.teacher_accuracy(results), "cifar100 / crd", "test_acc_last")
    assert set(methods) <= set(table.rows)  # a method no list names (newkd) is a row too
    pair = pair_name(P1)
    assert table.cell("dkd", pair, "published")["mean"] == 76.23 and table.cell("dkd", pair, "published")["source"] \
        == "mdistiller"
    assert table.cell("crd+kd", pair, "published")["mean"] == 75.64
    assert table.cell("reviewkd", pair, "published") is None and table.cell("newkd", pair, "published") is None
    assert "published:DKD" not in table.rows and "published:SP" not in table.rows  # on their methods' rows
    assert "published:CRD" in table.rows  # a published method we did not run
    md = T.to_markdown(table)
    assert "| DKD | **76.00** | 76.23 [b] |" in md and "| CRD+KD | 75.50 | 75.64 [a] |" in md
    assert "| newkd | 74.40 | – |" in md
