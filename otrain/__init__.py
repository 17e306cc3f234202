"""otrain: tell real astronomical transients from bogus detections.

The package reads like the pipeline it implements: cutout files
(:mod:`otrain.cutouts`) -> datacubes (:mod:`otrain.datacube`) -> networks
(:mod:`otrain.networks`) and the classifier (:mod:`otrain.classifier`) -> model files
(:mod:`otrain.model_files`) -> scores and diagnostics (:mod:`otrain.diagnostics`,
:mod:`otrain.plots`).

Names are imported when first used: TensorFlow loads only with ``CutoutClassifier``,
``load_model`` or ``save_model``, so commands that never train or score start fast.
"""

from ._version import __version__

# Every public name is served lazily, so that `import otrain` (and each command's
# `-h`) costs nothing until a name is used; TensorFlow loads only with the names
# that need it (CutoutClassifier, load_model, save_model).
_LAZY = {
    "DEFAULT_CHANNELS": "otrain.cutouts",
    "CutoutLoader": "otrain.loader",
    "read_cutout": "otrain.cutouts",
    "load_cutouts": "otrain.cutouts",
    "Datacube": "otrain.datacube",
    "build_datacube": "otrain.datacube",
    "load_datacube": "otrain.datacube",
    "OTrainError": "otrain.exceptions",
    "CutoutError": "otrain.exceptions",
    "DatacubeError": "otrain.exceptions",
    "ModelFileError": "otrain.exceptions",
    "NotFittedError": "otrain.exceptions",
    "OutputError": "otrain.exceptions",
    "CutoutClassifier": "otrain.classifier",
    "load_model": "otrain.model_files",
    "save_model": "otrain.model_files",
    # Dask is imported by otrain.cluster's functions, never by the import.
    "score_files_distributed": "otrain.cluster",
    "ClusterError": "otrain.exceptions",
    "CheckInferError": "otrain.exceptions",
    "MissingDependencyError": "otrain.exceptions",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'otrain' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
