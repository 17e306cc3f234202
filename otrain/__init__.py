"""otrain: tell real astronomical transients from bogus detections.

The package reads like the pipeline it implements: cutout files
(:mod:`otrain.cutouts`) -> datacubes (:mod:`otrain.datacube`) -> networks
(:mod:`otrain.networks`) and the classifier (:mod:`otrain.classifier`) -> model files
(:mod:`otrain.model_files`) -> scores and diagnostics (:mod:`otrain.diagnostics`,
:mod:`otrain.plots`).

TensorFlow is imported only when a name that needs it (``CutoutClassifier``,
``load_model``...) is first used, so commands that never train or score start fast.
"""

from ._version import __version__
from .cutouts import DEFAULT_CHANNELS, CutoutLoader, load_cutouts, read_cutout
from .datacube import Datacube, build_datacube, load_datacube
from .exceptions import (
    CutoutError,
    DatacubeError,
    ModelFileError,
    NotFittedError,
    OTrainError,
    OutputError,
)

# Names served lazily: importing them pulls in TensorFlow.
_LAZY = {
    "CutoutClassifier": "otrain.classifier",
    "load_model": "otrain.model_files",
    "save_model": "otrain.model_files",
}

__all__ = [
    "__version__",
    "DEFAULT_CHANNELS",
    "CutoutLoader",
    "read_cutout",
    "load_cutouts",
    "Datacube",
    "build_datacube",
    "load_datacube",
    "OTrainError",
    "CutoutError",
    "DatacubeError",
    "ModelFileError",
    "NotFittedError",
    "OutputError",
    *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'otrain' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
