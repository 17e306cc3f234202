"""Grad-CAM heat maps: which pixels of a stamp drove the real/bogus decision.

Grad-CAM (Selvaraju et al. 2017) weighs the feature maps of a convolution layer by
how much the class score grows with each of them, and keeps the positive part::

    alpha_k = mean over (i, j) of  d score / d A_k[i, j]
    map     = ReLU( sum_k alpha_k A_k )

The map has the resolution of that layer; it is resampled (bilinear) onto the stamp's
pixels, each feature pixel placed where its receptive field is centred (the strides,
kernels and paddings on the way are followed, so the smaller grid of unpadded
convolutions is not stretched over the whole stamp), and scaled to [0, 1] per stamp.
Bright regions are where the network found the evidence for the class asked for. By
default the layer is the last convolution, whose features are the most abstract but
also the coarsest (see the caveat in ``docs/grad_cam.md``).

The class score is the log-odds of real, ``log(P(real) / P(bogus))``, read before the
output's sigmoid or softmax (its negative for bogus). Gradients of the probability
itself vanish when the network is sure (P(real) rounds to 1 in float32, and the map
would be blank precisely for the clearest candidates); the log-odds keep them.

Any Keras model with a 2D convolution works: otrain's networks, user networks
(branches included), and legacy models loaded by :func:`otrain.model_files.load_model`
whose convolutions sit inside a nested model (braai): the graph is rebuilt on the
same layers and weights with the chosen convolution's output exposed.

Functions:

- :func:`grad_cam`: heat maps of stamps, an array (n, H, W) in [0, 1];
- :func:`conv_layer_names`: the convolution layers a map can be taken at;
- :func:`plot_grad_cam`: a gallery of stamps with their heat maps;
- :func:`pick_examples`: which candidates to show (right and wrong calls, or the
  highest and lowest scores);
- :func:`grad_cam_galleries`: all of the above in one call, one PNG per group (what
  ``otrain-grad-cam`` runs).

Figures are :class:`matplotlib.figure.Figure` objects written atomically, never
pyplot's global state. TensorFlow is imported when a map is first computed.
"""

import math
from pathlib import Path

import numpy as np

from ._atomic import ensure_folder
from ._validation import check_threshold
from .exceptions import CutoutError, NotFittedError
from .plots import gallery_titles, plot_grad_cam

__all__ = [
    "read_stamps",
    "TARGETS",
    "GROUPS",
    "grad_cam",
    "conv_layer_names",
    "pick_examples",
    "grad_cam_galleries",
]

#: Classes a heat map can explain: the one each stamp is called, or a fixed one.
TARGETS = ("predicted", "real", "bogus")

#: Groups of :func:`pick_examples` and what they hold.
GROUPS = {
    "true_positives": "real candidates called real",
    "true_negatives": "bogus candidates called bogus",
    "false_negatives": "real candidates called bogus",
    "false_positives": "bogus candidates called real",
    "highest_lowest": "highest and lowest P(real)",
}

_DEFAULT_BATCH = 64


# ----------------------------------------------------------------------------- model


def _keras_model(classifier):
    """The Keras model of a fitted CutoutClassifier, or ``classifier`` if it is one."""
    import keras

    if isinstance(classifier, keras.Model):
        return classifier
    from .classifier import CutoutClassifier

    if not isinstance(classifier, CutoutClassifier):
        raise TypeError(
            f"grad_cam takes a fitted CutoutClassifier (otrain.load_model) or a Keras model, "
            f"got {type(classifier).__name__}"
        )
    if not classifier.initialized_:
        raise NotFittedError(
            "this CutoutClassifier is not fitted yet: call fit() or load a model file "
            "with otrain.load_model()"
        )
    return classifier.model_


def _is_conv(layer, keras):
    return isinstance(
        layer, keras.layers.Conv2D | keras.layers.SeparableConv2D | keras.layers.DepthwiseConv2D
    )


def _conv_layers(model, prefix=""):
    """``(name, layer)`` of every 2D convolution of ``model``, nested models included.

    Layers of nested models are named ``"model/layer"``. Order: the model's own
    (topological) layer order, so the last one is the deepest convolution.
    """
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += _conv_layers(layer, f"{prefix}{layer.name}/")
        elif _is_conv(layer, keras):
            found.append((f"{prefix}{layer.name}", layer))
    return found


def conv_layer_names(classifier):
    """Names of the 2D convolution layers a Grad-CAM map can be taken at.

    Parameters
    ----------
    classifier : CutoutClassifier or keras.Model
        A fitted classifier, or its Keras model.

    Returns
    -------
    list of str
        In the order of the network, the last one being the default of
        :func:`grad_cam`. Layers inside a nested model (legacy models such as braai)
        are named ``"model/layer"``, e.g. ``"VGG6/conv4"``.
    """
    return [name for name, _ in _conv_layers(_keras_model(classifier))]


def _find_conv(model, layer):
    convs = _conv_layers(model)
    if not convs:
        raise ValueError(
            f"the model {model.name!r} has no 2D convolution layer, so Grad-CAM has no "
            "feature map to explain; it needs a convolutional network"
        )
    if layer is None:
        return convs[-1]
    matches = [(name, obj) for name, obj in convs if name == layer]
    if not matches:
        matches = [(name, obj) for name, obj in convs if name.rsplit("/", 1)[-1] == layer]
    if len(matches) == 1:
        return matches[0]
    names = ", ".join(name for name, _ in convs)
    if matches:
        raise ValueError(
            f"layer {layer!r} names {len(matches)} convolution layers; give the full name, "
            f"one of: {names}"
        )
    raise ValueError(
        f"layer {layer!r} is not a 2D convolution layer of the model {model.name!r}; "
        f"its convolution layers are: {names}"
    )


class _Rebuild:
    """Re-run a model's graph on its own layers, exposing inner tensors.

    Nested models are taken apart, so that a convolution inside one (a legacy model
    wrapped by ``load_model``) becomes reachable from the outer input. Recorded while
    tracing: the output of ``conv`` and where its pixels sit on the stamp (see
    :func:`_window`), and the input of the last Dense layer called with a sigmoid or
    softmax (to read the pre-activation log-odds).
    """

    def __init__(self, conv):
        import keras

        self.keras = keras
        self.conv = conv
        self.conv_output = None
        self.conv_geometry = None
        self.dense = None  # (layer, its input tensor, its output tensor)
        # Geometry of each traced tensor, by id (the tensor is kept alive with it), and
        # that of the input of each model being traced, for tensors not seen before.
        self._geometry = {}
        self._scope = [_IDENTITY]

    def _geometry_of(self, tensor):
        known = self._geometry.get(id(tensor))
        return known[1] if known is not None else self._scope[-1]

    def _set_geometry(self, tensor, geometry):
        self._geometry[id(tensor)] = (tensor, geometry)

    def __call__(self, layer, *args, **kwargs):
        keras = self.keras
        tensors = [
            t for t in keras.tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)
        ]
        if isinstance(layer, keras.Sequential):
            x = args[0]
            for sub in layer.layers:
                x = self(sub, x)
            return x
        if isinstance(layer, keras.Model):
            return self._call_functional(layer, args, tensors)
        out = layer(*args, **kwargs)
        geometries = {self._geometry_of(t) for t in tensors}
        geometry = geometries.pop() if len(geometries) == 1 else None
        if isinstance(out, keras.KerasTensor) and tensors:
            self._set_geometry(out, _layer_geometry(layer, geometry, tensors[0], out))
        if layer is self.conv:
            self.conv_output = out
            self.conv_geometry = self._geometry_of(out)
        if isinstance(layer, keras.layers.Dense) and _activation_name(layer) in (
            "sigmoid",
            "softmax",
        ):
            self.dense = (layer, args[0], out)
        return out

    def _call_functional(self, model, args, tensors):
        """Trace a nested functional model on fresh inputs, then call it on ``args``."""
        keras = self.keras
        outer_conv, outer_dense = self.conv_output, self.dense
        self.conv_output, self.dense = None, None
        self._scope.append(self._geometry_of(tensors[0]) if len(tensors) == 1 else None)
        try:
            clone = keras.models.clone_model(model, clone_function=_same, call_function=self)
        finally:
            self._scope.pop()
        if len(clone.outputs) != 1:
            raise ValueError(
                f"Grad-CAM follows nested models with one output; {model.name!r} has "
                f"{len(clone.outputs)}"
            )
        output = clone.outputs[0]
        inner_conv, inner_dense = self.conv_output, self.dense
        extra = [t for t in (inner_conv, inner_dense and inner_dense[1]) if t is not None]
        if not extra:
            self.conv_output, self.dense = outer_conv, outer_dense
            return model(*args)
        exposed = keras.Model(clone.inputs, [output, *extra], name=f"{model.name}_exposed")
        new_output, *values = exposed(args[0] if len(args) == 1 else list(args))
        self._set_geometry(new_output, self._geometry_of(output))
        self.conv_output = values.pop(0) if inner_conv is not None else outer_conv
        self.dense = outer_dense
        if inner_dense is not None:
            # The dense layer's output is the nested model's only when it was its last.
            last = inner_dense[2] is output
            self.dense = (inner_dense[0], values.pop(0), new_output if last else None)
        return new_output


# Geometry of a feature map: (scale_y, offset_y, scale_x, offset_x), such that its
# pixel (i, j) is centred on the stamp's pixel (scale_y * i + offset_y,
# scale_x * j + offset_x). None: unknown.
_IDENTITY = (1.0, 0.0, 1.0, 0.0)


def _layer_geometry(layer, geometry, inputs, output):
    """Geometry of ``layer``'s output from that of its input (None when unknown)."""
    import keras

    if geometry is None or len(inputs.shape) != 4 or len(output.shape) != 4:
        return None
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return None
    windowed = (
        keras.layers.Conv2D,
        keras.layers.SeparableConv2D,
        keras.layers.DepthwiseConv2D,
        keras.layers.MaxPooling2D,
        keras.layers.AveragePooling2D,
    )
    if isinstance(layer, windowed):
        size = getattr(layer, "kernel_size", None) or layer.pool_size
        dilation = getattr(layer, "dilation_rate", (1, 1))
        result = []
        for axis in (0, 1):
            scale, offset = geometry[2 * axis], geometry[2 * axis + 1]
            scale, offset = _window(
                scale,
                offset,
                inputs.shape[1 + axis],
                size[axis],
                layer.strides[axis],
                dilation[axis],
                layer.padding,
            )
            result += [scale, offset]
        return tuple(result)
    # Layers that keep the pixel grid (activations, normalisations, dropout...).
    if tuple(inputs.shape[1:3]) == tuple(output.shape[1:3]):
        return geometry
    return None


def _window(scale, offset, size, kernel, stride, dilation, padding):
    """Scale and offset after a sliding window (convolution or pooling) on one axis.

    Output pixel ``i`` is the centre of the window starting at ``stride * i - before``,
    ``before`` being the zeros TensorFlow pads in front for ``"same"`` padding.
    """
    extent = (kernel - 1) * dilation + 1
    before = 0
    if padding == "same" and size is not None:
        n_out = -(-size // stride)
        before = max((n_out - 1) * stride + extent - size, 0) // 2
    return scale * stride, offset + scale * ((extent - 1) / 2 - before)


def _same(layer):
    return layer


def _activation_name(layer):
    return getattr(getattr(layer, "activation", None), "__name__", None)


def _grad_model(model, conv):
    """Stamps -> [conv output, output, (input of the output Dense)], and more.

    Returns the model, the output Dense layer (None if the output is not a Dense with
    a sigmoid or softmax) and the geometry of the convolution's output (see
    :class:`_Rebuild`).
    """
    import keras

    trace = _Rebuild(conv)
    if isinstance(model, keras.Sequential):
        inputs = keras.Input(shape=model.input_shape[1:])
        output = trace(model, inputs)
    else:
        clone = keras.models.clone_model(model, clone_function=_same, call_function=trace)
        if len(clone.inputs) != 1 or len(clone.outputs) != 1:
            raise ValueError(
                f"Grad-CAM needs a model with one input and one output; {model.name!r} has "
                f"{len(clone.inputs)} and {len(clone.outputs)}"
            )
        (inputs,), (output,) = clone.inputs, clone.outputs
    if trace.conv_output is None:
        raise ValueError(f"the layer {conv.name!r} is not on the path from input to output")
    dense = trace.dense if trace.dense is not None and trace.dense[2] is output else None
    outputs = [trace.conv_output, output]
    if dense is not None:
        outputs.append(dense[1])
    grad_model = keras.Model(inputs, outputs, name="grad_cam")
    return grad_model, None if dense is None else dense[0], trace.conv_geometry


def _log_odds(output, features, dense):
    """Log-odds of real, (n,), from the pre-activation logits when known."""
    import tensorflow as tf

    n_units = output.shape[-1]
    if dense is not None:
        logits = tf.matmul(features, tf.convert_to_tensor(dense.kernel))
        if dense.use_bias:
            logits = logits + tf.convert_to_tensor(dense.bias)
        if n_units == 1:
            return logits[:, 0]
        return logits[:, 1] - logits[:, 0]
    # Unknown output layer: probabilities, clipped so the logarithm stays finite.
    p = tf.clip_by_value(output, 1e-7, 1.0 - 1e-7)
    if n_units == 1:
        return tf.math.log(p[:, 0]) - tf.math.log1p(-p[:, 0])
    return tf.math.log(p[:, 1]) - tf.math.log(p[:, 0])


# ---------------------------------------------------------------------------- heat maps


def _check_stamps(stamps, model):
    from .classifier import _as_stamps

    X = _as_stamps(stamps)
    expected = tuple(model.input_shape[1:])
    if X.shape[1:] != expected:
        got = "x".join(map(str, X.shape[1:]))
        want = "x".join(map(str, expected))
        raise CutoutError(
            f"stamps of {got} (HxWxC) were given but the model takes {want}; crop them "
            "to the model's size and use its channels"
        )
    return X


def _check_target(target, n):
    """Per-stamp sign of the log-odds (+1 real, -1 bogus), or None for "predicted"."""
    if isinstance(target, str):
        if target not in TARGETS:
            raise ValueError(
                f"target must be one of {', '.join(TARGETS)} or one label (0/1) per stamp, "
                f"got {target!r}"
            )
        if target == "predicted":
            return None
        return np.full(n, 1.0 if target == "real" else -1.0, np.float32)
    labels = np.asarray(target)
    if labels.shape != (n,) or not np.isin(labels, (0, 1)).all():
        raise ValueError(
            f"target must be one of {', '.join(TARGETS)} or one label per stamp, 1 (real) or "
            f"0 (bogus), for the {n} stamps; got an array of shape {labels.shape}"
        )
    return np.where(labels == 1, 1.0, -1.0).astype(np.float32)


def _check_backend():
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"Grad-CAM needs Keras' TensorFlow backend, not {keras.backend.backend()!r}; "
            "set KERAS_BACKEND=tensorflow"
        )


def grad_cam(
    classifier, stamps, *, layer=None, target="predicted", threshold=0.5, batch_size=_DEFAULT_BATCH
):
    """Grad-CAM heat maps of stamps: where the evidence for a class lies.

    Parameters
    ----------
    classifier : CutoutClassifier or keras.Model
        A fitted classifier (trained, or read by :func:`otrain.load_model`, legacy
        models included), or its Keras model; its output is P(real) (one sigmoid unit)
        or [P(bogus), P(real)] (softmax).
    stamps : array-like of shape (n, H, W, C) or (n, H, W)
        Stamps of the model's size and channels, as given to ``predict_proba``
        (raw: the model normalises them itself).
    layer : str, optional
        Name of the 2D convolution layer to explain (see :func:`conv_layer_names`;
        a nested layer by its own name when unique, or as ``"model/layer"``). Default:
        the last one.
    target : {"predicted", "real", "bogus"} or array-like of shape (n,), default "predicted"
        Class each map explains: the one each stamp is called (P(real) >=
        ``threshold`` is real), a fixed one, or one label per stamp (1 real, 0 bogus).
    threshold : float, default 0.5
        Decision threshold on P(real), for ``target="predicted"``.
    batch_size : int, default 64
        Stamps per forward and backward pass.

    Returns
    -------
    ndarray of shape (n, H, W), float32
        One map per stamp, at the stamp's resolution, scaled so that its maximum is 1;
        0 where nothing pushes towards the class (an all-zero map: no region of the
        layer's features speaks for that class).

    Raises
    ------
    ValueError
        If ``layer`` is not a convolution layer of the model (the message lists them),
        the model has none, or the stamps do not fit the model.
    NotFittedError
        If the classifier is not fitted.

    Examples
    --------
    >>> from otrain import load_model
    >>> from otrain.gradcam import grad_cam
    >>> model = load_model("model.keras")  # doctest: +SKIP
    >>> maps = grad_cam(model, stamps)  # doctest: +SKIP
    >>> maps.shape == stamps.shape[:3]  # doctest: +SKIP
    True
    """
    _check_backend()
    model = _keras_model(classifier)
    X = _check_stamps(stamps, model)
    n, height, width = X.shape[:3]
    signs = _check_target(target, n)
    threshold = check_threshold(threshold)
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    n_units = model.output_shape[-1]
    if n_units not in (1, 2):
        raise ValueError(
            f"the model has {n_units} outputs; Grad-CAM here explains a real/bogus model with "
            "one (sigmoid, P(real)) or two (softmax, [bogus, real])"
        )
    from .networks import ensemble_members

    networks = ensemble_members(model)
    if networks is None:
        _, conv = _find_conv(model, layer)
        grad_model, dense, geometry = _grad_model(model, conv)
        # The threshold on P(real) as a threshold on the log-odds.
        raw = _raw_maps(grad_model, dense, X, signs, _logit(threshold), int(batch_size))
        return _to_stamp(raw, height, width, geometry)
    # An ensemble: each network explains the class the ensemble calls (or the one
    # asked for), and the maps are averaged, each scaled to a maximum of 1 first.
    if signs is None:
        p_real = model.predict(X, batch_size=int(batch_size), verbose=0)[:, -1]
        signs = np.where(p_real >= threshold, 1.0, -1.0).astype(np.float32)
    if layer is not None and "/" in layer:
        network_name, layer = layer.split("/", 1)
        networks = [n for n in networks if n.name == network_name] or networks
    maps = [
        grad_cam(network, X, layer=layer, target=np.where(signs > 0, 1, 0), batch_size=batch_size)
        for network in networks
    ]
    return _unit_max(np.mean(maps, axis=0))


def _raw_maps(grad_model, dense, X, signs, cut, batch_size):
    """Grad-CAM maps (n, h, w) on the layer's own grid, not rescaled."""
    import tensorflow as tf

    maps = []
    for start in range(0, len(X), batch_size):
        stop = min(start + batch_size, len(X))
        with tf.GradientTape() as tape:
            values = grad_model(tf.convert_to_tensor(X[start:stop]), training=False)
            features, output = values[0], values[1]
            log_odds = _log_odds(output, values[2] if dense is not None else None, dense)
            if signs is None:
                sign = tf.where(tf.stop_gradient(log_odds) >= cut, 1.0, -1.0)
            else:
                sign = tf.convert_to_tensor(signs[start:stop])
            # Stamps do not interact in inference, so the gradient of the sum holds
            # each stamp's own gradient.
            score = tf.reduce_sum(sign * log_odds)
        grads = tape.gradient(score, features)
        if grads is None:
            raise ValueError("the model's output does not depend on the chosen layer")
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        maps.append(tf.nn.relu(tf.reduce_sum(weights * features, axis=-1)).numpy())
    return np.concatenate(maps).astype(np.float32)


def _logit(p):
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return math.log(p / (1.0 - p))


def _to_stamp(cam, height, width, geometry):
    """Resample (n, h, w) maps onto the stamp's pixels and scale each to max 1.

    Each stamp pixel takes the bilinear interpolation of the map at its position on
    the feature grid (``geometry``), so that a valid convolution's smaller grid, which
    covers the middle of the stamp only, lands where it belongs; beyond the outermost
    feature pixels the edge value is kept. Unknown geometry: the grid is stretched
    over the whole stamp.
    """
    from scipy.ndimage import map_coordinates

    n, h, w = cam.shape
    if geometry is None:
        geometry = (height / h, (height / h - 1) / 2, width / w, (width / w - 1) / 2)
    scale_y, offset_y, scale_x, offset_x = geometry
    rows = (np.arange(height) - offset_y) / scale_y
    cols = (np.arange(width) - offset_x) / scale_x
    grid = np.meshgrid(rows, cols, indexing="ij")
    out = np.empty((n, height, width), np.float32)
    for k in range(n):
        out[k] = map_coordinates(cam[k], grid, order=1, mode="nearest")
    return _unit_max(np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0))


def _unit_max(maps):
    """Maps (n, H, W) scaled so that each one's maximum is 1 (all-zero maps stay 0)."""
    maps = np.asarray(maps, dtype=np.float32)
    peak = maps.reshape(len(maps), -1).max(axis=1)[:, None, None]
    out = np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)
    return np.clip(out, 0.0, 1.0)


# ------------------------------------------------------------------------ galleries


def pick_examples(p_real, labels=None, *, n=30, threshold=0.5, random_state=0):
    """Choose the candidates to show, by group.

    With labels, four groups (as O'TRAIN's grad-cam): right calls at random (a fair
    picture of what the network relies on), wrong calls the most confident first
    (the errors worth understanding). Without labels, the highest and lowest scores.

    Parameters
    ----------
    p_real : array-like of shape (m,)
        P(real) of every candidate.
    labels : array-like of shape (m,), optional
        True classes, 1 real and 0 bogus.
    n : int, default 30
        Most candidates per group.
    threshold : float, default 0.5
        A candidate is called real when ``p_real >= threshold``.
    random_state : int or None, default 0
        Seed of the random choice of right calls.

    Returns
    -------
    dict of str to (ndarray of int, int)
        Group name (see :data:`GROUPS`) -> (indices chosen, ordered by decreasing
        P(real); size of the whole group). With labels: ``true_positives``,
        ``true_negatives``, ``false_negatives``, ``false_positives``; without:
        ``highest_lowest`` (``ceil(n / 2)`` highest, ``floor(n / 2)`` lowest).
    """
    from .plots._common import _as_probabilities

    p = _as_probabilities(p_real, "p_real")
    threshold = check_threshold(threshold)
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    n = int(n)
    by_p = np.argsort(-p, kind="stable")
    if labels is None:
        if len(p) <= n:
            return {"highest_lowest": (by_p, len(p))}
        high, low = by_p[: math.ceil(n / 2)], by_p[len(p) - n // 2 :]
        return {"highest_lowest": (np.concatenate([high, low]), len(p))}
    y = np.asarray(labels)
    if y.shape != p.shape or not np.isin(y, (0, 1)).all():
        raise ValueError(
            f"labels must hold one value per candidate ({len(p)}), 1 (real) or 0 (bogus)"
        )
    called = p >= threshold
    rng = np.random.default_rng(random_state)
    groups = {}
    for name, mask, wrong_first in (
        ("true_positives", (y == 1) & called, None),
        ("true_negatives", (y == 0) & ~called, None),
        ("false_negatives", (y == 1) & ~called, "low"),
        ("false_positives", (y == 0) & called, "high"),
    ):
        members = np.flatnonzero(mask)
        if wrong_first is None:
            chosen = rng.choice(members, size=min(n, len(members)), replace=False)
        else:
            order = np.argsort(p[members] if wrong_first == "low" else -p[members], kind="stable")
            chosen = members[order[:n]]
        chosen = chosen[np.argsort(-p[chosen], kind="stable")]
        groups[name] = (chosen.astype(np.intp), len(members))
    return groups


def read_stamps(classifier, *, cube=None, cutouts=None):
    """The stamps to explain, with the channels and size the classifier takes.

    Parameters
    ----------
    classifier : CutoutClassifier
        Fitted or loaded; its ``channels_`` and input shape decide what is read.
    cube : str or path-like, optional
        A labelled datacube (``.npz``); its channels are matched to the model's
        (:meth:`otrain.datacube.Datacube.select_channels`).
    cutouts : str or path-like, optional
        A folder of cutout files, read as :func:`otrain.inference.score_files` reads
        them; unreadable and misfit files are left out and counted.

    Returns
    -------
    dict
        ``stamps`` (n, H, W, C), ``labels`` (or None for a folder), ``ids`` and
        ``mags`` (or None when unknown), ``description`` (one line).
    """
    from .cutouts import load_cutouts
    from .datacube import CUTOUT_SUFFIXES, find_cutouts, keyword_column, load_datacube
    from .exceptions import DatacubeError

    if (cube is None) == (cutouts is None):
        raise ValueError("give one of cube= and cutouts=")
    channels = tuple(classifier.channels_)
    shape = tuple(int(s) for s in classifier.model_.input_shape[1:])
    if cube is not None:
        if not Path(cube).is_file():
            raise DatacubeError(f"{cube}: no such datacube; check cube= or build one")
        data = load_datacube(cube).select_channels(channels, name=str(cube))
        return {
            "stamps": data.cube,
            "labels": np.asarray(data.labels),
            "ids": keyword_column(data.keywords, "candid", numeric=False),
            "mags": keyword_column(data.keywords, "mag"),
            "description": f"{cube}: {len(data)} cutouts ({data.n_true} real, "
            f"{data.n_false} bogus)",
        }
    folder = Path(cutouts)
    if not folder.is_dir():
        raise CutoutError(f"{folder}: no such folder of cutouts; check cutouts=")
    paths = find_cutouts(folder)
    if not paths:
        raise CutoutError(
            f"{folder}: no cutout files ({', '.join(CUTOUT_SUFFIXES)}) in this folder; "
            "check cutouts="
        )
    height, width = shape[:2]
    stamps, keywords, skipped = load_cutouts(
        paths,
        channels=channels,
        cutout_size=height if height == width else -1,
        shape=shape,
        on_error="skip",
    )
    if len(stamps) == 0:
        first = skipped[0][1] if skipped else "no file read"
        raise CutoutError(f"{folder}: none of the {len(paths)} cutouts fits the model ({first})")
    description = f"{folder}: {len(stamps)} cutouts read"
    if skipped:
        description += f", {len(skipped)} left out (first: {skipped[0][1]})"
    return {
        "stamps": stamps,
        "labels": None,
        "ids": keyword_column(keywords, "candid", numeric=False),
        "mags": keyword_column(keywords, "mag"),
        "description": description,
    }


def grad_cam_galleries(
    classifier,
    stamps,
    outdir,
    *,
    labels=None,
    ids=None,
    mags=None,
    channel_names=None,
    n=30,
    threshold=0.5,
    layer=None,
    random_state=0,
    prefix="grad_cam",
):
    """Score stamps, pick examples and draw their Grad-CAM maps, one PNG per group.

    Each map explains the class the stamp is called (P(real) >= ``threshold``:
    real), as O'TRAIN's grad-cam did.

    Parameters
    ----------
    classifier : CutoutClassifier or keras.Model
        A fitted classifier.
    stamps : array-like of shape (m, H, W, C)
        All candidates.
    outdir : str or path-like
        Folder of the PNG files (created if needed).
    labels : array-like of shape (m,), optional
        True classes (1 real, 0 bogus): four galleries, right and wrong calls of each
        class. Without: one gallery of the highest and lowest scores.
    ids, mags : array-like of shape (m,), optional
        Candidate IDs and magnitudes, for the titles.
    channel_names : sequence of str, optional
        Names of the channels.
    n : int, default 30
        Most stamps per gallery.
    threshold : float, default 0.5
        Decision threshold on P(real).
    layer : str, optional
        Convolution layer (default: the last one).
    random_state : int or None, default 0
        Seed of the choice of right calls.
    prefix : str, default "grad_cam"
        Start of the file names: ``{prefix}_{group}.png``.

    Returns
    -------
    dict
        ``layer`` (name of the layer explained), ``layer_shape`` (its feature map's
        height and width), ``p_real`` (all scores) and ``groups``: a list of dicts
        with ``name``, ``description``, ``total`` (candidates in the group),
        ``shown`` and ``path`` (None when the group is empty).
    """
    model = _keras_model(classifier)
    outdir = ensure_folder(outdir)
    X = _check_stamps(stamps, model)
    layer_name, conv = _find_conv(model, layer)
    proba = _predict(classifier, model, X)
    groups = pick_examples(proba, labels, n=n, threshold=threshold, random_state=random_state)
    result = {
        "layer": layer_name,
        "layer_shape": tuple(int(s) for s in conv.output.shape[1:3]),
        "p_real": proba,
        "groups": [],
    }
    for name, (index, total) in groups.items():
        entry = {"name": name, "description": GROUPS[name], "total": total}
        entry["shown"] = len(index)
        entry["path"] = None
        if len(index):
            maps = grad_cam(model, X[index], layer=layer_name, threshold=threshold)
            titles = gallery_titles(
                proba[index],
                None if mags is None else np.asarray(mags, dtype=np.float64)[index],
                None if ids is None else [str(ids[i]) for i in index],
            )
            entry["path"] = plot_grad_cam(
                X[index],
                maps,
                Path(outdir) / f"{prefix}_{name}.png",
                titles=titles,
                channel_names=channel_names,
                title=_gallery_title(name, len(index), total, threshold, layer_name),
            )
        result["groups"].append(entry)
    return result


def _predict(classifier, model, X):
    import keras

    if isinstance(classifier, keras.Model):
        out = np.asarray(model.predict(X, batch_size=1024, verbose=0), dtype=np.float64)
        return out[:, -1] if out.shape[-1] == 2 else out[:, 0]
    # reshape: scikeras returns one stamp's probabilities as a 1-D array.
    return np.asarray(classifier.predict_proba(X), dtype=np.float64).reshape(len(X), -1)[:, -1]


def _gallery_title(name, shown, total, threshold, layer):
    how = {
        "true_positives": "at random",
        "true_negatives": "at random",
        "false_negatives": "lowest P(real) first",
        "false_positives": "highest P(real) first",
        "highest_lowest": "",
    }[name]
    if name == "highest_lowest" and shown == total:
        what = f"All {total} candidates, by decreasing P(real)"
    elif name == "highest_lowest":
        what = (
            f"The {math.ceil(shown / 2)} highest then the {shown // 2} lowest P(real) "
            f"of {total} candidates"
        )
    else:
        label = name.replace("_", " ").capitalize()
        what = f"{label}, {GROUPS[name]}: {shown} of {total} ({how})"
    return f"{what}\nGrad-CAM of the class called (real if P(real) ≥ {threshold:g}), layer {layer}"
