"""The figure gallery: every plot function returns a Figure with labelled axes, draws into a given
`ax`, and is written as PNG and PDF (valid files of the expected size, with real content), also
when data are missing."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from dfa_ray_analysis import plots as P
from dfa_ray_analysis import robustness as R
from dfa_ray_analysis import search as S
from dfa_ray_analysis.loading import load_results
from analysis_fixtures import labelled_axes, write_known_sweep

CRD = "cifar100 / crd"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, checking the signature and the chunk's CRC."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    body = data[16:16 + length]
    (crc,) = struct.unpack(">I", data[16 + length:20 + length])
    assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
    width, height = struct.unpack(">II", body[:8])
    assert data.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82"), "truncated PNG"
    return width, height


def distinct_colours(path: Path) -> int:
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(np.uint32)
    return len(np.unique((pixels[:, 0] << 16) | (pixels[:, 1] << 8) | pixels[:, 2]))


def check(plot: P.PlotFile, size: tuple[int, int], min_colours: int = 50) -> None:
    assert plot.path.is_file() and plot.path.suffix == ".png"
    assert png_size(plot.path) == (plot.width, plot.height) == size
    assert distinct_colours(plot.path) >= min_colours, "the figure looks blank"
    pdf = plot.paths["pdf"].read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF"), "not a whole PDF"
    assert plot.title


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    results = load_results(write_known_sweep(tmp_path_factory.mktemp("plots") / "known"))
    summary = R.method_summary(results.trials)
    st = S.search_trials(results)
    chosen = S.chosen_trials(results, st)
    return dict(results=results, summary=summary, gains=R.dfa_gains(R.seed_values(results.trials)),
                gap=R.gap_table(summary, R.teacher_accuracy(results)), st=st, chosen=chosen,
                alphas=S.final_alphas(results, chosen), traj=S.alpha_trajectories(results, chosen))


def gallery(data) -> dict:
    """Every plot function of `plots` (by `plots.PLOTS`), called on the known results:
    name -> (the call with the figure's own layout, the call into one given ax)."""
    pair = "wrn_40_2->wrn_16_2"
    return {
        "plot_dfa_gains": (lambda **kw: P.plot_dfa_gains(data["gains"], CRD, **kw)),
        "plot_gap": (lambda **kw: P.plot_gap(data["gap"], data["summary"], CRD, "test_acc_last", **kw)),
        "plot_alpha_heatmaps": (lambda **kw: P.plot_alpha_heatmaps(data["alphas"], **kw)),
        "plot_alpha_trajectories": (lambda **kw: P.plot_alpha_trajectories(
            data["traj"], **({"pair": pair, "group": 1} if "ax" in kw else {}), **kw)),
        "plot_search_curves": (lambda **kw: P.plot_search_curves(data["st"], data["results"].epochs, data["chosen"],
                                                                 **kw)),
    }


def test_the_gallery_covers_every_plot_function(data):
    public = {name for name in P.__all__ if name.startswith("plot_")}
    assert set(P.PLOTS) == public == set(gallery(data))


@pytest.mark.parametrize("name", P.PLOTS)
def test_every_plot_returns_a_figure_with_labelled_axes_and_writes_png_and_pdf(data, tmp_path, name):
    fig = gallery(data)[name]()
    assert isinstance(fig, Figure) and fig.get_suptitle()
    labelled_axes(fig)
    plot = P.save(fig, tmp_path / name)
    assert set(plot.paths) == {"png", "pdf"} and plot.paths["pdf"] == tmp_path / f"{name}.pdf"
    w, h = fig.get_size_inches()
    check(plot, (round(w * P.DPI), round(h * P.DPI)))
    svg = P.save(fig, tmp_path / "vector", formats=("svg",))
    assert svg.path.read_text().lstrip().startswith("<?xml") and "<svg" in svg.path.read_text()[:2000]


@pytest.mark.parametrize("name", P.PLOTS)
def test_every_plot_draws_into_a_given_ax(data, tmp_path, name):
    mine = Figure(figsize=(12, 4))
    FigureCanvasAgg(mine)
    left, right = mine.subplots(1, 2)
    right.plot([0, 1], [0, 1])  # the caller's other panel is left alone
    right.set_xlabel("mine")
    right.set_ylabel("mine too")
    assert gallery(data)[name](ax=left) is mine
    assert left.has_data() or left.images or left.collections or left.patches
    assert left.get_xlabel().strip() and left.get_ylabel().strip()
    assert right.get_xlabel() == "mine" and len(right.lines) == 1
    check(P.save(mine, tmp_path / f"{name}_in_ax"), (12 * P.DPI, 4 * P.DPI), min_colours=20)


def test_known_sizes_and_what_is_drawn(data, tmp_path):
    # gains: 4 pairs x 2 baselines: width max(10, 3 + 0.5 * 8) = 10 in, 2 metrics x 4.5 in, at DPI
    gains = P.plot_dfa_gains(data["gains"], CRD)
    assert gains.get_size_inches().tolist() == [10.0, 9.0]
    top = gains.axes[0]
    assert top.get_ylabel() == "DFA − baseline (accuracy points)" and top.get_xlabel() == "teacher → student pair"
    # the error bars are the intervals: the whisker of wrn_40_2 -> wrn_16_2 vs KD spans its CI
    row = data["gains"][(data["gains"]["pair"] == "wrn_40_2->wrn_16_2") & (data["gains"]["baseline"] == "kd")
                        & (data["gains"]["metric"] == "test_acc_last")].iloc[0]
    spans = [seg[:, 1] for coll in top.collections for seg in coll.get_segments()
             if hasattr(coll, "get_segments") and len(seg) == 2]
    assert any(np.allclose(sorted(s), [row["ci_low"], row["ci_high"]]) for s in spans)
    heat = P.plot_alpha_heatmaps(data["alphas"])
    image = heat.axes[0].images[0]
    # the colour is alpha itself (what the cells say): row 2 holds 0.1, 0.3, 0.6
    assert np.ma.getdata(image.get_array())[1].tolist() == pytest.approx([0.1, 0.3, 0.6])
    assert image.norm.vmin == 0.0 and image.norm.vmax == 1.0
    assert [t.get_text() for t in heat.axes[0].texts][-3:] == ["0.100", "0.300", "0.600"]
    with pytest.raises(ValueError, match="pass pair= one of"):
        two = pd.concat([data["traj"], data["traj"].assign(pair="x->y")])
        ax = Figure().subplots()
        P.plot_alpha_trajectories(two, ax=ax)
    with pytest.raises(ValueError, match="measure must be one of acc_gap, param_ratio"):
        P.plot_gap(data["gap"], data["summary"], CRD, "test_acc_last", measure="ratio")


def test_plots_of_empty_inputs_are_still_valid_files(data, tmp_path):
    empty = {k: v.iloc[0:0] for k, v in data.items() if isinstance(v, pd.DataFrame)}
    figures = [
        P.plot_dfa_gains(empty["gains"], CRD),
        P.plot_gap(empty["gap"], empty["summary"], CRD, "test_acc_last"),
        P.plot_alpha_heatmaps(empty["alphas"]),
        P.plot_alpha_trajectories(empty["traj"]),
        P.plot_search_curves(empty["st"], data["results"].epochs.iloc[0:0], empty["chosen"]),
    ]
    for i, fig in enumerate(figures):
        plot = P.save(fig, tmp_path / f"empty{i}")
        assert png_size(plot.path) == (plot.width, plot.height)
        assert distinct_colours(plot.path) >= 10  # the "no data" message and the axes
        assert plot.paths["pdf"].read_bytes().startswith(b"%PDF-")
