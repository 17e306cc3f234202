"""Tests of otrain.plots: files written, what the figures hold, failures cleaned up."""

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from otrain import plots
from otrain.exceptions import OutputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data():
    """Seeded scores of 300 candidates: fainter ones are harder; 5% unknown mags."""
    rng = np.random.default_rng(42)
    n = 300
    mag = rng.uniform(15, 21, n)
    y = (rng.random(n) < 0.45).astype(int)
    strength = 3.0 - 0.5 * (mag - 15)
    p = 1 / (1 + np.exp(-(np.where(y == 1, strength, -2.5) + rng.normal(0, 1.5, n))))
    mag[rng.random(n) < 0.05] = np.nan
    magerr = 0.02 + 0.3 * np.exp(np.nan_to_num(mag, nan=18) - 21)
    return {"y": y, "p": p, "mag": mag, "magerr": magerr, "rng": rng}


@pytest.fixture
def captured(monkeypatch):
    """The figures the plot functions draw, kept for inspection."""
    figures = []
    original = plots._common._save

    def save(fig, path):
        figures.append(fig)
        return original(fig, path)

    monkeypatch.setattr(plots._common, "_save", save)
    return figures


def png_size(path):
    """(width, height) in pixels, from the PNG header."""
    head = Path(path).read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE
    return struct.unpack(">II", head[16:24])


def legend_texts(fig):
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    return [text.get_text() for legend in legends for text in legend.get_texts()]


def learning_data():
    sizes = np.array([100, 200, 400, 800])
    train = np.array(
        [[0.99, 0.98, 0.97], [0.97, 0.96, 0.98], [0.95, 0.96, 0.94], [0.93, 0.94, 0.92]]
    )
    valid = np.array(
        [[0.60, 0.55, 0.65], [0.75, 0.70, np.nan], [0.85, 0.82, 0.80], [0.88, 0.90, 0.87]]
    )
    return sizes, train, valid


def all_plots(d):
    """(name, callable taking a path) for every figure, on the shared data."""
    y, p, mag = d["y"], d["p"], d["mag"]
    is_sim = np.zeros(len(p), bool)
    is_sim[::3] = True
    fwhmpsf = np.full(len(p), 2.5)
    fwhm = fwhmpsf * np.where(p > 0.5, 1.0, 2.0) * np.exp(d["rng"].normal(0, 0.3, len(p)))
    history = {"loss": [0.7, 0.5, 0.4], "val_loss": [0.75, 0.6, 0.62], "accuracy": [0.6, 0.8, 0.9]}
    sizes, train, valid = learning_data()
    return [
        ("history", lambda path: plots.plot_history(history, path)),
        ("roc", lambda path: plots.plot_roc(y, p, path)),
        ("roc_mag", lambda path: plots.plot_roc(y, p, path, groups=(mag, None, "mag"))),
        (
            "pr_magerr",
            lambda path: plots.plot_precision_recall(
                y, p, path, groups=(d["magerr"], None, "magerr")
            ),
        ),
        ("scan", lambda path: plots.plot_threshold_scan(y, p, path, threshold=0.4)),
        ("distribution", lambda path: plots.plot_probability_distribution(y, p, path)),
        ("reliability", lambda path: plots.plot_reliability(y, p, path)),
        ("by_mag", lambda path: plots.plot_probability_by_magnitude(p, mag, path)),
        ("sim", lambda path: plots.plot_probability_sim_vs_nonsim(p, is_sim, path)),
        ("fraction", lambda path: plots.plot_fraction_per_probability_bin(p, mag, path)),
        ("fwhm", lambda path: plots.plot_fwhm_ratio(fwhm, fwhmpsf, p, path)),
        (
            "learning",
            lambda path: plots.plot_learning_curve(sizes, train, valid, path, chosen_size=400),
        ),
        ("gap", lambda path: plots.plot_learning_gap(sizes, train, valid, path)),
    ]


def test_every_plot_writes_one_readable_png(data, tmp_path, captured):
    import matplotlib.pyplot as plt

    drawers = all_plots(data)
    for name, draw in drawers:
        path = tmp_path / f"{name}.png"
        result = draw(str(path))
        assert result == path, name
        width, height = png_size(path)
        assert 600 <= width <= 2500 and 400 <= height <= 1500, (name, width, height)
        assert path.stat().st_size > 10_000, name
    # One file per plot and no temporary file left over.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.png" for n, _ in drawers)
    # Figures are built without pyplot, so none is left open.
    assert plt.get_fignums() == []
    # Each has a title, labelled axes and a legend.
    assert len(captured) == len(drawers)
    for (name, _), fig in zip(drawers, captured, strict=True):
        titles = [fig.get_suptitle()]
        titles += [ax.get_title() for ax in fig.axes]
        assert any(titles), name
        for ax in fig.axes:
            # Panels sharing their x axis with the one below may leave it unlabelled.
            assert ax.get_xlabel() or len(ax.get_shared_x_axes().get_siblings(ax)) > 1, name
            assert ax.get_ylabel(), name
        assert legend_texts(fig), name


def test_plots_import_neither_tensorflow_nor_pyplot():
    code = (
        "import sys, otrain.plots, otrain.diagnostics; "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules, "
        "'matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["False", "False", "False"]


def test_unwritable_folder_raises_output_error(data, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match="cannot create the output folder"):
        plots.plot_roc(data["y"], data["p"], blocker / "roc.png")
    assert [p.name for p in tmp_path.iterdir()] == ["a_file"]


def test_failed_write_leaves_old_file_and_no_temporary(data, tmp_path, monkeypatch):
    path = tmp_path / "roc.png"
    path.write_bytes(b"old")

    def failing_savefig(self, fname, **kwargs):
        Path(fname).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", failing_savefig)
    with pytest.raises(OutputError, match=r"cannot write the plot .*roc.png: No space left"):
        plots.plot_learning_gap(*learning_data(), path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["roc.png"]


# ------------------------------------------------------------------ binned plots


def test_roc_groups_skip_empty_and_one_class_bins(data, tmp_path, captured):
    y, p = data["y"].copy(), data["p"]
    mag = data["mag"].copy()
    y[mag >= 20] = 1  # the faintest bin holds real candidates only
    edges = [10, 12, 15, 18, 20, 21]  # 10-12 and 12-15 hold nothing
    plots.plot_roc(y, p, tmp_path / "roc.png", groups=(mag, edges, "mag"))
    texts = legend_texts(captured[0])
    n_unknown = int(np.isnan(mag).sum())
    n_faint = int(((mag >= 20) & (mag <= 21)).sum())
    n_mid = int(((mag >= 15) & (mag < 18)).sum())
    assert not any("10.0" in t or "12.0 ≤" in t for t in texts)
    assert any(t.startswith(f"15.0 ≤ mag < 18.0 (n={n_mid}), AUC ") for t in texts)
    assert f"20.0 ≤ mag ≤ 21.0 (n={n_faint}): not drawn, one class only" in texts
    assert f"unknown mag: {n_unknown} left out" in texts
    assert any(t.startswith(f"all candidates (n={len(y)}), AUC ") for t in texts)


def test_bins_too_small_to_judge_are_greyed_without_a_score(tmp_path, captured):
    rng = np.random.default_rng(3)
    y = np.array([1] * 60 + [0] * 60)
    p = np.clip(np.where(y == 1, 0.8, 0.2) + rng.normal(0, 0.2, 120), 0, 1)
    mag = np.full(120, 17.0)
    mag[[0, 1, 60]] = 20.5  # a faint bin of 3: 2 real, 1 bogus
    plots.plot_roc(y, p, tmp_path / "roc.png", groups=(mag, [15, 19, 21], "mag"))
    fig = captured[0]
    texts = legend_texts(fig)
    assert "19.0 ≤ mag ≤ 21.0 (n=3: 2 real, 1 bogus; too few)" in texts
    assert not any(t.startswith("19.0") and "AUC" in t for t in texts)
    assert any(t.startswith("15.0 ≤ mag < 19.0 (n=117), AUC ") for t in texts)
    assert any("fewer than 10 real or bogus" in t for t in texts)
    # The chance diagonal of the linear panel starts at (0, 0).
    full = fig.axes[0]
    chance = [line for line in full.get_lines() if line.get_label() == "chance"][0]
    assert chance.get_xdata()[0] == 0 and chance.get_ydata()[0] == 0


def test_count_axes_and_short_histories_read_plainly(tmp_path, captured):
    # Two candidates: a log count axis spanning less than a decade.
    plots.plot_probability_distribution([0, 1], [0.2, 0.9], tmp_path / "p.png")
    fig = captured[0]
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels() if t.get_text()]
    assert labels and not any("10^" in s or "times" in s or "×" in s for s in labels)
    plots.plot_history({"loss": [0.7], "val_loss": [0.72]}, tmp_path / "h.png")
    ax = captured[1].axes[0]
    captured[1].canvas.draw()
    assert ax.get_xlim() == (0.5, 1.5)
    ticks = [t for t in ax.get_xticks() if 0.5 <= t <= 1.5]
    assert ticks == [1.0]


def test_roc_needs_both_classes(tmp_path):
    with pytest.raises(ValueError, match="needs both real and bogus"):
        plots.plot_roc([1, 1], [0.2, 0.9], tmp_path / "roc.png")
    assert not (tmp_path / "roc.png").exists()


def test_groups_with_no_known_value_draw_the_overall_curve(data, tmp_path, captured):
    unknown = np.full(len(data["y"]), np.nan)
    plots.plot_precision_recall(
        data["y"], data["p"], tmp_path / "pr.png", groups=(unknown, None, "mag")
    )
    texts = legend_texts(captured[0])
    assert f"unknown mag: {len(unknown)} left out" in texts
    assert any(t.startswith("all candidates") for t in texts)


def test_probability_by_magnitude_skips_empty_bins(data, tmp_path, captured):
    p, mag = data["p"], data["mag"]
    plots.plot_probability_by_magnitude(p, mag, tmp_path / "m.png", maglim=(12, 14, 18))
    texts = legend_texts(captured[0])
    n_bright = int(((mag >= 14) & (mag < 18)).sum())
    # mag < 12 and 12-14 are empty: no entry; the others carry their counts.
    assert [t.split(" (")[0] for t in texts if "mag" in t and "unknown" not in t] == [
        "14.0 ≤ mag < 18.0",
        "mag ≥ 18.0",
    ]
    assert any(t.startswith(f"14.0 ≤ mag < 18.0 (n={n_bright}; ") for t in texts)
    assert f"unknown magnitude: {int(np.isnan(mag).sum())} left out" in texts


def test_fraction_per_probability_bin_stacks_to_one(tmp_path, captured):
    p = np.array([0.05, 0.3, 0.6, 0.9, 0.95, 0.99, 0.2])
    mag = np.array([16.5, 16.2, 16.8, 16.1, 18.4, 18.6, np.nan])
    plots.plot_fraction_per_probability_bin(p, mag, tmp_path / "f.png")
    ax = captured[0].axes[0]
    heights = {}
    for bar in ax.patches:
        x = round(bar.get_x() + bar.get_width() / 2, 6)
        heights.setdefault(x, []).append(bar.get_height())
    # Bins 16-17 (4 sources) and 18-19 (2); 17-18 is empty and drawn as zero height.
    assert sorted(heights) == [16.5, 18.5]
    assert sum(heights[16.5]) == pytest.approx(1.0)
    assert sorted(heights[18.5]) == pytest.approx([0, 0, 0, 1.0])
    assert sorted(heights[16.5]) == pytest.approx([0.25] * 4)
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["4", "2"]
    assert "unknown magnitude: 1 left out" in legend_texts(captured[0])


def test_fwhm_ratio_leaves_out_unknown_fwhm(tmp_path, captured):
    p = np.array([0.9, 0.8, 0.1, 0.2, 0.95])
    fwhm = np.array([2.5, 2.6, 12.0, 0.5, np.nan])
    fwhmpsf = np.array([2.5, 2.5, 2.5, 2.5, 2.5])
    plots.plot_fwhm_ratio(fwhm, fwhmpsf, p, tmp_path / "fwhm.png", ratio_bounds=(0.5, 4.2))
    texts = legend_texts(captured[0])
    assert "P(real) < 0.50 (n=2; 0% within the bounds)" in texts
    assert "P(real) ≥ 0.50 (n=2; 100% within the bounds)" in texts
    assert "unknown FWHM or FWHM_PSF: 1 left out" in texts


def test_checkinfer_plots_reject_empty_input(tmp_path):
    with pytest.raises(ValueError, match="no simulated source"):
        plots.plot_probability_by_magnitude([], [], tmp_path / "m.png")


# ---------------------------------------------------------------------- gallery


def test_gallery_with_nan_stamps_and_three_channels(data, tmp_path, captured):
    rng = data["rng"]
    images = rng.normal(size=(5, 21, 21, 3))
    images[0, :5] = np.nan
    images[1] = np.nan  # a stamp with no finite pixel at all
    images[2, ..., 2] = 3.0  # a flat channel
    titles = plots.gallery_titles(data["p"][:5], [18.24, np.nan, 17.0, 16.0, 19.0])
    path = plots.plot_gallery(
        images, tmp_path / "g.png", titles=titles, channel_names=("SCI", "REF", "DIFF")
    )
    assert path == tmp_path / "g.png"
    width, height = png_size(path)
    assert width > height  # 3 cutouts x 3 channels per row, 2 rows
    fig = captured[0]
    assert len(fig.axes) == 15
    assert [ax.get_title() for ax in fig.axes[:3]] == ["SCI", "REF", "DIFF"]
    assert titles[0] == f"P(real)={data['p'][0]:.2f}\nmag 18.2"
    assert titles[1].endswith("mag ?")
    assert "magenta: NaN" in fig.get_supxlabel()
    # NaN pixels stay masked, so the colormap's "bad" colour shows them.
    image = fig.axes[0].get_images()[0]
    assert image.get_array().mask[:5].all() and not image.get_array().mask[5:].any()


def test_gallery_single_channel_and_3d_input(tmp_path, captured):
    images = np.random.default_rng(0).normal(size=(12, 15, 15))
    plots.plot_gallery(images, tmp_path / "g.png", ncols=4, title="Twelve")
    fig = captured[0]
    assert len(fig.axes) == 12
    assert fig.get_suptitle() == "Twelve"
    assert fig.get_supxlabel() == ""  # no NaN pixel, no note


def test_gallery_of_nothing_writes_nothing(tmp_path):
    assert plots.plot_gallery(np.empty((0, 21, 21, 1)), tmp_path / "g.png") is None
    assert list(tmp_path.iterdir()) == []


def test_gallery_checks_its_arguments(tmp_path):
    images = np.zeros((2, 5, 5, 3))
    with pytest.raises(ValueError, match="titles must have one entry per cutout"):
        plots.plot_gallery(images, tmp_path / "g.png", titles=["a"])
    with pytest.raises(ValueError, match=r"channel_names must have one entry per channel \(3\)"):
        plots.plot_gallery(images, tmp_path / "g.png", channel_names=["DIFF"])
    with pytest.raises(ValueError, match="shape"):
        plots.plot_gallery(np.zeros((5, 5)), tmp_path / "g.png")


# ---------------------------------------------------------------- other figures


def test_history_marks_best_validation_epoch(tmp_path, captured):
    history = {"loss": [0.7, 0.5, 0.4], "val_loss": [0.75, 0.6, 0.62]}
    plots.plot_history(history, tmp_path / "loss.png")
    assert "best validation: epoch 2, 0.6" in legend_texts(captured[0])


def test_history_of_an_ensemble_is_a_mean_and_marks_no_epoch(tmp_path, captured):
    history = {"loss": [0.7, 0.5, 0.4], "val_loss": [0.75, 0.6, 0.62]}
    plots.plot_history(history, tmp_path / "loss.png", n_networks=3)
    fig = captured[0]
    assert "mean of 3 networks" in fig.axes[0].get_title()
    assert not any("best validation" in text for text in legend_texts(fig))


def test_history_without_the_metric_names_what_there_is(tmp_path):
    with pytest.raises(ValueError, match="no values for 'accuracy'; metrics present: loss"):
        plots.plot_history({"loss": [1.0], "val_loss": [1.1]}, tmp_path / "a.png", "accuracy")


def test_threshold_scan_marks_chosen_and_best(data, tmp_path, captured):
    plots.plot_threshold_scan(data["y"], data["p"], tmp_path / "scan.png", threshold=0.4)
    texts = legend_texts(captured[0])
    assert any(t.startswith("chosen 0.40: F1 ") for t in texts)
    assert any(t.startswith("best MCC at ") for t in texts)


def test_learning_curve_ignores_failed_folds(tmp_path, captured):
    sizes, train, valid = learning_data()
    plots.plot_learning_curve(sizes, train, valid, tmp_path / "lc.png", chosen_size=400)
    ax = captured[0].axes[0]
    valid_line = next(line for line in ax.get_lines() if line.get_label() == "validation (mean)")
    assert valid_line.get_ydata()[1] == pytest.approx(0.725)  # NaN fold left out
    assert "chosen size 400" in legend_texts(captured[0])
    with pytest.raises(ValueError, match=r"shape \(n_sizes, n_folds\) with n_sizes = 4"):
        plots.plot_learning_curve(sizes, train[:2], valid, tmp_path / "bad.png")


@pytest.mark.parametrize("n", [6, 10, 57, 100])
def test_reliability_with_pure_bins(tmp_path, n):
    # Bins holding only real (or only bogus) candidates: the error bar is one-sided.
    y = np.array([0] * n + [1] * n)
    p = np.concatenate([np.full(n, 0.03), np.full(n, 0.97)])
    assert plots.plot_reliability(y, p, tmp_path / "r.png").is_file()


def test_reliability_greys_bins_of_a_handful_of_candidates(tmp_path, captured):
    rng = np.random.default_rng(0)
    # 40 candidates near 0 and 40 near 1, and three lonely ones in the middle.
    p = np.r_[rng.uniform(0, 0.05, 40), rng.uniform(0.95, 1, 40), 0.35, 0.55, 0.75]
    y = np.r_[np.zeros(40), np.ones(40), 1, 0, 1].astype(int)
    plots.plot_reliability(y, p, tmp_path / "r.png")
    fig = captured[0]
    texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert "bins of fewer than 10 candidates: too few to judge" in texts
    top = fig.axes[0]
    # The blue line joins only the two well-filled bins; the grey points stand alone.
    points = [line for line in top.lines if line.get_marker() == "o"]
    blue = [line for line in points if line.get_color() == "tab:blue"]
    grey = [line for line in points if line.get_color() == "0.6"]
    assert len(blue) == 1 and len(blue[0].get_xdata()) == 2
    assert len(grey) == 1 and len(grey[0].get_xdata()) == 3
    assert grey[0].get_linestyle() == "None"
