"""Grad-CAM heat maps (otrain.gradcam) and the otrain-grad-cam command."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from conftest import point_source, tiny_network

from otrain import CutoutClassifier, CutoutError, NotFittedError
from otrain.cli import grad_cam as cli
from otrain.datacube import Datacube, find_cutouts
from otrain.gradcam import (
    conv_layer_names,
    grad_cam,
    pick_examples,
    plot_grad_cam,
)
from otrain.model_files import load_model, save_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ZTF_CHANNELS = ("SCI", "REF", "DIFF")


@pytest.fixture(scope="module")
def fitted(stamps):
    """conftest's tiny network (one valid 3x3 convolution) trained for 2 epochs.

    L2 normalisation: with it, two epochs make this 4-filter network respond to the
    point source (a dead-ReLU-free map), which the geometry checks below need; the
    default robust normalisation is covered by the network tests further down.
    """
    X, y = stamps
    return CutoutClassifier(
        network=tiny_network,
        normalisation="l2",
        epochs=2,
        batch_size=32,
        learning_rate=5e-3,
        validation_fraction=0,
        augment=False,
        # A seed whose two epochs leave most maps alive (seeds 0-5 leave 7 to 10 of
        # the 10 non-zero) and call some of the first 8 stamps real, some bogus; the
        # checks below are about geometry, not training.
        random_state=1,
    ).fit(X, y)


@pytest.fixture(scope="module")
def model_file(fitted, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    return save_model(fitted, path, channels=("DIFF",))


@pytest.fixture(scope="module")
def cube_file(stamps, tmp_path_factory):
    X, y = stamps
    keywords = Table(
        {"candid": [f"c{i}" for i in range(len(y))], "mag": 18 + np.arange(len(y)) / 100}
    )
    path = tmp_path_factory.mktemp("cube") / "test.npz"
    return Datacube(X, y, keywords, ("DIFF",)).save(path)


@pytest.fixture(scope="module")
def braai(braai_path):
    return load_model(braai_path, channels=ZTF_CHANNELS, normalisation="l2")


@pytest.fixture(scope="module")
def ztf_stamps(ztf_folder):
    from otrain.cutouts import load_cutouts

    paths = find_cutouts(ztf_folder / "cutouts")[:4]
    cube, _, _ = load_cutouts(paths, channels=ZTF_CHANNELS)
    return cube


def linear_model(size=32, conv=None, pool=False):
    """A network whose Grad-CAM map is known exactly: P(real) = sigmoid(mean of A).

    ``conv`` (default a 1x1 identity convolution) gives the feature map A; with the
    mean pooled and weighted by +1, Grad-CAM for real is ReLU(A) / max.
    """
    import keras

    inputs = keras.Input((size, size, 1))
    conv = conv or keras.layers.Conv2D(1, 1, use_bias=False, name="identity")
    x = conv(inputs)
    conv.set_weights([_delta(conv.kernel.shape)])
    if pool:
        x = keras.layers.MaxPooling2D(2)(x)
        second = keras.layers.Conv2D(1, 3, use_bias=False, name="after_pool")
        x = second(x)
        second.set_weights([_delta(second.kernel.shape)])
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(1, activation="sigmoid", name="p_real")
    outputs = dense(x)
    dense.set_weights([np.ones((1, 1), np.float32), np.zeros(1, np.float32)])
    return keras.Model(inputs, outputs, name="linear")


def _delta(shape):
    """A kernel that copies its input's centre pixel."""
    kernel = np.zeros(shape, np.float32)
    kernel[shape[0] // 2, shape[1] // 2] = 1.0
    return kernel


def one_source(y0, x0, size=32, flux=400.0):
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:size, :size]
    image = flux * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * 1.5**2)) / (2 * np.pi * 1.5**2)
    return (image + rng.normal(0, 1, image.shape)).astype(np.float32)[None, ..., None]


# --------------------------------------------------------------------------- heat maps


def test_maps_have_stamp_shape_and_lie_in_0_1(fitted, stamps):
    X, _ = stamps
    maps = grad_cam(fitted, X[:10])
    assert maps.shape == (10, 32, 32) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
    peaks = maps.reshape(10, -1).max(axis=1)
    # Each map is scaled to a maximum of 1, or is all zeros.
    assert np.all(np.isclose(peaks, 1.0) | (peaks == 0.0))
    assert np.isclose(peaks, 1.0).sum() >= 8
    # (n, H, W) stamps without a channel axis are accepted too.
    np.testing.assert_allclose(grad_cam(fitted, X[:10, ..., 0]), maps, atol=1e-6)


def test_exact_map_of_a_linear_network():
    model = linear_model()
    stamp = one_source(20, 9)
    real = grad_cam(model, stamp, target="real")[0]
    expected = np.maximum(stamp[0, ..., 0], 0)
    np.testing.assert_allclose(real, expected / expected.max(), atol=1e-5)
    bogus = grad_cam(model, stamp, target="bogus")[0]
    expected = np.maximum(-stamp[0, ..., 0], 0)
    np.testing.assert_allclose(bogus, expected / expected.max(), atol=1e-5)
    assert np.unravel_index(real.argmax(), real.shape) == (20, 9)


def test_coarse_valid_layer_lands_on_the_source():
    """A valid 3x3 conv, a 2x2 pool and a valid conv: a 13x13 grid, offset 3.5 px."""
    import keras

    model = linear_model(conv=keras.layers.Conv2D(1, 3, use_bias=False, name="c1"), pool=True)
    assert conv_layer_names(model) == ["c1", "after_pool"]
    for y0, x0 in ((5, 26), (16, 16), (25, 7)):
        heat = grad_cam(model, one_source(y0, x0), target="real")[0]
        peak = np.unravel_index(heat.argmax(), heat.shape)
        # Stretching the 13x13 grid over the stamp would put the peak 2-3 px off.
        assert abs(peak[0] - y0) <= 1 and abs(peak[1] - x0) <= 1, (y0, x0, peak)


def test_trained_network_looks_at_the_point_source(fitted):
    stamp = point_source(flux=300, rng=np.random.default_rng(5))[None, ..., None]
    heat = grad_cam(fitted, stamp.astype(np.float32), target="real")[0]
    yy, xx = np.mgrid[:32, :32] - 15.5
    near = np.hypot(yy, xx) <= 4
    peak = np.unravel_index(heat.argmax(), heat.shape)
    assert np.hypot(peak[0] - 15.5, peak[1] - 15.5) <= 4
    assert heat[near].mean() > 2 * heat[~near].mean()
    assert heat.std() > 0.05


def test_targets(fitted, stamps):
    X, _ = stamps
    stamps8 = X[:8]
    real = grad_cam(fitted, stamps8, target="real")
    bogus = grad_cam(fitted, stamps8, target="bogus")
    called_real = fitted.predict_proba(stamps8)[:, 1] >= 0.5
    assert 0 < called_real.sum() < 8
    expected = np.where(called_real[:, None, None], real, bogus)
    np.testing.assert_allclose(grad_cam(fitted, stamps8), expected, atol=1e-6)
    np.testing.assert_allclose(
        grad_cam(fitted, stamps8, target=called_real.astype(int)), expected, atol=1e-6
    )
    # threshold 0: every stamp is called real.
    np.testing.assert_allclose(grad_cam(fitted, stamps8, threshold=0.0), real, atol=1e-6)
    assert not np.allclose(real, bogus)


@pytest.mark.parametrize("network, last", [("otrain", "conv5"), ("vgg6", "conv4")])
def test_builtin_networks(network, last, stamps):
    X, y = stamps
    untrained = CutoutClassifier(network=network, random_state=0).initialize(X[:4], y[:4])
    names = conv_layer_names(untrained)
    assert names[-1] == last and names[0] == "conv1"
    maps = grad_cam(untrained, X[:3])
    assert maps.shape == (3, 32, 32) and 0 <= maps.min() and maps.max() <= 1
    assert grad_cam(untrained, X[:3], layer="conv1").shape == (3, 32, 32)


def test_user_network_layer_by_name(fitted, stamps):
    X, _ = stamps
    assert conv_layer_names(fitted) == ["conv_tiny"]
    np.testing.assert_array_equal(
        grad_cam(fitted, X[:3], layer="conv_tiny"), grad_cam(fitted, X[:3])
    )


def test_branching_user_network_and_keras_models(stamps):
    import keras

    X, _ = stamps
    inputs = keras.Input((32, 32, 1))
    a = keras.layers.Conv2D(2, 3, padding="same", name="a")(inputs)
    b = keras.layers.Conv2D(2, 5, padding="same", name="b")(inputs)
    x = keras.layers.Concatenate()([a, b])
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c")(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    branched = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    assert conv_layer_names(branched) == ["a", "b", "c"]
    assert grad_cam(branched, X[:2], layer="b").shape == (2, 32, 32)
    sequential = keras.Sequential(
        [
            keras.Input((32, 32, 1)),
            keras.layers.Conv2D(3, 3, activation="relu", name="s1"),
            keras.layers.Flatten(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    assert grad_cam(sequential, X[:2]).shape == (2, 32, 32)


def test_braai_on_ztf_stamps(braai, ztf_stamps):
    names = conv_layer_names(braai)
    assert names == ["VGG6/conv1", "VGG6/conv2", "VGG6/conv3", "VGG6/conv4"]
    maps = grad_cam(braai, ztf_stamps)
    assert maps.shape == (4, 63, 63) and 0 <= maps.min() and maps.max() <= 1
    assert (maps.reshape(4, -1).max(axis=1) == 1).all()
    # A nested layer by its own name or its full name.
    np.testing.assert_array_equal(
        grad_cam(braai, ztf_stamps, layer="conv2"), grad_cam(braai, ztf_stamps, layer="VGG6/conv2")
    )


def test_braai_raw_maps_match_an_independent_computation(braai, ztf_stamps):
    """Recompute braai's Grad-CAM by running the nested layers by hand, in eager mode."""
    import tensorflow as tf

    from otrain.gradcam import _find_conv, _grad_model, _raw_maps

    inner = braai.model_.layers[-1]
    x = np.where(np.isfinite(ztf_stamps) & (np.abs(ztf_stamps) < 1e30), ztf_stamps, 0.0)
    x = tf.constant(x / np.sqrt((x**2).sum(axis=(1, 2), keepdims=True)), tf.float32)
    with tf.GradientTape() as tape:
        for layer in inner.layers:
            if layer.name == "fc_out":  # its logit, before the sigmoid
                x = tf.matmul(x, layer.kernel) + layer.bias
            else:
                x = layer(x, training=False)
            if layer.name == "conv4":
                features = x
        score = tf.reduce_sum(x)
    grads = tape.gradient(score, features)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    expected = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1)).numpy()
    grad_model, dense, geometry = _grad_model(braai.model_, _find_conv(braai.model_, None)[1])
    signs = np.ones(len(ztf_stamps), np.float32)
    got = _raw_maps(grad_model, dense, ztf_stamps, signs, 0.0, 64)
    scale = expected.reshape(4, -1).max(axis=1)[:, None, None]
    np.testing.assert_allclose(got / scale, expected / scale, atol=1e-4)
    # conv4's 25x25 grid: 2 stamp pixels apart, the first centred on pixel 6.5.
    assert geometry == (2.0, 6.5, 2.0, 6.5)


# ------------------------------------------------------------------------------ errors


def test_unknown_layer_lists_the_convolution_layers(fitted, stamps):
    with pytest.raises(ValueError, match=r"'dense_9' is not a 2D convolution.*: conv_tiny"):
        grad_cam(fitted, stamps[0][:2], layer="dense_9")


def test_model_without_convolution_is_refused(stamps):
    import keras

    inputs = keras.Input((32, 32, 1))
    x = keras.layers.Flatten()(inputs)
    flat = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x), name="flat")
    with pytest.raises(ValueError, match="'flat' has no 2D convolution layer"):
        grad_cam(flat, stamps[0][:2])


def test_bad_inputs(fitted, stamps):
    X, _ = stamps
    with pytest.raises(NotFittedError, match="not fitted"):
        grad_cam(CutoutClassifier(), X[:2])
    with pytest.raises(CutoutError, match="stamps of 16x16x1.*takes 32x32x1"):
        grad_cam(fitted, X[:2, :16, :16])
    with pytest.raises(ValueError, match="target must be one of predicted, real, bogus"):
        grad_cam(fitted, X[:2], target="both")
    with pytest.raises(ValueError, match="one label per stamp"):
        grad_cam(fitted, X[:2], target=[1, 0, 1])
    with pytest.raises(TypeError, match="fitted CutoutClassifier"):
        grad_cam("model.keras", X[:2])


# ----------------------------------------------------------------------------- figures


def test_plot_grad_cam_writes_a_png(tmp_path, stamps):
    X, _ = stamps
    heat = np.linspace(0, 1, 4 * 32 * 32).reshape(4, 32, 32)
    triplets = np.repeat(X[:4], 3, axis=-1)
    triplets[0, :3, :3, 1] = np.nan
    path = plot_grad_cam(
        triplets, heat, tmp_path / "cam.png", titles=list("abcd"), channel_names=ZTF_CHANNELS
    )
    assert path == tmp_path / "cam.png"
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["cam.png"]  # no temporary file left
    assert plot_grad_cam(X[:0], heat[:0], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    with pytest.raises(ValueError, match="heatmaps must have shape"):
        plot_grad_cam(X[:4], heat[:3], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="channel_names must have one entry per channel"):
        plot_grad_cam(X[:4], heat, tmp_path / "bad.png", channel_names=ZTF_CHANNELS)


def test_pick_examples():
    p = np.array([0.9, 0.8, 0.2, 0.1, 0.7, 0.3, 0.95, 0.05, 0.6, 0.4])
    y = np.array([1, 1, 1, 0, 0, 0, 1, 0, 0, 1])
    groups = pick_examples(p, y, n=2, threshold=0.5, random_state=0)
    assert list(groups) == [
        "true_positives",
        "true_negatives",
        "false_negatives",
        "false_positives",
    ]
    tp, n_tp = groups["true_positives"]
    assert n_tp == 3 and len(tp) == 2 and set(tp) <= {0, 1, 6}
    assert p[tp[0]] >= p[tp[1]]
    assert list(groups["false_negatives"][0]) == [9, 2]  # shown by decreasing P(real)
    assert list(groups["false_positives"][0]) == [4, 8] and groups["false_positives"][1] == 2
    # Wrong calls: the most confident first.
    one = pick_examples(p, y, n=1, threshold=0.5)
    assert list(one["false_negatives"][0]) == [2] and list(one["false_positives"][0]) == [4]
    again = pick_examples(p, y, n=2, threshold=0.5, random_state=0)
    assert all(np.array_equal(groups[k][0], again[k][0]) for k in groups)
    ((both, total),) = pick_examples(p, n=3).values()
    assert total == 10 and list(both) == [6, 0, 7]
    with pytest.raises(ValueError, match="n must be a positive integer"):
        pick_examples(p, y, n=0)


# --------------------------------------------------------------------------------- CLI


def test_cli_on_a_datacube(model_file, cube_file, tmp_path, capsys):
    outdir = tmp_path / "cams"
    code = cli.main(
        ["--model", str(model_file), "--cube", str(cube_file), "--outdir", str(outdir), "--n", "4"]
    )
    out = capsys.readouterr().out
    assert code == 0
    written = sorted(p.name for p in outdir.iterdir())
    assert "grad_cam_true_positives.png" in written and "grad_cam_true_negatives.png" in written
    assert set(written) <= {
        f"grad_cam_{g}.png"
        for g in ("true_positives", "true_negatives", "false_positives", "false_negatives")
    }
    for name in written:
        assert (outdir / name).read_bytes()[:8] == PNG_MAGIC
        assert str(outdir / name) in out
    assert "layer conv_tiny" in out and "120 cutouts (60 real, 60 bogus)" in out


def test_cli_keeps_otrain_flag_names(model_file, cube_file, tmp_path, capsys):
    outdir = tmp_path / "otrain_names"
    argv = ["--model-path", str(model_file), "--cube", str(cube_file), "--cam_path", str(outdir)]
    assert cli.main([*argv, "--n_random", "2", "--threshold", "0.3"]) == 0
    assert (outdir / "grad_cam_true_positives.png").is_file()
    assert "P(real) >= 0.3" in capsys.readouterr().out


def test_cli_on_a_folder_of_cutouts(model_file, training_folder, tmp_path, capsys):
    outdir = tmp_path / "folder"
    argv = ["--model", str(model_file), "--cutouts", str(training_folder / "true")]
    assert cli.main([*argv, "--outdir", str(outdir), "--n", "6"]) == 0
    out = capsys.readouterr().out
    assert [p.name for p in outdir.iterdir()] == ["grad_cam_highest_lowest.png"]
    assert "40 cutouts read" in out and "6 drawn" in out


def test_cli_with_braai_on_ztf_cutouts(braai_path, ztf_folder, tmp_path, capsys):
    folder = tmp_path / "cutouts"
    folder.mkdir()
    for path in find_cutouts(ztf_folder / "cutouts")[:6]:
        (folder / Path(path).name).symlink_to(path)
    outdir = tmp_path / "ztf"
    argv = ["--model", str(braai_path), "--cutouts", str(folder), "--outdir", str(outdir)]
    legacy = ["--channels", "SCI,REF,DIFF", "--normalisation", "l2"]
    assert cli.main([*argv, *legacy, "--n", "4", "--layer", "conv3"]) == 0
    out = capsys.readouterr().out
    assert (outdir / "grad_cam_highest_lowest.png").read_bytes()[:8] == PNG_MAGIC
    assert "layer VGG6/conv3 (27x27 feature maps, resampled to 63x63)" in out
    assert "6 cutouts read" in out and "4 drawn" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "missing.keras", "--cube", "CUBE"], "missing.keras: no such model file"),
        (["--model", "MODEL", "--cube", "missing.npz"], "missing.npz: no such datacube"),
        (["--model", "MODEL", "--cutouts", "nowhere"], "nowhere: no such folder of cutouts"),
        (["--model", "notes.keras", "--cube", "CUBE"], "notes.keras: not a Keras model file"),
        (["--model", "MODEL", "--cube", "CUBE", "--outdir", "notes.keras"], "output folder"),
        (
            ["--model", "MODEL", "--cube", "CUBE", "--layer", "conv9"],
            "'conv9' is not a 2D convolution layer of the model 'otrain_tiny_network'; its "
            "convolution layers are: conv_tiny",
        ),
        (["--model", "BRAAI", "--cube", "CUBE"], "--channels SCI,REF,DIFF --normalisation l2"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    argv, message, model_file, cube_file, request, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.keras").write_text("not a model")
    swap = {"MODEL": str(model_file), "CUBE": str(cube_file)}
    if "BRAAI" in argv:
        swap["BRAAI"] = str(request.getfixturevalue("braai_path"))
    argv = [swap.get(a, a) for a in argv]
    if "--outdir" not in argv:
        argv += ["--outdir", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("otrain-grad-cam: error:") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_installed_entry_point(model_file, cube_file, tmp_path):
    script = Path(sys.executable).parent / "otrain-grad-cam"
    if not script.is_file():
        pytest.fail(f"{script} is missing; install the package: pip install -e .")
    argv = ["--model", str(model_file), "--cube", str(cube_file), "--outdir", str(tmp_path)]
    done = subprocess.run(
        [str(script), *argv, "--n", "2"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "grad_cam_true_negatives.png").read_bytes()[:8] == PNG_MAGIC
    assert "heat maps written to" in done.stdout
