"""Every figure is a valid PNG of the expected size with real content, also when data are missing."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis import plots as P
from analysis import robustness as R
from analysis import search as S
from analysis.loading import load_results
from analysis_fixtures import write_known_sweep

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
    assert plot.path.is_file()
    assert png_size(plot.path) == (plot.width, plot.height) == size
    assert distinct_colours(plot.path) >= min_colours, "the figure looks blank"
    assert plot.title


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    results = load_results(write_known_sweep(tmp_path_factory.mktemp("plots") / "known"))
    summary = R.method_summary(results.trials)
    st = S.search_trials(results)
    chosen = S.chosen_trials(results, st)
    return dict(results=results, summary=summary, gains=R.dfa_gains(summary),
                gap=R.gap_table(summary, R.teacher_accuracy(results)), st=st, chosen=chosen,
                alphas=S.final_alphas(results, chosen), traj=S.alpha_trajectories(results, chosen))


def test_gain_plot(data, tmp_path):
    # 4 pairs x 2 baselines: width max(10, 3 + 0.5 * 8) = 10 in, height 8 in, at 100 dpi
    check(P.plot_dfa_gains(data["gains"], CRD, tmp_path / "gains.png"), (1000, 800))


def test_gap_plot(data, tmp_path):
    check(P.plot_gap(data["gap"], data["summary"], CRD, "test_acc_last", tmp_path / "gap.png"), (1300, 550))


def test_alpha_heatmaps(data, tmp_path):
    # one pair, 2 groups, 3 candidates at most: max(9, 4.5 + 1.5) x (1.0 + 0.7 * 2 + 1.6) in
    check(P.plot_alpha_heatmaps(data["alphas"], tmp_path / "heat.png"), (900, 400))


def test_alpha_trajectories(data, tmp_path):
    # one pair x 2 groups: (4.3 * 2 + 0.4) x (3.2 + 0.8) in
    check(P.plot_alpha_trajectories(data["traj"], tmp_path / "traj.png"), (900, 400))


def test_search_curves(data, tmp_path):
    check(P.plot_search_curves(data["st"], data["results"].epochs, data["chosen"], tmp_path / "curves.png"),
          (1000, 520))


def test_plots_of_empty_inputs_are_still_valid_pngs(data, tmp_path):
    empty = {k: v.iloc[0:0] for k, v in data.items() if isinstance(v, pd.DataFrame)}
    plots = [
        P.plot_dfa_gains(empty["gains"], CRD, tmp_path / "g.png"),
        P.plot_gap(empty["gap"], empty["summary"], CRD, "test_acc_last", tmp_path / "gap.png"),
        P.plot_alpha_heatmaps(empty["alphas"], tmp_path / "h.png"),
        P.plot_alpha_trajectories(empty["traj"], tmp_path / "t.png"),
        P.plot_search_curves(empty["st"], data["results"].epochs.iloc[0:0], empty["chosen"], tmp_path / "c.png"),
    ]
    for plot in plots:
        assert png_size(plot.path) == (plot.width, plot.height)
        assert distinct_colours(plot.path) >= 10  # the "no data" message and the axes
