"""Trained real/bogus networks to start from: fine-tuning (``init=``, ``--init``).

``CutoutClassifier(init=...)`` and ``otrain-train --init ...`` start the training from
the weights of a network that already tells real from bogus, instead of random ones:

``"braai"``
    ZTF's braai, model d6_m9 (Duev et al. 2019, MNRAS 489, 3582; MIT licence, see
    ``LICENSE-braai`` beside this file): a VGG6 on 63x63 stamps of SCI, REF and DIFF,
    each channel divided by its L2 norm. It is the network behind ZTF's ``drb`` score.
    Shipped with otrain as an otrain model file (its sigmoid output rewritten as the
    equivalent two-class softmax, the same P(real) to 1e-6).
a path
    Any otrain model file (one network, not an ensemble), or a legacy Keras ``.h5``
    real/bogus model (O'TRAIN's, braai's): its channels are then taken to be the
    stamps' and its normalisation the classifier's ``normalisation``.

The network is trained further as it is: its layers, normalisation and dropout rates
come from the file, not from ``network``, ``normalisation`` and ``dropout``. The
stamps must have the size and the channels the network takes. A calibration or a
threshold stored in the file is not carried over: fine-tuning changes the scores.
Nothing starts from a trained network unless asked: ``init=None`` is the default.
"""

import hashlib
from pathlib import Path

import numpy as np

from ..exceptions import CutoutError, ModelFileError

__all__ = [
    "PRETRAINED",
    "check_init",
    "resolve_init",
    "load_init",
    "check_stamps",
    "copy_network",
    "two_class_head",
    "write_braai",
]

_HERE = Path(__file__).resolve().parent

#: The networks shipped with otrain, by the name ``init=`` takes.
PRETRAINED = {
    "braai": {
        "file": _HERE / "braai_d6_m9.keras",
        "description": "ZTF's braai d6_m9 (Duev et al. 2019, MIT licence)",
    },
}

# Legacy files recognised by their SHA-256: what they take, as their record would say.
_KNOWN_LEGACY = {
    "24f97a6a37cf90da2697a657644049caf8c7f2bf382b60c64aa88dba0828ceaa": {
        "name": "braai_d6_m9.h5",
        "channels": ("SCI", "REF", "DIFF"),
        "normalisation": "l2",
        "description": "ZTF's braai d6_m9 (Duev et al. 2019, MIT licence)",
    },
}


def check_init(init):
    """Refuse what ``init=`` cannot be: None, a pretrained name or a path."""
    import os

    if init is None or isinstance(init, str | os.PathLike):
        return
    raise ValueError(
        f"init must be None, a pretrained name ({', '.join(PRETRAINED)}) or a model file "
        f"path, got {type(init).__name__}"
    )


def resolve_init(init):
    """The model file behind ``init`` and how to name it.

    Parameters
    ----------
    init : str or path-like
        A name of :data:`PRETRAINED` or a path to a model file.

    Returns
    -------
    (pathlib.Path, str)
        The file and a description for reports.
    """
    check_init(init)
    if isinstance(init, str) and init in PRETRAINED:
        entry = PRETRAINED[init]
        return entry["file"], entry["description"]
    path = Path(init)
    if not path.is_file():
        names = ", ".join(f"'{n}'" for n in PRETRAINED)
        raise ModelFileError(
            f"{path}: no such model file to start from; give an otrain model file, a "
            f"legacy Keras .h5 real/bogus model, or {names}"
        )
    return path, path.name


def load_init(init, *, channels=None, normalisation="robust"):
    """The network to fine-tune: a two-class Keras model, with what it takes.

    Parameters
    ----------
    init : str or path-like
        See :func:`resolve_init`.
    channels : sequence of str, optional
        The stamps' channel names: those of a legacy file without a record.
    normalisation : str, default "robust"
        The normalisation of a legacy file without a record that otrain does not know.

    Returns
    -------
    dict
        ``model`` (uncompiled, output (batch, 2) softmax [bogus, real]), ``channels``
        (tuple), ``input_shape``, and ``source`` (JSON-able: ``init``,
        ``description``, ``file``, ``sha256``), stored in the model file's record.
    """
    from ..model_files import load_model, read_record
    from ..networks import ensemble_members

    path, description = resolve_init(init)
    digest = _sha256(path)
    record = read_record(path)
    if record is None:
        known = _KNOWN_LEGACY.get(digest)
        if known is not None:
            channels, normalisation = known["channels"], known["normalisation"]
            description = known["description"]
        elif channels is None:
            raise ModelFileError(
                f"{path}: a legacy Keras model without otrain metadata; give the stamps' "
                "channels (fit(..., channels=...)) so that otrain knows what it takes"
            )
        classifier = load_model(path, channels=channels, normalisation=normalisation)
    else:
        classifier = load_model(path)
    members = ensemble_members(classifier.model_)
    if members is not None:
        raise ModelFileError(
            f"{path}: an ensemble of {len(members)} networks; "
            "init takes one network (train it with --ensemble 1)"
        )
    model = two_class_head(classifier.model_, path)
    return {
        "model": model,
        "channels": tuple(classifier.channels_),
        "input_shape": tuple(int(s) for s in model.input_shape[1:]),
        "source": {
            "init": str(init),
            "description": description,
            "file": path.name,
            "sha256": digest,
        },
    }


def check_stamps(info, stamp_shape, channels=None):
    """Refuse stamps the network to fine-tune does not take, naming the fix."""
    want = info["input_shape"]
    taken = info["channels"]
    if tuple(stamp_shape) != tuple(want):
        got = "x".join(map(str, stamp_shape))
        raise CutoutError(
            f"init {info['source']['init']}: the network takes {'x'.join(map(str, want))} "
            f"stamps ({', '.join(taken)}), these are {got}; convert the cutouts with that "
            f"size and those channels (otrain-convert --cutout-size {want[0]} --channels "
            f"{','.join(taken)})"
        )
    if channels is not None and tuple(channels) != tuple(taken):
        raise CutoutError(
            f"init {info['source']['init']}: the network takes channels {', '.join(taken)}, "
            f"the stamps are {', '.join(channels)}; convert the cutouts with --channels "
            f"{','.join(taken)}"
        )


def two_class_head(model, path="model"):
    """``model`` with a two-class softmax output: as it is, or from its sigmoid.

    A last ``Dense(1, sigmoid)`` giving ``sigmoid(z)`` becomes a ``Dense(2, softmax)``
    giving ``softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]``: the same P(real), in the
    form otrain's training, calibration and ensembles use. The layers before it are
    those of ``model`` (shared, not copied: see :func:`copy_network`).
    """
    import keras

    if model.output_shape[-1] == 2:
        return model
    layers = _flat_layers(model)
    head = layers[-1]
    if not (
        isinstance(head, keras.layers.Dense)
        and head.units == 1
        and getattr(head.activation, "__name__", "") == "sigmoid"
    ):
        raise ModelFileError(
            f"{path}: its output is not a sigmoid Dense layer or a two-class softmax; "
            "otrain cannot fine-tune it"
        )
    x = inputs = keras.Input(shape=model.input_shape[1:], name="stamps")
    for layer in layers[:-1]:
        x = layer(x)
    dense = keras.layers.Dense(2, activation="softmax", name="probabilities")
    outputs = dense(x)
    kernel, bias = head.get_weights()
    dense.set_weights(
        [
            np.concatenate([np.zeros_like(kernel), kernel], axis=1),
            np.concatenate([np.zeros_like(bias), bias]),
        ]
    )
    return keras.Model(inputs, outputs, name=model.name)


def _flat_layers(model):
    """The layers of a chain of layers and nested chains, in order, inputs left out."""
    import keras

    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            layers += _flat_layers(layer)
        else:
            layers.append(layer)
    return layers


def copy_network(model, seed):
    """A copy of ``model`` with its weights, its dropout draws seeded from ``seed``."""
    import keras

    from ..networks import reseed_model

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    reseed_model(copy, seed, weights=False)
    return copy


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_braai(h5_path, path):
    """Write braai's legacy ``.h5`` file as the otrain model file shipped here.

    The network is braai's, with otrain's L2 normalisation layer before it and its
    sigmoid output as the equivalent two-class softmax (:func:`two_class_head`).

    Parameters
    ----------
    h5_path : str or path-like
        ``braai_d6_m9.h5`` (ZTF's file, SHA-256 ``24f97a6a...``).
    path : str or path-like
        Output ``.keras`` file.
    """
    from ..model_files import load_model, save_model

    if _sha256(h5_path) not in _KNOWN_LEGACY:
        raise ModelFileError(f"{h5_path}: not ZTF's braai_d6_m9.h5 (its SHA-256 differs)")
    classifier = load_model(h5_path, channels=("SCI", "REF", "DIFF"), normalisation="l2")
    model = two_class_head(classifier.model_, h5_path)
    classifier.model_ = model
    source = (
        "ZTF braai d6_m9 (Duev et al. 2019, MNRAS 489, 3582), MIT licence, Copyright (c) "
        "2019 Dmitry Duev; rebuilt from braai_d6_m9.h5 by otrain"
    )
    extra = {"source": source, "params": {"network": "braai_d6_m9", "normalisation": "l2"}}
    return save_model(classifier, path, channels=("SCI", "REF", "DIFF"), extra=extra)
