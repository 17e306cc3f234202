"""Tests of the synthetic candidate generator, otrain.datasets."""

import ast
from pathlib import Path

import numpy as np
import pytest
from astropy.io import ascii, fits

import otrain.datasets as datasets
from otrain.cutouts import load_cutouts, read_cutout
from otrain.datasets import (
    BOGUS_KINDS,
    REAL_KIND,
    make_candidates,
    make_demo_data,
    make_stamps,
    make_training_set,
    write_cutouts,
)
from otrain.exceptions import OutputError

META_COLUMNS = [
    "candid",
    "mag",
    "magerr",
    "fwhm",
    "fwhmpsf",
    "kind",
    "edge",
    "xpos",
    "ypos",
    "ra",
    "dec",
    "filter",
]


@pytest.fixture(scope="module")
def single():
    """24 real and 36 bogus (6 of each kind) one-channel 40x40 stamps."""
    return make_stamps(24, 36, size=40, edge_fraction=0.1, random_state=7)


@pytest.fixture(scope="module")
def triplet():
    return make_stamps(6, 12, size=40, triplets=True, edge_fraction=0.2, random_state=8)


def _noise(image):
    finite = image[np.isfinite(image)]
    return 1.4826 * np.median(np.abs(finite - np.median(finite)))


def test_shapes_dtypes_and_labels(single):
    images, labels, meta = single
    assert images.shape == (60, 40, 40, 1)
    assert images.dtype == np.float32
    assert labels.dtype.kind == "i"
    assert labels.sum() == 24
    assert len(meta) == 60
    assert meta.colnames[: len(META_COLUMNS)] == META_COLUMNS
    assert meta["mag"].unit == "mag"
    assert meta["ra"].unit == "deg"
    assert meta["xpos"].unit == "pix"
    assert set(meta["filter"]) <= {"g", "r", "i"}
    assert len(set(meta["candid"])) == 60


def test_labels_follow_kinds_and_every_bogus_kind_is_present(single):
    _, labels, meta = single
    kinds = np.asarray(meta["kind"])
    assert set(kinds[labels == 1]) == {REAL_KIND}
    counts = {kind: int(np.sum(kinds == kind)) for kind in BOGUS_KINDS}
    assert counts == dict.fromkeys(BOGUS_KINDS, 6)


def test_order_is_shuffled(single):
    _, labels, _ = single
    # The classes are interleaved, not all the real stamps first.
    assert not np.array_equal(labels, np.sort(labels)[::-1])
    assert labels[:30].sum() not in (0, 24)


def test_same_seed_same_stamps_other_seed_other_stamps():
    a = make_stamps(5, 6, size=32, random_state=3)
    b = make_stamps(5, 6, size=32, random_state=3)
    c = make_stamps(5, 6, size=32, random_state=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert list(a[2]["mag"]) == list(b[2]["mag"])
    assert not np.array_equal(a[0], c[0], equal_nan=True)


def test_nan_only_in_nan_patches_and_edges(single):
    images, _, meta = single
    has_nan = ~np.isfinite(images).all(axis=(1, 2, 3))
    kinds = np.asarray(meta["kind"])
    edge = np.asarray(meta["edge"])
    assert np.all(kinds[has_nan & ~edge] == "nan_patch")
    assert np.all(has_nan[kinds == "nan_patch"])
    # The candidate itself (within 1.5 pixels of the centre) is never all masked.
    assert np.isfinite(images[:, 18:23, 18:23]).any(axis=(1, 2, 3)).all()


def test_edge_stamps_are_flagged_and_padded(single):
    images, labels, meta = single
    edge = np.asarray(meta["edge"])
    # round(0.1 * n) in each class.
    assert edge[labels == 1].sum() == 2
    assert edge[labels == 0].sum() == 4
    for image in images[edge, ..., 0]:
        borders = [image[:, 0], image[:, -1], image[0, :], image[-1, :]]
        assert any(np.isnan(border).all() for border in borders)


def test_edge_fraction_zero_gives_no_edge():
    _, _, meta = make_stamps(10, 10, size=32, edge_fraction=0.0, random_state=0)
    assert not np.any(meta["edge"])


def test_real_sources_are_point_sources_at_the_centre(single):
    images, labels, meta = single
    bright = (labels == 1) & (np.asarray(meta["snr"]) > 30)
    assert bright.sum() >= 5
    for image in images[bright, ..., 0]:
        peak = np.unravel_index(np.nanargmax(image), image.shape)
        assert abs(peak[0] - 20) <= 2 and abs(peak[1] - 20) <= 2
    ratio = np.asarray(meta["fwhm"] / meta["fwhmpsf"])
    assert np.all((ratio[bright] > 0.7) & (ratio[bright] < 1.4))
    assert np.median(ratio[labels == 1]) == pytest.approx(1.0, abs=0.1)
    assert np.all((meta["fwhmpsf"] >= 1.5) & (meta["fwhmpsf"] <= 4.5))


def test_magerr_is_1_0857_over_snr():
    _, labels, meta = make_stamps(200, 0, size=32, random_state=11)
    snr = np.asarray(meta["snr"])
    detected = snr > 2
    np.testing.assert_allclose(meta["magerr"][detected], 1.0857 / snr[detected], rtol=0.01)
    # Faint sources near the limit are part of the real class: the hard cases.
    assert 0.03 < np.mean(snr < 5) < 0.35


def test_artefacts_look_like_their_kind(single):
    images, _, meta = single
    kinds = np.asarray(meta["kind"])
    ratio = np.asarray(meta["fwhm"] / meta["fwhmpsf"])
    assert np.all(ratio[kinds == "cosmic_ray"] < 0.9)
    assert np.all(ratio[kinds == "saturated"] > 2)
    centre = slice(12, 29)
    for image in images[kinds == "saturated", ..., 0]:
        core = image[centre, centre]
        noise = _noise(image)
        # Large positive and negative structures.
        assert np.nanmax(core) > 30 * noise and np.nanmin(image) < -10 * noise
    n_dipoles = 0
    for image in images[kinds == "dipole", ..., 0]:
        core = image[centre, centre]
        noise = _noise(image)
        n_dipoles += np.nanmax(core) > 3 * noise and np.nanmin(core) < -3 * noise
    assert n_dipoles >= 5


def test_triplets_are_sci_ref_diff(triplet):
    images, _, meta = triplet
    assert images.shape == (18, 40, 40, 3)
    sci, ref, diff = images[..., 0], images[..., 1], images[..., 2]
    finite = np.isfinite(diff)
    np.testing.assert_allclose(diff[finite], (sci - ref)[finite], atol=0.05)
    # The reference is the less noisy image, and both hold sky.
    for i in range(len(images)):
        assert _noise(ref[i]) < _noise(sci[i])
        assert np.nanmedian(sci[i]) > 30
    # Masked pixels of SCI or REF are masked in DIFF.
    assert np.array_equal(~finite, ~np.isfinite(sci) | ~np.isfinite(ref))
    # Cosmic rays are in the science image only.
    for i in np.flatnonzero(np.asarray(meta["kind"]) == "cosmic_ray"):
        peak = np.unravel_index(np.nanargmax(diff[i]), diff[i].shape)
        assert sci[i][peak] - np.nanmedian(sci[i]) > 0.9 * diff[i][peak]


def test_single_hdu_files_read_back(single, tmp_path):
    images, _, meta = single
    paths = write_cutouts(tmp_path, images[:10], meta[:10], triplets=False)
    assert [p.name for p in paths] == [f"{c}.fits" for c in meta["candid"][:10]]
    with fits.open(paths[0]) as hdul:
        hdul.verify("exception")
        assert len(hdul) == 1
        assert hdul[0].data.shape == (40, 40)
        assert hdul[0].header["EDGE"] in ("True", "False")
    for path, image, row in zip(paths, images, meta, strict=False):
        data, keywords = read_cutout(path)
        np.testing.assert_array_equal(data, image)
        assert keywords["candid"] == row["candid"]
        for column in ("mag", "magerr", "fwhm", "fwhmpsf", "ra", "dec", "xpos", "ypos"):
            assert isinstance(keywords[column], float)
            assert keywords[column] == pytest.approx(float(row[column]), rel=1e-9)
        assert keywords["edge"] is bool(row["edge"])
        assert keywords["filter"] == row["filter"]
        assert keywords["file"] == row["file"]


def test_triplet_files_layout(triplet, tmp_path):
    images, _, meta = triplet
    paths = write_cutouts(tmp_path, images, meta, triplets=True)
    with fits.open(paths[0]) as hdul:
        hdul.verify("exception")
        assert [hdu.name for hdu in hdul] == ["PRIMARY", "SCI", "REF", "DIFF"]
        assert hdul[0].data is None
        assert hdul[0].header["CANDID"] == meta["candid"][0]
        np.testing.assert_array_equal(hdul["REF"].data, images[0, ..., 1])
    cube, keywords, skipped = load_cutouts(paths, channels=("SCI", "REF", "DIFF"))
    assert skipped == []
    np.testing.assert_array_equal(cube, images)
    assert list(keywords["edge"]) == list(meta["edge"])
    assert keywords["edge"].dtype == bool
    np.testing.assert_allclose(keywords["mag"], meta["mag"])


def test_write_cutouts_rejects_mismatched_inputs(single, tmp_path):
    images, _, meta = single
    with pytest.raises(ValueError, match="triplets=True"):
        write_cutouts(tmp_path, images, meta, triplets=True)
    with pytest.raises(ValueError, match="rows"):
        write_cutouts(tmp_path, images[:3], meta[:2], triplets=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_real": -1, "n_bogus": 2}, "n_real"),
        ({"n_real": 2, "n_bogus": 2.5}, "n_bogus"),
        ({"n_real": 2, "n_bogus": 2, "size": 8}, "size"),
        ({"n_real": 2, "n_bogus": 2, "edge_fraction": 1.5}, "edge_fraction"),
    ],
)
def test_make_stamps_validates_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_stamps(**kwargs)


def test_training_set_folders(tmp_path):
    meta = make_training_set(tmp_path, n_real=7, n_bogus=9, size=32, random_state=2)
    true = sorted((tmp_path / "true").glob("*.fits"))
    false = sorted((tmp_path / "false").glob("*.fits"))
    assert (len(true), len(false)) == (7, 9)
    assert sorted(Path(p).name for p in meta["path"][meta["label"] == 1]) == [p.name for p in true]
    # Same seed, same bytes.
    again = tmp_path / "again"
    make_training_set(again, n_real=7, n_bogus=9, size=32, random_state=2)
    for path in true + false:
        assert path.read_bytes() == (again / path.parent.name / path.name).read_bytes()
    # Another set cannot silently mix with this one.
    with pytest.raises(OutputError, match="overwrite=True"):
        make_training_set(tmp_path, n_real=3, n_bogus=3, size=32, random_state=5)
    make_training_set(tmp_path, n_real=3, n_bogus=3, size=32, random_state=5, overwrite=True)
    assert len(list((tmp_path / "true").glob("*.fits"))) == 3


def test_candidates_and_crossmatch(tmp_path):
    truth = make_candidates(tmp_path, n=40, frac_simulated=0.5, size=32, random_state=3)
    files = {p.stem for p in (tmp_path / "candidates").glob("*.fits")}
    assert len(files) == 40
    assert truth["simulated"].sum() == 20
    assert set(truth["kind"][truth["label"] == 0]) == set(BOGUS_KINDS)
    crossmatch = ascii.read(tmp_path / "crossmatch.dat", format="commented_header")
    required = ["idx", "closest_candID", "mag", "RA", "Dec", "Xpos", "Ypos", "distance"]
    assert set(required) <= set(crossmatch.colnames)
    assert len(crossmatch) == 20
    assert set(crossmatch["closest_candID"]) <= files
    assert set(crossmatch["closest_candID"]) == set(truth["candid"][truth["simulated"]])
    assert list(crossmatch["idx"]) == list(range(20))
    assert np.all(crossmatch["distance"] < 1.0)
    # Each injected magnitude is near the one measured on its candidate.
    by_candid = {row["candid"]: row for row in truth}
    for row in crossmatch:
        measured = by_candid[row["closest_candID"]]
        assert abs(measured["mag"] - row["mag"]) < 5 * measured["magerr"] + 0.05
    # Positions on the parent images vary, and FWHMPSF is there for FWHM ratios.
    _, keywords, _ = load_cutouts(sorted((tmp_path / "candidates").glob("*.fits")))
    assert np.std(keywords["xpos"]) > 100 and np.std(keywords["ypos"]) > 100
    assert np.all(np.isfinite(keywords["fwhmpsf"]))


def test_demo_data(tmp_path):
    paths = make_demo_data(tmp_path, n_train=20, n_candidates=10, size=32, random_state=0)
    assert len(list(paths["true"].glob("*.fits"))) == 10
    assert len(list(paths["false"].glob("*.fits"))) == 10
    assert len(list(paths["candidates"].glob("*.fits"))) == 10
    assert paths["crossmatch"].is_file()
    assert paths["true"].parent == paths["training"]
    assert paths["summary"]["n_true"] == 10
    assert paths["summary"]["n_simulated"] == 4
    # Running it again with the same seed rewrites the same files.
    before = paths["crossmatch"].read_bytes()
    make_demo_data(tmp_path, n_train=20, n_candidates=10, size=32, random_state=0)
    assert paths["crossmatch"].read_bytes() == before


def test_module_needs_neither_tensorflow_nor_keras():
    tree = ast.parse(Path(datasets.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported <= {"math", "dataclasses", "pathlib", "numpy", "astropy"}
