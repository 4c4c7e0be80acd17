"""`write_report` and `dfa-ray report`: partial and empty folders, a folder that is not a results
folder, and the report of a real tiny sweep (the engine run without Ray, its per-epoch metrics
written through ResultsWriter in the sweep's schema, as the Tune callback does)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from dfa_ray_analysis.report import write_report
from analysis_fixtures import (ERROR_REASON, P1, P2, distill_trial, labelled_axes, pair_name, write_known_sweep,
                               write_spec)
from dfa_ray.errors import DfaRayError
from dfa_ray.report_cli import add_report_command
from dfa_ray.results import ResultsWriter, flatten_config


def linked_files(report: Path) -> list[Path]:
    """Every file report.md links or embeds, which must exist next to it."""
    links = re.findall(r"\]\(([^)]+)\)", report.read_text())
    assert links
    return [report.parent / link for link in links]


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dfa-ray")
    add_report_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


# --- constructed folders --------------------------------------------------------------------------
def test_known_sweep_report(tmp_path):
    sweep = write_known_sweep(tmp_path / "known")
    report = write_report(sweep, tmp_path / "out")
    text = report.read_text()
    assert report == tmp_path / "out" / "report.md"
    for path in linked_files(report):
        assert path.is_file(), path
    for name in ("accuracy_cifar100_crd_test_acc_last.md", "accuracy_cifar100_crd_test_acc_last.tex",
                 "accuracy_cifar100_crd_test_acc_last.csv", "dfa_gains.csv", "win_tie_loss.csv"):
        assert (tmp_path / "out" / "tables" / name).is_file()
    # the hand-counted outcomes of test_analysis, by the interval rule
    assert "**3 wins, 1 tie, 2 losses** in 6 decided pair-by-baseline comparisons, 2 with too few seeds" in text
    assert "**Where DFA loses**: resnet32x4->resnet8x4 vs KD (-0.60, 95 % CI [-0.60, -0.60])" in text
    assert "wrn_40_2->wrn_16_2 [published]" in text and "74.92 [a]" in text
    assert "ours (test accuracy, last epoch) − published" in text and "[a] Tian et al.: the last epoch" in text
    assert "## Errored trials" in text and ERROR_REASON in text
    assert "**Tie rule (95 % interval of the paired difference).**" in text and "Holm" in text
    # the first page: the verdict against the best other method of each pair, with its seeds
    assert text.index("## Verdict") < text.index("## Overview")
    verdict = text.split("## Verdict", 1)[1].split("## Overview", 1)[0]
    assert ("DFA beat the best other method of the pair on **0 of 4** pair(s) by the rule (the 95 % interval of "
            "the paired difference above zero), tied on 1 and lost on 2; 1 pair(s) have too few seeds in common "
            "(< 2) for any claim: vgg13->vgg8.") in verdict
    assert "| wrn_40_2->wrn_16_2 | KD | 75.20 ± 0.28 (n=2) | 74.10 ± 0.14 (n=2) | 2 | +1.10 [-0.17, +2.37] | tie |" \
        in verdict
    for name in ("gains_cifar100_crd", "gap_cifar100_crd", "alpha_heatmaps", "search_curves"):
        assert (tmp_path / "out" / "figures" / f"{name}.pdf").read_bytes().startswith(b"%PDF-")
        assert f"figures/{name}.pdf" in text


def test_the_band_rule_is_an_option(tmp_path):
    sweep = write_known_sweep(tmp_path / "known")
    text = write_report(sweep, tmp_path / "out", rule="band").read_text()
    assert "**Tie rule (band).**" in text and "0.3 points" in text
    assert "**5 wins, 2 ties, 1 loss**" in text  # the band rule's counts (test_analysis)
    with pytest.raises(DfaRayError, match="tie rule 'fixed' is not known; use one of ci, band"):
        write_report(sweep, tmp_path / "out", rule="fixed")
    assert run_cli(["report", str(sweep), "--out", str(tmp_path / "cli"), "--tie-rule", "band"]) == 0
    assert "**Tie rule (band).**" in (tmp_path / "cli" / "report.md").read_text()


def test_partial_folder_reports_what_is_there_and_what_is_missing(tmp_path):
    sweep = tmp_path / "partial"
    w = ResultsWriter(sweep, {"sweep": "partial"})
    distill_trial(w, P1, "vanilla", 0, 73.0)
    distill_trial(w, P1, "dfa", 0, 74.0)
    distill_trial(w, P1, "kd", 0, None, status="running", epochs=1, planned=240)  # a sweep still running
    distill_trial(w, P1, "at", 0, None, status="errored", reason=ERROR_REASON, epochs=3, planned=240)
    write_spec(sweep, [P1, P2], ["vanilla", "kd", "at", "dfa"], [0, 1])
    report = write_report(sweep / "results", tmp_path / "out")  # the results/ folder works too
    text = report.read_text()
    missing = text.split("## Missing", 1)[1]
    assert "No teacher-stage trial has written a row" in missing
    assert "No search-stage trial has written a row" in missing
    assert f"Still running: distill {pair_name(P1)} kd seed 0" in missing and "epoch 1 of 240" in missing
    assert f"{pair_name(P1)} vanilla: no trial for seed(s) 1" in missing
    assert f"{pair_name(P2)} dfa: no trial for seed(s) 0, 1" in missing
    assert f"{pair_name(P2)}: no search trial." in missing
    assert "one seed per method" in missing
    assert "Teacher wrn_40_2 on cifar100: no accuracy" in missing
    assert "## Errored trials" in text and ERROR_REASON in text
    # what is there is still reported: DFA vs vanilla on the one pair, too few seeds for a claim
    assert "0 wins, 0 ties, 0 losses** in 0 decided pair-by-baseline comparisons, 1 with too few seeds" in text
    assert "no comparison there can be decided by the interval rule" in missing
    for path in linked_files(report):
        assert path.is_file(), path


def test_partial_folder_without_spec_infers_the_grid(tmp_path):
    w = ResultsWriter(tmp_path / "s", {"sweep": "s"})
    for method, seeds in (("vanilla", (0, 1)), ("dfa", (0,))):
        for seed in seeds:
            distill_trial(w, P1, method, seed, 73.0 + seed)
    text = write_report(tmp_path / "s", tmp_path / "out").read_text()
    assert f"cifar100 / crd: {pair_name(P1)} dfa: no trial for seed(s) 1" in text


def test_empty_results_folder(tmp_path):
    ResultsWriter(tmp_path / "empty")  # creates results/epochs and results/trials, no rows
    report = write_report(tmp_path / "empty")
    assert report == tmp_path / "empty" / "report" / "report.md"  # the default: <sweep>/report
    text = report.read_text()
    assert "No trial has written a row yet" in text and "nothing to compare yet" in text
    for stage in ("teacher", "search", "distill"):
        assert f"No {stage}-stage trial has written a row" in text


def test_not_a_results_folder_is_one_clear_error(tmp_path):
    (tmp_path / "notes").mkdir()
    with pytest.raises(DfaRayError, match="not a dfa-ray results folder"):
        write_report(tmp_path / "notes", tmp_path / "out")
    with pytest.raises(DfaRayError, match="is not a folder"):
        write_report(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(DfaRayError, match="not a dfa-ray results folder"):
        run_cli(["report", str(tmp_path / "notes")])


def test_cli_prints_the_report_path(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    w = ResultsWriter(sweep, {"sweep": "s"})
    distill_trial(w, P1, "vanilla", 0, 73.0)
    distill_trial(w, P1, "dfa", 0, 74.0)
    assert run_cli(["report", str(sweep), "--out", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r" / "report.md")
    assert run_cli(["report", str(sweep)]) == 0
    assert capsys.readouterr().out.strip() == str(sweep / "report" / "report.md")


# --- several sweeps -------------------------------------------------------------------------------
def two_sweeps(tmp_path: Path) -> tuple[Path, Path]:
    """`main`: P1 and P2 with vanilla / kd / dfa, seeds 0-1; `ablation`: P1's dfa:last and dfa:average,
    seeds 0-1, a third seed of P1's dfa, and a second copy of P1 dfa seed 0 (a number in both)."""
    main = ResultsWriter(tmp_path / "storage" / "main", {"sweep": "main"})
    for pair, base in ((P1, 73.0), (P2, 69.0)):
        for seed in (0, 1):
            distill_trial(main, pair, "vanilla", seed, base + 0.1 * seed)
            distill_trial(main, pair, "kd", seed, base + 1.0 + 0.1 * seed)
            distill_trial(main, pair, "dfa", seed, base + 2.0 + 0.2 * seed)
    ablation = ResultsWriter(tmp_path / "storage" / "ablation", {"sweep": "ablation"})
    for seed in (0, 1):
        distill_trial(ablation, P1, "dfa:last", seed, 74.5 + 0.1 * seed)
        distill_trial(ablation, P1, "dfa:average", seed, 74.0)
    distill_trial(ablation, P1, "dfa", 2, 75.1)
    distill_trial(ablation, P1, "dfa", 0, 99.0)  # also in `main`: main's (named first) is used
    write_spec(tmp_path / "storage" / "ablation", [P1], ["dfa:last", "dfa:average", "dfa"], [0, 1, 2], search=False)
    return tmp_path / "storage" / "main", tmp_path / "storage" / "ablation"


def test_one_report_over_two_sweeps(tmp_path, capsys):
    main, ablation = two_sweeps(tmp_path)
    assert run_cli(["report", str(main), str(ablation), "--out", str(tmp_path / "r")]) == 0
    report = Path(capsys.readouterr().out.strip())
    assert report == tmp_path / "r" / "report.md"
    text = report.read_text()
    assert text.startswith("# DFA report over several sweeps: main + ablation")
    assert f"  - main: `{main / 'results'}`" in text and f"  - ablation: `{ablation / 'results'}`" in text
    # both sweeps' methods in one table, one row each
    table = text.split("### cifar100 / crd: test accuracy, last epoch (%)", 1)[1].split("###", 1)[0]
    for label in ("Student (vanilla)", "KD", "DFA genotype: last", "DFA genotype: average", "DFA"):
        assert f"| {label} |" in table
    # DFA on P1: seeds 0, 1 from main (75.0, 75.2) and seed 2 from the ablation (75.1): mean 75.10
    assert "| DFA | **71.10 ± 0.14** | – | **75.10 ± 0.10 (n=3)** | – |" in table
    assert "| DFA genotype: last | – | – | 74.55 ± 0.07 | – |" in table
    # where each number came from
    prov = text.split("## Where each number came from", 1)[1].split("\n## ", 1)[0]
    assert f"| cifar100 / crd | {pair_name(P1)} | DFA | main | 0,1 | 2 |" in prov
    assert f"| cifar100 / crd | {pair_name(P1)} | DFA | ablation | 2 | 1 |" in prov
    assert f"| cifar100 / crd | {pair_name(P1)} | DFA genotype: last | ablation | 0,1 | 2 |" in prov
    assert f"| cifar100 / crd | {pair_name(P2)} | KD | main | 0,1 | 2 |" in prov
    missing = text.split("## Missing", 1)[1]
    assert (f"cifar100 / crd: {pair_name(P1)} dfa seed 0 (distill) is in both main and ablation; the report uses "
            "main's (named first).") in missing
    assert f"ablation: {pair_name(P1)} dfa:last: no trial for seed(s) 2" in missing  # against its own spec.json
    assert "ablation: No search-stage trial" not in missing  # its spec has no search
    gains = (tmp_path / "r" / "tables" / "dfa_gains.csv").read_text()
    assert "dfa:last" in gains and "kd" in gains
    assert (tmp_path / "r" / "tables" / "provenance.csv").is_file()


def test_several_sweeps_need_out_and_distinct_folders(tmp_path, capsys):
    from dfa_ray.cli import main as dfa_ray_main

    main, ablation = two_sweeps(tmp_path)
    assert dfa_ray_main(["report", str(main), str(ablation)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["dfa-ray report: error: --out: a report of several sweeps needs an output folder; give --out DIR"]
    assert dfa_ray_main(["report", str(main), str(main / "results"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is given twice" in err[0] and "name each sweep folder once" in err[0]
    with pytest.raises(DfaRayError, match="needs an output folder"):
        write_report([main, ablation])


# --- a real tiny sweep ------------------------------------------------------------------------------
_EPOCH_COLUMNS = ("lr", "train_loss", "train_acc", "val_acc", "val_loss", "loss_ce", "loss_kd", "loss_feat", "l_st",
                  "l_ts", "l_train", "seconds", "images_per_s")
TEACHER = "resnet20"
PAIRS = [(TEACHER, "resnet8"), (TEACHER, "wrn_16_1")]
METHODS = ("vanilla", "kd", "dfa")


def _record(w: ResultsWriter, ident: dict, history: list[dict], status: str, planned: int,
            final: dict | None = None, genotype=None, reason: str | None = None) -> None:
    """The rows the Tune ResultsCallback writes for a trial, from the engine's per-epoch metrics."""
    for m in history:
        w.write_epoch({**ident, "epoch": m["epoch"], **{k: m.get(k) for k in _EPOCH_COLUMNS},
                       "alphas": m.get("alphas"),
                       "extra": {k: v for k, v in m.items() if k not in _EPOCH_COLUMNS and isinstance(v, float)}})
    final = final or {}
    best = max(history, key=lambda m: m["val_acc"])
    w.write_trial({**ident, "status": status, "reason": reason, "epochs_run": len(history), "epochs_planned": planned,
                   "last_val_acc": history[-1]["val_acc"], "best_val_acc": final.get("best_val_acc", best["val_acc"]),
                   "best_epoch": final.get("best_epoch", best["epoch"]), "test_acc_last": final.get("test_acc_last"),
                   "test_acc_best": final.get("test_acc_best"), "genotype": genotype, "device": "cpu"})


def run_tiny_sweep(sweep_dir: Path) -> Path:
    """Teacher -> search (2 trials per pair, one stopped early as ASHA would) -> distil, on digits."""
    import torch

    from dfa_ray.data import Dataset, load_dataset
    from dfa_ray.data.split import stratified_split
    from dfa_ray.dfa.genotype import Genotype
    from dfa_ray.dfa.options import SearchOptions
    from dfa_ray.engine.distill import build_distill_run
    from dfa_ray.engine.recipes import get_recipe
    from dfa_ray.engine.search import SearchRun
    from dfa_ray.engine.teacher import build_teacher_run, freeze

    torch.set_num_threads(1)
    full = load_dataset("digits")
    _, keep = stratified_split(full.train.labels, 0.4, 0)  # 40% of the training images: a tiny but real run
    data = Dataset(full.info, full.train.subset(keep), full.test)
    w = ResultsWriter(sweep_dir, {"sweep": "tiny", "dataset": data.info.name})
    recipe = get_recipe("quick", {"epochs": 1})
    run = build_teacher_run(TEACHER, data, recipe, 0, device="cpu")
    final = run.run()
    _record(w, dict(stage="teacher", trial_id="teacher_0", pair=TEACHER, teacher=None, student=TEACHER,
                    method="teacher", seed=0, config=flatten_config({"model": TEACHER, "recipe": run.recipe})),
            run.history, "completed", run.recipe.epochs, final)
    teacher = freeze(run.student)
    for p, (t, s) in enumerate(PAIRS):
        pair = f"{t}->{s}"
        best = None
        for i, gamma in enumerate((0.5, 2.0)):
            options = SearchOptions(gamma_ts=gamma, batch_size=128)
            epochs = 2 if i == 0 else 1  # the second trial "stopped by the scheduler" after epoch 1
            search = SearchRun(teacher, t, s, data, options, 2, seed=0, device="cpu", trial_id=f"search_{p}_{i}")
            for _ in range(epochs):
                search.step()
            genotype = search.genotype().to_dict()
            _record(w, dict(stage="search", trial_id=f"search_{p}_{i}", pair=pair, teacher=t, student=s,
                            method="search", seed=0, config=flatten_config({"options": options, "epochs": 2})),
                    search.history, "completed" if i == 0 else "pruned", 2, genotype=genotype)
            best = best or genotype
        for method in METHODS:
            for seed in (0,):
                d = build_distill_run(teacher, t, s, data, recipe, method, seed,
                                      genotype=Genotype.from_dict(best) if method == "dfa" else None, device="cpu")
                final = d.run()
                _record(w, dict(stage="distill", trial_id=f"distill_{p}_{method}_{seed}", pair=pair, teacher=t,
                                student=s, method=method, seed=seed,
                                config=flatten_config({"method": method, "recipe": recipe})),
                        d.history, "completed", recipe.epochs, final, genotype=best if method == "dfa" else None)
    return sweep_dir


def test_report_of_a_real_tiny_sweep_names_every_pair_and_method(tmp_path):
    sweep = run_tiny_sweep(tmp_path / "tiny")
    report = write_report(sweep, tmp_path / "out")
    text = report.read_text()
    for t, s in PAIRS:
        assert f"| {t}->{s} |" in text or f"{t}->{s} |" in text
    tables = text.split("## Study: digits / quick", 1)[1].split("## Search", 1)[0]
    for label in ("Student (vanilla)", "KD", "DFA", "Teacher"):
        assert f"| {label} |" in tables
    for t, s in PAIRS:
        assert f"{t}->{s}" in tables
    search = text.split("## Search", 1)[1]
    for t, s in PAIRS:
        assert f"| {t}->{s} | search_" in search  # the chosen trial of each pair
    assert "1 stopped by the scheduler" in text
    for path in linked_files(report):
        assert path.is_file(), path
    # the figure gallery on these real results: every plot returns a Figure with labelled axes
    from dfa_ray_analysis import plots as P
    from dfa_ray_analysis.bundle import SweepAnalysis
    from dfa_ray_analysis.loading import load_results

    a = SweepAnalysis(load_results(sweep))
    study = "digits / quick"
    for fig in (P.plot_dfa_gains(a.gains, study), P.plot_gap(a.gap, a.summary, study, "test_acc_last"),
                P.plot_alpha_heatmaps(a.alphas), P.plot_alpha_trajectories(a.trajectories),
                P.plot_search_curves(a.search_trials, a.search_epochs, a.chosen)):
        assert fig.get_suptitle() and labelled_axes(fig)
    names = {"gains_digits_quick", "gap_digits_quick", "alpha_heatmaps", "alpha_trajectories", "search_curves"}
    assert {p.name for p in (tmp_path / "out" / "figures").iterdir()} == {
        f"{n}.{ext}" for n in names for ext in ("png", "pdf")}
