"""The exceptions otrain raises.

Every error otrain raises on bad input is an :class:`OTrainError`, so a script can
catch them all at once, and also a subclass of the builtin or scikit-learn exception
users already catch (``ValueError``, ``OSError``, ``NotFittedError``). Messages say
what was wrong, with which file or value, and how to fix it: the command-line tools
print them as one line.
"""

__all__ = [
    "OTrainError",
    "CutoutError",
    "DatacubeError",
    "ModelFileError",
    "OutputError",
    "LabellingError",
    "NotFittedError",  # noqa: F822 - served by __getattr__, below
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


class CheckInferError(OTrainError, ValueError):
    """A table given to ``otrain-checkinfer`` is missing, unreadable or unusable.

    Attributes
    ----------
    path : str or None
        The file at fault, where there is one.
    """

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = None if path is None else str(path)


class ClusterError(OTrainError, RuntimeError):
    """Dask is missing, or the scheduler or its workers cannot be reached."""


class MissingDependencyError(OTrainError, ImportError):
    """An optional package that reading alerts needs is not installed.

    Not a :class:`CutoutError`: readers that skip unreadable files must stop on it,
    since every alert file would fail the same way.
    """


class LabellingError(OTrainError, ValueError):
    """A labelling decision, a crossmatch or a ranking cannot be made as asked."""


def __getattr__(name):
    # NotFittedError subclasses scikit-learn's, and importing scikit-learn costs most
    # of a second: the class is made on first use, so that the commands that only
    # read files (otrain-convert) start fast. It is then a plain module attribute.
    if name == "NotFittedError":
        from sklearn.exceptions import NotFittedError as sklearn_not_fitted

        class NotFittedError(OTrainError, sklearn_not_fitted):
            """A classifier is used for prediction before it was fitted or loaded."""

        NotFittedError.__module__ = __name__
        NotFittedError.__qualname__ = name
        globals()[name] = NotFittedError
        return NotFittedError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
