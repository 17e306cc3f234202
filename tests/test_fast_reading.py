"""The fast reading path gives exactly what fits.open gives, or leaves the file to it.

``otrain.cutouts`` reads plain cutouts without ``fits.open`` (see the comment above
``_read_plain``): these tests compare the two paths pixel by pixel and keyword by
keyword on real and synthetic files, check that every unusual file goes to
``fits.open``, and that parallel reading (forked or loky workers) gives the cube and
table of serial reading.
"""

import gzip
import math
import mmap
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from astropy.io import fits
from conftest import write_stamp, write_triplet

from otrain import CutoutError, datasets, load_cutouts, read_cutout
from otrain import cutouts as reading

TRIPLET = ("SCI", "REF", "DIFF")


def _same(fast, slow):
    """Assert two (image, keywords) results are identical, NaN for NaN."""
    np.testing.assert_array_equal(fast[0], slow[0])
    assert fast[0].dtype == slow[0].dtype == np.float32
    assert fast[1].keys() == slow[1].keys()
    for key, value in fast[1].items():
        other = slow[1][key]
        assert type(value) is type(other), key
        assert value == other or (math.isnan(value) and math.isnan(other)), key


@pytest.mark.parametrize(
    "card",
    [
        "MAG     =              19.6318",
        "MAG     =        18.0290241241 / calibrated magnitude",
        "MAG     = -.5E-3",
        "MAG     = 1.",
        "MAG     = 1.5D3",
        "MAG     = 1e5",
        "MAG     = 1.0E+400",
        "MAG     = -0.0",
        "NAXIS1  =                   63",
        "NAXIS1  = +7",
        "CANDID  = 123456789012345678901234",
        "EDGE    =                    T",
        "EDGE    =                    F / flag",
        "EDGE    = 'False   '",
        "FILTER  = 'g       '",
        "FILE    = 'field003.fits'",
        "FILE    = '   leading'",
        "FILE    = '        '",
        "FILE    = ''",
        "FILE    = 'O''HARA'",
        "FILE    = 'abc' / it's a comment",
        "MAG     = (1, 2)",
        "MAG     =",
    ],
)
def test_card_values_are_astropys(card):
    image = card.ljust(80)
    ours = reading._card_value.__wrapped__(image.encode("ascii"))
    theirs = fits.Card.fromstring(image).value
    assert type(ours) is type(theirs)
    assert ours == theirs or (isinstance(ours, float) and math.isnan(ours) and math.isnan(theirs))


@pytest.mark.parametrize("channels", [TRIPLET, ("DIFF",), ("REF", "SCI")])
def test_real_ztf_files_read_alike(ztf_folder, channels):
    paths = sorted((ztf_folder / "cutouts").glob("*.fits"))
    assert len(paths) == 264
    for path in paths:
        assert reading._read_plain(str(path), channels) is not None
        _same(reading._read(path, channels, -1), reading._read_astropy(str(path), channels, -1))


@pytest.mark.parametrize("triplets", [False, True])
def test_synthetic_files_read_alike(tmp_path, triplets):
    datasets.make_training_set(tmp_path, n_real=15, n_bogus=15, triplets=triplets)
    channels = TRIPLET if triplets else ("DIFF",)
    paths = sorted(str(p) for p in tmp_path.glob("*/*.fits"))
    for path in paths:
        assert reading._read_plain(path, channels) is not None
        _same(reading._read(path, channels, 17), reading._read_astropy(path, channels, 17))


def _scaled(path):
    hdu = fits.PrimaryHDU(np.arange(64, dtype=np.int16).reshape(8, 8))
    hdu.header["BSCALE"] = 0.5
    hdu.header["BZERO"] = 10.0
    hdu.writeto(path)


def _blank(path):
    hdu = fits.PrimaryHDU(np.arange(64, dtype=np.int16).reshape(8, 8))
    hdu.header["BLANK"] = 3
    hdu.writeto(path)


def _unsigned(path):
    fits.PrimaryHDU(np.arange(64, dtype=np.uint16).reshape(8, 8) + 40000).writeto(path)


def _compressed(path):
    image = fits.CompImageHDU(np.arange(64, dtype=np.float32).reshape(8, 8), name="DIFF")
    fits.HDUList([fits.PrimaryHDU(), image]).writeto(path)


def _gzipped(path):
    write_stamp(path.with_suffix(".tmp"), np.ones((8, 8)), MAG=18.0)
    path.write_bytes(gzip.compress(path.with_suffix(".tmp").read_bytes()))


def _degenerate_cube(path):
    write_stamp(path, np.ones((1, 8, 8)), MAG=18.0)


def _long_string(path):
    write_stamp(path, np.ones((8, 8)), FILE="x" * 100, MAG=18.0)


def _table_then_image(path):
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=[1.0, 2.0])])
    image = fits.ImageHDU(np.ones((8, 8), np.float32), name="DIFF")
    fits.HDUList([fits.PrimaryHDU(), table, image]).writeto(path)


@pytest.mark.parametrize(
    "write, plain",
    [
        (_scaled, False),
        (_blank, False),
        (_unsigned, False),
        (_compressed, False),
        (_gzipped, False),
        (_degenerate_cube, False),
        (_long_string, False),
        (_table_then_image, True),
    ],
)
def test_unusual_files_are_read_as_fits_open_reads_them(tmp_path, write, plain):
    path = tmp_path / "stamp.fits"
    write(path)
    assert (reading._read_plain(str(path), ("DIFF",)) is not None) is plain
    _same(read_cutout(path), reading._read_astropy(str(path), ("DIFF",), -1))


def test_truncated_and_padded_files_go_to_fits_open(tmp_path):
    path = write_stamp(tmp_path / "a.fits", np.ones((64, 64)), MAG=18.0)
    data = path.read_bytes()
    cut = tmp_path / "cut.fits"
    cut.write_bytes(data[: len(data) - 3000])
    assert reading._read_plain(str(cut), ("DIFF",)) is None
    with pytest.raises(CutoutError, match=r"cut.fits: not a readable FITS file \(File may have"):
        read_cutout(cut)
    padded = tmp_path / "padded.fits"
    padded.write_bytes(data + b"\0" * 2880)
    assert reading._read_plain(str(padded), ("DIFF",)) is None


def test_missing_channel_error_still_comes_from_fits_open(tmp_path):
    path = write_triplet(tmp_path / "t.fits", *(np.ones((8, 8)),) * 3)
    assert reading._read_plain(str(path), ("PSF",)) is None
    with pytest.raises(CutoutError, match="no image HDU named PSF"):
        read_cutout(path, channels=("PSF",))


def test_compact_keeps_order_in_place():
    out = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    ok = np.array([0, 1, 1, 0, 0, 1, 0, 1, 1, 1], dtype=bool)
    kept = reading._compact(out, ok)
    assert np.shares_memory(kept, out)
    assert kept.ravel().tolist() == [1, 2, 5, 7, 8, 9]


def _stamps_with_bad_files(folder, n=60):
    rng = np.random.default_rng(0)
    paths = [
        str(write_stamp(folder / f"{i:03d}.fits", rng.normal(size=(8, 8)), MAG=float(i)))
        for i in range(n)
    ]
    (folder / "010.fits").write_text("not FITS")
    write_stamp(folder / "020.fits", np.ones((9, 9)))
    return paths


def test_loky_workers_give_the_serial_cube(tmp_path, monkeypatch):
    paths = _stamps_with_bad_files(tmp_path)
    serial = load_cutouts(paths, on_error="skip")
    monkeypatch.setattr(reading, "_can_fork", lambda: False)
    monkeypatch.setattr(reading, "_effective_jobs", lambda *args: 2)
    parallel = load_cutouts(paths, n_jobs=2, on_error="skip")
    np.testing.assert_array_equal(serial[0], parallel[0])
    assert list(serial[1]["mag"]) == list(parallel[1]["mag"])
    assert [p for p, _ in parallel[2]] == [paths[10], paths[20]]


def _shared_files(folder="/dev/shm"):
    """This process's shared files (other test processes may read at the same time)."""
    import os

    mine = f"{reading._SHARED_PREFIX}{os.getpid()}-"
    return sorted(n for n in os.listdir(folder) if n.startswith(mine))


def test_loky_workers_write_into_shared_memory_and_leave_no_file(tmp_path, monkeypatch):
    paths = _stamps_with_bad_files(tmp_path)
    before = _shared_files()
    monkeypatch.setattr(reading, "_can_fork", lambda: False)
    monkeypatch.setattr(reading, "_effective_jobs", lambda *args: 2)
    cube, _, _ = load_cutouts(paths, n_jobs=2, on_error="skip")
    owner = cube
    while isinstance(owner, np.ndarray):
        owner = owner.base
    assert isinstance(getattr(owner, "obj", owner), mmap.mmap)  # the readers' shared file
    assert _shared_files() == before
    # The first bad file, in order, is the error raised; its file goes too.
    with pytest.raises(CutoutError, match="010.fits"):
        load_cutouts(paths, n_jobs=2)
    assert _shared_files() == before


def test_loky_path_reads_here_where_no_folder_has_room(tmp_path, monkeypatch):
    import os

    paths = _stamps_with_bad_files(tmp_path)
    serial = load_cutouts(paths, on_error="skip")
    monkeypatch.setattr(reading, "_can_fork", lambda: False)
    monkeypatch.setattr(reading, "_effective_jobs", lambda *args: 2)

    def full(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    assert reading._shared_file((10, 8, 8, 1)) == (None, None)
    called = []
    monkeypatch.setattr(reading, "_read_in_processes", lambda *a: called.append(a))
    here = load_cutouts(paths, n_jobs=2, on_error="skip")
    assert not called
    np.testing.assert_array_equal(serial[0], here[0])
    assert [p for p, _ in here[2]] == [paths[10], paths[20]]


def test_a_reader_process_that_dies_leaves_the_reading_to_this_one(tmp_path, monkeypatch):
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    paths = _stamps_with_bad_files(tmp_path)
    serial = load_cutouts(paths, on_error="skip")
    monkeypatch.setattr(reading, "_can_fork", lambda: False)
    monkeypatch.setattr(reading, "_effective_jobs", lambda *args: 2)
    from concurrent.futures import Future

    started = Future()
    started.set_result(0)
    monkeypatch.setattr(reading, "_STARTING", [started])

    def killed(*args):
        raise TerminatedWorkerError("A worker process was killed (SIGKILL)")

    monkeypatch.setattr(reading, "_read_in_processes", killed)
    before = _shared_files()
    with pytest.warns(RuntimeWarning, match="reader process stopped .*SIGKILL.* this process"):
        here = load_cutouts(paths, n_jobs=2, on_error="skip")
    np.testing.assert_array_equal(serial[0], here[0])
    assert [p for p, _ in here[2]] == [paths[10], paths[20]]
    assert reading._STARTING == [] and _shared_files() == before


def test_shared_files_of_killed_processes_are_removed(tmp_path):
    import os

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    left = tmp_path / f"{reading._SHARED_PREFIX}{dead.stdout.strip()}-abc"
    mine = tmp_path / f"{reading._SHARED_PREFIX}{os.getpid()}-def"
    other = tmp_path / "otrain-cube-notes.txt"
    for path in (left, mine, other):
        path.write_bytes(b"x")
    reading._remove_stale(str(tmp_path))
    assert not left.exists() and mine.exists() and other.exists()


def test_forked_workers_give_the_serial_cube(tmp_path):
    # Forking is only done where TensorFlow is not loaded, so this runs in a fresh
    # interpreter rather than in the test process.
    _stamps_with_bad_files(tmp_path)
    script = textwrap.dedent(
        f"""
        import glob
        import numpy as np
        from otrain import cutouts, CutoutError
        paths = sorted(glob.glob({str(tmp_path)!r} + "/*.fits"))
        serial = cutouts.load_cutouts(paths, on_error="skip")
        assert cutouts._can_fork()
        cutouts._effective_jobs = lambda *args: 2
        forked = cutouts.load_cutouts(paths, n_jobs=2, on_error="skip")
        assert isinstance(forked[0].base, np.ndarray)  # the shared buffer
        np.testing.assert_array_equal(serial[0], forked[0])
        assert list(serial[1]["mag"]) == list(forked[1]["mag"]) and len(serial[0]) == 58
        assert [p for p, _ in forked[2]] == [paths[10], paths[20]]
        try:
            cutouts.load_cutouts(paths, n_jobs=2)
        except CutoutError as err:
            print("raised:", err)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "raised:" in result.stdout and "010.fits: not a readable FITS file" in result.stdout


def _with_extra_card(data, *cards):
    """``data`` (a one-HDU file) with ``cards`` added before END."""
    data = bytearray(data)
    end = data.index(b"END     ")
    added = b"".join(card.ljust(80).encode() for card in (*cards, "END"))
    data[end : end + len(added)] = added
    return bytes(data)


@pytest.mark.parametrize(
    "cards",
    [
        ("BITPIX  =                  -64",),
        ("NAXIS1  =                    4",),
        ("NAXIS2  =                    4",),
        ("BZERO   =                    0", "BZERO   =                   10"),
        ("BSCALE  =                    1", "BSCALE  =                    2"),
    ],
)
def test_duplicate_layout_cards_are_read_as_astropy_reads_them(tmp_path, cards):
    rng = np.random.default_rng(0)
    plain = write_stamp(tmp_path / "a.fits", rng.normal(size=(8, 8)))
    path = tmp_path / "dup.fits"
    path.write_bytes(_with_extra_card(plain.read_bytes(), *cards))
    card = cards[0]
    assert reading._read_plain(str(path), ("DIFF",)) is None
    key = card.split()[0]
    try:
        image, keywords = read_cutout(path)
    except CutoutError as err:
        # Where astropy cannot read the file either, the error says why.
        assert f"{key} appears twice in a header" in str(err) and "dup.fits" in str(err)
        return
    expected = np.asarray(fits.getdata(path), dtype=np.float32)
    np.testing.assert_array_equal(image[..., 0], expected)
    assert f"{key} appears twice in a header" in keywords["warning"]


def _trailing(data):
    return data + b"bytes written after the last HDU"


def _zero_padding(data):
    return data + b"\0" * 2880


def _short_zero_padding(data):
    return data + b"\0" * 100


def _unpadded(data):
    # The data end where the pixels end, without the zeros to a 2,880-byte block.
    return data[: 2880 + 8 * 8 * 4]


def _blank_on_float(data):
    return _with_extra_card(data, "BLANK   =               -32768")


@pytest.mark.parametrize(
    "alter", [_trailing, _zero_padding, _short_zero_padding, _unpadded, _blank_on_float]
)
def test_files_getdata_reads_are_read_with_its_values(tmp_path, alter, recwarn):
    rng = np.random.default_rng(1)
    plain = write_stamp(tmp_path / "a.fits", rng.normal(size=(8, 8)), MAG=18.5)
    path = tmp_path / "odd.fits"
    path.write_bytes(alter(plain.read_bytes()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = np.asarray(fits.getdata(path), dtype=np.float32)
    image, keywords = read_cutout(path)
    np.testing.assert_array_equal(image[..., 0], expected)
    assert keywords["mag"] == 18.5
    # astropy warned: the reader says so in the keywords, and nothing is printed.
    assert keywords["warning"]
    assert not recwarn.list
    cube, table, skipped = load_cutouts([plain, path])
    assert not skipped and list(table["warning"] != "") == [False, True]
