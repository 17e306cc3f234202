"""The real/bogus classifier: a scikeras ``KerasClassifier`` for cutout stamps."""

import inspect
import math
import weakref
from collections import defaultdict

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.utils import ClassifierTags

from ._defaults import TRAINING
from ._tensorflow import load_tensorflow
from ._validation import (
    check_choice,
    check_fraction,
    check_int,
    check_network,
    check_positive,
    check_threshold,
    check_unknown_parameters,
    seed_sequence,
    spawn_seeds,
)
from .exceptions import CutoutError, NotFittedError
from .pretrained import check_init, check_stamps, copy_network, load_init

load_tensorflow()

import keras  # noqa: E402 - after the quiet import of TensorFlow
from scikeras.utils import metric_name  # noqa: E402
from scikeras.wrappers import KerasClassifier  # noqa: E402

from .networks import (  # noqa: E402
    NETWORKS,
    NORMALISATIONS,
    assemble_ensemble,
    build_model,
    dihedral,
    ensemble_members,
    n_dihedral_views,
)

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
    normalisation, every stamp in its 8 rotations and flips each epoch, balanced
    class weights, batches of 64 and early stopping (measured on real ZTF stamps in
    ``benchmarks/recipe.py``).

    Parameters
    ----------
    network : str or callable, default "vgg6"
        ``"vgg6"`` (braai-like, 0.4M weights), ``"otrain"`` (O'TRAIN's network, 8.9M
        weights, about 4 times slower to train), or a function
        ``build(inputs, *, dropout) -> features`` (see :mod:`otrain.networks`).
    normalisation : {"robust", "l2", "none"}, default "robust"
        Per-stamp normalisation, stored in the model (see
        :class:`otrain.networks.StampNormalisation`): ``"robust"`` (median and MAD,
        then asinh), ``"l2"`` (ZTF's braai), ``"none"`` (O'TRAIN's raw pixels).
    augment : bool, default True
        Show every stamp in its 8 rotations and flips (4 for rectangular stamps) in
        each epoch, in a shuffled order; False shows each stamp once per epoch.
    dropout : float, default 0.3
        Dropout rate.
    learning_rate : float, default 1e-3
        The optimizer's learning rate.
    batch_size : int, default 64
        Training batch size.
    epochs : int, default 30
        Maximum number of epochs, passes over the training stamps (each stamp in its
        rotations and flips with ``augment``); early stopping usually ends training
        sooner.
    validation_fraction : float, default 0.15
        Stratified fraction of the training data held out for early stopping; 0
        trains for ``epochs`` epochs without validation. Not used by an ensemble,
        whose networks stop early on their own folds.
    patience : int, default 5
        Epochs without a lower validation loss before training stops; the weights of
        the best epoch are kept.
    ensemble : int, default 1
        Networks trained and averaged (their mean log-odds), stored and scored as
        one model. With K >= 2 they are cross-fitted: the stamps are cut into K
        stratified folds, network k trains on the others, stops early on fold k and
        scores it (``oof_p_real_``), which :meth:`calibrate` can then use without
        setting stamps aside. K trainings on (K-1)/K of the stamps each.
    class_weight : "balanced", dict or None, default "balanced"
        Weights of the classes in the loss: ``"balanced"`` makes both classes count
        equally however imbalanced the set.
    init : str or path-like, optional
        Start from a trained real/bogus network instead of random weights
        (fine-tuning): ``"braai"`` (ZTF's braai d6_m9, shipped with otrain, 63x63
        SCI, REF, DIFF stamps), an otrain model file of one network, or a legacy
        Keras ``.h5`` real/bogus model. Its layers, normalisation and dropout are
        kept (``network``, ``normalisation`` and ``dropout`` are then not used); the
        stamps must have its size and channels. See :mod:`otrain.pretrained` and
        ``docs/guide.md`` for when it helps. None (default): random weights.
    random_state : int, numpy RandomState or Generator, optional
        Seed of the weights, shuffling, augmentation, dropout and the validation
        split, each drawn as its own seed from this one (process-wide random state is
        never read or changed): the same int gives the same probabilities on a CPU,
        in any order of fits, in threads and on Dask workers. A ``RandomState`` or
        ``Generator`` is drawn from at each fit; None draws fresh seeds.
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
    n_epochs_ : int
        Epochs run (passes over the training part).
    n_steps_ : int
        Gradient steps run (batches of ``batch_size``).
    best_epoch_ : int
        The epoch whose weights were kept: the lowest validation loss with early
        stopping, else the last.
    stopped_early_ : bool
        True when early stopping ended the training (of every network), False when
        it ran up to ``epochs``.
    networks_ : list of dict
        Per network: ``n_epochs``, ``n_steps``, ``best_epoch``, ``stopped_early``
        (one entry for a single network; ``best_epoch_`` is their median).
    oof_p_real_, oof_y_ : ndarray of shape (n,) or None
        An ensemble's out-of-fold P(real) of the training stamps (of non-zero
        weight, in their order) and their labels; None for a single network or
        when a class had fewer than ``ensemble`` stamps.
    init_source_ : dict or None
        What the training started from with ``init``: ``init``, ``description``,
        ``file``, ``sha256`` (stored in the model file's record as ``"init"``).
    stamp_shape_ : tuple of int
        (H, W, C) of the stamps the network takes.
    n_features_in_ : int
        H x W x C, the number of values of one stamp (what a flattened table would
        have); use ``stamp_shape_`` for the shape.
    channels_ : tuple of str or None
        Channel names of the stamps, when known (``fit(..., channels=...)``, or a
        model file).
    calibration_ : otrain.calibration.Calibration or None
        Calibration map of P(real) applied by ``predict_proba``; set by
        :meth:`calibrate` or loaded from a model file.
    threshold_ : float or None
        Decision threshold used by ``predict`` (called real when P(real) >=
        ``threshold_``; 0.5 when None); set by :meth:`set_threshold` or loaded from a
        model file.
    bfloat16_check_ : dict or None
        How far bfloat16 scoring moved P(real) on validation stamps
        (:meth:`check_bfloat16`); ``precision="auto"`` scoring reads it.
    model_file_record_ : dict or None
        The ``otrain`` record of the model file this classifier was loaded from or
        saved to.

    Every fit starts from a clean slate: the attributes above that come after the
    network (calibration, threshold, bfloat16 check, channels, model-file record) are
    reset by ``fit``, and by ``partial_fit`` except ``channels_``.

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
        network=TRAINING["network"],
        normalisation=TRAINING["normalisation"],
        augment=TRAINING["augment"],
        dropout=TRAINING["dropout"],
        learning_rate=TRAINING["learning_rate"],
        batch_size=TRAINING["batch_size"],
        epochs=TRAINING["epochs"],
        validation_fraction=TRAINING["validation_fraction"],
        patience=TRAINING["patience"],
        ensemble=TRAINING["ensemble"],
        class_weight=TRAINING["class_weight"],
        init=TRAINING["init"],
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
        self.ensemble = ensemble
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.init = init

    # -- scikit-learn protocol -------------------------------------------------------

    def __sklearn_tags__(self):
        # scikeras 0.13 predates scikit-learn's tag objects: without this, sklearn >=
        # 1.7 does not see a classifier (unstratified CV, NaN roc_auc scores).
        tags = super().__sklearn_tags__()
        tags.estimator_type = "classifier"
        tags.classifier_tags = ClassifierTags()
        tags.target_tags.required = True
        # Stamps (n, H, W, C), or (n, H, W) for one channel; never a 2-D table.
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.allow_nan = True
        tags.non_deterministic = self.random_state is None
        return tags

    def __sklearn_is_fitted__(self):
        return self.initialized_

    # -- settings ---------------------------------------------------------------------

    def _check_settings(self):
        """Validate every hyperparameter, naming the one at fault (scikit-learn style)."""
        # The named parameters of __init__ (scikeras adds the unknown ones to the list).
        signature = inspect.signature(type(self).__init__).parameters.values()
        known = {p.name for p in signature if p.kind is p.KEYWORD_ONLY or p.name == "model"}
        known |= {"validation_batch_size", "shuffle"}
        check_unknown_parameters(
            set(getattr(self, "_user_params", ())),
            known,
            type(self).__name__,
            _ROUTED_PREFIXES,
        )
        check_network(self.network, NETWORKS)
        check_choice(self.normalisation, "normalisation", NORMALISATIONS)
        if not isinstance(self.augment, bool | np.bool_):
            raise ValueError(f"augment must be True or False, got {self.augment!r}")
        check_fraction(self.dropout, "dropout")
        check_positive(self.learning_rate, "learning_rate")
        check_int(self.batch_size, "batch_size", low=1)
        check_int(self.epochs, "epochs", low=1)
        check_fraction(self.validation_fraction, "validation_fraction")
        check_int(self.patience, "patience", low=0)
        check_int(self.ensemble, "ensemble", low=1)
        check_int(self.verbose, "verbose", low=0)
        if not (
            self.class_weight is None
            or self.class_weight == "balanced"
            or isinstance(self.class_weight, dict)
        ):
            raise ValueError(
                f"class_weight must be 'balanced', a dict {{class: weight}} or None, "
                f"got {self.class_weight!r}"
            )
        seed_sequence(self.random_state)  # refuses what is not a seed, draws nothing
        check_init(self.init)

    # -- building ---------------------------------------------------------------------

    def _keras_build_fn(self, compile_kwargs):
        prebuilt = getattr(self, "_prebuilt_model", None)
        if prebuilt is not None:
            return prebuilt
        # Drawn by _fit; scikeras' initialize() outside a fit draws its own.
        seed = (getattr(self, "_fit_seeds", None) or self._draw_seeds())["weights"]
        if self.ensemble == 1:
            model = self._build_network(seed)
        else:
            seeds = spawn_seeds(np.random.SeedSequence(seed), self.ensemble)
            model = assemble_ensemble([self._build_network(s) for s in seeds])
        self._compile(model)
        return model

    def _build_network(self, seed):
        if self.init is not None:
            return copy_network(self._init_network()["model"], seed)
        # Rotations and flips are shown by the training batches (_Batches), all eight
        # of each stamp per epoch, not drawn at random inside the network.
        return build_model(
            self.X_shape_[1:],
            network=self.network,
            normalisation=self.normalisation,
            augment=False,
            dropout=self.dropout,
            seed=seed,
        )

    def _init_network(self):
        """The network ``init`` names, read once per fit and checked against the stamps."""
        info = getattr(self, "_init_loaded", None)
        if info is None:
            info = load_init(
                self.init,
                channels=getattr(self, "_fit_channels", None),
                normalisation=self.normalisation,
            )
            check_stamps(info, self.X_shape_[1:], getattr(self, "_fit_channels", None))
            self._init_loaded = info
            self.init_source_ = {**info["source"], "channels": list(info["channels"])}
        return info

    def _compile(self, model):
        model.compile(
            optimizer=self._optimizer(),
            loss=self.loss,
            metrics=list(self.metrics or []),
        )

    def _optimizer(self):
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

    def _initialize(self, X, y=None):
        # scikeras' own seeding (``random_state`` -> process-wide ``random``,
        # ``np.random``, TensorFlow's global seed and op determinism, the last left on
        # for good) is bypassed: its ``_random_state`` stays None, and the seeds of
        # the weights, dropout, augmentation, shuffling and split come from
        # ``_fit_seeds``, drawn from ``random_state`` alone.
        self._random_state = None
        X, y = self._validate_data(X, y, reset=True)
        self.target_encoder_ = self.target_encoder.fit(y)
        vars(self).update(**getattr(self.target_encoder_, "get_metadata", dict)())
        self.feature_encoder_ = self.feature_encoder.fit(X)
        vars(self).update(**getattr(self.feature_encoder, "get_metadata", dict)())
        self.model_ = self._build_keras_model()
        self._initialize_callbacks()
        self._new_model = True
        return X, y

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
            self.stamp_shape_ = tuple(int(s) for s in X.shape[1:])
            self.n_features_in_ = math.prod(self.stamp_shape_)
        elif X.shape[1:] != tuple(self.X_shape_[1:]):
            got = "x".join(map(str, X.shape[1:]))
            want = "x".join(map(str, self.X_shape_[1:]))
            raise CutoutError(
                f"stamps of {got} (HxWxC) were given but the model takes {want}; crop them "
                f"to the model's size (cutout_size={self.X_shape_[1]}) and use its channels"
            )
        return X, y

    # -- training ---------------------------------------------------------------------

    def fit(self, X, y, sample_weight=None, *, channels=None, **kwargs):
        """Train a new network on stamps ``X`` and labels ``y``.

        Everything a previous fit, :meth:`calibrate`, :meth:`set_threshold`,
        :meth:`check_bfloat16` or a loaded model file left is reset first.

        Parameters
        ----------
        X : array-like of shape (n, H, W, C) or (n, H, W)
            Stamps; non-finite pixels are allowed.
        y : array-like of shape (n,)
            1 for real, 0 for bogus.
        sample_weight : array-like of shape (n,), optional
            Weights multiplied with the class weights.
        channels : sequence of str, optional
            Names of the C channels (e.g. ``("SCI", "REF", "DIFF")``), kept as
            ``channels_`` and stored in model files.
        **kwargs
            Passed to ``keras.Model.fit``.

        Returns
        -------
        self : CutoutClassifier
        """
        from sklearn.utils.validation import _check_sample_weight, check_array

        self._reset()
        self._check_settings()
        if y is None:
            raise ValueError("CutoutClassifier requires y to be passed, but the target y is None")
        X = _as_stamps(X)
        y = check_array(y, ensure_2d=False, dtype=None, input_name="y")
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64, copy=True)
            if not np.any(sample_weight):
                raise ValueError(
                    "sample_weight is zero for every stamp: there is nothing to train on"
                )
            # A stamp of weight zero is one left out, before the class weights are
            # computed too (scikeras drops it only after).
            kept = sample_weight != 0
            X, y, sample_weight = X[kept], y[kept], sample_weight[kept]
        if channels is not None:
            from ._validation import check_channels

            channels = check_channels(channels)
            if len(channels) != X.shape[-1]:
                raise ValueError(
                    f"channels names {len(channels)} images ({', '.join(channels)}) but the "
                    f"stamps have {X.shape[-1]} channels"
                )
        self._fit_channels = channels
        try:
            super().fit(X, y, sample_weight=sample_weight, **kwargs)
        finally:
            self._fit_channels = self._init_loaded = None
        self.channels_ = channels
        if channels is None and self.init_source_ is not None:
            # The stamps are in the layout of the network they fine-tuned.
            self.channels_ = tuple(self.init_source_["channels"])
        return self

    def _reset(self):
        """Forget every fitted attribute (scikit-learn's ``_reset`` pattern)."""
        self._prebuilt_model = None
        self.init_source_ = None
        for name in _FITTED_STATE:
            setattr(self, name, None)

    def _draw_seeds(self):
        """One seed each for the weights, the shuffling and the split, from random_state."""
        weights, shuffle, split = spawn_seeds(seed_sequence(self.random_state), 3)
        return {"weights": weights, "shuffle": shuffle, "split": split}

    def _fit(self, X, y, sample_weight, warm_start, epochs, initial_epoch, **kwargs):
        # Weights, shuffling and split each get their own seed, drawn once per call
        # from random_state; nothing else is read.
        self._fit_seeds = self._draw_seeds()
        # A network trained further no longer matches what was fitted on the old one.
        for name in _FITTED_STATE:
            if name != "channels_":
                setattr(self, name, None)
        try:
            super()._fit(X, y, sample_weight, warm_start, epochs, initial_epoch, **kwargs)
        finally:
            del self._fit_seeds

    def _fit_keras_model(self, X, y, sample_weight, warm_start, epochs, initial_epoch, **kwargs):
        from scikeras._utils import route_params

        fit_args = route_params(self.get_params(), destination="fit", pass_filter=self._fit_kwargs)
        fit_args.update(kwargs)
        fit_args = {k: v for k, v in fit_args.items() if not k.startswith("callbacks")}
        for ignored in ("epochs", "initial_epoch", "sample_weight", "validation_split"):
            fit_args.pop(ignored, None)
        batch_size = fit_args.pop("batch_size", None) or 32
        batch_size = len(X) if batch_size == -1 else int(batch_size)
        fit_args.setdefault("validation_batch_size", batch_size)
        new_model, self._new_model = getattr(self, "_new_model", False), False
        networks = ensemble_members(self.model_) if new_model else None
        if networks is not None and "validation_data" not in fit_args:
            runs = self._fit_ensemble(networks, X, y, sample_weight, epochs, batch_size, fit_args)
        else:
            validation_data = fit_args.pop("validation_data", None)
            split = None
            if self.validation_fraction > 0 and validation_data is None:
                split = self._validation_split(X, y, sample_weight, self._fit_seeds["split"])
            if split is not None:
                X, y, sample_weight, validation_data = split
            runs = [
                self._fit_network(
                    self.model_,
                    (X, y, sample_weight),
                    validation_data,
                    epochs,
                    initial_epoch,
                    batch_size,
                    self._fit_seeds["shuffle"],
                    stop_early=split is not None,
                    fit_args=fit_args,
                )
            ]
        self._record_training(runs, warm_start and initial_epoch > 0, initial_epoch + epochs)
        if not np.all(np.isfinite(self.history_["loss"])):
            raise ValueError(
                f"training diverged (the loss became NaN at epoch {len(self.history_['loss'])}): "
                f"normalise the stamps (normalisation='l2' or 'robust', not "
                f"{self.normalisation!r}) or lower the learning rate ({self.learning_rate})"
            )

    def _fit_network(
        self, model, train, validation_data, epochs, initial_epoch, batch_size, seed, *,
        stop_early, fit_args,
    ):  # fmt: skip
        """Train one network; returns its history, steps and how it ended."""
        callbacks = list(self._fit_callbacks)
        stopping = None
        if stop_early and validation_data is not None:
            stopping = keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=self.patience, restore_best_weights=True
            )
            callbacks.append(stopping)
        callbacks.append(keras.callbacks.TerminateOnNaN())
        args = dict(fit_args)
        batches = _Batches(
            *train,
            batch_size,
            shuffle=args.pop("shuffle", True),
            seed=seed,
            first_epoch=initial_epoch,
            views=n_dihedral_views(train[0].shape[1:]) if self.augment else 1,
        )
        history = model.fit(
            batches,
            epochs=initial_epoch + epochs,
            initial_epoch=initial_epoch,
            validation_data=validation_data,
            callbacks=callbacks,
            # The batches come in their seeded order; Keras would shuffle them again
            # with Python's process-wide `random`.
            shuffle=False,
            **args,
        )
        history = dict(history.history)
        n_epochs = len(history.get("loss", []))
        valid = np.asarray(history.get("val_loss", []), dtype=np.float64)
        if stopping is not None and valid.size and np.isfinite(valid).any():
            # restore_best_weights keeps the epoch of the lowest validation loss.
            best = initial_epoch + int(np.nanargmin(valid)) + 1
        else:
            best = initial_epoch + n_epochs
        return {
            "history": history,
            "n_steps": n_epochs * len(batches),
            "best_epoch": best,
            "stopped_early": bool(stopping is not None and stopping.stopped_epoch > 0),
        }

    def _fit_ensemble(self, networks, X, y, sample_weight, epochs, batch_size, fit_args):
        """Train each network of an ensemble on all folds but its own (cross-fitting).

        Network k stops early on fold k and scores it: every stamp gets one
        out-of-fold P(real) (``oof_p_real_``), which :meth:`calibrate` can fit on.
        """
        from sklearn.model_selection import StratifiedKFold

        k = len(networks)
        labels = np.ravel(y).astype(int)
        counts = np.bincount(labels, minlength=2)
        shuffle_seeds = spawn_seeds(np.random.SeedSequence(self._fit_seeds["shuffle"]), k)
        if counts.min() < k:
            # Too few stamps of a class for k folds: each network trains on them all,
            # for `epochs` epochs, and nothing is out of fold.
            folds = [(np.arange(len(labels)), None)] * k
        else:
            splitter = StratifiedKFold(k, shuffle=True, random_state=self._fit_seeds["split"])
            folds = list(splitter.split(np.zeros(len(labels)), labels))
        oof = np.full(len(labels), np.nan)
        runs = []
        for network, (train, held_out), seed in zip(networks, folds, shuffle_seeds, strict=True):
            self._compile(network)
            weights = None if sample_weight is None else sample_weight[train]
            validation_data = None
            if held_out is not None:
                validation_data = (X[held_out], y[held_out])
                if sample_weight is not None:
                    validation_data += (sample_weight[held_out],)
            runs.append(
                self._fit_network(
                    network,
                    (X[train], y[train], weights),
                    validation_data,
                    epochs,
                    0,
                    batch_size,
                    seed,
                    stop_early=True,
                    fit_args=fit_args,
                )
            )
            if held_out is not None:
                oof[held_out] = _forward(network, np.asarray(X[held_out], np.float32))[:, 1]
        # The networks' own optimizers are dropped; the ensemble trains further as one.
        self._compile(self.model_)
        if not np.isnan(oof).any():
            self.oof_p_real_ = oof
            self.oof_y_ = labels
        return runs

    def _record_training(self, runs, continued, cap):
        """How the training ran: epochs, gradient steps, kept epochs, why it ended."""
        histories = [run["history"] for run in runs]
        keys = [key for key in histories[0] if all(key in h for h in histories)]
        merged = {}
        for key in keys:
            # The mean over the networks of an ensemble, epoch by epoch.
            length = max(len(h[key]) for h in histories)
            merged[key] = [
                float(np.mean([h[key][epoch] for h in histories if epoch < len(h[key])]))
                for epoch in range(length)
            ]
        if not continued or not getattr(self, "history_", None):
            self.history_ = defaultdict(list)
            self.n_steps_ = 0
        for key, values in merged.items():
            if not (key == "loss" or key.startswith("val_")):
                try:
                    key = metric_name(key)
                except ValueError:
                    pass
            self.history_[key] += values
        self.n_epochs_ = len(self.history_["loss"])
        self.n_steps_ = (getattr(self, "n_steps_", 0) or 0) + sum(run["n_steps"] for run in runs)
        self.stopped_early_ = all(run["stopped_early"] for run in runs)
        self.best_epoch_ = int(np.median([run["best_epoch"] for run in runs]))
        self.networks_ = [
            {
                "n_epochs": len(run["history"].get("loss", [])),
                "n_steps": run["n_steps"],
                "best_epoch": run["best_epoch"],
                "stopped_early": run["stopped_early"],
            }
            for run in runs
        ]
        self.epochs_cap_ = int(cap)

    def _validation_split(self, X, y, sample_weight, seed):
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

    def score(self, X, y, sample_weight=None):
        """Accuracy of ``predict(X)`` against ``y`` (scikit-learn's classifier score).

        Parameters
        ----------
        X : array-like of shape (n, H, W, C)
        y : array-like of shape (n,)
        sample_weight : array-like of shape (n,), optional

        Returns
        -------
        float
        """
        self._check_fitted()
        from sklearn.metrics import accuracy_score

        return float(accuracy_score(y, self.predict(X), sample_weight=sample_weight))

    def _check_fitted(self):
        if not self.initialized_:
            raise NotFittedError(
                "this CutoutClassifier is not fitted yet: call fit() or load a model file "
                "with otrain.load_model()"
            )

    # -- what is fitted after the network ------------------------------------------------

    def set_threshold(self, threshold):
        """Set the decision threshold of :meth:`predict` (``threshold_``).

        Parameters
        ----------
        threshold : float or None
            P(real) at or above which a candidate is called real, in [0, 1] (see
            :func:`otrain.thresholds.choose_threshold`); None for 0.5.

        Returns
        -------
        self : CutoutClassifier
        """
        self._check_fitted()
        self.threshold_ = None if threshold is None else check_threshold(threshold)
        return self

    def check_bfloat16(self, X, *, tolerance=None):
        """Measure how far bfloat16 scoring moves P(real) on ``X`` (``bfloat16_check_``).

        See :func:`otrain.precision.check_bfloat16`; the result is kept as
        ``bfloat16_check_`` and stored in model files, where
        ``precision="auto"`` scoring reads it.

        Parameters
        ----------
        X : ndarray of shape (n, H, W, C)
            Validation stamps (not the training ones).
        tolerance : float, optional
            Largest change of P(real) accepted (default
            :data:`otrain.precision.TOLERANCE`).

        Returns
        -------
        dict
            ``max_difference``, ``n_stamps``, ``tolerance``, ``passed``.
        """
        from .precision import TOLERANCE, check_bfloat16

        self._check_fitted()
        check = check_bfloat16(self, X, tolerance=TOLERANCE if tolerance is None else tolerance)
        self.bfloat16_check_ = check
        return check

    def _restore(self, *, channels, record, calibration):
        """State read from a model file (see :func:`otrain.model_files.load_model`)."""
        self.channels_ = tuple(channels)
        self.model_file_record_ = record
        self.init_source_ = record.get("init")
        self.threshold_ = record.get("threshold")
        check = record.get("bfloat16_check")
        self.bfloat16_check_ = (
            check if isinstance(check, dict) and "max_difference" in check else None
        )
        self.calibration_ = calibration

    def _saved_as(self, *, channels, record):
        """State after :func:`otrain.model_files.save_model` wrote ``record``."""
        self.channels_ = tuple(channels)
        self.model_file_record_ = record
        self.threshold_ = record.get("threshold")

    # -- prediction -------------------------------------------------------------------

    def _predict_raw(self, X, **kwargs):
        self._check_fitted()
        if kwargs:
            kwargs.setdefault("batch_size", _PREDICT_BATCH_SIZE)
            return super()._predict_raw(X, **kwargs)
        X, _ = self._validate_data(X=X, y=None)
        X = np.asarray(self.feature_encoder_.transform(X), dtype=np.float32)
        return _forward(self.model_, X)

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

    def calibrate(self, X=None, y=None, *, method="sigmoid"):
        """Calibrate P(real) on held-out stamps, or cross-fitted on the training stamps.

        Parameters
        ----------
        X : array-like of shape (n, H, W, C), optional
            Stamps the network was not trained on (see
            :func:`otrain.calibration.calibrate`). Without ``X`` and ``y``, an
            ensemble (``ensemble`` >= 2) is calibrated on its out-of-fold P(real) of
            the training stamps (``oof_p_real_``: each scored by the network that did
            not train on it), so no labelled stamp is spent on calibration alone.
        y : array-like of shape (n,), optional
            1 real, 0 bogus.
        method : {"sigmoid", "isotonic"}, default "sigmoid"

        Returns
        -------
        self : CutoutClassifier
            With ``calibration_`` set; ``predict_proba`` applies it.
        """
        from .calibration import CALIBRATION_METHODS, fit_calibration, fit_calibration_scores

        check_choice(method, "method", CALIBRATION_METHODS)
        self._check_fitted()
        if (X is None) != (y is None):
            raise ValueError("give both X and y, or neither (cross-fitted calibration)")
        if X is None:
            if getattr(self, "oof_p_real_", None) is None:
                raise ValueError(
                    "no out-of-fold P(real) to calibrate on: they come from fitting an "
                    "ensemble (ensemble >= 2) with at least `ensemble` stamps of each class; "
                    "give held-out stamps X, y instead"
                )
            self.calibration_ = fit_calibration_scores(self.oof_p_real_, self.oof_y_, method=method)
            return self
        # The map is fitted on the network's own probabilities, never on an older map's.
        self.calibration_ = None
        self.calibration_ = fit_calibration(self, X, y, method=method)
        return self

    @property
    def n_networks_(self):
        """How many networks the fitted model averages (1 for a single network)."""
        self._check_fitted()
        return len(ensemble_members(self.model_) or [self.model_])

    def predict_proba_networks(self, X, *, calibrated=False):
        """P(real) of each network of an ensemble, for their disagreement.

        Parameters
        ----------
        X : array-like of shape (n, H, W, C)
        calibrated : bool, default False
            Apply ``calibration_`` to each network's P(real).

        Returns
        -------
        ndarray of shape (n, n_networks)
            One column per network (one column for a single network); the ensemble's
            P(real) is :meth:`combine_networks` of it.
        """
        each = self._networks_raw(X)
        if calibrated and getattr(self, "calibration_", None) is not None:
            each = self.calibration_.apply(each)
        return each

    def combine_networks(self, each):
        """The ensemble's [P(bogus), P(real)] from its networks' raw P(real).

        The mean of the networks' log-odds (as the model's last layer,
        :class:`otrain.networks.EnsembleMean`), then the calibration: the same as
        ``predict_proba`` without a second pass through the networks.

        Parameters
        ----------
        each : ndarray of shape (n, n_networks)
            From :meth:`predict_proba_networks` (uncalibrated).

        Returns
        -------
        ndarray of shape (n, 2)
        """
        from .calibration import log_odds

        each = np.asarray(each, dtype=np.float64)
        if each.shape[1] == 1:
            p_real = each[:, 0]
        else:
            p_real = 1.0 / (1.0 + np.exp(-np.mean(log_odds(each), axis=1)))
        return self._calibrated(np.column_stack([1.0 - p_real, p_real]))

    def _networks_raw(self, X):
        self._check_fitted()
        X, _ = self._validate_data(X=X, y=None)
        X = np.asarray(self.feature_encoder_.transform(X), dtype=np.float32)
        networks = ensemble_members(self.model_) or [self.model_]
        return np.column_stack([_forward(n, X)[:, -1] for n in networks]).astype(np.float64)

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
        self._check_fitted()
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


# Attributes fitted after the network, reset by every fit.
_FITTED_STATE = (
    "calibration_",
    "threshold_",
    "bfloat16_check_",
    "channels_",
    "model_file_record_",
    "oof_p_real_",
    "oof_y_",
)

# scikeras routes parameters named `fit__...`, `predict__...` and `callbacks__...` to
# keras.Model.fit, keras.Model.predict and the callbacks; nothing else is routed here
# (the network is built by otrain, compiled with optimizer/loss/learning_rate).
_ROUTED_PREFIXES = ("fit__", "predict__", "callbacks__")


class _Batches(keras.utils.PyDataset):
    """Training batches in an order drawn from otrain's own seed, epoch after epoch.

    Keras shuffles arrays with TensorFlow's global random state, which otrain never
    sets; here epoch ``e`` is ordered by ``numpy.random.default_rng([seed, e])``, so
    the same seed gives the same batches in any process, thread or order of fits.
    """

    def __init__(self, X, y, sample_weight, batch_size, *, shuffle, seed, first_epoch, views=1):
        super().__init__()
        self._arrays = (X, y) if sample_weight is None else (X, y, sample_weight)
        self._views = int(views)
        self._batch_size = batch_size
        self._shuffle = bool(shuffle)
        self._seed = seed
        self._epoch = int(first_epoch)
        self._order = self._permutation()

    def _permutation(self):
        n = len(self._arrays[0]) * self._views
        if not self._shuffle:
            return np.arange(n)
        return np.random.default_rng([self._seed, self._epoch]).permutation(n)

    def __len__(self):
        return math.ceil(len(self._order) / self._batch_size)

    def __getitem__(self, index):
        take = np.sort(self._order[index * self._batch_size : (index + 1) * self._batch_size])
        if self._views == 1:
            return tuple(array[take] for array in self._arrays)
        # Entry i of an epoch is stamp i // views in its rotation or flip i % views.
        stamps, views = np.divmod(take, self._views)
        X = np.asarray(self._arrays[0][stamps])
        for view in np.unique(views):
            chosen = views == view
            X[chosen] = dihedral(X[chosen], int(view))
        return (X, *(array[stamps] for array in self._arrays[1:]))

    def on_epoch_end(self):
        self._epoch += 1
        self._order = self._permutation()


# One inference function per Keras model, traced once for any number of stamps.
_FORWARD = weakref.WeakKeyDictionary()


def _forward(model, X):
    """``model``'s outputs for float32 stamps ``X``, in batches of 1024 (float32)."""
    forward = _forward_function(model)
    batches = [
        forward(X[start : start + _PREDICT_BATCH_SIZE]).numpy()
        for start in range(0, len(X), _PREDICT_BATCH_SIZE)
    ]
    if not batches:
        return np.empty((0, *model.output_shape[1:]), dtype=np.float32)
    return np.concatenate(batches).astype(np.float32, copy=False)


def _forward_function(model):
    """``model(x, training=False)`` as a ``tf.function`` with a free batch size.

    ``keras.Model.predict`` traces its graph again for each new batch size it meets
    (the last, partial batch of every chunk of candidates), a second each time; this
    function is traced once per model. It wraps an object, not a function: TensorFlow
    counts retracings per function code, and one shared code for the forward passes
    of many models (a grid search, an ensemble) would be warned about as retracing.
    """
    forward = _FORWARD.get(model)
    if forward is None:
        import tensorflow as tf

        spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
        forward = tf.function(_Forward(model), input_signature=[spec], autograph=False)
        _FORWARD[model] = forward
    return forward


class _Forward:
    """``model(x, training=False)``, one object per model (see _forward_function)."""

    def __init__(self, model):
        self._model = weakref.ref(model)

    def __call__(self, x):
        return self._model()(x, training=False)


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
    if X.ndim >= 1 and X.shape[0] == 0:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is "
            "required by CutoutClassifier."
        )
    if X.ndim == 3:
        X = X[..., np.newaxis]
    if X.ndim != 4:
        raise ValueError(
            f"CutoutClassifier takes stamps of shape (n, H, W, C) or (n, H, W), got an array "
            f"of shape {X.shape}; to start from file paths, put a CutoutLoader before it"
        )
    return X
