"""The real/bogus classifier: a scikeras ``KerasClassifier`` for cutout stamps."""

import weakref

import numpy as np
from scikeras.wrappers import KerasClassifier
from sklearn.model_selection import train_test_split
from sklearn.utils import ClassifierTags

from .exceptions import CutoutError, NotFittedError
from .networks import NETWORKS, NORMALISATIONS, build_model

__all__ = ["CutoutClassifier"]

# Large prediction batches amortise the per-batch overhead of Keras on a CPU.
_PREDICT_BATCH_SIZE = 1024


class CutoutClassifier(KerasClassifier):
    """Convolutional real/bogus classifier of cutout stamps.

    A scikit-learn classifier (a scikeras ``KerasClassifier``) taking stamps of shape
    (n, H, W, C) and labels 1 (real) / 0 (bogus). ``predict_proba`` columns are
    [bogus, real]. It works in pipelines, grid searches, cross-validation and
    calibration like any scikit-learn classifier, and is reproducible on a CPU with
    ``random_state``.

    The default recipe is the one that learns on small real sets: robust per-stamp
    normalisation, random rotations and flips, balanced class weights, batches of
    64 and early stopping on a stratified validation fraction (measured in
    ``benchmarks/recipe.py``).

    Parameters
    ----------
    network : str or callable, default "otrain"
        ``"otrain"`` (O'TRAIN's network), ``"vgg6"`` (braai-like), or a function
        ``build(inputs, *, dropout) -> features`` (see :mod:`otrain.networks`).
    normalisation : {"robust", "l2", "none"}, default "robust"
        Per-stamp normalisation, stored in the model (see
        :class:`otrain.networks.StampNormalisation`): ``"robust"`` (median and MAD,
        then asinh), ``"l2"`` (ZTF's braai), ``"none"`` (O'TRAIN's raw pixels).
    augment : bool, default True
        Random 90-degree rotations and flips during training.
    dropout : float, default 0.3
        Dropout rate.
    learning_rate : float, default 1e-3
        The optimizer's learning rate.
    batch_size : int, default 64
        Training batch size.
    epochs : int, default 50
        Maximum number of epochs (early stopping usually ends training sooner).
    validation_fraction : float, default 0.15
        Stratified fraction of the training data held out for early stopping; 0
        trains for ``epochs`` epochs without validation.
    patience : int, default 8
        Epochs without a lower validation loss before training stops; the weights of
        the best epoch are kept.
    class_weight : "balanced", dict or None, default "balanced"
        Weights of the classes in the loss: ``"balanced"`` makes both classes count
        equally however imbalanced the set.
    random_state : int, optional
        Seed of weights, shuffling, augmentation, dropout and the validation split:
        the same seed gives the same probabilities on a CPU.
    verbose : int, default 0
        Keras' verbosity during fit.
    optimizer : str or keras optimizer class, default "adam"
        Built afresh at each fit with ``learning_rate``.
    loss : str, default "sparse_categorical_crossentropy"
        Loss of the two-class softmax output.
    metrics : sequence of str, default ("accuracy",)
        Metrics recorded per epoch in ``history_``.
    model, callbacks, warm_start
        As in scikeras' ``KerasClassifier``; ``model`` (a prebuilt Keras model) is
        rarely needed: use ``network`` instead.
    **kwargs
        Other scikeras parameters (``callbacks``, ``fit__...``, ``predict__...``).

    Attributes
    ----------
    model_ : keras.Model
        The fitted network (normalisation and augmentation layers included).
    classes_ : ndarray of shape (2,)
        ``[0, 1]``: bogus, real.
    history_ : dict
        Per-epoch ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``.
    channels_ : tuple of str or None
        Channel names of the stamps, when known (set by
        :func:`otrain.model_files.load_model` and ``save_model``).
    calibration_ : otrain.calibration.Calibration or None
        Calibration map of P(real) applied by ``predict_proba``; set by
        :meth:`calibrate` or loaded from a model file.
    threshold_ : float or None
        Decision threshold used by ``predict`` (called real when P(real) >=
        ``threshold_``; 0.5 when None); loaded from a model file.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from otrain import CutoutClassifier, CutoutLoader
    >>> model = make_pipeline(CutoutLoader(), CutoutClassifier(random_state=0))
    >>> model.fit(paths, labels)  # doctest: +SKIP
    >>> model.predict_proba(new_paths)[:, 1]  # P(real)  # doctest: +SKIP
    """

    def __init__(
        self,
        model=None,
        *,
        network="otrain",
        normalisation="robust",
        augment=True,
        dropout=0.3,
        learning_rate=1e-3,
        batch_size=64,
        epochs=50,
        validation_fraction=0.15,
        patience=8,
        class_weight="balanced",
        random_state=None,
        verbose=0,
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=("accuracy",),
        callbacks=None,
        warm_start=False,
        **kwargs,
    ):
        super().__init__(
            model=model,
            optimizer=optimizer,
            loss=loss,
            metrics=metrics,
            batch_size=batch_size,
            epochs=epochs,
            random_state=random_state,
            verbose=verbose,
            callbacks=callbacks,
            warm_start=warm_start,
            class_weight=class_weight,
            **kwargs,
        )
        self.network = network
        self.normalisation = normalisation
        self.augment = augment
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.patience = patience

    # -- scikit-learn protocol -------------------------------------------------------

    def __sklearn_tags__(self):
        # scikeras 0.13 predates scikit-learn's tag objects: without this, sklearn >=
        # 1.7 does not see a classifier (unstratified CV, NaN roc_auc scores).
        tags = super().__sklearn_tags__()
        tags.estimator_type = "classifier"
        tags.classifier_tags = ClassifierTags()
        tags.target_tags.required = True
        tags.input_tags.allow_nan = True
        tags.non_deterministic = self.random_state is None
        return tags

    def __sklearn_is_fitted__(self):
        return self.initialized_

    # -- building ---------------------------------------------------------------------

    def _keras_build_fn(self, compile_kwargs):
        import keras

        prebuilt = getattr(self, "_prebuilt_model", None)
        if prebuilt is not None:
            return prebuilt
        self._check_settings()
        model = build_model(
            self.X_shape_[1:],
            network=self.network,
            normalisation=self.normalisation,
            augment=self.augment,
            dropout=self.dropout,
        )
        model.compile(
            optimizer=self._optimizer(keras),
            loss=self.loss,
            metrics=list(self.metrics or []),
        )
        return model

    def _optimizer(self, keras):
        """A fresh optimizer from ``optimizer`` (a name or a class) at ``learning_rate``."""
        optimizer = self.optimizer
        if isinstance(optimizer, str):
            optimizer = type(keras.optimizers.get(optimizer))
        if not (isinstance(optimizer, type) and issubclass(optimizer, keras.optimizers.Optimizer)):
            raise ValueError(
                "optimizer must be a Keras optimizer name (e.g. 'adam', 'sgd') or class, "
                f"got {self.optimizer!r}; its learning rate is set by learning_rate"
            )
        return optimizer(learning_rate=self.learning_rate)

    def _check_settings(self):
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(
                f"normalisation must be one of {', '.join(NORMALISATIONS)}, "
                f"got {self.normalisation!r}"
            )
        if not callable(self.network) and self.network not in NETWORKS:
            raise ValueError(
                f"network must be one of {', '.join(NETWORKS)} or a function, got {self.network!r}"
            )
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must lie in [0, 1), got {self.validation_fraction}"
            )

    def _validate_data(self, X=None, y=None, reset=False, y_numeric=False):
        # scikeras' own check rejects NaN pixels, which are legal stamps here
        # (the normalisation layer handles them); stamps are checked here instead.
        if reset and y is None and X is not None:
            raise ValueError("CutoutClassifier requires y to be passed, but the target y is None")
        if X is not None:
            X = _as_stamps(X)
        if y is not None:
            _, y = super()._validate_data(X=None, y=y, reset=reset, y_numeric=y_numeric)
            if reset:
                _check_binary_target(y)
        if X is None:
            return X, y
        if y is not None and len(y) != len(X):
            raise ValueError(f"X has {len(X)} stamps but y has {len(y)} labels")
        if reset:
            self.X_dtype_ = X.dtype
            self.X_shape_ = X.shape
            self.n_features_in_ = X.shape[1]
        elif X.shape[1:] != tuple(self.X_shape_[1:]):
            got = "x".join(map(str, X.shape[1:]))
            want = "x".join(map(str, self.X_shape_[1:]))
            raise CutoutError(
                f"stamps of {got} (HxWxC) were given but the model takes {want}; crop them "
                f"to the model's size (cutout_size={self.X_shape_[1]}) and use its channels"
            )
        return X, y

    # -- training ---------------------------------------------------------------------

    def fit(self, X, y, sample_weight=None, **kwargs):
        """Train a new network on stamps ``X`` and labels ``y``.

        Parameters
        ----------
        X : array-like of shape (n, H, W, C) or (n, H, W)
            Stamps; non-finite pixels are allowed.
        y : array-like of shape (n,)
            1 for real, 0 for bogus.
        sample_weight : array-like of shape (n,), optional
            Weights multiplied with the class weights.
        **kwargs
            Passed to ``keras.Model.fit``.

        Returns
        -------
        self : CutoutClassifier
        """
        self._prebuilt_model = None
        if y is None:
            raise ValueError("CutoutClassifier requires y to be passed, but the target y is None")
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64).copy()
        return super().fit(X, y, sample_weight=sample_weight, **kwargs)

    def _fit_keras_model(self, X, y, sample_weight, warm_start, epochs, initial_epoch, **kwargs):
        import keras

        callbacks = list(self._fit_callbacks)
        if self.validation_fraction > 0 and "validation_data" not in kwargs:
            split = self._validation_split(X, y, sample_weight)
            if split is not None:
                X, y, sample_weight, kwargs["validation_data"] = split
                callbacks.append(
                    keras.callbacks.EarlyStopping(
                        monitor="val_loss", patience=self.patience, restore_best_weights=True
                    )
                )
        callbacks.append(keras.callbacks.TerminateOnNaN())
        saved, self._fit_callbacks = self._fit_callbacks, callbacks
        try:
            super()._fit_keras_model(
                X, y, sample_weight, warm_start, epochs, initial_epoch, **kwargs
            )
        finally:
            self._fit_callbacks = saved
        if not np.all(np.isfinite(self.history_["loss"])):
            raise ValueError(
                f"training diverged (the loss became NaN at epoch {len(self.history_['loss'])}): "
                f"normalise the stamps (normalisation='l2' or 'robust', not "
                f"{self.normalisation!r}) or lower the learning rate ({self.learning_rate})"
            )

    def _validation_split(self, X, y, sample_weight):
        if np.ndim(y) > 1 and np.shape(y)[1] > 1:
            labels = np.asarray(y).reshape(len(y), -1).argmax(axis=1)
        else:
            labels = np.ravel(y)
        counts = np.bincount(labels.astype(int))
        n_valid = int(round(self.validation_fraction * len(labels)))
        # Too few stamps for a stratified hold-out: train on all, for `epochs` epochs.
        if n_valid < len(counts) or np.min(counts) < 2 or len(labels) - n_valid < len(counts):
            return None
        index = np.arange(len(labels))
        seed = self._random_state if isinstance(self._random_state, int | np.integer) else None
        train, valid = train_test_split(
            index, test_size=n_valid, stratify=labels, random_state=seed
        )
        train.sort()
        valid.sort()
        sw_train = None if sample_weight is None else sample_weight[train]
        valid_data = (
            (X[valid], y[valid])
            if sample_weight is None
            else (X[valid], y[valid], sample_weight[valid])
        )
        return X[train], y[train], sw_train, valid_data

    # -- prediction -------------------------------------------------------------------

    def _predict_raw(self, X, **kwargs):
        if not self.initialized_:
            raise NotFittedError(
                "this CutoutClassifier is not fitted yet: call fit() or load a model file "
                "with otrain.load_model()"
            )
        if kwargs:
            kwargs.setdefault("batch_size", _PREDICT_BATCH_SIZE)
            return super()._predict_raw(X, **kwargs)
        X, _ = self._validate_data(X=X, y=None)
        X = np.asarray(self.feature_encoder_.transform(X), dtype=np.float32)
        forward = _forward_function(self.model_)
        batches = [
            forward(X[start : start + _PREDICT_BATCH_SIZE]).numpy()
            for start in range(0, len(X), _PREDICT_BATCH_SIZE)
        ]
        if not batches:
            return np.empty((0, *self.model_.output_shape[1:]), dtype=np.float32)
        return np.concatenate(batches).astype(np.float32, copy=False)

    def predict_proba(self, X, **kwargs):
        """Probabilities of bogus and real.

        If the classifier is calibrated (``calibration_``, see :meth:`calibrate`), the
        calibrated probabilities are returned.

        Parameters
        ----------
        X : array-like of shape (n, H, W, C)
            Stamps of the model's size and channels.
        **kwargs
            Passed to ``keras.Model.predict``.

        Returns
        -------
        ndarray of shape (n, 2)
            Columns [P(bogus), P(real)], finite, summing to 1.
        """
        proba = super().predict_proba(X, **kwargs)
        # scikeras squeezes the result of a single stamp to shape (2,).
        return self._calibrated(np.reshape(proba, (-1, 2)))

    def _calibrated(self, proba):
        calibration = getattr(self, "calibration_", None)
        if calibration is None:
            return proba
        p_real = calibration.apply(proba[:, 1])
        return np.column_stack([1.0 - p_real, p_real])

    def predict(self, X, **kwargs):
        """Labels: 1 (real) where P(real) >= the threshold, else 0 (bogus).

        The threshold is ``threshold_`` when set (a loaded model file that stores
        one, see :func:`otrain.thresholds.choose_threshold`), else 0.5; P(real) is
        calibrated when the classifier is (``calibration_``).

        Parameters
        ----------
        X : array-like of shape (n, H, W, C)
        **kwargs
            Passed to ``keras.Model.predict``.

        Returns
        -------
        ndarray of shape (n,)
        """
        threshold = getattr(self, "threshold_", None)
        if threshold is None and getattr(self, "calibration_", None) is None:
            return super().predict(X, **kwargs)
        p_real = self.predict_proba(X, **kwargs)[:, 1]
        threshold = 0.5 if threshold is None else threshold
        return self.classes_[(p_real >= threshold).astype(int)]

    def calibrate(self, X, y, *, method="sigmoid"):
        """Calibrate P(real) on held-out stamps (see :func:`otrain.calibration.calibrate`).

        Parameters
        ----------
        X : array-like of shape (n, H, W, C)
            Stamps the network was not trained on.
        y : array-like of shape (n,)
            1 real, 0 bogus.
        method : {"sigmoid", "isotonic"}, default "sigmoid"

        Returns
        -------
        self : CutoutClassifier
            With ``calibration_`` set; ``predict_proba`` applies it.
        """
        from .calibration import calibrate

        return calibrate(self, X, y, method=method)

    def predict_proba_mc(self, X, n_samples=30, *, random_state=None, batch_size=None):
        """Monte-Carlo dropout: mean and spread of the probabilities over dropout draws.

        The network is run ``n_samples`` times with its dropout layers active (each
        run drops a different random set of units) and everything else as in
        ``predict_proba``: the normalisation is the same, the random rotations and
        flips of training stay off, and the calibration (if any) is applied to each
        draw. The spread of P(real) over the draws is a measure of the network's
        uncertainty on each candidate (Gal & Ghahramani 2016).

        Parameters
        ----------
        X : array-like of shape (n, H, W, C)
            Stamps of the model's size and channels.
        n_samples : int, default 30
            Forward passes with dropout.
        random_state : int, optional
            Seed of the dropout draws: the same seed gives the same result on a CPU.
        batch_size : int, optional
            Prediction batch size (default 1024).

        Returns
        -------
        mean : ndarray of shape (n, 2)
            Mean [P(bogus), P(real)] over the draws.
        std : ndarray of shape (n, 2)
            Standard deviation of each column over the draws (the two are equal).

        Raises
        ------
        ValueError
            If the network has no dropout layer (every draw would be the same).
        """
        if not self.initialized_:
            raise NotFittedError(
                "this CutoutClassifier is not fitted yet: call fit() or load a model file "
                "with otrain.load_model()"
            )
        n_samples = int(n_samples)
        if n_samples < 2:
            raise ValueError(f"n_samples must be at least 2, got {n_samples}")
        X, _ = self._validate_data(X)
        model = _mc_dropout_model(self.model_, random_state)
        draws = np.empty((n_samples, len(X)), dtype=np.float64)
        for i in range(n_samples):
            proba = model.predict(X, batch_size=batch_size or _PREDICT_BATCH_SIZE, verbose=0)
            proba = np.asarray(proba, dtype=np.float64).reshape(len(X), -1)
            p_real = proba[:, -1]
            draws[i] = self._calibrated(np.column_stack([1.0 - p_real, p_real]))[:, 1]
        mean, std = draws.mean(axis=0), draws.std(axis=0)
        return np.column_stack([1.0 - mean, mean]), np.column_stack([std, std])

    # -- pickling ---------------------------------------------------------------------

    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state.pop("_prebuilt_model", None)
        return state


# One inference function per Keras model, traced once for any number of stamps.
_FORWARD = weakref.WeakKeyDictionary()


def _forward_function(model):
    """``model(x, training=False)`` as a ``tf.function`` with a free batch size.

    ``keras.Model.predict`` traces its graph again for each new batch size it meets
    (the last, partial batch of every chunk of candidates), a second each time; this
    function is traced once per model.
    """
    forward = _FORWARD.get(model)
    if forward is None:
        import tensorflow as tf

        spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
        forward = tf.function(
            lambda x: model(x, training=False), input_signature=[spec], autograph=False
        )
        _FORWARD[model] = forward
    return forward


def _mc_dropout_model(model, random_state):
    """A copy of ``model`` sharing its weights, with every dropout layer always active.

    Calling the model with ``training=True`` would also switch on the random rotations
    and flips (:class:`otrain.networks.RandomDihedral`) and any batch normalisation's
    training mode; here only the dropout layers are replaced, so the copy is called
    in inference mode and the dropout alone is random.
    """
    import keras

    # One seed per dropout layer, drawn from random_state: reproducible, and distinct.
    rng = np.random.default_rng(random_state)
    count = [0]

    class _AlwaysDropout(keras.layers.Dropout):
        def call(self, inputs, training=None):
            return super().call(inputs, training=True)

    def clone(layer):
        if isinstance(layer, keras.layers.Dropout):
            seed = int(rng.integers(0, 2**31 - 1))
            count[0] += 1
            return _AlwaysDropout(
                layer.rate, noise_shape=layer.noise_shape, seed=seed, name=f"mc_{layer.name}"
            )
        return layer

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    if count[0] == 0:
        raise ValueError(
            "the network has no dropout layer, so Monte-Carlo dropout gives no spread; "
            "train with dropout > 0 (e.g. the default network, dropout=0.3)"
        )
    return copy


def _check_binary_target(y):
    from sklearn.utils.multiclass import type_of_target

    kind = type_of_target(y)
    if kind not in ("binary", "multiclass"):
        raise ValueError(
            f"Unknown label type: {kind}; y must hold two classes, 1 (real) and 0 (bogus)"
        )
    n_classes = len(np.unique(y))
    if n_classes != 2:
        raise ValueError(
            f"y holds {n_classes} class{'es' if n_classes != 1 else ''}; a real/bogus "
            "classifier is trained on two classes, 1 (real) and 0 (bogus)"
        )


def _as_stamps(X):
    from scipy import sparse

    if sparse.issparse(X):
        raise TypeError(
            "CutoutClassifier takes dense stamps (n, H, W, C); a sparse matrix was given"
        )
    try:
        X = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise ValueError(
            "CutoutClassifier takes numeric stamps of shape (n, H, W, C); to start from "
            "file paths, put a CutoutLoader before it in a pipeline"
        ) from err
    if X.ndim == 3:
        X = X[..., np.newaxis]
    if X.ndim != 4:
        raise ValueError(
            f"CutoutClassifier takes stamps of shape (n, H, W, C) or (n, H, W), got an array "
            f"of shape {X.shape}; to start from file paths, put a CutoutLoader before it"
        )
    return X
