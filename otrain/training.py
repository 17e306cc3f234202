"""Training on a datacube: a held-out validation set, a fitted classifier, a report.

``otrain-train`` is :func:`train_model` plus argument parsing and printing. The cube
is split into a training part and a stratified validation part (O'TRAIN's
``--frac``); the classifier is fitted on the training part, where it holds out its
own fraction for early stopping (an ensemble: its folds), so the validation set stays
untouched until the diagnostics. Calibration and a threshold rule, when asked for, are
fitted on the out-of-fold P(real) of the training part for an ensemble (cross-fitted:
no stamp is set aside for them), otherwise on one half of the validation part and
judged on the other.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from .datacube import Datacube
from .exceptions import DatacubeError, OutputError

__all__ = [
    "split_validation",
    "train_on_cube",
    "train_model",
    "TrainingResult",
    "model_output_paths",
]


def split_validation(cube, fraction=0.15, *, random_state=0):
    """Split a datacube into training and validation parts, stratified by label.

    Parameters
    ----------
    cube : Datacube
    fraction : float, default 0.15
        Share of the cutouts held out for validation (O'TRAIN's ``--frac``).
    random_state : int, default 0
        Seed of the split.

    Returns
    -------
    train, valid : Datacube
    """
    if not 0 < fraction < 1:
        raise ValueError(
            f"the validation fraction must lie strictly between 0 and 1, got {fraction}"
        )
    counts = np.bincount(cube.labels, minlength=2)
    n_valid = int(round(fraction * len(cube)))
    if counts.min() < 2 or n_valid < 2 or len(cube) - n_valid < 2:
        raise DatacubeError(
            f"the cube holds {counts[1]} true and {counts[0]} false cutouts: too few to "
            f"hold out a validation fraction of {fraction}; add cutouts of both classes"
        )
    index = np.arange(len(cube))
    train, valid = train_test_split(
        index, test_size=n_valid, stratify=cube.labels, random_state=random_state
    )
    return _subset(cube, np.sort(train)), _subset(cube, np.sort(valid))


def _subset(cube, index):
    return Datacube(
        cube.cube[index],
        cube.labels[index],
        cube.keywords[index],
        cube.channels,
        channels_named=cube.channels_named,
    )


def train_on_cube(cube, classifier):
    """Fit ``classifier`` on a datacube's stamps and labels.

    Parameters
    ----------
    cube : Datacube
    classifier : CutoutClassifier
        Unfitted; its settings (network, normalisation, seed...) are used as given.

    Returns
    -------
    CutoutClassifier
        Fitted, with ``channels_`` set from the cube.
    """
    return classifier.fit(cube.cube, cube.labels, channels=cube.channels)


@dataclass
class TrainingResult:
    """What :func:`train_model` fitted and measured.

    Attributes
    ----------
    classifier : CutoutClassifier
        Fitted; with ``channels_``, ``bfloat16_check_`` and, when asked for,
        ``calibration_`` and ``threshold_`` set.
    train : Datacube
        The part the network was fitted on.
    validation : Datacube
        The part the diagnostics are computed on: the whole validation part, or its
        evaluation half when calibration or a threshold rule used the other half.
    tuning : Datacube or None
        The half that calibration and the threshold rule were fitted on.
    p_real : ndarray
        P(real) of the ``validation`` stamps (calibrated when the model is).
    threshold : float
        The decision threshold stored in the model.
    threshold_rule : dict or None
        ``{"target_recall": r}`` or ``{"target_fpr": f}`` and ``n_tuning``.
    threshold_diagnostics : dict or None
        Diagnostics of the chosen threshold on ``validation``.
    brier_before, brier_after : float or None
        Brier score of ``validation`` before and after calibration.
    tuned_on : str or None
        What calibration and the threshold rule were fitted on: ``"out-of-fold"``
        (the training part, cross-fitted by an ensemble) or ``"held-out"`` (``tuning``).
    n_tuned : int
        How many stamps that was.
    calibration_cautions : list of str
        Why the calibration may not be trusted (too few stamps of a class for the
        method, see :func:`otrain.calibration.calibration_cautions`).
    bfloat16_check : dict
        See :meth:`CutoutClassifier.check_bfloat16`.
    """

    classifier: object
    train: Datacube
    validation: Datacube
    tuning: Datacube | None
    p_real: np.ndarray
    threshold: float
    threshold_rule: dict | None = None
    threshold_diagnostics: dict | None = None
    brier_before: float | None = None
    brier_after: float | None = None
    bfloat16_check: dict = field(default_factory=dict)
    tuned_on: str | None = None
    n_tuned: int = 0
    calibration_cautions: list = field(default_factory=list)

    @property
    def model_extra(self):
        """What :func:`otrain.model_files.save_model` stores beside the network."""
        extra = {"threshold": self.threshold}
        if self.threshold_rule is not None:
            extra["threshold_rule"] = dict(self.threshold_rule)
        if self.brier_after is not None:
            extra["calibration_stamps"] = self.n_tuned
            extra["calibration_fitted_on"] = self.tuned_on
        return extra

    def write(self, model_file, report_dir, *, plots=True, overwrite=False):
        """Write the model file, the validation cube(s) and the report.

        Parameters
        ----------
        model_file : str or path-like
            The model (``.h5`` or ``.keras``).
        report_dir : str or path-like
            Plots, ``diagnostics.txt``/``.json`` and ``validation_set/datacube/``.
        plots : bool, default True
            Draw the curves, galleries and the loss and accuracy per epoch.
        overwrite : bool, default False
            Replace an existing model file.

        Returns
        -------
        dict
            The report of :func:`otrain.report.write_report`.
        """
        from .model_files import save_model
        from .plots import plot_history
        from .report import write_report

        model_file = Path(model_file)
        if model_file.exists() and not overwrite:
            raise OutputError(
                f"{model_file}: a model of this name exists; choose another name or "
                "pass overwrite=True to replace it"
            )
        save_model(self.classifier, model_file, extra=self.model_extra)
        report_dir = Path(report_dir)
        cubes = report_dir / "validation_set" / "datacube"
        self.validation.save(cubes / "cube_validation.npz")
        if self.tuning is not None:
            self.tuning.save(cubes / "cube_tuning.npz")
        report = write_report(
            self.validation.labels,
            self.p_real,
            report_dir,
            threshold=self.threshold,
            keywords=self.validation.keywords,
            stamps=self.validation.cube if plots else None,
            channels=self.validation.channels,
            curves=plots,
        )
        if plots:
            for metric in ("loss", "accuracy"):
                plot_history(
                    self.classifier.history_,
                    report_dir / f"{metric}_vs_epochs.png",
                    metric=metric,
                    n_networks=len(getattr(self.classifier, "networks_", None) or [1]),
                )
        return report


def train_model(
    cube,
    classifier=None,
    *,
    validation_fraction=0.15,
    calibrate=None,
    threshold=None,
    target_recall=None,
    target_fpr=None,
    random_state=0,
    on_split=None,
):
    """Split, fit, calibrate, choose the threshold and check bfloat16: ``otrain-train``'s work.

    Parameters
    ----------
    cube : Datacube
        Labelled stamps (:func:`otrain.datacube.load_datacube`).
    classifier : CutoutClassifier, optional
        Unfitted, with its settings; default ``CutoutClassifier(random_state=random_state)``.
    validation_fraction : float, default 0.15
        Share of the cube held out for the diagnostics (O'TRAIN's ``--frac``).
    calibrate : {"sigmoid", "isotonic"}, optional
        Calibrate P(real): on the out-of-fold P(real) of the training part when the
        classifier is an ensemble (``ensemble`` >= 2), else on half of the validation
        part.
    threshold : float, optional
        Decision threshold to store (default 0.5); exclusive with the targets.
    target_recall, target_fpr : float, optional
        Choose the threshold, on the same stamps as the calibration: the highest
        keeping this recall, or the lowest calling at most this fraction of bogus real.
    random_state : int, default 0
        Seed of the splits.
    on_split : callable, optional
        Called as ``on_split(train, validation)`` before the network is fitted (a
        command says what it will train on).

    Returns
    -------
    TrainingResult
    """
    from ._validation import check_fraction, check_threshold
    from .diagnostics import binary_diagnostics
    from .thresholds import DEFAULT_THRESHOLD, choose_threshold

    targets = {"target_recall": target_recall, "target_fpr": target_fpr}
    targets = {k: v for k, v in targets.items() if v is not None}
    if len(targets) + (threshold is not None) > 1:
        raise ValueError("give one of threshold=, target_recall= and target_fpr=, not several")
    for name, value in targets.items():
        check_fraction(value, name, closed_high=True, open_low=True)
    if threshold is not None:
        threshold = check_threshold(threshold)
    if classifier is None:
        from .classifier import CutoutClassifier

        classifier = CutoutClassifier(random_state=random_state)
    train, valid = split_validation(cube, validation_fraction, random_state=random_state)
    if on_split is not None:
        on_split(train, valid)
    train_on_cube(train, classifier)
    tuning = None
    result = {}
    cross_fitted = getattr(classifier, "oof_p_real_", None) is not None
    if (calibrate or targets) and not cross_fitted:
        tuning, valid = split_validation(valid, 0.5, random_state=random_state)
    if calibrate or targets:
        tuned_labels = classifier.oof_y_ if cross_fitted else tuning.labels
        result["tuned_on"] = "out-of-fold" if cross_fitted else "held-out"
        result["n_tuned"] = len(tuned_labels)
    if calibrate:
        from .calibration import calibration_cautions

        result["brier_before"] = binary_diagnostics(
            valid.labels, classifier.predict_proba(valid.cube)[:, 1]
        )["brier"]
        if cross_fitted:
            classifier.calibrate(method=calibrate)
        else:
            classifier.calibrate(tuning.cube, tuning.labels, method=calibrate)
        result["calibration_cautions"] = calibration_cautions(tuned_labels, calibrate)
    p_real = classifier.predict_proba(valid.cube)[:, 1]
    if calibrate:
        result["brier_after"] = binary_diagnostics(valid.labels, p_real)["brier"]
    if targets:
        if cross_fitted:
            tuned_p = classifier.oof_p_real_
            if classifier.calibration_ is not None:
                tuned_p = classifier.calibration_.apply(tuned_p)
        else:
            tuned_p = classifier.predict_proba(tuning.cube)[:, 1]
        threshold = choose_threshold(tuned_labels, tuned_p, **targets)
        ((name, value),) = targets.items()
        result["threshold_rule"] = {name: value, "n_tuning": len(tuned_labels)}
        result["threshold_diagnostics"] = binary_diagnostics(valid.labels, p_real, threshold)
    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    classifier.set_threshold(threshold)
    check = classifier.check_bfloat16(valid.cube)
    return TrainingResult(
        classifier=classifier,
        train=train,
        validation=valid,
        tuning=tuning,
        p_real=p_real,
        threshold=threshold,
        bfloat16_check=check,
        **result,
    )


def model_output_paths(model_path, model_name, *, suffix=".h5", overwrite=False):
    """Where ``otrain-train`` writes: ``MODEL_PATH/CNN_training/NAME.h5`` and a folder.

    Parameters
    ----------
    model_path : str or path-like
        O'TRAIN's ``--model-path``.
    model_name : str
        O'TRAIN's ``--model-name``; a ``.h5`` or ``.keras`` ending picks the format.
    suffix : {".h5", ".keras"}, default ".h5"
        Format when the name has no ending.
    overwrite : bool, default False
        Allow replacing an existing model.

    Returns
    -------
    model_file : pathlib.Path
        ``MODEL_PATH/CNN_training/NAME.h5``.
    report_dir : pathlib.Path
        ``MODEL_PATH/CNN_training/NAME/``: plots, diagnostics, validation cube.

    Raises
    ------
    OutputError
        If the model exists and ``overwrite`` is False.
    """
    name = Path(model_name)
    if name.suffix in (".h5", ".keras"):
        suffix, name = name.suffix, name.with_suffix("")
    if name.name != str(name) or not name.name:
        raise ValueError(f"--model-name must be a plain name, not a path, got {model_name!r}")
    folder = Path(model_path) / "CNN_training"
    model_file = folder / f"{name}{suffix}"
    if model_file.exists() and not overwrite:
        raise OutputError(
            f"{model_file}: a model of this name exists; choose another --model-name or "
            "add --overwrite to replace it"
        )
    return model_file, folder / str(name)
