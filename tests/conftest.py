"""Shared fixtures: small FITS files, the real ZTF sample, tiny networks."""

import os

# Quiet TensorFlow's C++ start-up logging; must be set before TensorFlow loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from astropy.io import fits  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ZTF = SHARED / "ztf-sample"
BRAAI = SHARED / "legacy-models" / "braai_d6_m9.h5"


def tiny_network(inputs, *, dropout=0.3, seed=None):
    """A few-filter network for plumbing tests (module-level so it pickles)."""
    import keras

    from otrain.networks import LayerSeeds

    seeds = LayerSeeds(seed)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv_tiny", **seeds.weights())(inputs)
    x = keras.layers.MaxPooling2D(4)(x)
    x = keras.layers.Flatten()(x)
    return keras.layers.Dropout(dropout, seed=seeds.next())(x)


def tiny_network_without_seed(inputs, *, dropout=0.3):
    """The same, as a user writes it without seeds (otrain reseeds it after the build)."""
    import keras

    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv_tiny")(inputs)
    x = keras.layers.MaxPooling2D(4)(x)
    x = keras.layers.Flatten()(x)
    return keras.layers.Dropout(dropout)(x)


def write_stamp(path, data, **keywords):
    """Write a single-HDU cutout with O'TRAIN keywords."""
    hdu = fits.PrimaryHDU(np.asarray(data, dtype=np.float32))
    for key, value in keywords.items():
        hdu.header[key] = value
    hdu.writeto(path, overwrite=True)
    return path


def write_triplet(path, sci, ref, diff, **keywords):
    """Write a multi-extension SCI/REF/DIFF cutout."""
    primary = fits.PrimaryHDU()
    for key, value in keywords.items():
        primary.header[key] = value
    hdus = [primary] + [
        fits.ImageHDU(np.asarray(d, np.float32), name=name)
        for name, d in (("SCI", sci), ("REF", ref), ("DIFF", diff))
    ]
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def point_source(size=32, flux=100.0, sigma=1.5, rng=None):
    """A noisy Gaussian point source (real) or pure noise when flux=0."""
    rng = rng or np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    image = flux * np.exp(-(xx**2 + yy**2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)
    return image + rng.normal(0, 1, (size, size))


def cosmic_ray(size=32, rng=None):
    """A sharp one-pixel hit on noise (bogus)."""
    rng = rng or np.random.default_rng(0)
    image = rng.normal(0, 1, (size, size))
    c = size // 2 + rng.integers(-3, 4, 2)
    image[c[0], c[1]] += 80
    return image


@pytest.fixture(scope="session")
def ztf_folder():
    if not (ZTF / "cutouts").is_dir():
        pytest.skip(f"real ZTF sample not found at {ZTF} (../shared/data is absent)")
    return ZTF


@pytest.fixture(scope="session")
def braai_path():
    if not BRAAI.is_file():
        pytest.skip(f"legacy braai model not found at {BRAAI} (../shared/data is absent)")
    return BRAAI


@pytest.fixture(scope="session")
def stamps():
    """(X, y): 120 synthetic 32x32 one-channel stamps, half real, in memory."""
    rng = np.random.default_rng(1)
    real = [point_source(rng=rng, flux=rng.uniform(80, 200)) for _ in range(60)]
    bogus = [cosmic_ray(rng=rng) for _ in range(60)]
    X = np.array(real + bogus, dtype=np.float32)[..., np.newaxis]
    y = np.array([1] * 60 + [0] * 60)
    order = rng.permutation(len(y))
    return X[order], y[order]


@pytest.fixture(scope="session")
def training_folder(tmp_path_factory):
    """A true/ false/ folder of 40 + 40 single-HDU 32x32 stamps with keywords."""
    root = tmp_path_factory.mktemp("training")
    rng = np.random.default_rng(2)
    for label, maker in (("true", point_source), ("false", cosmic_ray)):
        (root / label).mkdir()
        for i in range(40):
            data = maker(rng=rng)
            write_stamp(
                root / label / f"{label}_{i:03d}.fits",
                data,
                CANDID=f"{label}{i}",
                MAG=18.0 + i / 20,
                MAGERR=0.05,
                FILTER="r",
                FWHM=2.5,
                EDGE="False",
                RA=150.0,
                DEC=-30.0,
            )
    return root
