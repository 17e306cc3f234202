"""Reading cutouts: layouts, channels, keywords, crops, NaN, errors."""

import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from conftest import write_stamp, write_triplet
from sklearn.pipeline import make_pipeline

from otrain import CutoutError, CutoutLoader, load_cutouts, read_cutout


def test_single_hdu_reads_primary_image_and_keywords(tmp_path):
    data = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    path = write_stamp(
        tmp_path / "a.fits",
        data,
        CANDID="c1",
        MAG=19.5,
        MAGERR=0.1,
        FILTER="g",
        FWHM=3.1,
        FWHMPSF=2.9,
        EDGE="False",
        RA=10.5,
        DEC=-5.25,
        FILE="img.fits",
        XPOS=100.5,
        YPOS=200.0,
    )
    image, kw = read_cutout(path)
    assert image.shape == (64, 64, 1) and image.dtype == np.float32
    np.testing.assert_array_equal(image[..., 0], data)
    assert kw["candid"] == "c1" and kw["filter"] == "g" and kw["file"] == "img.fits"
    assert kw["mag"] == 19.5 and kw["magerr"] == 0.1 and kw["fwhmpsf"] == 2.9
    assert kw["edge"] is False and kw["ra"] == 10.5 and kw["xpos"] == 100.5


def test_missing_keywords_are_nan_or_empty_and_candid_falls_back(tmp_path):
    path = write_stamp(tmp_path / "nokeys.fits", np.zeros((8, 8)))
    _, kw = read_cutout(path)
    assert kw["candid"] == "nokeys"
    assert kw["filter"] == "" and kw["file"] == ""
    assert all(math.isnan(kw[k]) for k in ("mag", "magerr", "fwhm", "ra", "dec", "xpos"))
    assert kw["edge"] is False


def test_name_and_hierarch_mag_calib_and_sentinels(tmp_path):
    path = tmp_path / "h.fits"
    hdu = fits.PrimaryHDU(np.zeros((8, 8), np.float32))
    hdu.header["NAME"] = "gmadet_42"
    hdu.header["HIERARCH mag_calib"] = 17.25
    hdu.header["FWHM"] = -99
    hdu.header["MAGERR"] = "-99.0"
    hdu.header["FWHMPSF"] = "not a number"
    hdu.header["EDGE"] = "True"
    hdu.writeto(path)
    _, kw = read_cutout(path)
    assert kw["candid"] == "gmadet_42" and kw["mag"] == 17.25
    assert math.isnan(kw["fwhm"]) and math.isnan(kw["magerr"]) and math.isnan(kw["fwhmpsf"])
    assert kw["edge"] is True


def test_multi_extension_channels_by_extname_in_any_order(tmp_path):
    sci, ref, diff = (np.full((10, 10), v, np.float32) for v in (1, 2, 3))
    path = write_triplet(tmp_path / "t.fits", sci, ref, diff, CANDID="t")
    assert read_cutout(path)[0][0, 0].tolist() == [3.0]  # DIFF by default
    image, _ = read_cutout(path, channels=("REF", "DIFF", "SCI"))
    assert image.shape == (10, 10, 3) and image[0, 0].tolist() == [2.0, 3.0, 1.0]
    assert read_cutout(path, channels="sci,diff")[0][0, 0].tolist() == [1.0, 3.0]


def test_missing_extname_names_file_and_choices(tmp_path):
    path = write_triplet(tmp_path / "t.fits", *(np.zeros((4, 4)),) * 3)
    with pytest.raises(CutoutError, match=r"t\.fits.*no image HDU named TEMPLATE.*DIFF, REF, SCI"):
        read_cutout(path, channels=("TEMPLATE",))


def test_single_hdu_cannot_give_three_channels(tmp_path):
    path = write_stamp(tmp_path / "s.fits", np.zeros((8, 8)))
    with pytest.raises(CutoutError, match="s.fits"):
        read_cutout(path, channels=("SCI", "REF", "DIFF"))


def test_centre_crop(tmp_path):
    data = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    path = write_stamp(tmp_path / "a.fits", data)
    image, _ = read_cutout(path, cutout_size=32)
    np.testing.assert_array_equal(image[..., 0], data[16:48, 16:48])
    with pytest.raises(CutoutError, match="smaller than the cutout size 65"):
        read_cutout(path, cutout_size=65)


def test_nan_and_inf_pixels_are_kept(tmp_path):
    data = np.ones((8, 8), np.float32)
    data[0, 0], data[1, 1] = np.nan, np.inf
    image, _ = read_cutout(write_stamp(tmp_path / "n.fits", data))
    assert np.isnan(image[0, 0, 0]) and np.isinf(image[1, 1, 0])


@pytest.mark.parametrize(
    "content, message",
    [(b"hello, this is not FITS", "not a readable FITS file"), (b"", "not a readable FITS file")],
)
def test_non_fits_file_names_the_file(tmp_path, content, message):
    path = tmp_path / "bad.fits"
    path.write_bytes(content)
    with pytest.raises(CutoutError, match=f"bad.fits.*{message}") as err:
        read_cutout(path)
    assert err.value.path == str(path)


def test_truncated_fits_is_a_cutout_error(tmp_path):
    good = write_stamp(tmp_path / "good.fits", np.ones((64, 64)))
    truncated = tmp_path / "trunc.fits"
    truncated.write_bytes(good.read_bytes()[:4000])
    with pytest.raises(CutoutError, match="trunc.fits"):
        read_cutout(truncated)


def test_load_cutouts_mixed_sizes_and_skip(tmp_path):
    a = write_stamp(tmp_path / "a.fits", np.ones((16, 16)))
    b = write_stamp(tmp_path / "b.fits", np.ones((20, 20)))
    bad = tmp_path / "c.fits"
    bad.write_text("junk")
    with pytest.raises(CutoutError, match="b.fits.*is 20x20.*other cutouts are 16x16.*cutout size"):
        load_cutouts([a, b])
    cube, table, skipped = load_cutouts([a, b], cutout_size=16)
    assert cube.shape == (2, 16, 16, 1)
    cube, table, skipped = load_cutouts([bad, a, b], on_error="skip")
    assert cube.shape == (1, 16, 16, 1) and list(table["path"]) == [str(a)]
    assert [p for p, _ in skipped] == [str(bad), str(b)]


def test_loader_is_stateless_transformer_with_keyword_table(ztf_folder):
    paths = sorted(str(p) for p in (ztf_folder / "cutouts").glob("*.fits"))[:12]
    loader = CutoutLoader(channels=("SCI", "REF", "DIFF"), cutout_size=31)
    X = loader.transform(paths)  # no fit needed
    assert X.shape == (12, 31, 31, 3) and X.dtype == np.float32
    cube, table = loader.load(paths)
    np.testing.assert_array_equal(cube, X)
    assert isinstance(table, Table) and len(table) == 12
    assert table["mag"].unit == "mag" and np.isfinite(table["mag"]).all()
    assert set(table["filter"]) <= {"g", "r", "i"}
    assert table["edge"].dtype == bool
    # Column vector of paths, as a pipeline step may pass it.
    assert make_pipeline(CutoutLoader()).fit_transform(np.array(paths)[:, None]).shape == (
        12,
        63,
        63,
        1,
    )


def test_ztf_edge_stamps_are_nan_padded_and_flagged(ztf_folder):
    paths = sorted(str(p) for p in (ztf_folder / "cutouts").glob("*.fits"))
    cube, table, _ = load_cutouts(paths, channels=("SCI", "REF", "DIFF"))
    assert cube.shape == (264, 63, 63, 3)
    edge = np.asarray(table["edge"])
    assert edge.sum() >= 1
    assert all(np.isnan(cube[i]).any() for i in np.flatnonzero(edge))
    assert np.isnan(table["fwhmpsf"]).all()  # not in the ZTF files


def test_parallel_reading_gives_the_same_cube(tmp_path):
    rng = np.random.default_rng(0)
    paths = [write_stamp(tmp_path / f"{i}.fits", rng.normal(size=(8, 8))) for i in range(2100)]
    serial, t1, _ = load_cutouts(paths)
    parallel, t2, _ = load_cutouts(paths, n_jobs=2)
    np.testing.assert_array_equal(serial, parallel)
    assert list(t1["path"]) == list(t2["path"])
