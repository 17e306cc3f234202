"""The exceptions otrain raises.

Every error otrain raises on bad input is an :class:`OTrainError`, so a script can
catch them all at once, and also a subclass of the builtin or scikit-learn exception
users already catch (``ValueError``, ``OSError``, ``NotFittedError``). Messages say
what was wrong, with which file or value, and how to fix it: the command-line tools
print them as one line.
"""

from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

__all__ = [
    "OTrainError",
    "CutoutError",
    "DatacubeError",
    "ModelFileError",
    "OutputError",
    "NotFittedError",
]


class OTrainError(Exception):
    """Base class of every error otrain raises on bad input or bad settings."""


class CutoutError(OTrainError, ValueError):
    """A cutout file cannot be read, or its pixels cannot be used.

    Attributes
    ----------
    path : str or None
        The file at fault, where there is one.
    size_mismatch : bool
        True when the file is readable but its stamp has the wrong size.
    """

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.size_mismatch = False


class DatacubeError(OTrainError, ValueError):
    """A datacube cannot be built, read or used (empty folders, foreign files...)."""


class ModelFileError(OTrainError, ValueError):
    """A model file is missing, is not a model, or lacks what scoring needs."""


class OutputError(OTrainError, OSError):
    """An output file or folder cannot be written."""


class NotFittedError(OTrainError, _SklearnNotFittedError):
    """A classifier is used for prediction before it was fitted or loaded."""
