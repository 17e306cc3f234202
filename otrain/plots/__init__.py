"""Figures that show how a real/bogus classifier behaves, one PNG per function.

Every function takes arrays and an output path, draws one figure and returns the path
written (:func:`plot_gallery` returns None when there is nothing to show). Files are
written atomically: a failed write leaves no partial file behind and raises
:class:`~otrain.exceptions.OutputError`. The format follows the file suffix (``.png``,
``.pdf``, ``.svg``...).

Figures are built as :class:`matplotlib.figure.Figure` objects, never through pyplot's
global state, so drawing is safe in scripts, servers and threads, needs no display and
leaves no open figure behind.

Conventions shared with :mod:`otrain.diagnostics`: ``y_true`` holds 0 = bogus and 1 =
real, ``p_real`` the probability of real, a candidate is called real when ``p_real >=
threshold``, and unknown magnitudes are NaN: they are left out of the plots split by
magnitude, and the legend says how many.

The figures:

- training: :func:`plot_history` (loss or accuracy per epoch);
- evaluation: :func:`plot_roc`, :func:`plot_precision_recall` (overall or per
  magnitude bin), :func:`plot_threshold_scan`, :func:`plot_probability_distribution`,
  :func:`plot_reliability`, :func:`plot_gallery` (cutouts);
- checks on injected sources (``otrain-checkinfer``):
  :func:`plot_probability_by_magnitude`, :func:`plot_probability_sim_vs_nonsim`,
  :func:`plot_fraction_per_probability_bin`, :func:`plot_fwhm_ratio`;
- training-set size (``otrain-optimise-dataset-size``): :func:`plot_learning_curve`,
  :func:`plot_learning_gap`.

The figures live by stage in :mod:`otrain.plots.training`,
:mod:`otrain.plots.evaluation`, :mod:`otrain.plots.galleries` (with
:func:`plot_grad_cam`) and :mod:`otrain.plots.injected`; every public one is also
here.
"""

from .evaluation import (
    SURVEY_SCORES,
    plot_precision_recall,
    plot_probability_distribution,
    plot_reliability,
    plot_roc,
    plot_survey_scores,
    plot_threshold_scan,
)
from .galleries import check_gallery_inputs, gallery_titles, plot_gallery, plot_grad_cam
from .injected import (
    plot_fraction_per_probability_bin,
    plot_fwhm_ratio,
    plot_probability_by_magnitude,
    plot_probability_sim_vs_nonsim,
)
from .training import plot_history, plot_learning_curve, plot_learning_gap

__all__ = [
    "plot_history",
    "plot_roc",
    "plot_precision_recall",
    "plot_threshold_scan",
    "plot_probability_distribution",
    "plot_reliability",
    "plot_survey_scores",
    "SURVEY_SCORES",
    "plot_gallery",
    "gallery_titles",
    "check_gallery_inputs",
    "plot_grad_cam",
    "plot_probability_by_magnitude",
    "plot_probability_sim_vs_nonsim",
    "plot_fraction_per_probability_bin",
    "plot_fwhm_ratio",
    "plot_learning_curve",
    "plot_learning_gap",
]
