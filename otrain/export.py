"""Export a model file to ONNX, for scoring with onnxruntime alone (e.g. in a broker).

The exported graph is the whole scoring path: raw stamps (float32, ``(n, H, W, C)``,
the model's channels in its order; NaN, inf and masking sentinels allowed) ->
normalisation (the model's own, ``robust``, ``l2`` or ``none``) -> network ->
``[P(bogus), P(real)]``, followed by the model's calibration map when it has one
(``calibrated=True``, the default), so that the ONNX output equals
``CutoutClassifier.predict_proba``. The rotations and flips of training are left
out (they are the identity at inference). The model's channels, stamp size,
threshold and calibration are written in the ONNX file's metadata
(``metadata_props``: ``otrain`` holds the model file's record as JSON).

Conversion runs through ``tf2onnx`` (``pip install 'otrain[onnx]'``). One fix is made
on the way: tf2onnx turns ``where(mask, x, 0)`` into ``mask * x``, which gives NaN
instead of 0 on NaN pixels (NaN * 0 is NaN); otrain's normalisation depends on that
``where`` to blank unusable pixels, so every ``where`` is kept a true ONNX
``Where`` (the same rewrite tf2onnx makes for its TFLite path).

Example, in a broker::

    import onnxruntime as ort
    session = ort.InferenceSession("model.onnx")
    p_real = session.run(None, {"stamps": stamps.astype("float32")})[0][:, 1]
"""

import json
import warnings
from pathlib import Path

import numpy as np

from ._atomic import atomic_output
from .exceptions import ModelFileError

__all__ = ["export_onnx", "INPUT_NAME", "OUTPUT_NAME"]

#: Name of the ONNX graph's input (float32 stamps).
INPUT_NAME = "stamps"
#: Name of the ONNX graph's output ([P(bogus), P(real)]).
OUTPUT_NAME = "probabilities"


def _keep_where(graph, ops):
    """tf2onnx rewriter: convert every TF select to ONNX ``Where``, not a Mul/Add trick."""
    for op in ops:
        if op.type in ("Select", "SelectV2"):
            op.set_attr("handles_nan", True)
    return ops


def _check_runs(proto):
    """Refuse a graph onnxruntime cannot load.

    tf2onnx leaves a TensorFlow op it cannot convert in the graph as it is (and only
    logs it): such a file would fail in the broker, not here.
    """
    try:
        import onnxruntime as ort
    except ImportError:  # the check needs onnxruntime, which the onnx extra installs
        return
    try:
        ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types
        import onnx

        nodes = proto.graph.node
        unknown = sorted({n.op_type for n in nodes if not onnx.defs.has(n.op_type, n.domain)})
        raise ModelFileError(
            "tf2onnx cannot convert this network"
            + (f" (no ONNX form for {', '.join(unknown)})" if unknown else "")
            + f"; onnxruntime cannot load the result: {str(err).splitlines()[0][:200]}"
        ) from err


def _calibration_tensor(p_real, calibration, ops):
    """The calibration map written with Keras ops that convert to plain ONNX ops."""
    if calibration.input == "log_odds":
        # As otrain.calibration.log_odds: clipped, so that 0 and 1 stay finite.
        p = ops.clip(p_real, 1e-7, 1.0 - 1e-7)
        p_real = ops.log(p) - ops.log(1.0 - p)
    if calibration.method == "sigmoid":
        a, b = calibration.params["a"], calibration.params["b"]
        return ops.sigmoid(-(a * p_real + b))
    x = np.asarray(calibration.params["x"], dtype=np.float64)
    y = np.asarray(calibration.params["y"], dtype=np.float64)
    if len(x) == 1:
        return ops.zeros_like(p_real) + float(y[0])
    # Piecewise-linear interpolation clipped at both ends, as a sum of ramps:
    # y0 + sum_i slope_i * (clip(p, x_i, x_i+1) - x_i); identical to np.interp.
    width = np.diff(x)
    keep = width > 0
    slope = np.where(keep, np.diff(y) / np.where(keep, width, 1.0), 0.0)
    lo = x[:-1][keep]
    hi = x[1:][keep]
    slope = slope[keep]
    column = ops.expand_dims(p_real, -1)
    ramps = ops.minimum(ops.maximum(column, lo), hi) - lo
    return float(y[0]) + ops.sum(ramps * slope, axis=-1)


def _scoring_model(classifier, calibrated):
    """A Keras model stamps -> [P(bogus), P(real)], calibration included if asked."""
    import keras
    from keras import ops

    model = classifier.model_
    calibration = getattr(classifier, "calibration_", None) if calibrated else None
    if calibration is None and model.output_shape[-1] == 2:
        return model
    inputs = keras.Input(shape=model.input_shape[1:], name=INPUT_NAME)
    proba = model(inputs)
    p_real = proba[:, -1]
    if calibration is not None:
        # In float64, as predict_proba does: steep isotonic steps amplify float32 rounding.
        p_real = _calibration_tensor(ops.cast(p_real, "float64"), calibration, ops)
        p_real = ops.cast(p_real, "float32")
    outputs = ops.stack([1.0 - p_real, p_real], axis=-1)
    return keras.Model(inputs, outputs, name=f"{model.name}_scoring")


def export_onnx(classifier, path, *, calibrated=True, opset=None):
    """Write a fitted or loaded classifier as an ONNX model.

    Parameters
    ----------
    classifier : CutoutClassifier
        Fitted, or loaded with :func:`otrain.model_files.load_model`.
    path : str or path-like
        Output ``.onnx`` file, written atomically.
    calibrated : bool, default True
        Append the classifier's calibration map (``calibration_``, if any) to the
        graph; False exports the network's raw probabilities.
    opset : int, optional
        ONNX opset (default: tf2onnx's).

    Returns
    -------
    pathlib.Path
        The file written. Its input is ``"stamps"`` (float32, ``(n, H, W, C)``,
        any ``n``), its output ``"probabilities"`` (``(n, 2)``: [P(bogus), P(real)]).

    Raises
    ------
    ModelFileError
        If tf2onnx is missing or cannot convert the network.
    """
    import tensorflow as tf

    from .networks import median_by_sorting

    path = Path(path)
    if path.suffix != ".onnx":
        raise ModelFileError(f"{path}: an ONNX model file must end in .onnx; rename the output")
    try:
        import onnx
        from tf2onnx import convert
    except ImportError as err:
        raise ModelFileError(
            f"ONNX export needs tf2onnx and onnx ({err}); install them with "
            "pip install 'otrain[onnx]' tf2onnx"
        ) from err
    if not getattr(classifier, "initialized_", False):
        from .exceptions import NotFittedError

        raise NotFittedError("this CutoutClassifier is not fitted yet: fit or load it first")
    model = _scoring_model(classifier, calibrated)
    shape = (None, *(int(s) for s in classifier.model_.input_shape[1:]))
    signature = [tf.TensorSpec(shape, tf.float32, name=INPUT_NAME)]

    @tf.function(input_signature=signature)
    def score(stamps):
        return {OUTPUT_NAME: model(stamps, training=False)}

    try:
        # tf2onnx knows TensorFlow's sort, not the NthElement of the faster median.
        with warnings.catch_warnings(), median_by_sorting():
            # tf2onnx 1.17 still touches numpy aliases deprecated in numpy 2.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            proto, _ = convert.from_function(
                score, input_signature=signature, opset=opset, custom_rewriter=[_keep_where]
            )
    except Exception as err:  # noqa: BLE001 - tf2onnx raises many types
        raise ModelFileError(
            f"tf2onnx cannot convert this network ({str(err).splitlines()[0][:200]})"
        ) from err
    _check_runs(proto)
    record = dict(getattr(classifier, "model_file_record_", None) or {})
    calibration = getattr(classifier, "calibration_", None)
    included = calibration is not None and calibrated
    threshold = getattr(classifier, "threshold_", None)
    meta = {
        "otrain": json.dumps(record),
        "channels": ",".join(getattr(classifier, "channels_", None) or ()),
        "input_shape": ",".join(str(s) for s in shape[1:]),
        "output": "probabilities [P(bogus), P(real)]",
        "calibration": calibration.method if included else "none",
        "threshold": "" if threshold is None else repr(float(threshold)),
    }
    onnx.helper.set_model_props(proto, meta)
    with atomic_output(path) as tmp:
        onnx.save(proto, tmp)
    return path
