"""Labels from a catalogue crossmatch: positions, catalogues, the labels it files."""

import shutil
import subprocess
import sys
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from conftest import ZTF, point_source, write_stamp

from otrain.cli import label as label_cli
from otrain.crossmatch import (
    candidate_positions,
    label_by_crossmatch,
    match_positions,
    read_catalogue,
)
from otrain.exceptions import LabellingError
from otrain.labelling import LabelStore


@pytest.fixture
def candidates(tmp_path):
    """Four candidates at known positions, one with only a WCS, one with none."""
    folder = tmp_path / "candidates"
    folder.mkdir()
    for i, (ra, dec) in enumerate([(150.0, 2.0), (150.1, 2.0), (200.0, -30.0)]):
        write_stamp(folder / f"c{i}.fits", point_source(16), RA=ra, DEC=dec)
    header = fits.Header()
    header.update(
        CTYPE1="RA---TAN",
        CTYPE2="DEC--TAN",
        CRVAL1=10.0,
        CRVAL2=20.0,
        CRPIX1=8.5,
        CRPIX2=8.5,
        CDELT1=-1e-4,
        CDELT2=1e-4,
    )
    fits.PrimaryHDU(np.zeros((16, 16), np.float32), header=header).writeto(folder / "wcs.fits")
    write_stamp(folder / "nopos.fits", point_source(16))
    return folder


def _catalogue(path, ra, dec, **kwargs):
    Table({"RA": ra, "Dec": dec, **kwargs}).write(path, overwrite=True)
    return path


def test_positions_from_keywords_wcs_or_none(candidates):
    refs = [str(p) for p in sorted(candidates.glob("*.fits"))]
    ra, dec = candidate_positions(refs)
    names = [Path(r).name for r in refs]
    assert ra[names.index("c1.fits")] == pytest.approx(150.1)
    # The WCS at the stamp centre (pixel 8.5 in FITS numbering = CRPIX).
    assert ra[names.index("wcs.fits")] == pytest.approx(10.0)
    assert dec[names.index("wcs.fits")] == pytest.approx(20.0)
    assert np.isnan(ra[names.index("nopos.fits")])


def test_other_keywords_in_sexagesimal(tmp_path):
    write_stamp(tmp_path / "s.fits", point_source(16), OBJRA="10:00:00", OBJDEC="-30:00:00")
    ra, dec = candidate_positions([str(tmp_path / "s.fits")], ra_key="OBJRA", dec_key="OBJDEC")
    assert (ra[0], dec[0]) == pytest.approx((150.0, -30.0))


@pytest.mark.parametrize("suffix", [".csv", ".ecsv", ".fits", ".vot"])
def test_catalogue_formats_and_column_case(tmp_path, suffix):
    table = Table({"Ra": [150.0, 1.0], "DEC": [2.0, 3.0], "name": ["v1", "v2"]})
    path = tmp_path / f"cat{suffix}"
    table.write(path, format="votable" if suffix == ".vot" else None, overwrite=True)
    sky = read_catalogue(path)
    assert len(sky) == 2
    assert sky[0].ra.deg == pytest.approx(150.0)


def test_catalogue_sexagesimal_and_units(tmp_path):
    path = tmp_path / "sexa.csv"
    path.write_text("ra,dec\n10:00:00.0,+02:00:00\n")
    assert read_catalogue(path)[0].ra.deg == pytest.approx(150.0)
    table = Table({"ra": [2.6179938779914944] * u.rad, "dec": [0.0] * u.rad})
    table.write(tmp_path / "rad.fits")
    assert read_catalogue(tmp_path / "rad.fits")[0].ra.deg == pytest.approx(150.0)


def test_catalogue_without_sky_columns_is_one_clear_error(tmp_path):
    path = tmp_path / "cat.csv"
    path.write_text("name,mag\nv1,12\n")
    with pytest.raises(LabellingError, match="no ra column.*name, mag.*--ra-col"):
        read_catalogue(path)
    with pytest.raises(LabellingError, match="no column 'alpha'"):
        read_catalogue(path, ra_col="alpha")


def test_match_positions_radius_and_missing():
    sky = read_catalogue_from([150.0], [2.0])
    offset = 1.5 / 3600
    matched, sep = match_positions([150.0 + offset, 150.0 + 3 * offset, np.nan], [2.0] * 3, sky)
    assert matched.tolist() == [True, False, False]
    assert sep[0] == pytest.approx(1.5 * np.cos(np.radians(2.0)), rel=1e-3)
    with pytest.raises(LabellingError, match="radius"):
        match_positions([1.0], [1.0], sky, radius=0)


def read_catalogue_from(ra, dec):
    from astropy.coordinates import SkyCoord

    return SkyCoord(np.asarray(ra) * u.deg, np.asarray(dec) * u.deg)


def test_label_by_crossmatch_files_matches_as_real(candidates, tmp_path):
    out = tmp_path / "training"
    catalogue = _catalogue(tmp_path / "vsx.csv", [150.0003, 10.0, 300.0], [2.0, 20.0, 0.0])
    # A person labelled c0 bogus already: the crossmatch does not override them.
    LabelStore(out).record(str(candidates / "c0.fits"), "bogus")
    summary = label_by_crossmatch(candidates, out, catalogue, radius=2.0)
    assert summary.matched == ["wcs.fits"]
    assert summary.already_labelled == ["c0.fits"]
    assert sorted(summary.unmatched) == ["c1.fits", "c2.fits"]
    assert summary.no_position == ["nopos.fits"]
    assert "1 matched within 2 arcsec" in summary.text()
    assert "no match does not prove bogus" in summary.text()
    assert sorted(p.name for p in (out / "true").iterdir()) == ["wcs.fits"]
    rows = (out / "labels.csv").read_text().splitlines()
    assert rows[-1].startswith("wcs.fits,real,") and rows[-1].endswith(",crossmatch:vsx.csv")
    # A wider radius takes c0's neighbour too; c0 keeps its own label.
    summary = label_by_crossmatch(candidates, out, catalogue, radius=1.2 * 3600 * 0.1)
    assert "c1.fits" in summary.matched


def test_cli_crossmatch_and_its_errors(candidates, tmp_path, capsys):
    catalogue = _catalogue(tmp_path / "cat.ecsv", [150.1], [2.0])
    out = tmp_path / "t"
    code = label_cli.main(
        [
            "--cutouts",
            str(candidates),
            "--out",
            str(out),
            "--crossmatch",
            str(catalogue),
            "--radius",
            "1",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "1 matched within 1 arcsec" in printed and "3 unmatched" in printed
    assert "1 without coordinates" in printed
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n")
    code = label_cli.main(
        ["--cutouts", str(candidates), "--out", str(out), "--crossmatch", str(tmp_path / "bad.csv")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "no ra column" in err and err.count("\n") == 1
    only_none = tmp_path / "none"
    only_none.mkdir()
    shutil.copy(candidates / "nopos.fits", only_none)
    code = label_cli.main(
        ["--cutouts", str(only_none), "--out", str(out), "--crossmatch", str(catalogue)]
    )
    assert code == 2 and "no candidate has coordinates" in capsys.readouterr().err


def test_real_ztf_stamps_match_their_own_positions(tmp_path):
    if not (ZTF / "cutouts").is_dir():
        pytest.skip(f"real ZTF sample not found at {ZTF} (../shared/data is absent)")
    folder = tmp_path / "ztf"
    folder.mkdir()
    for path in sorted((ZTF / "cutouts").glob("*.fits"))[:40]:
        shutil.copy(path, folder)
    files = sorted(folder.glob("*.fits"))
    ra, dec = candidate_positions([str(f) for f in files])
    assert np.isfinite(ra).all() and np.isfinite(dec).all()
    header = fits.getheader(files[7])
    assert (ra[7], dec[7]) == (header["RA"], header["DEC"])
    # Five of them in the catalogue, 1 arcsec off; repeated detections of the same
    # objects match too (a small-angle separation, computed here independently).
    cat_ra, cat_dec = ra[:5] + 1 / 3600, dec[:5]
    catalogue = _catalogue(tmp_path / "known.csv", cat_ra, cat_dec)
    dx = (ra[:, None] - cat_ra[None]) * np.cos(np.radians(dec[:, None]))
    near = (np.hypot(dx, dec[:, None] - cat_dec[None]) * 3600 <= 2).any(axis=1)
    expected = sorted(f.name for f, hit in zip(files, near, strict=True) if hit)
    assert len(expected) >= 5
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("otrain-label")),
            "--cutouts",
            str(folder),
            "--out",
            str(tmp_path / "t"),
            "--crossmatch",
            str(catalogue),
            "--link",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"{len(expected)} matched within 2 arcsec" in result.stdout
    assert sorted(p.name for p in (tmp_path / "t" / "true").iterdir()) == expected
