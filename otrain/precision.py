"""Scoring in bfloat16 where the hardware does it, guarded by a check against float32.

Scoring is the forward pass of the network over many stamps. CPUs with bfloat16
instructions (``avx512_bf16`` or AMX, as on recent Intel Xeon and AMD Zen 4) and
recent GPUs run it about twice as fast in Keras' ``mixed_bfloat16`` precision:
convolutions and dense layers compute in bfloat16 while the weights, the stamp
normalisation and the final softmax stay float32. bfloat16 keeps 8 bits of mantissa,
so a probability can move: the speed is only taken where it was shown harmless.

The guard: the classifier's method
:meth:`~otrain.CutoutClassifier.check_bfloat16` scores a validation set both ways
(with :func:`check_bfloat16` here, which only measures) and keeps the largest
difference of P(real) in the classifier (``bfloat16_check_``), which
:func:`otrain.model_files.save_model` writes into the model file; ``otrain-train``
does it on its validation cutouts. When scoring with ``precision="auto"`` (the
default of :func:`otrain.inference.score_files` and ``otrain-infer``), bfloat16 is
used only if the hardware has it and the stored difference is within
:data:`TOLERANCE`; otherwise float32, with a note saying why.
"""

import copy
import weakref
from pathlib import Path

import numpy as np

__all__ = [
    "TOLERANCE",
    "PRECISIONS",
    "bfloat16_supported",
    "bfloat16_model",
    "check_bfloat16",
    "choose_precision",
]

#: Largest difference of P(real) between bfloat16 and float32 scoring, on a
#: validation set, for which ``precision="auto"`` scores in bfloat16.
TOLERANCE = 0.01

#: Values of the ``precision`` option of scoring.
PRECISIONS = ("auto", "float32", "bfloat16")

# Layers computed in bfloat16; every other layer (the stamp normalisation, custom
# layers) and the model's last layer stay float32.
_BFLOAT16_LAYERS = (
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "SeparableConv2D",
    "DepthwiseConv2D",
    "Dense",
    "MaxPooling2D",
    "AveragePooling2D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
    "Flatten",
    "Dropout",
    "SpatialDropout2D",
    "Activation",
    "ReLU",
    "LeakyReLU",
)


def bfloat16_supported():
    """Whether this machine computes bfloat16 natively.

    True on a CPU with the ``avx512_bf16`` or ``amx_bf16`` instructions (read from
    ``/proc/cpuinfo``, so Linux only) and on GPUs of compute capability 8.0 or more
    (NVIDIA Ampere and later). Elsewhere bfloat16 is emulated, slower than float32.

    Returns
    -------
    bool
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return tuple(details.get("compute_capability") or (0, 0)) >= (8, 0)
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def bfloat16_model(model):
    """A copy of a Keras model computing in ``mixed_bfloat16``, with the same weights.

    Convolutions, dense layers and pooling compute in bfloat16 (their weights stay
    float32); the stamp normalisation, any other layer and the last layer (the
    probabilities) stay float32. Nested models are converted layer by layer.

    Parameters
    ----------
    model : keras.Model

    Returns
    -------
    keras.Model
    """
    import keras

    last = model.layers[-1]

    def convert(layer):
        if isinstance(layer, keras.Model):
            return bfloat16_model(layer)
        config = layer.get_config()
        if type(layer).__name__ in _BFLOAT16_LAYERS and layer is not last:
            config["dtype"] = "mixed_bfloat16"
        return type(layer).from_config(config)

    clone = keras.models.clone_model(model, clone_function=convert)
    clone.set_weights(model.get_weights())
    return clone


# bfloat16 copies of the models scored so far, made once per model: a Dask worker
# scores many chunks with the model it loaded once.
_BFLOAT16_MODELS = weakref.WeakKeyDictionary()


def _bfloat16_scorer(classifier):
    model = _BFLOAT16_MODELS.get(classifier.model_)
    if model is None:
        model = _BFLOAT16_MODELS[classifier.model_] = bfloat16_model(classifier.model_)
    return _with_model(classifier, model)


def _with_model(classifier, model):
    """A shallow copy of ``classifier`` predicting with ``model``."""
    fast = copy.copy(classifier)
    fast.model_ = model
    return fast


def check_bfloat16(classifier, X, *, tolerance=TOLERANCE):
    """Score ``X`` in float32 and in bfloat16; store and return the largest difference.

    Parameters
    ----------
    classifier : CutoutClassifier
        Fitted or loaded.
    X : ndarray of shape (n, H, W, C)
        Validation stamps (not the training ones), a few hundred or more.
    tolerance : float, default TOLERANCE
        Largest difference of P(real) accepted.

    Returns
    -------
    dict
        ``max_difference`` (of P(real), calibrated if the classifier is),
        ``n_stamps``, ``tolerance`` and ``passed``. The classifier is not changed:
        ``CutoutClassifier.check_bfloat16`` keeps the result as ``bfloat16_check_``,
        which :func:`otrain.model_files.save_model` stores.
    """
    X = np.asarray(X, dtype=np.float32)
    if len(X) == 0:
        raise ValueError("check_bfloat16 needs validation stamps, got none")
    p32 = classifier.predict_proba(X)[:, 1]
    p16 = _bfloat16_scorer(classifier).predict_proba(X)[:, 1]
    difference = float(np.max(np.abs(p16.astype(np.float64) - p32)))
    check = {
        "max_difference": difference,
        "n_stamps": int(len(X)),
        "tolerance": float(tolerance),
        "passed": bool(difference <= tolerance),
    }
    return check


def choose_precision(classifier, precision="auto"):
    """The classifier to score with, in the precision asked or allowed.

    Parameters
    ----------
    classifier : CutoutClassifier
    precision : {"auto", "float32", "bfloat16"}, default "auto"
        ``"auto"``: bfloat16 where :func:`bfloat16_supported` and the classifier's
        stored check (``bfloat16_check_``) passed, else float32. ``"bfloat16"``
        forces it (slow where the hardware emulates it).

    Returns
    -------
    scorer : CutoutClassifier
        ``classifier`` itself for float32, else a shallow copy predicting with a
        bfloat16 model.
    used : str
        ``"float32"`` or ``"bfloat16"``.
    note : str
        Why, in one sentence.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "float32":
        return classifier, "float32", "float32 asked for"
    if precision == "auto":
        if not bfloat16_supported():
            return classifier, "float32", "this machine has no native bfloat16"
        check = getattr(classifier, "bfloat16_check_", None)
        if check is None:
            return (
                classifier,
                "float32",
                "the model stores no bfloat16 check (otrain-train stores one; in "
                "Python, CutoutClassifier.check_bfloat16 before save_model)",
            )
        if not check["max_difference"] <= TOLERANCE:
            return (
                classifier,
                "float32",
                f"bfloat16 moved P(real) by up to {check['max_difference']:.3g} on the "
                f"validation set, more than {TOLERANCE}",
            )
        note = (
            f"bfloat16 moved P(real) by at most {check['max_difference']:.2g} on "
            f"{check['n_stamps']} validation stamps"
        )
    else:
        note = "bfloat16 asked for"
    return _bfloat16_scorer(classifier), "bfloat16", note
