"""Model files: one file holds everything needed to score new cutouts.

A model file is a Keras file (``.keras`` or ``.h5``) whose network includes the
normalisation layer, plus an ``otrain`` metadata record (JSON) with the channels,
the stamp size, the class order, the normalisation, the hyperparameters and the
otrain version; optionally the decision threshold (``"threshold"``, a candidate is
called real when P(real) >= threshold) and the calibration map of P(real)
(``"calibration"``: ``{"method": "sigmoid", "a", "b"}`` or ``{"method":
"isotonic", "x", "y"}``, see :mod:`otrain.calibration`), applied after the network
by ``predict_proba``. In a ``.keras`` file (a zip archive) the record is the member
``otrain.json``; in an ``.h5`` file it is the root attribute ``otrain``.

Loading never unpickles and never uses Keras' ``safe_mode=False``. Model files are
often strangers' files (a model from a paper, a repository): before Keras builds any
layer, the stored configuration is checked against an allow-list of the layers,
activations and helper objects a real/bogus CNN is made of (see :func:`check_config`),
and the HDF5 weights against links and external storage that would read other files;
anything else (a ``Lambda`` layer holding code, lookup layers that read a vocabulary
file, ``TFSMLayer``, classes from other modules) is refused, naming the layer. Keras
then loads inside its safe-mode scope. Legacy Keras
``.h5`` files (the original O'TRAIN, ZTF's braai, other TensorFlow 2.x-era models)
load for scoring, including those Keras 3 rejects: the network is rebuilt from the
stored configuration and the weights are set layer by layer, by name. Such files
carry no otrain record, so the caller states their channels and normalisation.
"""

import contextlib
import json
import logging
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ._atomic import atomic_output
from ._validation import check_channels, check_threshold
from ._version import __version__
from .exceptions import ModelFileError

__all__ = ["save_model", "load_model", "check_config", "MODEL_SUFFIXES"]

#: Suffixes of the model files otrain writes and reads.
MODEL_SUFFIXES = (".keras", ".h5")

_RECORD = "otrain.json"
# Hyperparameters stored with the model (JSON-able ones only).
_PARAMS = (
    "network",
    "normalisation",
    "augment",
    "dropout",
    "learning_rate",
    "batch_size",
    "epochs",
    "validation_fraction",
    "patience",
    "class_weight",
    "random_state",
    "init",
)


def _unwrap(estimator):
    """The CutoutClassifier of ``estimator`` and the CutoutLoader before it, if any."""
    from sklearn.pipeline import Pipeline

    from .classifier import CutoutClassifier
    from .cutouts import CutoutLoader

    loader = None
    if isinstance(estimator, Pipeline):
        loader = next((s for _, s in estimator.steps if isinstance(s, CutoutLoader)), None)
        estimator = estimator.steps[-1][1]
    if not isinstance(estimator, CutoutClassifier):
        raise TypeError(
            f"save_model takes a fitted CutoutClassifier (or a Pipeline ending with one), "
            f"got {type(estimator).__name__}"
        )
    if not estimator.initialized_:
        from .exceptions import NotFittedError

        raise NotFittedError("this CutoutClassifier is not fitted yet: fit it before saving")
    return estimator, loader


def save_model(estimator, path, *, channels=None, extra=None):
    """Save a fitted classifier to one ``.keras`` or ``.h5`` file, atomically.

    Parameters
    ----------
    estimator : CutoutClassifier or Pipeline
        A fitted classifier, or a pipeline ``CutoutLoader -> CutoutClassifier`` (the
        loader's channels are then stored).
    path : str or path-like
        Output file, ending in ``.keras`` (recommended) or ``.h5``.
    channels : sequence of str, optional
        Channel names of the stamps (EXTNAMEs). Default: the pipeline loader's, the
        classifier's ``channels_``, else ``("DIFF",)`` for one channel.
    extra : dict, optional
        More JSON-able metadata to store, e.g. ``{"threshold": 0.37}`` (the decision
        threshold, overriding the classifier's ``threshold_``). The classifier's
        ``calibration_``, ``threshold_`` and ``bfloat16_check_`` (see
        :func:`otrain.precision.check_bfloat16`), when set, are stored too.

    Returns
    -------
    pathlib.Path
        The file written. A failure leaves any previous file at ``path`` intact.
    """
    classifier, loader = _unwrap(estimator)
    path = Path(path)
    if path.suffix not in MODEL_SUFFIXES:
        raise ModelFileError(f"{path}: a model file must end in .keras or .h5; rename the output")
    input_shape = tuple(int(s) for s in classifier.model_.input_shape[1:])
    if channels is None:
        channels = loader.channels if loader is not None else getattr(classifier, "channels_", None)
    if channels is None:
        n_channels = input_shape[-1]
        channels = ("DIFF",) if n_channels == 1 else tuple(f"C{i}" for i in range(n_channels))
    channels = check_channels(channels)
    if len(channels) != input_shape[-1]:
        raise ValueError(
            f"{len(channels)} channel names ({', '.join(channels)}) given for a model "
            f"taking {input_shape[-1]} channels"
        )
    params = classifier.get_params()
    record = {
        "otrain_version": __version__,
        "channels": list(channels),
        "input_shape": list(input_shape),
        "classes": [int(c) for c in classifier.classes_],
        "class_names": ["bogus", "real"],
        "normalisation": _normalisation_of(classifier.model_),
        "params": {k: params[k] for k in _PARAMS if _jsonable(params.get(k))},
    }
    calibration = getattr(classifier, "calibration_", None)
    if calibration is not None:
        record["calibration"] = calibration.to_record()
    if getattr(classifier, "threshold_", None) is not None:
        record["threshold"] = float(classifier.threshold_)
    if getattr(classifier, "bfloat16_check_", None) is not None:
        record["bfloat16_check"] = dict(classifier.bfloat16_check_)
    if getattr(classifier, "init_source_", None) is not None:
        record["init"] = dict(classifier.init_source_)
    record.update(extra or {})
    if record.get("threshold") is not None:
        record["threshold"] = check_threshold(record["threshold"])
    if callable(params.get("network")):
        record["params"]["network"] = getattr(params["network"], "__name__", "custom")
    with atomic_output(path) as tmp, _quiet_h5_notice():
        if path.suffix == ".keras":
            with _without_optimizer(classifier.model_):
                classifier.model_.save(tmp)
            with zipfile.ZipFile(tmp, "a") as archive:
                archive.writestr(_RECORD, json.dumps(record, indent=1))
        else:
            import h5py

            classifier.model_.save(tmp, include_optimizer=False)
            with h5py.File(tmp, "a") as handle:
                handle.attrs["otrain"] = json.dumps(record)
    classifier._saved_as(channels=channels, record=record)
    return path


@contextlib.contextmanager
def _without_optimizer(model):
    """Leave the optimizer's state out of the file: two thirds of its size, never read.

    Models are loaded for scoring (``compile=False``); a new fit builds a new
    network and optimizer.
    """
    optimizer = getattr(model, "optimizer", None)
    model.optimizer = None
    try:
        yield
    finally:
        model.optimizer = optimizer


@contextlib.contextmanager
def _quiet_h5_notice():
    """Silence Keras' "HDF5 is legacy" log line: .h5 is O'TRAIN's format, chosen on purpose."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _jsonable(value):
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True


def _normalisation_of(model):
    from .networks import StampNormalisation, ensemble_members

    for layer in model.layers:
        if isinstance(layer, StampNormalisation):
            return layer.method
    networks = ensemble_members(model)
    return _normalisation_of(networks[0]) if networks else None


def read_record(path):
    """The otrain metadata record of a model file, or None for a foreign Keras file.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    dict or None

    Raises
    ------
    ModelFileError
        If the file is missing or is not a Keras model file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(_missing_message(path))
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "config.json" not in names:
                raise ModelFileError(
                    f"{path}: a zip archive but not a Keras model (no config.json); "
                    "give a .keras or .h5 model written by otrain-train or Keras"
                )
            return json.loads(archive.read(_RECORD)) if _RECORD in names else None
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            if "model_config" not in handle.attrs:
                raise ModelFileError(
                    f"{path}: an HDF5 file but not a Keras model (no model_config); give a "
                    ".keras or .h5 model written by otrain-train or Keras"
                )
            record = handle.attrs.get("otrain")
    except OSError as err:
        raise ModelFileError(
            f"{path}: not a Keras model file (neither a .keras archive nor HDF5); give a "
            ".keras or .h5 model written by otrain-train or Keras"
        ) from err
    return None if record is None else json.loads(record)


def _missing_message(path):
    """Why ``path`` is not there, pointing from O'TRAIN's model layout to otrain's."""
    # O'TRAIN kept a model as MODEL_PATH/CNN_training/NAME/NAME.h5; otrain-train writes
    # MODEL_PATH/CNN_training/NAME.h5 and keeps NAME/ for plots and diagnostics.
    if path.parent.name == path.stem and path.parent.parent.name == "CNN_training":
        moved = [path.parent.with_suffix(s) for s in MODEL_SUFFIXES]
        found = [m for m in moved if m.is_file()]
        where = found[0] if found else path.parent.with_suffix(path.suffix or ".h5")
        return (
            f"{path}: no such model file; O'TRAIN kept models in CNN_training/NAME/NAME.h5, "
            f"otrain-train stores them as CNN_training/NAME.h5 (NAME/ holds the plots): "
            f"give --model {where}" + ("" if found else " (not there either: check the name)")
        )
    return f"{path}: no such model file; check the path (--model)"


def load_model(path, *, channels=None, normalisation=None):
    """Load a model file written by otrain, or a legacy Keras model, for scoring.

    Parameters
    ----------
    path : str or path-like
        A ``.keras`` or ``.h5`` file.
    channels : sequence of str, optional
        Channels of a legacy model's input (e.g. ``("SCI", "REF", "DIFF")`` for
        braai). For otrain files, if given, they must agree with the stored ones.
    normalisation : {"l2", "robust", "none"}, optional
        Normalisation a legacy model expects (braai: ``"l2"``); it is added to the
        network as a layer. For otrain files, must agree with the stored one.

    Returns
    -------
    CutoutClassifier
        Fitted, ready for ``predict_proba``; ``channels_`` holds the channel names,
        ``model_file_record_`` the stored metadata, ``threshold_`` the stored decision
        threshold (None if none), ``calibration_`` the stored calibration (None if
        none; ``predict_proba`` applies it) and ``bfloat16_check_`` the stored
        bfloat16 check (None if none; see :mod:`otrain.precision`).

    Raises
    ------
    ModelFileError
        If the file is missing, not a Keras model, or a legacy model is loaded
        without its channels and normalisation.
    """
    from ._tensorflow import load_tensorflow

    load_tensorflow()
    import keras

    from .networks import NORMALISATIONS

    path = Path(path)
    record = read_record(path)
    _check_file(path)
    if record is not None:
        for name, given, stored in (
            ("channels", channels and list(check_channels(channels)), record["channels"]),
            ("normalisation", normalisation, record["normalisation"]),
        ):
            if given is not None and given != stored:
                raise ModelFileError(
                    f"{path}: the model was trained with {name} {stored}, not {given}; "
                    f"leave {name} out to use the stored value"
                )
        model = _load_keras(path, keras)
        return _classifier_from(model, record, path)
    if channels is None or normalisation is None:
        raise ModelFileError(
            f"{path}: a Keras model without otrain metadata (legacy O'TRAIN, braai...); "
            "state its input channels and normalisation, e.g. --channels SCI,REF,DIFF "
            "--normalisation l2"
        )
    if normalisation not in NORMALISATIONS:
        raise ValueError(
            f"normalisation must be one of {', '.join(NORMALISATIONS)}, got {normalisation!r}"
        )
    channels = check_channels(channels)
    try:
        inner = _load_keras(path, keras)
    except ModelFileError:
        if zipfile.is_zipfile(path):
            # A .keras archive Keras refuses has no legacy form to fall back on:
            # Keras' own reason is the one to report.
            raise
        inner = _rebuild_legacy(path, keras)
    model = _wrap_legacy(inner, normalisation, keras)
    if model.input_shape[-1] != len(channels):
        raise ModelFileError(
            f"{path}: the model takes {model.input_shape[-1]} channels but "
            f"{len(channels)} were stated ({', '.join(channels)}); state its channels"
        )
    record = {
        "otrain_version": None,
        "legacy": True,
        "channels": list(channels),
        "input_shape": list(model.input_shape[1:]),
        "classes": [0, 1],
        "class_names": ["bogus", "real"],
        "normalisation": normalisation,
        "params": {"network": inner.name, "normalisation": normalisation},
    }
    return _classifier_from(model, record, path)


def _custom_objects():
    from keras.src.models.functional import Functional

    from .networks import EnsembleMean, RandomDihedral, StampNormalisation

    return {
        "StampNormalisation": StampNormalisation,
        "RandomDihedral": RandomDihedral,
        "EnsembleMean": EnsembleMean,
        # Nested models saved after scikeras registered Keras' class as ">Functional".
        ">Functional": Functional,
    }


# The layers a real/bogus CNN is built from (otrain's networks, braai, O'TRAIN's and
# their Keras 2 ancestors). Anything else is refused before Keras sees the file.
_LAYERS = frozenset(
    {
        "InputLayer", "Sequential", "Functional", "Model",
        "Conv1D", "Conv2D", "Convolution2D", "SeparableConv2D", "DepthwiseConv2D",
        "Conv2DTranspose", "MaxPooling2D", "MaxPool2D", "AveragePooling2D", "AvgPool2D",
        "GlobalAveragePooling2D", "GlobalMaxPooling2D", "GlobalAvgPool2D", "GlobalMaxPool2D",
        "Dense", "Dropout", "SpatialDropout2D", "GaussianDropout", "GaussianNoise",
        "AlphaDropout", "Flatten", "Reshape", "Permute", "BatchNormalization",
        "LayerNormalization", "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax",
        "ZeroPadding2D", "Cropping2D", "UpSampling2D",
        "Add", "Concatenate", "Multiply", "Average", "Maximum", "Minimum", "Subtract",
        # otrain's own layers, under their plain and registered names.
        "StampNormalisation", "RandomDihedral", "EnsembleMean",
        "otrain>StampNormalisation", "otrain>RandomDihedral", "otrain>EnsembleMean",
    }
)  # fmt: skip
# Objects nested in layer configs: initialisers, regularisers, constraints, dtype
# policies, and the tensor references of functional models. All are plain values.
_HELPERS = frozenset(
    {
        "Zeros", "Ones", "Constant", "GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal",
        "LecunUniform", "LecunNormal", "RandomUniform", "RandomNormal", "TruncatedNormal",
        "VarianceScaling", "Orthogonal", "Identity",
        "L1", "L2", "L1L2", "OrthogonalRegularizer",
        "MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm",
        "DTypePolicy", "FloatDTypePolicy", "Policy",
        "__keras_tensor__", "__tuple__",
    }
)  # fmt: skip
_ACTIVATIONS = frozenset(
    {
        "linear", "relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "swish",
        "sigmoid", "hard_sigmoid", "hard_silu", "hard_swish", "softmax", "log_softmax",
        "softplus", "softsign", "tanh", "exponential", "mish",
    }
)  # fmt: skip
# Why the layers people meet in downloaded models are refused.
_REFUSED = {
    "Lambda": "runs Python code stored in the file",
    "TFSMLayer": "loads a TensorFlow SavedModel from a path named in the file",
    "StringLookup": "reads a vocabulary file named in the file",
    "IntegerLookup": "reads a vocabulary file named in the file",
    "TextVectorization": "reads a vocabulary file named in the file",
    "function": "names a Python function to call",
    "__lambda__": "runs Python code stored in the file",
}
# Configuration keys Keras does not read when loading for scoring (compile=False).
_NOT_READ = ("compile_config", "training_config")


def check_config(config, path="model"):
    """Refuse a stored model configuration holding anything but a plain CNN's parts.

    Every serialised object (a dict with a ``class_name``) must be one of the layers
    a real/bogus CNN is built from or a plain helper (initialiser, regulariser,
    constraint, dtype policy, tensor reference), from Keras' or otrain's modules;
    every activation must be one of Keras' built-in functions named by string.

    Parameters
    ----------
    config : dict
        The model configuration (``config.json`` of a ``.keras`` archive, the
        ``model_config`` attribute of an ``.h5`` file), decoded.
    path : str or path-like, default "model"
        The file, for the error message.

    Raises
    ------
    ModelFileError
        Naming the first refused layer or object, and why.
    """
    _check_node(config, path, "the model")


def _check_node(node, path, where):
    if isinstance(node, list):
        for item in node:
            _check_node(item, path, where)
        return
    if not isinstance(node, dict):
        return
    if "class_name" in node:
        where = _check_object(node, path, where)
    for key, value in node.items():
        if key in _NOT_READ:
            continue
        if key in ("activation", "recurrent_activation"):
            _check_activation(value, path, where)
            continue
        _check_node(value, path, where)


def _check_object(node, path, where):
    """Check one serialised object; returns how to name it in later messages."""
    class_name = str(node["class_name"])
    module = node.get("module")
    if class_name == ">Functional" and (module is None or _is_keras_module(module)):
        # Keras' own model class registered under an empty package (see below): the
        # nested models of an ensemble saved as .h5 carry that name as their class.
        class_name = "Functional"
    config = node.get("config")
    name = (config.get("name") if isinstance(config, dict) else None) or node.get("name")
    label = f"layer {name!r} ({class_name})" if name else class_name
    registered = node.get("registered_name")
    reason = None
    if module is not None and not (_is_keras_module(module) or module == "otrain.networks"):
        reason = f"comes from the module {module!r}, not from Keras or otrain"
    elif class_name not in _LAYERS and class_name not in _HELPERS:
        reason = _REFUSED.get(class_name, "is not a layer a real/bogus CNN is built from")
    elif registered not in (None, class_name, f">{class_name}") and registered not in _LAYERS:
        # ">Functional": scikeras registers Keras' own model class under an empty
        # package when a fitted classifier is pickled or cloned, and every model saved
        # afterwards in that process carries the name; the module check above holds.
        reason = f"is registered as {registered!r}, a name otrain does not know"
    if reason is not None:
        raise ModelFileError(
            f"{path}: refused before loading: {label} in {where} {reason}; otrain loads "
            "only plain CNN layers (Conv2D, Dense, Dropout, pooling...) from model files, "
            "so a model holding it cannot be used here (rebuild it without that layer)"
        )
    return label if class_name in _LAYERS else where


def _is_keras_module(module):
    module = str(module)
    return module == "keras" or module.startswith("keras.")


def _check_activation(value, path, where):
    if value is None or (isinstance(value, str) and value in _ACTIVATIONS):
        return
    if isinstance(value, dict) and value.get("class_name") == "function":
        # Keras 3 may store a built-in activation as a function reference.
        if value.get("config") in _ACTIVATIONS and _is_keras_module(value.get("module") or "keras"):
            return
    shown = json.dumps(value)[:120]
    raise ModelFileError(
        f"{path}: refused before loading: {where} has the activation {shown}, not one of "
        "Keras' built-in activations named by string (relu, sigmoid, softmax...); a model "
        "holding it cannot be used here"
    )


def _stored_config(path):
    """The model configuration stored in ``path``, decoded, without building anything."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return json.loads(archive.read("config.json"))
        import h5py

        with h5py.File(path, "r") as handle:
            return json.loads(_text(handle.attrs["model_config"]))
    except (KeyError, ValueError, OSError) as err:
        raise ModelFileError(
            f"{path}: the stored model configuration is unreadable ({_whole(err)}); "
            "give a .keras or .h5 model written by otrain-train or Keras"
        ) from err


def _check_file(path):
    """Check the stored configuration and the HDF5 storage of ``path`` before loading."""
    check_config(_stored_config(path), path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            bad = [n for n in names if n.startswith(("/", "\\")) or ".." in n.split("/")]
            if bad:
                raise ModelFileError(
                    f"{path}: refused before loading: the archive member {bad[0]!r} points "
                    "outside the archive; a model holding it cannot be used here"
                )
            if "model.weights.h5" in names:
                import io

                import h5py

                weights = io.BytesIO(archive.read("model.weights.h5"))
                with h5py.File(weights, "r") as handle:
                    _check_storage(handle, path)
        return
    import h5py

    with h5py.File(path, "r") as handle:
        _check_storage(handle, path)


def _check_storage(group, path):
    """Refuse HDF5 links and datasets that would read other files than ``path``."""
    import h5py

    for name in group:
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink | h5py.SoftLink):
            raise ModelFileError(
                f"{path}: refused before loading: the HDF5 entry {group.name}/{name} is a "
                f"link ({type(link).__name__}), which may read another file; a model file "
                "holds its weights itself"
            )
        item = group[name]
        if isinstance(item, h5py.Group):
            _check_storage(item, path)
        elif item.is_virtual or item.id.get_create_plist().get_external_count():
            raise ModelFileError(
                f"{path}: refused before loading: the HDF5 dataset {item.name} keeps its "
                "values in another file; a model file holds its weights itself"
            )


def _whole(err):
    """Keras' or h5py's reason, whole, on one line."""
    return " ".join(str(err).split()) or type(err).__name__


def _safe_mode():
    # Keras only checks Lambda layers (and friends) inside this scope or when
    # load_model is given safe_mode=True; otrain's own rebuild calls from_config
    # directly, so the scope is set around every load. The allow-list above has
    # already refused such layers; this is the second lock.
    from keras.src.saving.serialization_lib import SafeModeScope

    return SafeModeScope(True)


def _load_keras(path, keras):
    try:
        with warnings.catch_warnings(), _safe_mode():
            # Keras 3 warns about Keras 2 configs (input_shape arguments) it then may or
            # may not load; a failure is handled below, the warning says nothing useful.
            warnings.simplefilter("ignore", UserWarning)
            return keras.saving.load_model(
                path, compile=False, safe_mode=True, custom_objects=_custom_objects()
            )
    except Exception as err:  # noqa: BLE001 - Keras raises many types on foreign files
        raise ModelFileError(f"{path}: Keras cannot load this model ({_whole(err)})") from err


def _rebuild_legacy(path, keras):
    """Rebuild a Keras 2 ``Sequential``/functional model from its config and weights."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            config = json.loads(_text(handle.attrs["model_config"]))
            weights = handle["model_weights"] if "model_weights" in handle else handle
            stored = {
                name: [np.asarray(weights[name][w]) for w in _weight_names(weights[name])]
                for name in weights
            }
        with _safe_mode():
            model = _model_from_legacy_config(config, keras)
        for layer in model.layers:
            values = stored.get(layer.name)
            if values:
                layer.set_weights(values)
            elif layer.weights:
                raise ModelFileError(f"{path}: no stored weights for layer {layer.name}")
    except ModelFileError:
        raise
    except Exception as err:  # noqa: BLE001 - anything here means: not loadable
        raise ModelFileError(
            f"{path}: cannot rebuild this legacy Keras model ({_whole(err)}); "
            "re-save it with a recent Keras or give an otrain model"
        ) from err
    return model


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def _weight_names(group):
    names = group.attrs.get("weight_names")
    if names is None:
        return []
    return [_text(n) for n in names]


# Keras 2 config keys that Keras 3 layers no longer accept.
_DROPPED_KEYS = ("batch_input_shape", "batch_shape", "input_shape", "dtype")


def _clean_layer_config(layer, keras):
    config = {k: v for k, v in layer["config"].items() if k not in _DROPPED_KEYS}
    for key, value in list(config.items()):
        # Keras 2 nests initialisers, regularisers... as {"class_name", "config"}; the
        # stored values only matter for training, so Keras 3 defaults are used instead.
        if isinstance(value, dict) and "class_name" in value:
            config.pop(key)
    layer_class = getattr(keras.layers, layer["class_name"], None)
    if layer_class is None:
        raise ValueError(f"unknown layer type {layer['class_name']}")
    return layer_class.from_config(config)


def _model_from_legacy_config(config, keras):
    if config["class_name"] != "Sequential":
        # Functional Keras 2 models: Keras 3 reads most configs once cleaned.
        return keras.Model.from_config(config["config"])
    layer_configs = config["config"]
    if isinstance(layer_configs, dict):
        layer_configs = layer_configs["layers"]
    shape = None
    for layer in layer_configs:
        shape = layer["config"].get("batch_input_shape") or layer["config"].get("batch_shape")
        if shape:
            break
    if shape is None:
        raise ValueError("the model config does not state its input shape")
    inner = config["config"]
    model = keras.Sequential(
        name=inner.get("name", "legacy") if isinstance(inner, dict) else "legacy"
    )
    model.add(keras.Input(shape=tuple(shape[1:])))
    for layer in layer_configs:
        if layer["class_name"] == "InputLayer":
            continue
        model.add(_clean_layer_config(layer, keras))
    return model


def _wrap_legacy(inner, normalisation, keras):
    from .networks import StampNormalisation

    inputs = keras.Input(shape=inner.input_shape[1:], name="stamps")
    x = StampNormalisation(normalisation, name="normalisation")(inputs)
    outputs = inner(x)
    return keras.Model(inputs, outputs, name=f"legacy_{inner.name}")


def _classifier_from(model, record, path):
    """A fitted CutoutClassifier around an already-built Keras model."""
    from .classifier import CutoutClassifier

    params = {k: v for k, v in record.get("params", {}).items() if k in _PARAMS}
    if params.get("network") not in ("otrain", "vgg6"):
        params.pop("network", None)
    n_outputs = model.output_shape[-1]
    if n_outputs not in (1, 2):
        raise ModelFileError(
            f"{path}: the model has {n_outputs} outputs; a real/bogus model has one "
            "(sigmoid, P(real)) or two (softmax, [bogus, real])"
        )
    loss = "binary_crossentropy" if n_outputs == 1 else "sparse_categorical_crossentropy"
    classifier = CutoutClassifier(loss=loss, **params)
    classifier._prebuilt_model = model
    shape = tuple(record["input_shape"])
    classifier.initialize(np.zeros((2, *shape), np.float32), np.array([0, 1]))
    classifier._prebuilt_model = None
    calibration = None
    if record.get("calibration") is not None:
        from .calibration import Calibration

        try:
            calibration = Calibration.from_record(record["calibration"])
        except (KeyError, TypeError, ValueError) as err:
            raise ModelFileError(
                f"{path}: the stored calibration is unreadable ({err}); re-calibrate the model"
            ) from err
    classifier._restore(channels=record["channels"], record=record, calibration=calibration)
    return classifier
