"""The convolutional networks, and the layers that travel inside every model.

Every model otrain builds is ``stamps -> StampNormalisation -> RandomDihedral ->
network -> Dense(2, softmax)``. Normalisation and augmentation are layers of the
model, so a saved model file carries them: scoring applies exactly the normalisation
used in training, and an exported ONNX graph holds it too. ``RandomDihedral`` is the
identity outside training.

Built-in networks (``network=`` of :class:`otrain.CutoutClassifier`):

``"otrain"``
    O'TRAIN's network (Makhlouf et al. 2022): Conv16-Conv32 (3x3, same, ReLU),
    AvgPool2, Dropout, Conv64, MaxPool2, Dropout, Conv128, Conv256, MaxPool2,
    Dense512, Dropout, Dense256.
``"vgg6"``
    A small VGG-like network in the style of ZTF's braai (Duev et al. 2019):
    Conv16-Conv16, MaxPool2, Dropout, Conv32-Conv32, MaxPool4, Dropout, Dense256,
    Dropout. Fewer weights, faster on a CPU.

A user network is a function ``build(inputs, *, dropout)`` taking the Keras tensor
of normalised stamps and returning a tensor of features; otrain adds the output
layer. Give a module-level function (not a lambda) so the classifier pickles. A
function that also takes ``seed`` (an int) should seed its layers from it, as the
built-in networks do (:class:`LayerSeeds`); one that does not is built with Keras'
default seeds, then its random weights and seed generators are drawn anew from the
classifier's seed (:func:`reseed_model`), so the same ``random_state`` still gives
the same model.
"""

import contextlib
import contextvars
import inspect

import numpy as np

from ._tensorflow import load_tensorflow

load_tensorflow()

import keras  # noqa: E402 - after the quiet import of TensorFlow
import tensorflow as tf  # noqa: E402
from keras import layers, ops  # noqa: E402

__all__ = [
    "NORMALISATIONS",
    "NETWORKS",
    "StampNormalisation",
    "RandomDihedral",
    "otrain_network",
    "vgg6_network",
    "build_model",
    "LayerSeeds",
    "reseed_model",
    "dihedral",
    "n_dihedral_views",
    "EnsembleMean",
    "assemble_ensemble",
    "ensemble_members",
]

#: Per-stamp normalisations, applied to each channel of each stamp.
NORMALISATIONS = ("robust", "l2", "none")

# Tiny scale floor: a blank (all-zero or all-NaN) stamp stays all zeros, never NaN.
_EPSILON = 1e-12
# Pixels beyond this are masking sentinels, not flux: ZTF writes the float32 maximum
# (3.4e38) on masked pixels, which overflows any statistic computed with it.
MASK_LIMIT = 1e30


@keras.saving.register_keras_serializable(package="otrain")
class StampNormalisation(layers.Layer):
    """Per-stamp, per-channel normalisation with otrain's NaN policy.

    Unusable pixels (NaN, inf, and masking sentinels beyond +/-1e30 such as the
    float32 maximum ZTF writes on masked pixels) are left out of the statistics and
    set to 0 after normalisation, the background level of a normalised stamp.

    Parameters
    ----------
    method : {"robust", "l2", "none"}, default "robust"
        ``"l2"``: each channel divided by its L2 norm (NaN set to 0 first), as ZTF's
        braai does. ``"robust"``: median subtracted, divided by 1.4826 x the median
        absolute deviation (the noise level), then compressed with ``asinh(x / 10)``
        so bright sources do not dominate. ``"none"``: raw pixels, as O'TRAIN did
        (non-finite pixels still set to 0).
    """

    def __init__(self, method="robust", **kwargs):
        super().__init__(**kwargs)
        if method not in NORMALISATIONS:
            raise ValueError(
                f"normalisation must be one of {', '.join(NORMALISATIONS)}, got {method!r}"
            )
        self.method = method

    def call(self, inputs):
        finite = ops.logical_and(ops.isfinite(inputs), ops.abs(inputs) < MASK_LIMIT)
        x = ops.where(finite, inputs, 0.0)
        if self.method == "none":
            return x
        if self.method == "l2":
            norm = ops.sqrt(ops.sum(ops.square(x), axis=(1, 2), keepdims=True))
            return x / ops.maximum(norm, _EPSILON)
        return self._robust(inputs, finite)

    def _robust(self, inputs, finite):
        shape = ops.shape(inputs)
        # (batch, channels, pixels): statistics run along the last axis.
        flat = ops.transpose(ops.reshape(inputs, (shape[0], -1, shape[3])), (0, 2, 1))
        ok = ops.transpose(ops.reshape(finite, (shape[0], -1, shape[3])), (0, 2, 1))
        n_ok = ops.sum(ops.cast(ok, "int32"), axis=-1, keepdims=True)
        median = _masked_median(flat, ok, n_ok)
        mad = _masked_median(ops.abs(flat - median), ok, n_ok)
        scale = ops.maximum(1.4826 * mad, _EPSILON)
        # Back to (batch, 1, 1, channels) to broadcast over the stamp.
        median = ops.reshape(ops.transpose(median, (0, 2, 1)), (shape[0], 1, 1, shape[3]))
        scale = ops.reshape(ops.transpose(scale, (0, 2, 1)), (shape[0], 1, 1, shape[3]))
        z = ops.where(finite, (inputs - median) / scale, 0.0)
        return ops.arcsinh(z / 10.0)

    def get_config(self):
        return {**super().get_config(), "method": self.method}


def _masked_median(values, ok, n_ok):
    """Median of ``values`` over ``ok`` entries along the last axis (0 if none).

    Exact, found by selection rather than by sorting: TensorFlow's ``NthElement``
    (``std::nth_element``, linear time) gives the order statistic at one position of
    every row, 2.3x faster than its sort on 63x63 stamps. The unusable entries of
    each row are filled with -big and +big in the numbers that put the row's own
    lower middle value at the middle of the row; the upper middle value (even
    counts) is that value again when it is repeated, else the smallest one above.
    ``NthElement`` runs on the CPU only: where TensorFlow sees a GPU, and where
    tf2onnx must convert the graph (it knows no ``NthElement``,
    :func:`median_by_sorting`), the same median is taken by sorting.
    """
    if _SORTING.get() or _gpu_visible():
        return _sorted_median(values, ok, n_ok)
    big = ops.cast(3.0e38, values.dtype)
    middle = (ops.shape(values)[-1] - 1) // 2
    low = ops.maximum((n_ok - 1) // 2, 0)
    masked = ops.logical_not(ok)
    # 1, 2, ... along the masked entries of a row: the first (middle - low) go below.
    rank = ops.cumsum(ops.cast(masked, "int32"), axis=-1)
    below = ops.logical_and(masked, rank <= middle - low)
    filled = ops.where(ok, values, ops.where(below, -big, big))
    value = ops.expand_dims(tf.raw_ops.NthElement(input=filled, n=middle), -1)
    repeated = ops.sum(ops.cast(filled <= value, "int32"), axis=-1, keepdims=True) > middle + 1
    above = ops.min(ops.where(filled > value, filled, big), axis=-1, keepdims=True)
    high = ops.where(n_ok % 2 == 0, ops.where(repeated, value, above), value)
    return ops.where(n_ok > 0, 0.5 * (value + high), 0.0)


def _sorted_median(values, ok, n_ok):
    """The same median as :func:`_masked_median`, by sorting each row."""
    big = ops.cast(3.0e38, values.dtype)
    ordered = ops.sort(ops.where(ok, values, big), axis=-1)
    low = ops.maximum((n_ok - 1) // 2, 0)
    high = ops.maximum(n_ok // 2, 0)
    median = 0.5 * (
        ops.take_along_axis(ordered, low, axis=-1) + ops.take_along_axis(ordered, high, axis=-1)
    )
    return ops.where(n_ok > 0, median, 0.0)


_SORTING = contextvars.ContextVar("otrain_median_by_sorting", default=False)


def _gpu_visible():
    """Whether TensorFlow places ops on a GPU here (its sort runs there, not NthElement)."""
    return bool(tf.config.list_logical_devices("GPU"))


@contextlib.contextmanager
def median_by_sorting():
    """Within this block, graphs traced take the robust median by sorting.

    Same numbers, slower; for converters that know TensorFlow's sort but not its
    ``NthElement`` (tf2onnx).
    """
    token = _SORTING.set(True)
    try:
        yield
    finally:
        _SORTING.reset(token)


@keras.saving.register_keras_serializable(package="otrain")
class RandomDihedral(layers.Layer):
    """Random 90-degree rotations and flips of each stamp, during training only.

    Each stamp gets one of the 8 symmetries of the square (of the rectangle's 4 when
    stamps are not square), drawn independently: a real transient looks the same
    after any of them, so the network learns that from every stamp. Done in the
    graph, vectorised over the batch.

    Parameters
    ----------
    seed : int, optional
        Seed of the draws.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        draws = keras.random.uniform((ops.shape(inputs)[0], 3), seed=self.seed_generator)
        choose = draws < 0.5
        x = ops.where(choose[:, 0, None, None, None], ops.flip(inputs, axis=1), inputs)
        x = ops.where(choose[:, 1, None, None, None], ops.flip(x, axis=2), x)
        if inputs.shape[1] is not None and inputs.shape[1] == inputs.shape[2]:
            x = ops.where(choose[:, 2, None, None, None], ops.transpose(x, (0, 2, 1, 3)), x)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


def n_dihedral_views(shape):
    """How many rotations and flips map a stamp of ``shape`` (H, W, ...) onto itself.

    8 for square stamps (the symmetries of the square), 4 otherwise (the identity,
    the two flips and the half turn).
    """
    return 8 if shape[0] == shape[1] else 4


def dihedral(stamps, view):
    """Stamps ``(n, H, W, C)`` in one of their rotations and flips (numpy).

    Parameters
    ----------
    stamps : ndarray of shape (n, H, W, C)
    view : int
        0 (as they are) to ``n_dihedral_views(stamps.shape[1:]) - 1``: bit 0 flips the
        rows, bit 1 the columns, bit 2 transposes (square stamps only).

    Returns
    -------
    ndarray, same shape
    """
    x = stamps
    if view & 1:
        x = x[:, ::-1]
    if view & 2:
        x = x[:, :, ::-1]
    if view & 4:
        x = np.swapaxes(x, 1, 2)
    return x


@keras.saving.register_keras_serializable(package="otrain")
class EnsembleMean(layers.Layer):
    """One [P(bogus), P(real)] from several networks': the mean of their log-odds.

    The networks of an ensemble vote by their log-odds of real (the geometric mean of
    their odds), so a sigmoid calibration fitted on one network's log-odds applies to
    the ensemble as the mean of the networks' calibrated log-odds.
    """

    def call(self, inputs):
        eps = 1e-7
        log_odds = [
            ops.log(ops.clip(p[:, 1], eps, 1.0)) - ops.log(ops.clip(p[:, 0], eps, 1.0))
            for p in inputs
        ]
        mean = ops.mean(ops.stack(log_odds, axis=-1), axis=-1)
        p_real = ops.sigmoid(mean)
        return ops.stack([1.0 - p_real, p_real], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])


def assemble_ensemble(members, name="otrain_ensemble"):
    """One Keras model from the networks of an ensemble: their mean log-odds.

    Parameters
    ----------
    members : list of keras.Model
        Models of the same input shape with a (batch, 2) softmax output; each becomes
        a nested model named ``network_1``, ``network_2``...

    Returns
    -------
    keras.Model
        Output (batch, 2): [P(bogus), P(real)] of the mean log-odds (:class:`EnsembleMean`).
    """
    inputs = keras.Input(shape=tuple(members[0].input_shape[1:]), name="stamps")
    outputs = []
    for index, member in enumerate(members, start=1):
        member.name = f"network_{index}"
        outputs.append(member(inputs))
    return keras.Model(inputs, EnsembleMean(name="ensemble_mean")(outputs), name=name)


def ensemble_members(model):
    """The networks of an ensemble model (:func:`assemble_ensemble`), or None.

    Parameters
    ----------
    model : keras.Model

    Returns
    -------
    list of keras.Model or None
        None when ``model`` is a single network.
    """
    last = model.layers[-1] if getattr(model, "layers", None) else None
    if not isinstance(last, EnsembleMean):
        return None
    return [layer for layer in model.layers if isinstance(layer, keras.Model)]


def otrain_network(inputs, *, dropout=0.3, seed=None):
    """O'TRAIN's network (Makhlouf et al. 2022), up to its last hidden layer.

    Parameters
    ----------
    inputs : keras tensor of shape (batch, H, W, C)
        Normalised stamps.
    dropout : float, default 0.3
        Dropout rate.
    seed : int, optional
        Seed of the initial weights and of the dropout draws (each layer gets its
        own, derived from this one); None leaves them to Keras.

    Returns
    -------
    keras tensor
        Features, (batch, 256).
    """
    s = LayerSeeds(seed)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1", **s.weights())(inputs)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2", **s.weights())(x)
    x = layers.AveragePooling2D(2, padding="same")(x)
    x = layers.Dropout(dropout, seed=s.next())(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3", **s.weights())(x)
    x = layers.MaxPooling2D(2, padding="same")(x)
    x = layers.Dropout(dropout, seed=s.next())(x)
    x = layers.Conv2D(128, 3, padding="same", activation="relu", name="conv4", **s.weights())(x)
    x = layers.Conv2D(256, 3, padding="same", activation="relu", name="conv5", **s.weights())(x)
    x = layers.MaxPooling2D(2, padding="same")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(512, activation="relu", name="dense1", **s.weights())(x)
    x = layers.Dropout(dropout, seed=s.next())(x)
    return layers.Dense(256, activation="relu", name="dense2", **s.weights())(x)


def vgg6_network(inputs, *, dropout=0.3, seed=None):
    """A small VGG-like network in the style of ZTF's braai (Duev et al. 2019).

    Parameters
    ----------
    inputs : keras tensor of shape (batch, H, W, C)
        Normalised stamps.
    dropout : float, default 0.3
        Dropout rate.
    seed : int, optional
        Seed of the initial weights and of the dropout draws (each layer gets its
        own, derived from this one); None leaves them to Keras.

    Returns
    -------
    keras tensor
        Features, (batch, 256).
    """
    s = LayerSeeds(seed)
    x = layers.Conv2D(16, 3, activation="relu", name="conv1", **s.weights())(inputs)
    x = layers.Conv2D(16, 3, activation="relu", name="conv2", **s.weights())(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Dropout(dropout, seed=s.next())(x)
    x = layers.Conv2D(32, 3, activation="relu", name="conv3", **s.weights())(x)
    x = layers.Conv2D(32, 3, activation="relu", name="conv4", **s.weights())(x)
    x = layers.MaxPooling2D(4, padding="same")(x)
    x = layers.Dropout(dropout, seed=s.next())(x)
    x = layers.Flatten()(x)
    x = layers.Dense(256, activation="relu", name="dense1", **s.weights())(x)
    return layers.Dropout(dropout, seed=s.next())(x)


class LayerSeeds:
    """Seeds for the layers of one network, one after another, from one seed.

    Keras draws the seed of a layer built without one from Python's process-wide
    ``random`` stream; otrain's networks take theirs from here instead, so that a
    network depends on its seed alone.

    Parameters
    ----------
    seed : int or None
        None: every method returns None or nothing (Keras' own defaults).
    """

    def __init__(self, seed):
        self._sequence = None if seed is None else np.random.SeedSequence(int(seed))
        self._count = 0

    def next(self):
        """The next seed (an int below 2**31), or None."""
        if self._sequence is None:
            return None
        self._count += 1
        state = np.random.SeedSequence(self._sequence.entropy, spawn_key=(self._count,))
        return int(state.generate_state(1)[0] % (2**31 - 1))

    def weights(self):
        """``kernel_initializer`` for a Conv2D or Dense layer: Glorot uniform, seeded."""
        seed = self.next()
        if seed is None:
            return {}
        return {"kernel_initializer": keras.initializers.GlorotUniform(seed=seed)}


def reseed_model(model, seed, *, weights=True):
    """Draw every random initial weight and every seed generator of ``model`` anew.

    For user networks, whose layers were built with Keras' default seeds: each
    randomly initialised weight (``kernel``, ``recurrent_kernel``, ``embeddings``...)
    is redrawn by its own initializer with a seed derived from ``seed``, and each
    layer's seed generator (dropout, noise, augmentation) restarts from one. Weights
    of constant initializers (biases, batch-normalisation terms) are left as they are.

    Parameters
    ----------
    model : keras.Model
    seed : int
    weights : bool, default True
        False: restart the seed generators only, keep the weights (a trained network
        to fine-tune, see :mod:`otrain.pretrained`).
    """
    seeds = LayerSeeds(seed)
    for layer in _all_layers(model):
        for attribute, value in list(vars(layer).items()):
            if isinstance(value, keras.random.SeedGenerator):
                value.state.assign(ops.cast([seeds.next(), 0], value.state.dtype))
            elif (
                weights
                and attribute.endswith("_initializer")
                and isinstance(value, keras.initializers.Initializer)
                and hasattr(value, "seed")
            ):
                variable = getattr(layer, attribute[: -len("_initializer")], None)
                if isinstance(variable, keras.Variable):
                    config = {**value.get_config(), "seed": seeds.next()}
                    initializer = type(value).from_config(config)
                    variable.assign(initializer(variable.shape, dtype=variable.dtype))


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)
        cell = getattr(layer, "cell", None)
        if isinstance(cell, layers.Layer):
            yield cell


#: Built-in networks by name.
NETWORKS = {"otrain": otrain_network, "vgg6": vgg6_network}


def _network_function(network):
    from ._validation import check_network

    network = check_network(network, NETWORKS)
    return NETWORKS[network] if isinstance(network, str) else network


def build_model(
    input_shape, *, network="otrain", normalisation="robust", augment=True, dropout=0.3, seed=None
):
    """Build an uncompiled Keras model: normalisation, augmentation, network, softmax.

    Parameters
    ----------
    input_shape : tuple of int
        (H, W, C) of the stamps; any size and channel count.
    network : str or callable, default "otrain"
        A name of :data:`NETWORKS` or a function ``build(inputs, *, dropout)``.
    normalisation : {"robust", "l2", "none"}, default "robust"
        See :class:`StampNormalisation`.
    augment : bool, default True
        Add the :class:`RandomDihedral` layer (active in training only).
    dropout : float, default 0.3
        Dropout rate of the network.
    seed : int, optional
        Seed of the initial weights, the dropout and the augmentation: the same seed
        builds the same model, whatever else the process draws. A user network that
        takes no ``seed`` keyword is built as it is, then its random weights and seed
        generators are drawn anew from this seed (:func:`reseed_model`). None leaves
        the seeds to Keras.

    Returns
    -------
    keras.Model
        Output: (batch, 2) softmax probabilities [bogus, real].
    """
    build = _network_function(network)
    seeds = LayerSeeds(seed)
    inputs = keras.Input(shape=tuple(int(s) for s in input_shape), name="stamps")
    x = StampNormalisation(normalisation, name="normalisation")(inputs)
    if augment:
        x = RandomDihedral(seed=seeds.next(), name="augmentation")(x)
    takes_seed = "seed" in inspect.signature(build).parameters
    network_seed = seeds.next()
    if takes_seed:
        features = build(x, dropout=dropout, seed=network_seed)
    else:
        features = build(x, dropout=dropout)
    outputs = layers.Dense(2, activation="softmax", name="probabilities", **seeds.weights())(
        features
    )
    name = network if isinstance(network, str) else getattr(network, "__name__", "custom")
    model = keras.Model(inputs, outputs, name=f"otrain_{name}")
    if seed is not None and not takes_seed:
        reseed_model(model, network_seed)
    return model
