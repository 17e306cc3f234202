"""Datacubes: building from true/false folders, frac_true, EDGE, O'TRAIN cubes."""

import numpy as np
import pytest
from conftest import write_stamp

from otrain import DatacubeError, build_datacube, load_datacube


def test_build_save_load_round_trip(training_folder, tmp_path):
    cube = build_datacube(training_folder)
    assert cube.cube.shape == (80, 32, 32, 1) and cube.cube.dtype == np.float32
    assert (cube.n_true, cube.n_false) == (40, 40)
    assert cube.labels[:40].tolist() == [1] * 40
    path = cube.save(tmp_path / "cube")
    assert path.name == "cube.npz"
    with np.load(path) as npz:
        for key in (
            "cube",
            "labels",
            "mags",
            "errmags",
            "filters",
            "fwhms",
            "candids",
            "paths",
            "channels",
        ):
            assert key in npz.files
        assert npz["candids"][0] == "true0"
    again = load_datacube(path)
    np.testing.assert_array_equal(again.cube, cube.cube)
    np.testing.assert_array_equal(again.labels, cube.labels)
    assert again.channels == ("DIFF",)
    assert list(again.keywords["path"]) == list(cube.keywords["path"])
    np.testing.assert_allclose(again.keywords["mag"], cube.keywords["mag"])


def test_no_temporary_file_left_and_old_cube_kept_on_failure(
    training_folder, tmp_path, monkeypatch
):
    cube = build_datacube(training_folder)
    path = cube.save(tmp_path / "cube.npz")
    before = path.read_bytes()

    def broken_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        cube.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["cube.npz"]


@pytest.mark.parametrize(
    "frac_true, expected", [(0.5, (20, 20)), (0.25, (13, 40)), (0.8, (40, 10))]
)
def test_frac_true_undersamples_the_larger_class(tmp_path, frac_true, expected):
    for label, n in (("true", 40), ("false", 20)):
        (tmp_path / label).mkdir()
        for i in range(n if label == "true" else 40 if frac_true == 0.25 else n):
            write_stamp(tmp_path / label / f"{i}.fits", np.full((8, 8), i), EDGE="False")
    cube = build_datacube(tmp_path, frac_true=frac_true, random_state=3)
    assert (cube.n_true, cube.n_false) == expected
    assert cube.n_true / len(cube) == pytest.approx(frac_true, abs=0.02)
    # Seeded: the same selection again, another with another seed.
    same = build_datacube(tmp_path, frac_true=frac_true, random_state=3)
    np.testing.assert_array_equal(same.keywords["path"], cube.keywords["path"])


def test_frac_true_says_what_it_dropped(tmp_path):
    for label, n in (("true", 40), ("false", 23)):
        (tmp_path / label).mkdir()
        for i in range(n):
            write_stamp(tmp_path / label / f"{i}.fits", np.full((8, 8), i))
    cube = build_datacube(tmp_path, frac_true=0.5, random_state=0)
    assert cube.undersampling_text("--frac_true") == (
        "--frac_true 0.5: kept 23 of 40 real stamps, dropped 17 to reach 50% real "
        "(leave --frac_true out to keep every stamp)"
    )
    assert cube.undersampling_text().startswith("frac_true=0.5: kept 23 of 40 real")
    # Nothing dropped, nothing said: no frac_true, or one the set already has.
    assert build_datacube(tmp_path).undersampling_text() is None
    assert build_datacube(tmp_path, frac_true=40 / 63).undersampling_text() is None


def test_selection_follows_rows_after_in_place_compaction(tmp_path):
    for label in ("true", "false"):
        (tmp_path / label).mkdir()
        for i in range(30):
            write_stamp(
                tmp_path / label / f"{i:02d}.fits", np.full((4, 4), i), CANDID=f"{label}{i}"
            )
    cube = build_datacube(tmp_path, frac_true=0.75, random_state=0)
    for row, candid in zip(cube.cube, cube.keywords["candid"], strict=True):
        assert row[0, 0, 0] == int(candid.lstrip("truefals"))


def test_edge_cutouts_left_out_and_counted(tmp_path):
    for label in ("true", "false"):
        (tmp_path / label).mkdir()
        for i in range(5):
            write_stamp(
                tmp_path / label / f"{i}.fits", np.ones((8, 8)), EDGE="True" if i == 0 else "False"
            )
    cube = build_datacube(tmp_path)
    assert len(cube) == 8
    assert cube.summary["edge_true"] == 1 and cube.summary["edge_false"] == 1
    assert "left out 2 EDGE cutouts" in cube.summary_text()


def test_unreadable_files_skipped_and_reported(training_folder, tmp_path):
    import shutil

    shutil.copytree(training_folder, tmp_path / "set")
    (tmp_path / "set" / "false" / "broken.fits").write_text("not fits")
    cube = build_datacube(tmp_path / "set")
    assert (cube.n_true, cube.n_false) == (40, 40)
    assert [p.endswith("broken.fits") for p, _ in cube.summary["skipped"]] == [True]
    assert "broken.fits" in cube.summary_text()


@pytest.mark.parametrize("missing", ["true", "false"])
def test_missing_or_empty_folder_is_a_clear_error(tmp_path, missing):
    for label in ("true", "false"):
        (tmp_path / label).mkdir()
        if label != missing:
            write_stamp(tmp_path / label / "a.fits", np.ones((4, 4)))
    with pytest.raises(DatacubeError, match=f"{missing}: holds no cutout"):
        build_datacube(tmp_path)
    (tmp_path / missing).rmdir()
    with pytest.raises(DatacubeError, match=f"{missing}: no such folder"):
        build_datacube(tmp_path)


def test_loads_cubes_written_by_original_otrain(tmp_path):
    # O'TRAIN wrote (n, H, W, 1) cubes, lists of mixed numbers and '-99.0' strings.
    path = tmp_path / "old.npz"
    np.savez(
        path,
        cube=np.zeros((3, 8, 8, 1), np.float32),
        labels=[1, 0, 1],
        mags=["18.5", "-99.0", "19.0"],
        errmags=["0.1", "-99.0", "0.2"],
        filters=["r", "g", "Clear"],
        fwhms=[2.0, 3.0, 2.5],
        candids=[11, 12, 13],
    )
    cube = load_datacube(path)
    assert cube.cube.shape == (3, 8, 8, 1) and cube.labels.tolist() == [1, 0, 1]
    assert cube.keywords["mag"][0] == 18.5 and np.isnan(cube.keywords["mag"][1])
    assert list(cube.keywords["candid"]) == ["11", "12", "13"]
    assert cube.channels == ("DIFF",)


@pytest.mark.parametrize(
    "writer, message",
    [
        (lambda p: p.write_text("junk"), "not a readable datacube"),
        (lambda p: np.savez(p, images=np.zeros(3)), "not a datacube"),
        (lambda p: np.savez(p, cube=np.zeros((3, 4, 4, 1)), labels=[0, 1, 2]), "labels must be 0"),
        (lambda p: np.savez(p, cube=np.zeros((3, 4)), labels=[0, 1, 1]), "do not describe"),
    ],
)
def test_foreign_or_corrupt_npz(tmp_path, writer, message):
    path = tmp_path / "x.npz"
    writer(path)
    with pytest.raises(DatacubeError, match=f"x.npz.*{message}"):
        load_datacube(path)


def test_loads_otrain_validation_cubes_with_one_hot_labels(tmp_path):
    path = tmp_path / "cube_validation.npz"
    np.savez(path, cube=np.zeros((3, 8, 8, 1), np.float32), labels=[[0, 1], [1, 0], [0, 1]])
    assert load_datacube(path).labels.tolist() == [1, 0, 1]


def test_missing_cube_file(tmp_path):
    with pytest.raises(DatacubeError, match="no such datacube.*otrain-convert"):
        load_datacube(tmp_path / "nope.npz")


def test_mixed_sizes_stop_the_conversion_with_a_hint(tmp_path):
    for label in ("true", "false"):
        (tmp_path / label).mkdir()
        write_stamp(tmp_path / label / "a.fits", np.ones((16, 16)))
    write_stamp(tmp_path / "false" / "b.fits", np.ones((20, 20)))
    from otrain import CutoutError

    with pytest.raises(CutoutError, match="b.fits.*20x20.*16x16.*cutout size"):
        build_datacube(tmp_path)
    assert build_datacube(tmp_path, cutout_size=16).cube.shape == (3, 16, 16, 1)
