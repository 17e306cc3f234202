"""Alert packets as cutouts: real ZTF packets, Fink's Parquet, Rubin packets and streams."""

import copy
import gzip
import io
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from conftest import SHARED, tiny_network

from otrain import alerts, plots
from otrain.cli import convert, infer
from otrain.cutouts import load_cutouts, read_cutout
from otrain.datacube import CUTOUT_SUFFIXES, build_datacube, find_cutouts
from otrain.exceptions import CutoutError

fastavro = pytest.importorskip("fastavro")

ALERTS = SHARED / "ztf-alerts"
FINK = ALERTS / "fink_ztf_alerts.parquet"
RUBIN = SHARED / "rubin-alerts" / "rubin_lsst_v10_0_sample.parquet"
CHANNELS = ("SCI", "REF", "DIFF")
JPEG = ("1726958725155000", "1726958725155001", "1726958725155002",
        "87704463155000", "87704463155001", "87704463155002")  # fmt: skip
EDGE = {"396522680015040001": (41, 63), "396522680015040002": (45, 63),
        "472263571115115014": (63, 53)}  # fmt: skip


@pytest.fixture(scope="module")
def ztf_alerts():
    if not ALERTS.is_dir():
        pytest.skip(f"real ZTF alert packets not found at {ALERTS} (../shared/data is absent)")
    return ALERTS


def _raw(path):
    """The packet as fastavro decodes it, and its stamps as astropy reads them."""
    with open(path, "rb") as handle:
        record = next(fastavro.reader(handle))
    planes = []
    for field in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
        data = gzip.decompress(record[field]["stampData"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            planes.append(fits.getdata(io.BytesIO(data)).astype(np.float32))
    return record, planes


def test_every_real_ztf_packet_is_read_or_rejected_clearly(ztf_alerts):
    packets = sorted(ztf_alerts.glob("*.avro"))
    assert len(packets) == 22
    for path in packets:
        if path.stem in JPEG:
            with pytest.raises(CutoutError, match="JPEG image, not FITS") as err:
                read_cutout(path, channels=CHANNELS)
            assert str(path) in str(err.value)
            continue
        image, keywords = read_cutout(path, channels=CHANNELS)
        record, planes = _raw(path)
        candidate = record["candidate"]
        assert image.shape == (63, 63, 3) and image.dtype == np.float32
        assert keywords["candid"] == str(record["candid"]) == path.stem.split("_")[-1]
        assert keywords["objectId"] == record["objectId"]
        assert keywords["mag"] == pytest.approx(candidate["magpsf"])
        assert keywords["magerr"] == pytest.approx(candidate["sigmapsf"])
        assert keywords["ra"] == candidate["ra"] and keywords["dec"] == candidate["dec"]
        assert keywords["rb"] == pytest.approx(candidate["rb"])
        drb = candidate.get("drb")
        assert np.isnan(keywords["drb"]) if drb is None else keywords["drb"] == pytest.approx(drb)
        assert keywords["filter"] == {1: "g", 2: "r", 3: "i"}[candidate["fid"]]
        assert keywords["isdiffpos"] == candidate["isdiffpos"]
        assert keywords["edge"] == (path.stem in EDGE)
        if path.stem in EDGE:
            assert planes[0].shape == EDGE[path.stem]
            # NaN-padded on the side of the detector edge, the pixels kept as they are.
            rows, cols = EDGE[path.stem]
            top = 63 - rows if candidate["ypos"] < 33 else 0
            left = 63 - cols if candidate["xpos"] < 33 else 0
            inner = image[top : top + rows, left : left + cols]
            assert np.isnan(image).sum() >= 3 * 63 * 63 - 3 * rows * cols
        else:
            inner = image
        for channel, plane in enumerate(planes):
            np.testing.assert_array_equal(inner[..., channel], plane)


def _astropy_stamp(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        return fits.getdata(io.BytesIO(data)).astype(np.float32)


def _fink_stamps():
    pq = pytest.importorskip("pyarrow.parquet")
    rows = pq.read_table(FINK, columns=list(alerts.CHANNEL_FIELDS.values())).to_pylist()
    return [row[field]["stampData"] for row in rows for field in row]


def test_fast_fits_reader_gives_astropys_pixels_on_every_real_stamp(ztf_alerts):
    stamps = []
    for path in sorted(ztf_alerts.glob("*.avro")):
        with open(path, "rb") as handle:
            record = next(fastavro.reader(handle))
        stamps += [record[field]["stampData"] for field in alerts.CHANNEL_FIELDS.values()]
    stamps += _fink_stamps()
    fits_stamps = [gzip.decompress(s) for s in stamps if s[:2] == b"\x1f\x8b"]
    # 16 ZTF packets of 3 FITS stamps (3 edge ones among them), 51 Fink alerts.
    assert len(fits_stamps) == 3 * 16 + 3 * 51
    shapes = set()
    for data in fits_stamps:
        fast = alerts._simple_image(data)
        assert fast is not None  # every real ZTF stamp takes the fast path
        expected = _astropy_stamp(data)
        assert fast.shape == expected.shape
        np.testing.assert_array_equal(fast.astype(np.float32), expected)
        np.testing.assert_array_equal(alerts._fits_image(data, "SCI", "x"), expected)
        shapes.add(fast.shape)
    assert {(63, 63), (41, 63), (45, 63), (63, 53)} <= shapes


def _with_card(data, card, replacing=None):
    """A copy of a one-block-header stamp with ``card`` added (or replacing a card)."""
    header = bytearray(data[:2880])
    cards = [bytes(header[i : i + 80]) for i in range(0, 2880, 80)]
    end = cards.index(b"END".ljust(80))
    new = card.ljust(80).encode("ascii")
    if replacing is None:
        cards.insert(end, new)
    else:
        cards[[c[:8].rstrip() for c in cards].index(replacing.encode())] = new
    return b"".join(cards[:36]) + data[2880:]


@pytest.mark.parametrize(
    ("card", "replacing", "fast"),
    [
        ("COMMENT   an ordinary card", None, True),
        ("OBJECT  = 'ZTF18abc'           / a string", None, True),
        ("BSCALE  =                  2.0", None, False),
        ("BZERO   =                 10.0", None, False),
        ("BLANK   =                  -99", None, False),
        ("NAXIS1  =                   63", None, False),  # written twice
        ("naxis1  =                   63", "NAXIS1", False),
        ("HIERARCH ESO DET CHIP = 3", None, False),
        ("EXTEND  =                    T", None, False),
    ],
)
def test_fast_fits_reader_leaves_unusual_stamps_to_astropy(ztf_alerts, card, replacing, fast):
    with open(ztf_alerts / "472263571115115000.avro", "rb") as handle:
        record = next(fastavro.reader(handle))
    data = _with_card(gzip.decompress(record["cutoutScience"]["stampData"]), card, replacing)
    assert (alerts._simple_image(data) is not None) == fast
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = _astropy_stamp(data)
    np.testing.assert_array_equal(alerts._fits_image(data, "SCI", "x"), expected)
    # Cut short or followed by more bytes: not one plain HDU either.
    assert alerts._simple_image(data[:-2880]) is None
    assert alerts._simple_image(data + bytes(2880)) is None


def test_schema_versions_are_all_there(ztf_alerts):
    versions = set()
    for path in ztf_alerts.glob("*.avro"):
        with open(path, "rb") as handle:
            versions.add(next(fastavro.reader(handle)).get("schemavsn"))
    assert {"2.0", "3.1", "3.2", "3.3", "3.5", None} <= versions


def test_a_folder_of_packets_skips_and_reports_like_fits(ztf_alerts, tmp_path):
    for path in ztf_alerts.glob("*.avro"):
        shutil.copy(path, tmp_path)
    paths = find_cutouts(tmp_path)
    assert len(paths) == 22 and all(p.endswith(".avro") for p in paths)
    cube, keywords, skipped = load_cutouts(paths, channels=CHANNELS, on_error="skip")
    assert cube.shape == (16, 63, 63, 3)
    assert len(skipped) == 6 and all("JPEG" in reason for _, reason in skipped)
    assert sorted(keywords["candid"][keywords["edge"]]) == sorted(EDGE)
    assert {"objectId", "rb", "drb", "reliability"} <= set(keywords.colnames)


def test_fink_parquet_gives_the_pixels_of_the_same_alerts_as_fits(ztf_alerts, ztf_folder):
    references = list(alerts.iter_references(FINK))
    assert len(references) == 51 and all("#" in r for r in references)
    cube, keywords, _ = load_cutouts(references, channels=CHANNELS)
    files = [str(ztf_folder / "cutouts" / f"ZTF_{c}.fits") for c in keywords["candid"]]
    fits_cube, fits_keywords, _ = load_cutouts(files, channels=CHANNELS)
    np.testing.assert_array_equal(cube, fits_cube)
    np.testing.assert_allclose(keywords["mag"], fits_keywords["mag"], rtol=1e-6)
    assert list(keywords["candid"]) == list(fits_keywords["candid"])
    assert np.isfinite(keywords["drb"]).all()


def test_parquet_row_groups_are_read_one_at_a_time(ztf_alerts, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    regrouped = tmp_path / "regrouped.parquet"
    pq.write_table(pq.read_table(FINK), regrouped, row_group_size=10)
    assert pq.ParquetFile(regrouped).num_row_groups == 6
    references = list(alerts.iter_references(regrouped))
    expected, expected_keywords, _ = load_cutouts(
        list(alerts.iter_references(FINK)), channels=CHANNELS
    )
    # Out of order too: each row group is decoded when one of its alerts is asked for.
    order = np.random.default_rng(0).permutation(len(references))
    cube, keywords, _ = load_cutouts([references[i] for i in order], channels=CHANNELS)
    np.testing.assert_array_equal(cube, expected[order])
    assert list(keywords["candid"]) == [expected_keywords["candid"][i] for i in order]
    assert [a["id"] for a in alerts.iter_alerts(regrouped)] == list(expected_keywords["candid"])


def test_references_name_one_alert_of_a_file_of_many(ztf_alerts):
    first = alerts.split_reference(next(alerts.iter_references(FINK)))
    assert first[0] == str(FINK) and first[1].isdigit()
    image, keywords = read_cutout(alerts.make_reference(FINK, first[1]), channels="DIFF")
    assert image.shape == (63, 63, 1) and keywords["candid"] == first[1]
    with pytest.raises(CutoutError, match="holds 51 alerts; name one as"):
        read_cutout(FINK)
    with pytest.raises(CutoutError, match="holds no alert 12345"):
        read_cutout(f"{FINK}#12345")
    with pytest.raises(CutoutError, match="choose channels among SCI, REF, DIFF"):
        read_cutout(alerts.make_reference(FINK, first[1]), channels="UNCERT")
    assert alerts.split_reference("a#b.fits") == ("a#b.fits", None)


@pytest.mark.parametrize(
    ("codec", "sync_interval"), [("null", 16000), ("null", 10**8), ("deflate", 10**8)]
)
def test_containers_of_many_ztf_packets(ztf_alerts, tmp_path, monkeypatch, codec, sync_interval):
    # One record per block (brokers' files: cutouts found from the block's end), all in
    # one block (decoded in full), deflate-compressed blocks: the same candidates.
    # Files this large are memory-mapped, not read whole.
    monkeypatch.setattr(alerts, "_MAP_FROM", 2**16)
    path = ztf_alerts / "472263571115115000.avro"
    with open(path, "rb") as handle:
        reader = fastavro.reader(handle)
        record, schema = next(reader), reader.writer_schema
    records = [dict(record, candid=record["candid"] + i) for i in range(4)]
    container, single = tmp_path / "night.avro", tmp_path / "one.avro"
    for file, written in ((container, records), (single, records[:1])):
        with open(file, "wb") as handle:
            fastavro.writer(handle, schema, written, codec=codec, sync_interval=sync_interval)
    # A one-alert file first: the folder scan knows the header of both files, and then
    # counts records from the bytes past it (the container's first block only).
    alerts._clear_cache()
    assert list(alerts.iter_references(single)) == [str(single)]
    references = list(alerts.iter_references(container))
    assert references == [alerts.make_reference(container, r["candid"]) for r in records]
    cube, keywords, _ = load_cutouts(references, channels=CHANNELS)
    expected, _ = read_cutout(path, channels=CHANNELS)
    assert cube.shape == (4, 63, 63, 3)
    for image in cube:
        np.testing.assert_array_equal(image, expected)
    assert list(keywords["candid"]) == [str(r["candid"]) for r in records]


def test_truncated_and_foreign_files_are_skipped_or_one_clear_error(ztf_alerts, tmp_path):
    good = ztf_alerts / "472263571115115000.avro"
    truncated = tmp_path / "truncated.avro"
    truncated.write_bytes(good.read_bytes()[:30000])
    foreign = tmp_path / "foreign.avro"
    with open(foreign, "wb") as handle:
        schema = {"type": "record", "name": "trade", "fields": [{"name": "x", "type": "int"}]}
        fastavro.writer(handle, schema, [{"x": 1}])
    not_avro = tmp_path / "notes.avro"
    not_avro.write_text("hello")
    no_stamp = tmp_path / "no_stamp.avro"
    with open(good, "rb") as handle:
        reader = fastavro.reader(handle)
        record = next(reader)
        schema = reader.writer_schema
    record["cutoutDifference"] = None
    with open(no_stamp, "wb") as handle:
        fastavro.writer(handle, schema, [record])
    for path, message in (
        (truncated, "truncated"),
        (foreign, "not ZTF or Rubin alerts"),
        (not_avro, "not an Avro container file"),
        (no_stamp, "no cutoutDifference stamp"),
    ):
        with pytest.raises(CutoutError, match=message) as err:
            read_cutout(path, channels=CHANNELS)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    shutil.copy(good, tmp_path)
    paths = find_cutouts(tmp_path)
    cube, _, skipped = load_cutouts(paths, channels=CHANNELS, on_error="skip")
    assert len(cube) == 1 and len(skipped) == 4


def test_stamps_are_inflated_the_same_without_libdeflate(ztf_alerts, monkeypatch):
    # libdeflate (the optional deflate package) or zlib: the same pixels, and a damaged
    # stamp is one clear error either way.
    path = ztf_alerts / "472263571115115000.avro"
    with open(path, "rb") as handle:
        record = next(fastavro.reader(handle))
    damaged = copy.deepcopy(record)
    damaged["cutoutTemplate"]["stampData"] = damaged["cutoutTemplate"]["stampData"][:-20]
    images = {}
    for name, absent in (("libdeflate", False), ("zlib", True)):
        if absent:
            monkeypatch.setitem(sys.modules, "deflate", None)  # import deflate fails
        else:
            pytest.importorskip("deflate")
        alerts._inflate.cache_clear()
        alerts._clear_cache()
        images[name], _ = read_cutout(path, channels=CHANNELS)
        with pytest.raises(CutoutError, match="cutoutTemplate stamp is damaged gzip data"):
            alerts.candidate_from_alert(damaged, channels=CHANNELS)
    alerts._inflate.cache_clear()  # found again once deflate is back
    np.testing.assert_array_equal(images["libdeflate"], images["zlib"])


def _same_keywords(a, b):
    """Keyword dicts equal, NaN equal to NaN."""
    nan = "NaN"
    clean = [{k: nan if v != v else v for k, v in d.items()} for d in (a, b)]
    return clean[0] == clean[1]


def test_one_alert_files_are_read_past_the_file_cache_as_through_it(ztf_alerts, tmp_path):
    # A folder of ZTF's archive (one alert a file) is read without the file cache or
    # _AvroFile: the same alert as the general path; anything else goes to it.
    read_fast = 0
    for path in sorted(ztf_alerts.glob("*.avro")):
        alerts._clear_cache()
        single = alerts._single_alert(str(path))
        general = alerts._find(str(path))
        if path.stem in JPEG:  # stamps that are not FITS: decoded in full, the general way
            assert single is None
            continue
        assert (single["id"], single["survey"]) == (general["id"], general["survey"])
        assert single["stamps"] == general["stamps"]
        assert _same_keywords(single["keywords"], general["keywords"])
        read_fast += 1
    assert read_fast == 16
    # A folder read: no file decoded into the cache (the fast path taken every time).
    alerts._clear_cache()
    folder = tmp_path / "folder"
    folder.mkdir()
    for path in sorted(ztf_alerts.glob("47226357111509*.avro")):
        shutil.copy(path, folder)
    cube, _, _ = load_cutouts(find_cutouts(folder), channels=CHANNELS)
    assert len(cube) == 4 and not alerts._CACHE
    # Two alerts, or one in a compressed block, or a damaged one: the general path.
    good = ztf_alerts / "472263571115115000.avro"
    with open(good, "rb") as handle:
        reader = fastavro.reader(handle)
        record, schema = next(reader), reader.writer_schema
    for name, records, codec in (("two", [record] * 2, "null"), ("zipped", [record], "deflate")):
        with open(tmp_path / f"{name}.avro", "wb") as handle:
            fastavro.writer(handle, schema, records, codec=codec)
        assert alerts._single_alert(str(tmp_path / f"{name}.avro")) is None
    image, _ = read_cutout(tmp_path / "zipped.avro", channels=CHANNELS)
    np.testing.assert_array_equal(image, read_cutout(good, channels=CHANNELS)[0])
    damaged = tmp_path / "damaged.avro"
    data = bytearray(good.read_bytes())
    data[-5] ^= 0xFF  # inside the sync marker that ends the file
    damaged.write_bytes(bytes(data))
    assert alerts._single_alert(str(damaged)) is None
    with pytest.raises(CutoutError, match="damaged.avro: truncated Avro file"):
        read_cutout(damaged, channels=CHANNELS)
    assert alerts._single_alert(str(tmp_path / "absent.avro")) is None
    with pytest.raises(CutoutError, match="absent.avro: no such file"):
        read_cutout(tmp_path / "absent.avro")


def _plain_stamp(height, width):
    """A one-HDU FITS stamp, its header block written card by card."""
    cards = ["SIMPLE  =                    T", "BITPIX  =                  -32",
             "NAXIS   =                    2", f"NAXIS1  = {width:>20}",
             f"NAXIS2  = {height:>20}", "END"]  # fmt: skip
    header = "".join(card.ljust(80) for card in cards).ljust(2880).encode("ascii")
    pixels = np.arange(height * width, dtype=">f4").tobytes()
    return header + pixels + bytes(-len(pixels) % 2880)


def test_stamp_headers_seen_before_give_each_stamp_its_own_shape():
    # Headers compared in place with the last ones seen: one card apart (NAXIS2), the
    # layout is each stamp's own, in any order.
    stamps = {(63, 63): _plain_stamp(63, 63), (41, 63): _plain_stamp(41, 63)}
    for shape in [(63, 63), (41, 63), (63, 63), (63, 63), (41, 63)] * 2:
        image = alerts._simple_image(stamps[shape])
        assert image.shape == shape
        np.testing.assert_array_equal(image.ravel(), np.arange(shape[0] * shape[1]))
    assert alerts._simple_image(stamps[(63, 63)][:-2880]) is None  # cut short


def test_skipped_unions_with_a_wrong_branch_are_left_to_fastavro():
    # A skipped ["float", "null"] is one table look-up: a branch byte naming no branch
    # makes the generated reader fail, and fastavro says why.
    writer = {
        "type": "record", "name": "alert", "fields": [
            {"name": "candid", "type": "long"},
            {"name": "candidate", "type": {"type": "record", "name": "candidate", "fields": [
                {"name": "chipsf", "type": ["float", "null"]},
                {"name": "magpsf", "type": ["float", "null"]},
            ]}},
        ],
    }  # fmt: skip
    schema = alerts._Schema(json.dumps(writer))
    parsed = fastavro.parse_schema(writer)
    for chipsf in (1.5, None):
        buffer = io.BytesIO()
        record = {"candid": 7, "candidate": {"chipsf": chipsf, "magpsf": 18.5}}
        fastavro.schemaless_writer(buffer, parsed, record)
        block = buffer.getvalue()
        assert schema.read_fast(block) == {"candid": 7, "candidate": {"magpsf": 18.5}}
    bad = block[:1] + b"\x04" + block[2:]  # chipsf: branch 2 of a union of two
    with pytest.raises((IndexError, ValueError)):
        schema.read_fast(bad)
    with pytest.raises(Exception) as ours:
        schema.read_head(fastavro, bad)
    with pytest.raises(Exception) as theirs:
        fastavro.schemaless_reader(io.BytesIO(bad), schema.head, schema.head_reader)
    assert (type(ours.value), str(ours.value)) == (type(theirs.value), str(theirs.value))


def test_missing_fastavro_names_the_extra(ztf_alerts, monkeypatch):
    alerts._clear_cache()
    monkeypatch.setitem(sys.modules, "fastavro", None)
    with pytest.raises(ImportError, match=r'pip install "otrain\[alerts\]"'):
        read_cutout(ztf_alerts / "472263571115115000.avro")


def test_every_fits_suffix_is_scanned(tmp_path):
    assert CUTOUT_SUFFIXES.count(".fits") == 1
    for suffix in (".fts.gz", ".fz", ".fit.fz", ".fits.bz2", ".FITS", ".avro", ".parquet"):
        (tmp_path / f"stamp{suffix}").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    found = {Path(p).name for p in find_cutouts(tmp_path)}
    assert "notes.txt" not in found and len(found) == 7


# ---------------------------------------------------------------- Rubin


def _rubin_stamp(plane, rng):
    """Rubin's layout: PRIMARY image (no EXTNAME), UNCERT and PSFIMAGE HDUs."""
    hdus = fits.HDUList(
        [
            fits.PrimaryHDU(plane.astype(np.float32)),
            fits.ImageHDU(
                np.abs(rng.normal(1, 0.1, plane.shape)).astype(np.float32), name="UNCERT"
            ),
            fits.ImageHDU(rng.normal(0, 1, (41, 41)), name="PSFIMAGE"),
        ]
    )
    buffer = io.BytesIO()
    hdus.writeto(buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def rubin_packets(ztf_folder, tmp_path_factory):
    """Rubin packets written with lsst-alert-packet's schemas, stamps from ztf-sample."""
    packet = pytest.importorskip("lsst.alert.packet")
    root = tmp_path_factory.mktemp("rubin")
    rng = np.random.default_rng(3)
    files = sorted((ztf_folder / "cutouts").glob("*.fits"))[:8]
    written = {}
    for version in ("7.4", "10.0", "11.1"):
        major, minor = version.split(".")
        folder = Path(packet.get_schema_path(major, minor))
        schema = packet.Schema.from_file(folder / f"lsst.v{major}_{minor}.alert.avsc")
        sample = json.loads((folder / "sample_data" / "alert.json").read_text())
        records, expected = [], {}
        for i, path in enumerate(files):
            record = copy.deepcopy(sample)
            source_id = 9_000_000 + 100 * int(major) + i
            record["diaSource"]["diaSourceId"] = source_id
            if "diaSourceId" in record:
                record["diaSourceId"] = source_id
            record["diaSource"]["reliability"] = i / 10
            planes = [fits.getdata(path, name)[16:46, 16:46] for name in CHANNELS]
            for field, plane in zip(alerts.CHANNEL_FIELDS.values(), planes, strict=True):
                record[field] = _rubin_stamp(plane, rng)
            records.append(record)
            expected[str(source_id)] = np.stack(planes, axis=-1).astype(np.float32)
        records[-1]["cutoutScience"] = None
        target = root / f"rubin_v{major}_{minor}.avro"
        with open(target, "wb") as handle:
            schema.store_alerts(handle, records)
        written[version] = (target, expected)
    return written


def _first_block(path):
    data = Path(path).read_bytes()
    header, offset = alerts._avro_header(data, path)
    schema = alerts._schema(header["meta"]["avro.schema"], path)
    _, offset = alerts._read_long(data, offset, path)
    size, offset = alerts._read_long(data, offset, path)
    return schema, data[offset : offset + size]


def test_head_reader_decodes_as_fastavro(ztf_alerts, rubin_packets):
    paths = sorted(ztf_alerts.glob("*.avro")) + [path for path, _ in rubin_packets.values()]
    for path in paths:
        schema, block = _first_block(path)
        assert schema.read_fast is not None, path  # every schema of ZTF and Rubin
        expected = fastavro.schemaless_reader(io.BytesIO(block), schema.head, schema.head_reader)
        assert schema.read_fast(block) == expected
        assert schema.read_head(fastavro, block) == expected
    # Cut inside the candidate: the generated reader gives up, fastavro says why.
    schema, block = _first_block(ztf_alerts / "472263571115115000.avro")
    with pytest.raises(IndexError):
        schema.read_fast(block[:300])
    with pytest.raises((EOFError, IndexError)) as ours:
        schema.read_head(fastavro, block[:300])
    with pytest.raises((EOFError, IndexError)) as theirs:
        fastavro.schemaless_reader(io.BytesIO(block[:300]), schema.head, schema.head_reader)
    assert (type(ours.value), str(ours.value)) == (type(theirs.value), str(theirs.value))


def _stamps_of(record):
    return {
        field: value if value is None or isinstance(value, bytes) else value["stampData"]
        for field, value in ((f, record[f]) for f in alerts.CHANNEL_FIELDS.values())
    }


def test_stamps_found_from_the_block_end_are_fastavros(ztf_alerts, rubin_packets):
    """The stamps found from a block's end are those fastavro decodes from its front."""
    paths = sorted(ztf_alerts.glob("*.avro")) + [path for path, _ in rubin_packets.values()]
    found = 0
    for path in paths:
        schema, _ = _first_block(path)
        with open(path, "rb") as handle:
            reader = fastavro.reader(handle)
            parsed = fastavro.parse_schema(reader.writer_schema)
            for record in reader:
                # Each record as a one-record block (brokers write one alert a block).
                buffer = io.BytesIO()
                fastavro.schemaless_writer(buffer, parsed, record)
                stamps = alerts._tail_stamps(buffer.getvalue(), schema.tail)
                if stamps is not None:  # None: JPEG or null stamps, decoded in full
                    assert stamps == _stamps_of(record), path
                    found += 1
    # The 16 ZTF packets of FITS stamps, 7 of 8 Rubin alerts of each schema.
    assert found == 16 + 7 * len(rubin_packets)

    # A difference stamp whose bytes end like a stamp of their own (a length, then
    # the gzip magic): taken for the stamp at first, refused when the template does
    # not lead to it, and the record is decoded in full, as fastavro decodes it.
    path = ztf_alerts / "472263571115115000.avro"
    with open(path, "rb") as handle:
        reader = fastavro.reader(handle)
        writer_schema, record = reader.writer_schema, next(reader)
    inner = b"\x1f\x8b\x08" + b"y" * 10
    record["cutoutDifference"]["stampData"] += b"\x1a" + inner  # 0x1a: length 13
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(writer_schema), record)
    block = buffer.getvalue()
    schema, _ = _first_block(path)
    assert alerts._tail_stamps(block, schema.tail) is None
    decoded = alerts._decode(fastavro, io.BytesIO(block), block, 1, schema)
    assert _stamps_of(decoded) == _stamps_of(record)


def test_rubin_packets_of_several_schemas(rubin_packets):
    for version, (path, expected) in rubin_packets.items():
        references = list(alerts.iter_references(path))
        assert len(references) == 8, version
        cube, keywords, skipped = load_cutouts(references, channels=CHANNELS, on_error="skip")
        assert cube.shape == (7, 30, 30, 3)
        assert len(skipped) == 1 and "no cutoutScience stamp" in skipped[0][1]
        for image, candid in zip(cube, keywords["candid"], strict=True):
            np.testing.assert_array_equal(image, expected[candid])
        np.testing.assert_allclose(keywords["reliability"], np.arange(7) / 10)
        assert set(keywords["filter"]) == {"r"} and np.isfinite(keywords["mag"]).all()


def test_rubin_one_alert_files_are_read_past_the_file_cache(rubin_packets, tmp_path):
    # Rubin's packets one a file (each schema): the fast path's alert is the general
    # path's, and the cube the container's.
    for version, (path, expected) in rubin_packets.items():
        with open(path, "rb") as handle:
            reader = fastavro.reader(handle)
            schema, records = reader.writer_schema, list(reader)
        folder = tmp_path / version
        folder.mkdir()
        for number, record in enumerate(records):
            with open(folder / f"{number}.avro", "wb") as handle:
                fastavro.writer(handle, schema, [record])
        for number in range(len(records) - 1):  # the last has a null stamp
            alerts._clear_cache()
            single = alerts._single_alert(str(folder / f"{number}.avro"))
            general = alerts._find(str(folder / f"{number}.avro"))
            assert single["stamps"] == general["stamps"], version
            assert _same_keywords(single["keywords"], general["keywords"]), version
        alerts._clear_cache()
        files = sorted(find_cutouts(folder), key=lambda p: int(Path(p).stem))
        cube, keywords, skipped = load_cutouts(files, channels=CHANNELS, on_error="skip")
        assert cube.shape == (7, 30, 30, 3) and len(skipped) == 1
        # Only the alert with a null stamp went the general way (and was cached).
        assert [Path(key[0]).name for key in alerts._CACHE] == ["7.avro"]
        for image, candid in zip(cube, keywords["candid"], strict=True):
            np.testing.assert_array_equal(image, expected[candid])


def test_real_rubin_alerts_are_read(rubin_packets):
    if not RUBIN.is_file():
        pytest.skip(f"Rubin sample not found at {RUBIN}")
    references = list(alerts.iter_references(RUBIN))
    cube, keywords, skipped = load_cutouts(references, channels=CHANNELS)
    assert cube.shape == (25, 30, 30, 3) and not skipped
    assert np.isfinite(keywords["reliability"]).all()
    assert ((keywords["reliability"] >= 0) & (keywords["reliability"] <= 1)).all()


# ---------------------------------------------------------------- writing and commands


def test_write_fits_gives_the_same_candidate(ztf_alerts, tmp_path):
    reference = next(alerts.iter_references(FINK))
    written = alerts.write_fits(reference, tmp_path)
    assert written.name == f"{alerts.split_reference(reference)[1]}.fits"
    image, keywords = read_cutout(written, channels=CHANNELS)
    expected, expected_keywords = read_cutout(reference, channels=CHANNELS)
    np.testing.assert_array_equal(image, expected)
    for column in ("candid", "mag", "magerr", "filter", "ra", "dec", "edge"):
        assert keywords[column] == pytest.approx(expected_keywords[column]), column
    assert fits.getheader(written)["OBJECTID"] == expected_keywords["objectId"]
    with pytest.raises(Exception, match="exists"):
        alerts.write_fits(reference, written)
    edge = alerts.write_fits(ztf_alerts / "396522680015040001.avro", tmp_path / "edge.fits")
    assert read_cutout(edge)[1]["edge"] is True


def test_convert_a_training_set_of_alert_files(ztf_alerts, tmp_path, capsys):
    root = tmp_path / "training"
    (root / "true").mkdir(parents=True)
    (root / "false").mkdir()
    for path in ztf_alerts.glob("*.avro"):
        with open(path, "rb") as handle:
            rb = next(fastavro.reader(handle))["candidate"]["rb"]
        shutil.copy(path, root / ("true" if rb >= 0.4 else "false"))
    shutil.copy(FINK, root / "true")
    cube = build_datacube(root, channels=CHANNELS)
    assert cube.cube.shape[1:] == (63, 63, 3)
    summary = cube.summary
    assert summary["edge_true"] + summary["edge_false"] == 3
    assert len(summary["skipped"]) == 6
    assert len(cube) == 51 + 22 - 6 - 3
    command = ["--cutouts", str(root), "--channels", "SCI,REF,DIFF", "--path", str(tmp_path)]
    assert convert.main([*command, "--cube", "alerts"]) == 0
    assert (tmp_path / "alerts.npz").is_file()
    said = capsys.readouterr().out
    assert "left out 3 EDGE cutouts, 6 unreadable files" in said
    assert "JPEG image, not FITS" in said
    # The installed command, as a user runs it.
    done = subprocess.run(
        [shutil.which("otrain-convert"), *command, "--cube", "again"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with np.load(tmp_path / "again.npz") as saved:
        assert saved["cube"].shape == (len(cube), 63, 63, 3)
        # The datacube keeps each alert's reference as its path.
        assert sum("#" in str(path) for path in saved["paths"]) == 51


# ---------------------------------------------------------------- scoring


@pytest.fixture(scope="module")
def braai(braai_path):
    from otrain.model_files import load_model

    return load_model(braai_path, channels=CHANNELS, normalisation="l2")


def _write_plain_fits(path, planes):
    hdus = [fits.PrimaryHDU()] + [
        fits.ImageHDU(p, name=n) for n, p in zip(CHANNELS, planes, strict=True)
    ]
    fits.HDUList(hdus).writeto(path)


def _stem(name):
    return Path(name).stem


def test_braai_scores_packets_as_the_same_stamps_in_fits(ztf_alerts, braai_path, tmp_path):
    packets, stamps = tmp_path / "packets", tmp_path / "stamps"
    packets.mkdir()
    stamps.mkdir()
    for path in ztf_alerts.glob("*.avro"):
        shutil.copy(path, packets)
        if path.stem not in JPEG and path.stem not in EDGE:
            _write_plain_fits(stamps / f"{path.stem}.fits", _raw(path)[1])
    common = ["--model", str(braai_path), "--channels", "SCI,REF,DIFF",
              "--normalisation", "l2", "--precision", "float32", "--n-jobs", "1"]  # fmt: skip
    assert infer.main(["--cutouts", str(packets), *common]) == 0
    assert infer.main(["--cutouts", str(stamps), *common]) == 0
    every_packet = Table.read(packets / "infer_results.ecsv")
    status = list(every_packet["status"])
    assert status.count("edge") == 3 and status.count("unreadable") == 6
    from_packets = every_packet[every_packet["status"] == "scored"]
    from_fits = Table.read(stamps / "infer_results.ecsv")
    assert len(from_packets) == len(from_fits) == 13
    by_name = {
        Path(f).stem: p for f, p in zip(from_fits["filename"], from_fits["label1"], strict=True)
    }
    for name, p, candid in zip(
        from_packets["filename"], from_packets["label1"], from_packets["cand_ID"], strict=True
    ):
        assert Path(name).stem.endswith(str(candid))
        assert abs(by_name[Path(name).stem] - p) <= 1e-6
    for column in ("objectId", "rb", "drb"):
        assert column in from_packets.colnames
    assert (packets / "infer_results_vs_survey.png").is_file()


def test_braai_scores_fink_parquet_as_ztf_sample_fits(ztf_alerts, ztf_folder, braai, tmp_path):
    from otrain.inference import score_files

    references = list(alerts.iter_references(FINK))
    table, _ = score_files(braai, references, precision="float32", every_input=True)
    table = table[table["status"] == "scored"]
    files = [str(ztf_folder / "cutouts" / f"ZTF_{c}.fits") for c in table["cand_ID"]]
    fits_table, _ = score_files(braai, files, precision="float32")
    assert len(table) == len(fits_table) >= 50
    np.testing.assert_allclose(
        np.asarray(table["label1"], float), np.asarray(fits_table["label1"], float), atol=1e-6
    )
    assert np.isfinite(np.asarray(table["drb"], float)).all()


def test_reader_processes_score_as_one_thread(ztf_alerts, braai, monkeypatch):
    """Where the network leaves cores free (a GPU), reader processes read the chunks
    into shared memory: same rows, same scores, bad and duplicated files included."""
    from otrain import cutouts, inference

    # Every file six times: a file listed twice is reported twice.
    from otrain.datacube import find_cutouts
    from otrain.inference import score_files

    references = find_cutouts(ztf_alerts) * 6
    threaded, _ = score_files(braai, references, n_jobs=1, precision="float32",
                              every_input=True, chunk_size=128)  # fmt: skip
    monkeypatch.setattr(inference, "_cores_for_reading", lambda: 2)
    monkeypatch.setattr(inference, "_FILES_PER_READER", 1)
    for future in [cutouts._reader_pool(2).submit(cutouts._started) for _ in range(2)]:
        future.result()  # started before the run: the chunks after the first use them
    used = []
    original = cutouts._read_in_processes

    def counted(*args):
        used.append(len(args[2]))
        return original(*args)

    monkeypatch.setattr(cutouts, "_read_in_processes", counted)
    table, summary = score_files(braai, references, n_jobs=2, precision="float32",
                                 every_input=True, chunk_size=128)  # fmt: skip
    assert sum(used) >= len(references) - 2 * 128
    assert list(table["filename"]) == list(threaded["filename"]) == references
    assert list(table["status"]) == list(threaded["status"])
    unreadable = list(table["status"]).count("unreadable")
    assert unreadable and unreadable % 6 == 0
    scored = table["status"] == "scored"
    np.testing.assert_allclose(np.asarray(table["label1"][scored], float),
                               np.asarray(threaded["label1"][scored], float),
                               atol=1e-6)  # fmt: skip
    edge = list(threaded["status"]).count("edge")
    assert summary["n_edge"] == edge and edge and edge % 6 == 0


def test_cores_left_to_reading_follow_the_network_threads(monkeypatch):
    import os

    import tensorflow as tf

    from otrain import inference

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: [])
    monkeypatch.setattr(tf.config.threading, "get_intra_op_parallelism_threads", lambda: 0)
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    assert inference._cores_for_reading() == 0  # the network takes every core
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "2")
    assert inference._cores_for_reading() == 6
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: ["GPU:0"])
    assert inference._cores_for_reading() == 8
    # No reader processes on a CPU whose cores the network takes, whatever n_jobs asks.
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: [])
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS")
    assert inference._readers_for_run(-1, range(100_000)) == 1


def test_stream_scores_in_batches_as_load_cutouts(ztf_alerts, braai):
    with open(ztf_alerts / "472263571115115000.avro", "rb") as handle:
        reader = fastavro.reader(handle)
        record = next(reader)
    with open(ztf_alerts / "396522680015040001.avro", "rb") as handle:
        edge = next(fastavro.reader(handle))
    stream = [record] * 5 + [edge] + [record] * 2
    batches = list(alerts.score_alerts(braai, iter(stream), batch_size=3, precision="float32"))
    assert [len(b.ids) for b in batches] == [3, 3, 1]
    assert sum(len(b.skipped) for b in batches) == 1 and "edge" in batches[1].skipped[0][1]
    image, _ = alerts.candidate_from_alert(record)
    expected = braai.predict_proba(image[np.newaxis])[0, 1]
    p_real = np.concatenate([b.p_real for b in batches])
    np.testing.assert_allclose(p_real, expected, atol=1e-6)
    assert batches[0].ids[0] == str(record["candid"])
    with pytest.raises(ValueError, match="batch_size"):
        next(alerts.score_alerts(braai, [], batch_size=0))


def test_rubin_alerts_scored_by_a_model_of_their_layout(tmp_path, capsys):
    if not RUBIN.is_file():
        pytest.skip(f"Rubin sample not found at {RUBIN}")
    from otrain.classifier import CutoutClassifier
    from otrain.model_files import save_model

    references = list(alerts.iter_references(RUBIN))
    X, keywords, _ = load_cutouts(references, channels=CHANNELS)
    y = (np.asarray(keywords["reliability"]) > 0.5).astype(int)
    y[:2] = [0, 1]
    clf = CutoutClassifier(network=tiny_network, epochs=1, batch_size=8, random_state=0)
    clf.fit(X, y)
    model = save_model(clf, tmp_path / "rubin.keras", channels=CHANNELS)
    alerts_dir = tmp_path / "alerts"
    alerts_dir.mkdir()
    shutil.copy(RUBIN, alerts_dir)
    assert infer.main(["--cutouts", str(alerts_dir), "--model", str(model), "--n-jobs", "1"]) == 0
    table = Table.read(alerts_dir / "infer_results.ecsv")
    assert len(table) == 25 and set(table["status"]) == {"scored"}
    np.testing.assert_allclose(sorted(table["reliability"]), sorted(keywords["reliability"]))
    assert set(table["cand_ID"]) == set(keywords["candid"])
    dat = (alerts_dir / "infer_results.dat").read_text()
    assert "reliability" not in dat
    assert (alerts_dir / "infer_results_vs_survey.png").is_file()


def test_survey_plot(tmp_path):
    table = Table({"label1": [0.1, 0.9, 0.8], "drb": [0.2, 0.95, np.nan], "rb": [0.3, 0.6, 0.7]})
    path = plots.plot_survey_scores(table, tmp_path / "vs.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert plots.plot_survey_scores(Table({"label1": [0.5]}), tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
