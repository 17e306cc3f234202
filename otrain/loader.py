"""The scikit-learn face of :mod:`otrain.cutouts`: :class:`CutoutLoader`.

It lives apart from the readers because importing scikit-learn costs most of a
second, which the commands that only read files (``otrain-convert``) should not pay.
Pickles made by otrain 0.1.0 name it ``otrain.cutouts.CutoutLoader``; that name
still loads (see :mod:`otrain.cutouts`).
"""

import os

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from ._validation import check_channels, check_cutout_size
from .cutouts import DEFAULT_CHANNELS, load_cutouts

__all__ = ["CutoutLoader"]


class CutoutLoader(TransformerMixin, BaseEstimator):
    """Turn a list of cutout file paths into an array of stamps.

    A stateless scikit-learn transformer, meant as the first step of a pipeline fed
    with file paths: ``make_pipeline(CutoutLoader(), CutoutClassifier())``.

    Parameters
    ----------
    channels : tuple of str, default ("DIFF",)
        EXTNAMEs of the images to stack as channels, in order (see
        :func:`read_cutout`).
    cutout_size : int, default -1
        Side of the centred square crop; -1 keeps the native size.
    n_jobs : int or None, default None
        Worker processes for reading (None = 1, -1 = all cores).

    Examples
    --------
    >>> from otrain import CutoutLoader
    >>> loader = CutoutLoader(channels=("SCI", "REF", "DIFF"))
    >>> X = loader.transform(paths)  # doctest: +SKIP
    >>> X.shape  # doctest: +SKIP
    (264, 63, 63, 3)
    """

    def __init__(self, *, channels=DEFAULT_CHANNELS, cutout_size=-1, n_jobs=None):
        self.channels = channels
        self.cutout_size = cutout_size
        self.n_jobs = n_jobs

    def fit(self, X=None, y=None):
        """Do nothing: the loader learns nothing from data.

        Parameters
        ----------
        X : ignored
        y : ignored

        Returns
        -------
        self : CutoutLoader
        """
        check_channels(self.channels)
        check_cutout_size(self.cutout_size)
        return self

    def transform(self, X):
        """Read the files.

        Parameters
        ----------
        X : sequence of str or path-like
            Paths of cutout files (a 1-D array or a column vector of paths).

        Returns
        -------
        ndarray of shape (n_files, H, W, C), float32
        """
        return self.load(X)[0]

    def load(self, X):
        """Read the files and their keywords.

        Parameters
        ----------
        X : sequence of str or path-like
            Paths of cutout files.

        Returns
        -------
        cube : ndarray of shape (n_files, H, W, C), float32
        keywords : astropy.table.Table
            One row per file (see :func:`keywords_table`).
        """
        cube, keywords, _ = load_cutouts(
            _as_paths(X),
            channels=self.channels,
            cutout_size=self.cutout_size,
            n_jobs=self.n_jobs,
        )
        return cube, keywords

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags


def _as_paths(X):
    array = np.asarray(X, dtype=object)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(
            f"CutoutLoader expects a 1-D list of file paths, got an array of shape {array.shape}"
        )
    return [os.fspath(p) for p in array]
