"""Model files from strangers: crafted files never run code, read files or half-load.

Each crafted file carries a payload that would leave a marker file (or open a FIFO,
which blocks until a writer comes) if any of it ran; the tests check that loading
refuses the file, naming the layer, and that no marker appears and nothing is read.
"""

import json
import os
import re
import threading
import warnings
import zipfile

import h5py
import numpy as np
import pytest
from conftest import write_stamp

from otrain import ModelFileError, load_model
from otrain.cli import infer
from otrain.model_files import check_config

LEGACY = dict(channels=("DIFF",), normalisation="none")


def _marker_lambda(marker):
    """A function that leaves ``marker`` when called, and Keras' serialised form of it."""
    from keras.src.utils.python_utils import func_dump

    source = f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]"
    function = eval(source)  # noqa: S307 - the payload of the crafted files
    code, defaults, closure = func_dump(function)
    return function, code, defaults, closure


def _keras2_layer(class_name, name, **config):
    return {"class_name": class_name, "config": {"name": name, "trainable": True, **config}}


def _write_legacy_h5(path, model_config, weights=None):
    """A Keras 2 style .h5 file: the model_config attribute and a model_weights group."""
    with h5py.File(path, "w") as handle:
        handle.attrs["model_config"] = json.dumps(model_config)
        handle.attrs["keras_version"] = "2.4.0"
        handle.attrs["backend"] = "tensorflow"
        group = handle.create_group("model_weights")
        for name, arrays in (weights or {}).items():
            layer = group.create_group(name)
            layer.attrs["weight_names"] = [f"{name}/w{i}:0".encode() for i in range(len(arrays))]
            for i, array in enumerate(arrays):
                layer[f"{name}/w{i}:0"] = array
    return path


def _sequential(*layers):
    first = _keras2_layer("Flatten", "flat", batch_input_shape=[None, 8, 8, 1])
    last = _keras2_layer("Dense", "out", units=1, activation="sigmoid")
    return {
        "class_name": "Sequential",
        "config": {"name": "crafted", "layers": [first, *layers, last]},
    }


def _keras2_lambda(marker):
    _, code, defaults, closure = _marker_lambda(marker)
    return _keras2_layer(
        "Lambda",
        "evil",
        function=[code, defaults, closure],
        function_type="lambda",
        module="__main__",
        output_shape=None,
        output_shape_type="raw",
        arguments={},
    )


def _keras3_lambda(marker):
    _, code, defaults, closure = _marker_lambda(marker)
    return {
        "module": "keras.layers",
        "class_name": "Lambda",
        "registered_name": None,
        "config": {
            "name": "evil",
            "function": {
                "class_name": "__lambda__",
                "config": {"code": code, "defaults": defaults, "closure": closure},
            },
            "arguments": {},
        },
    }


def test_the_payload_is_live(tmp_path):
    # The crafted Lambda really runs code once unmarshalled: the refusals below matter.
    from keras.src.utils.python_utils import func_load

    marker = tmp_path / "ran"
    _, code, defaults, closure = _marker_lambda(marker)
    func_load(code, defaults=defaults, closure=closure)(1)
    assert marker.exists()


def _functional_with_lambda(marker):
    layers = [
        {
            "class_name": "InputLayer",
            "name": "input_1",
            "config": {"name": "input_1", "batch_input_shape": [None, 8, 8, 1]},
            "inbound_nodes": [],
        },
        {**_keras2_lambda(marker), "name": "evil", "inbound_nodes": [[["input_1", 0, 0, {}]]]},
        {
            **_keras2_layer("Flatten", "flat"),
            "name": "flat",
            "inbound_nodes": [[["evil", 0, 0, {}]]],
        },
    ]
    return {
        "class_name": "Functional",
        "config": {
            "name": "crafted",
            "layers": layers,
            "input_layers": [["input_1", 0, 0]],
            "output_layers": [["flat", 0, 0]],
        },
    }


@pytest.mark.parametrize(
    "craft, named",
    [
        (lambda m: _sequential(_keras2_lambda(m)), "'evil' (Lambda)"),
        (_functional_with_lambda, "'evil' (Lambda)"),
        (lambda m: _sequential(_keras3_lambda(m)), "'evil' (Lambda)"),
        (
            lambda m: _sequential(
                {
                    "module": "os",
                    "class_name": "system",
                    "registered_name": "system",
                    "config": {"name": "boom", "command": f"touch {m}"},
                }
            ),
            "module 'os'",
        ),
        (
            lambda m: _sequential(
                _keras2_layer(
                    "Dense",
                    "boom",
                    units=2,
                    activation={
                        "module": "os",
                        "class_name": "function",
                        "config": "system",
                        "registered_name": "function",
                    },
                )
            ),
            "'boom' (Dense)",
        ),
    ],
    ids=[
        "keras2-sequential-lambda",
        "keras2-functional-lambda",
        "keras3-lambda-in-h5",
        "os-system-layer",
        "os-system-activation",
    ],
)
def test_crafted_legacy_h5_is_refused_before_any_layer_is_built(tmp_path, craft, named):
    marker = tmp_path / "ran"
    path = _write_legacy_h5(tmp_path / "crafted.h5", craft(marker))
    with pytest.raises(ModelFileError, match="refused before loading") as info:
        load_model(path, **LEGACY)
    assert named in str(info.value)
    assert not marker.exists()


def test_lookup_layer_never_opens_its_vocabulary_file(tmp_path):
    fifo = tmp_path / "vocabulary"
    os.mkfifo(fifo)
    opened = []

    def watchdog():
        # A reader blocked on the FIFO is released by a writer; if there is one after
        # a few seconds, the loader opened the vocabulary.
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: nobody is reading
            return
        opened.append(True)
        os.close(fd)

    lookup = _keras2_layer("StringLookup", "lookup", vocabulary=str(fifo))
    path = _write_legacy_h5(tmp_path / "lookup.h5", _sequential(lookup))
    timer = threading.Timer(5, watchdog)
    timer.start()
    try:
        with pytest.raises(ModelFileError, match=r"'lookup' \(StringLookup\).*vocabulary file"):
            load_model(path, **LEGACY)
    finally:
        timer.cancel()
    watchdog()
    assert not opened


def _keras_archive(path, config, members=None):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        members = members or {"metadata.json": json.dumps({"keras_version": "3.15.0"})}
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize(
    "layer, named",
    [
        (_keras3_lambda, "'evil' (Lambda)"),
        (
            lambda m: {
                "module": "keras.layers",
                "class_name": "TFSMLayer",
                "config": {"name": "saved", "filepath": str(m)},
            },
            "'saved' (TFSMLayer)",
        ),
    ],
    ids=["lambda", "tfsmlayer"],
)
def test_crafted_keras_archive_is_refused(tmp_path, layer, named):
    marker = tmp_path / "ran"
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "crafted", "layers": [layer(marker)]},
    }
    path = _keras_archive(tmp_path / "crafted.keras", config)
    with pytest.raises(ModelFileError, match="refused before loading") as info:
        load_model(path, **LEGACY)
    assert named in str(info.value)
    assert not marker.exists()


def test_weights_that_live_in_another_file_are_refused(tmp_path):
    braai_like = _sequential()
    path = _write_legacy_h5(tmp_path / "linked.h5", braai_like)
    with h5py.File(tmp_path / "elsewhere.h5", "w") as other:
        other["secret"] = np.arange(3)
    with h5py.File(path, "a") as handle:
        handle["model_weights/out"] = h5py.ExternalLink(str(tmp_path / "elsewhere.h5"), "/")
    with pytest.raises(ModelFileError, match="model_weights/out is a link"):
        load_model(path, **LEGACY)


def test_plain_cnn_configs_pass(braai_path):
    config = json.loads(h5py.File(braai_path, "r").attrs["model_config"])
    check_config(config, braai_path)


def _plain_keras_model(path, units=2):
    import keras

    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(units, activation="softmax", name="out")(
        keras.layers.Flatten(name="flat")(inputs)
    )
    keras.Model(inputs, outputs).save(path)
    return path


def test_rejected_keras_file_reports_keras_reason_whole(tmp_path):
    import keras

    path = _plain_keras_model(tmp_path / "foreign.keras")
    # A config that no longer matches its weights: Keras' reason is several lines.
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    config = json.loads(members.pop("config.json"))
    dense = next(c for c in config["config"]["layers"] if c["class_name"] == "Dense")
    dense["config"]["units"] = 3
    broken = _keras_archive(tmp_path / "broken.keras", config, members)
    with pytest.raises(Exception) as keras_error, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        keras.saving.load_model(broken, compile=False)

    # The reason quotes freshly initialised weights: compare it without the numbers.
    def numbers_out(text):
        return re.sub(r"\s+", "", re.sub(r"-?\d+\.\d*(e[-+]?\d+)?", "#", text))

    reason = numbers_out(str(keras_error.value))
    assert len(reason) > 200 or "\n" in str(keras_error.value)
    with pytest.raises(ModelFileError) as info:
        load_model(broken, **LEGACY)
    message = numbers_out(str(info.value))
    assert reason in message
    assert "signature" not in message


def test_old_otrain_model_path_points_to_where_otrain_keeps_it(tmp_path, capsys):
    folder = tmp_path / "model" / "CNN_training"
    (folder / "test").mkdir(parents=True)
    (folder / "test.h5").write_bytes(b"")
    cutouts = tmp_path / "cutouts"
    cutouts.mkdir()
    write_stamp(cutouts / "a.fits", np.zeros((8, 8)))
    code = infer.main(["--cutouts", str(cutouts), "--model", str(folder / "test" / "test.h5")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"give --model {folder / 'test.h5'}" in err
    assert "CNN_training/NAME/NAME.h5" in err


def test_crafted_model_through_the_command(tmp_path, capsys):
    marker = tmp_path / "ran"
    path = _write_legacy_h5(tmp_path / "crafted.h5", _sequential(_keras2_lambda(marker)))
    cutouts = tmp_path / "cutouts"
    cutouts.mkdir()
    write_stamp(cutouts / "a.fits", np.zeros((8, 8)))
    code = infer.main(
        ["--cutouts", str(cutouts), "--model", str(path), "--channels", "DIFF",
         "--normalisation", "none"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "'evil' (Lambda)" in err[0]
    assert not marker.exists()


# --------------------------------------------------------------------------------------
# No work thrown away: outputs checked before the long work, one overwrite policy
# --------------------------------------------------------------------------------------


def test_train_checks_its_outputs_before_training(tmp_path, capsys):
    from otrain.cli import train

    rng = np.random.default_rng(0)
    cube = tmp_path / "cube.npz"
    np.savez(cube, cube=rng.normal(size=(20, 16, 16, 1)).astype(np.float32), labels=[0, 1] * 10)
    (tmp_path / "model" / "CNN_training").mkdir(parents=True)
    # A file where the report folder goes: writing it would fail after the training.
    (tmp_path / "model" / "CNN_training" / "m").write_text("in the way")
    argv = ["--cube", cube, "--model-path", tmp_path / "model", "--model-name", "m"]
    assert train.main([str(a) for a in argv]) == 2
    captured = capsys.readouterr()
    assert "training (" not in captured.out
    assert "cannot create the output folder" in captured.err
    assert not (tmp_path / "model" / "CNN_training" / "m.h5").exists()


def test_export_never_replaces_a_model_without_overwrite(tmp_path, capsys):
    from otrain.cli import export

    output = tmp_path / "model.onnx"
    output.write_bytes(b"an earlier export")
    argv = ["--model", str(tmp_path / "missing.keras"), "--output", str(output)]
    assert export.main(argv) == 2
    err = capsys.readouterr().err
    assert "exists; give another --output or --overwrite" in err
    assert output.read_bytes() == b"an earlier export"


def test_folders_of_derived_outputs_are_replaced_and_said_so(tmp_path, capsys):
    from otrain.cli._common import check_output_folder
    from otrain.exceptions import OutputError

    folder = tmp_path / "plots"
    check_output_folder(folder, "the plots of an earlier run")
    assert capsys.readouterr().out == ""
    assert not folder.exists()  # checked, not created: a later failure leaves nothing
    folder.mkdir()
    (folder / "roc.png").write_bytes(b"png")
    check_output_folder(folder, "the plots of an earlier run")
    assert capsys.readouterr().out == f"replacing the plots of an earlier run in {folder}\n"
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot create the output folder"):
        check_output_folder(tmp_path / "file" / "plots", "plots")


def test_checkinfer_answers_to_otrains_old_name():
    import shutil
    import subprocess

    exe = shutil.which("otrain-cnn_checkinfer")
    assert exe is not None, "pip install -e . installs the otrain-cnn_checkinfer alias"
    done = subprocess.run([exe, "-h"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--infer" in done.stdout
    assert done.stdout.startswith("usage: otrain-cnn_checkinfer")
