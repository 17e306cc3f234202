"""Training on a datacube: a held-out validation set, a fitted classifier, a report.

``otrain-train`` is this module plus argument parsing. The cube is split into a
training part and a stratified validation part (O'TRAIN's ``--frac``); the
classifier is fitted on the training part, where it holds out its own fraction for
early stopping, so the validation set stays untouched until the diagnostics.
"""

from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from .datacube import Datacube
from .exceptions import DatacubeError, OutputError

__all__ = ["split_validation", "train_on_cube", "model_output_paths"]


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
    return Datacube(cube.cube[index], cube.labels[index], cube.keywords[index], cube.channels)


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
