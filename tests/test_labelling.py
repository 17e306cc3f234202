"""otrain-label without a browser: the store, the stamps, the server's routes, the CLI."""

import http.client
import json
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import point_source, write_stamp, write_triplet

from otrain.cli import label as label_cli
from otrain.exceptions import LabellingError, OutputError
from otrain.labelling import (
    LABELS_COLUMNS,
    LabellingSession,
    LabelStore,
    encode_png,
    make_server,
    open_session,
    read_candidate,
    serve_in_thread,
    stamp_png,
)


@pytest.fixture
def candidates(tmp_path):
    """Six triplet candidates and one corrupt file."""
    folder = tmp_path / "candidates"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(6):
        sci = point_source(32, flux=200.0 * (i + 1), rng=rng)
        diff = point_source(32, flux=100.0 * (i + 1), rng=rng)
        diff[0, :3] = np.nan
        write_triplet(
            folder / f"cand{i}.fits",
            sci,
            rng.normal(0, 1, (32, 32)),
            diff,
            MAG=18.0 + i / 10,
            FWHM=2.5,
            RA=150.0 + i / 3600,
            DEC=2.0,
        )
    (folder / "zz_corrupt.fits").write_bytes(b"SIMPLE  = not really a FITS file")
    return folder


def _rows(path):
    lines = Path(path).read_text().splitlines()
    return [line.split(",") for line in lines[1:]]


# -- the store ---------------------------------------------------------------------


def test_store_appends_copies_and_last_word_wins(candidates, tmp_path):
    out = tmp_path / "training"
    store = LabelStore(out, user="tester")
    first, second = str(candidates / "cand0.fits"), str(candidates / "cand1.fits")
    store.record(first, "real", p_real=0.25)
    store.record(second, "bogus")
    assert (out / "true" / "cand0.fits").read_bytes() == Path(first).read_bytes()
    assert (out / "false" / "cand1.fits").exists()
    # A changed mind moves the copy; the original never changes.
    store.record(first, "bogus")
    assert not (out / "true" / "cand0.fits").exists()
    assert (out / "false" / "cand0.fits").exists()
    assert Path(first).exists()
    rows = _rows(out / "labels.csv")
    assert (out / "labels.csv").read_text().splitlines()[0] == ",".join(LABELS_COLUMNS)
    assert [r[:2] for r in rows] == [
        ["cand0.fits", "real"],
        ["cand1.fits", "bogus"],
        ["cand0.fits", "bogus"],
    ]
    assert rows[0][3] == "0.25" and rows[0][4] == "tester" and rows[1][3] == ""
    # Reopening reads the same state back.
    again = LabelStore(out)
    assert again.labels == {"cand0.fits": "bogus", "cand1.fits": "bogus"}
    assert again.history == ["cand1.fits", "cand0.fits"]


def test_undo_is_a_new_row_and_removes_the_copy(candidates, tmp_path):
    out = tmp_path / "training"
    store = LabelStore(out)
    references = {p.name: str(p) for p in candidates.glob("cand*.fits")}
    store.record(references["cand0.fits"], "real")
    store.record(references["cand1.fits"], "skip")
    assert store.undo(references) == "cand1.fits"
    assert store.undo(references) == "cand0.fits"
    assert store.undo(references) is None
    assert not (out / "true" / "cand0.fits").exists()
    assert store.labels == {}
    assert [r[1] for r in _rows(out / "labels.csv")] == ["real", "skip", "undo", "undo"]
    assert LabelStore(out).labels == {}


def test_link_makes_hard_links(candidates, tmp_path):
    store = LabelStore(tmp_path / "training", link=True)
    store.record(str(candidates / "cand2.fits"), "real")
    copy = tmp_path / "training" / "true" / "cand2.fits"
    assert os.path.samefile(copy, candidates / "cand2.fits")


def test_an_earlier_file_of_the_same_name_is_never_overwritten(candidates, tmp_path):
    out = tmp_path / "training"
    (out / "true").mkdir(parents=True)
    (out / "true" / "cand3.fits").write_bytes(b"an earlier batch")
    store = LabelStore(out)
    with pytest.raises(LabellingError, match="never overwritten"):
        store.record(str(candidates / "cand3.fits"), "real")
    assert (out / "true" / "cand3.fits").read_bytes() == b"an earlier batch"
    assert _rows(out / "labels.csv") == []
    # Filed as bogus, the earlier true/ file is not ours: it stays.
    store.record(str(candidates / "cand3.fits"), "bogus")
    assert (out / "true" / "cand3.fits").read_bytes() == b"an earlier batch"
    assert (out / "false" / "cand3.fits").exists()


def test_a_crash_between_row_and_copy_is_finished_on_restart(candidates, tmp_path):
    out = tmp_path / "training"
    store = LabelStore(out)
    store.record(str(candidates / "cand0.fits"), "real")
    # The server died after the row of cand1 and before its copy, and in the middle
    # of writing a third row.
    with open(out / "labels.csv", "a") as handle:
        handle.write("cand1.fits,bogus,2026-01-01T00:00:00.000+00:00,,x\ncand2.fits,re")
    (out / "true" / "cand0.fits").unlink()
    again = LabelStore(out)
    assert again.n_bad_rows == 1
    problems = again.sync_all([str(p) for p in sorted(candidates.glob("cand*.fits"))])
    assert problems == []
    assert (out / "true" / "cand0.fits").exists() and (out / "false" / "cand1.fits").exists()
    again.record(str(candidates / "cand2.fits"), "real")
    assert LabelStore(out).labels == {
        "cand0.fits": "real",
        "cand1.fits": "bogus",
        "cand2.fits": "real",
    }


def test_a_foreign_labels_file_is_refused(tmp_path):
    (tmp_path / "labels.csv").write_text("a,b\n1,2\n")
    with pytest.raises(LabellingError, match="not a labels file"):
        LabelStore(tmp_path)


def test_rate_counts_recent_decisions(candidates, tmp_path):
    store = LabelStore(tmp_path / "t")
    for i in range(4):
        store.record(str(candidates / f"cand{i}.fits"), "skip")
    # Four decisions within a second: at most 4 in the 30 s floor = 8 per minute.
    assert store.rate() == pytest.approx(8.0, abs=0.5)


# -- stamps ------------------------------------------------------------------------


def _decode_png(data):
    """Palette indices of an 8-bit palette PNG written by encode_png."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20]), int.from_bytes(data[20:24])
    start = data.index(b"IDAT") + 4
    length = int.from_bytes(data[start - 8 : start - 4])
    raw = np.frombuffer(zlib.decompress(data[start : start + length]), np.uint8)
    return raw.reshape(height, width + 1)[:, 1:]


def test_png_round_trip_and_matplotlib_reads_it(tmp_path):
    import matplotlib.image

    indices = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    data = encode_png(indices)
    assert np.array_equal(_decode_png(data), indices)
    (tmp_path / "x.png").write_bytes(data)
    rgb = matplotlib.image.imread(tmp_path / "x.png")
    assert rgb.shape[:2] == (3, 4)


def test_stamp_is_zscaled_upscaled_and_marks_nan():
    plane = np.random.default_rng(0).normal(0, 1, (21, 21))
    plane[20, 0] = np.nan  # FITS row 20 = the top row on screen
    plane[10, 10] = 1e6
    png, (vmin, vmax) = stamp_png(plane)
    indices = _decode_png(png)
    assert indices.shape == (210, 210)  # 10 x 21 >= 200
    assert np.all(indices[:10, :10] == 255)  # NaN -> the magenta entry
    assert np.all(indices[100:110, 100:110] == 254)  # clipped bright pixel
    from astropy.visualization import ZScaleInterval

    # The limits otrain's galleries use, the 1e6 outlier clipped rather than used.
    assert (vmin, vmax) == pytest.approx(ZScaleInterval().get_limits(plane[np.isfinite(plane)]))
    assert vmax < 100


def test_read_candidate_gives_channels_keywords_or_an_error(candidates):
    view = read_candidate(str(candidates / "cand1.fits"))
    assert view["channels"] == ["SCI", "REF", "DIFF"]
    assert len(view["images"]) == 3 and view["images"][0].startswith("data:image/png;base64,")
    assert view["mag"] == pytest.approx(18.1) and view["nan_pixels"] == 3
    assert view["ra"] == pytest.approx(150.0 + 1 / 3600)
    bad = read_candidate(str(candidates / "zz_corrupt.fits"))
    assert set(bad) == {"error"} and "zz_corrupt.fits" in bad["error"]


def test_single_hdu_files_show_their_one_image(tmp_path):
    write_stamp(tmp_path / "one.fits", point_source(24), MAG=17.0)
    view = read_candidate(str(tmp_path / "one.fits"))
    assert view["channels"] == ["IMAGE"] and len(view["images"]) == 1


# -- the session and the server ------------------------------------------------------


@pytest.fixture
def served(candidates, tmp_path):
    session = open_session(candidates, tmp_path / "training", order="name", say=lambda m: None)
    server, url = make_server(session)
    serve_in_thread(server)
    yield session, server, url
    server.shutdown()
    server.server_close()


def _request(server, method, path, body=None, headers=None, host=None):
    port = server.server_address[1]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = dict(headers or {})
    if host is not None:
        headers["Host"] = host
    if body is not None:
        headers.setdefault("Content-Type", "application/json")
        body = json.dumps(body)
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    try:
        data = json.loads(data)
    except ValueError:
        pass
    return response.status, data


def test_routes_answer_and_decisions_are_filed(served, tmp_path):
    session, server, url = served
    assert url.startswith("http://127.0.0.1:") and "token" not in url
    status, page = _request(server, "GET", "/")
    assert status == 200 and b"otrain-label" in page
    status, state = _request(server, "GET", "/api/state")
    assert state["progress"]["total"] == 7 and state["description"] == "order: name"
    status, data = _request(server, "GET", "/api/queue?n=3")
    assert data["queue"] == [0, 1, 2]
    status, data = _request(
        server,
        "POST",
        "/api/label",
        {"decisions": [{"id": 0, "label": "real"}, {"id": 6, "label": "real"}]},
    )
    assert status == 200
    # The corrupt file (number 6, last by name) is filed as skip whatever the key.
    assert data["filed"] == [{"id": 0, "label": "real"}, {"id": 6, "label": "skip"}]
    assert data["progress"]["real"] == 1 and data["progress"]["skip"] == 1
    assert (tmp_path / "training" / "true" / "cand0.fits").exists()
    status, data = _request(server, "POST", "/api/undo", {"count": 2})
    assert data["undone"] == [6, 0] and data["progress"]["done"] == 0
    assert _request(server, "GET", "/api/queue?n=2")[1]["queue"] == [0, 1]


@pytest.mark.parametrize(
    "path",
    [
        "/static/../labels.csv",
        "/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2fpyproject.toml",
        "/api/candidate/../../etc/passwd",
        "/api/candidate/..%2F..%2Fetc%2Fpasswd",
        "/api/candidate/-1",
        "/api/candidate/7",
        "/api/candidate/cand0.fits",
        "//etc/passwd",
    ],
)
def test_no_path_reaches_a_file_outside_the_candidates(served, path):
    _, server, _ = served
    status, data = _request(server, "GET", path)
    assert status in (400, 404)
    assert b"root:" not in json.dumps(data).encode()


def test_bad_posts_are_refused(served):
    _, server, _ = served
    assert (
        _request(server, "POST", "/api/label", {"decisions": [{"id": 0, "label": "undo"}]})[0]
        == 409
    )
    assert (
        _request(server, "POST", "/api/label", {"decisions": [{"id": 99, "label": "real"}]})[0]
        == 404
    )
    # Not JSON: a foreign web page cannot post a decision without a preflight.
    status, _ = _request(server, "POST", "/api/label", None, {"Content-Type": "text/plain"})
    assert status == 409


def test_loopback_refuses_a_foreign_host_header(served):
    _, server, _ = served
    assert _request(server, "GET", "/api/state", host="evil.example:80")[0] == 403


def test_non_loopback_host_needs_the_token(candidates, tmp_path):
    session = open_session(candidates, tmp_path / "training", say=lambda m: None)
    server, url = make_server(session, host="0.0.0.0")
    serve_in_thread(server)
    try:
        token = url.split("token=")[1]
        assert len(token) >= 20
        assert _request(server, "GET", "/")[0] == 403
        assert _request(server, "GET", "/api/state")[0] == 403
        assert _request(server, "GET", "/api/state?token=wrong")[0] == 403
        assert _request(server, "POST", "/api/label", {"decisions": []})[0] == 403
        assert _request(server, "GET", f"/api/state?token={token}")[0] == 200
        assert (
            _request(
                server,
                "GET",
                "/api/state",
                headers={"Cookie": f"otrain_label_token_{server.server_address[1]}={token}"},
            )[0]
            == 200
        )
    finally:
        server.shutdown()
        server.server_close()


def test_a_taken_port_is_one_clear_error(candidates, tmp_path):
    session = open_session(candidates, tmp_path / "training", say=lambda m: None)
    server, _ = make_server(session)
    try:
        with pytest.raises(OutputError, match=r"port \d+ on 127.0.0.1 is taken"):
            make_server(session, port=server.server_address[1])
    finally:
        server.server_close()


def test_session_queue_skips_labelled_candidates(candidates, tmp_path):
    store = LabelStore(tmp_path / "t")
    refs = [str(p) for p in sorted(candidates.glob("*.fits"))]
    store.record(refs[1], "bogus")
    session = LabellingSession(refs, store, order=[3, 1, 0, 2, 4, 5, 6])
    assert session.queue(3) == [3, 0, 2]
    with pytest.raises(LabellingError, match="no candidate number"):
        session.candidate(42)


# -- the command line ---------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--cutouts", "{empty}", "--out", "{tmp}/t"], "holds no cutout"),
        (["--cutouts", "{tmp}/missing", "--out", "{tmp}/t"], "no such folder"),
        (["--cutouts", "{cands}", "--out", "{tmp}/t", "--order", "uncertainty"], "needs a model"),
        (["--cutouts", "{tmp}/t/true", "--out", "{tmp}/t"], "true/ folder of --out"),
        (["--cutouts", "{cands}", "--out", "/proc/otrain"], "cannot create the output folder"),
        (
            ["--cutouts", "{cands}", "--out", "{tmp}/t", "--crossmatch", "{tmp}/none.csv"],
            "no such catalogue file",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, candidates, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "t" / "true").mkdir(parents=True)
    shutil.copy(candidates / "cand0.fits", tmp_path / "t" / "true")
    argv = [a.format(empty=tmp_path / "empty", tmp=tmp_path, cands=candidates) for a in argv]
    assert label_cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("otrain-label: error:") and message in err and "\n" not in err


def test_out_inside_the_candidates_is_not_scanned(candidates):
    session = open_session(candidates, candidates / "training", say=lambda m: None)
    session.decide([{"id": 0, "label": "real"}])
    again = open_session(candidates, candidates / "training", say=lambda m: None)
    assert len(again.references) == 7  # the copy in training/true/ is no candidate


def test_entry_point_serves_and_prints_the_url(candidates, tmp_path):
    command = [
        str(Path(sys.executable).with_name("otrain-label")),
        "--cutouts",
        str(candidates),
        "--out",
        str(tmp_path / "t"),
    ]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            lines = []
            for line in process.stdout:
                lines.append(line)
                if line.startswith("open http"):
                    break
            url = lines[-1].split()[1]
            assert url.startswith("http://127.0.0.1:")
            assert "7 candidates, 0 labelled already" in "".join(lines)
            from urllib.request import urlopen

            with urlopen(url + "api/state", timeout=10) as response:
                assert json.load(response)["progress"]["total"] == 7
        finally:
            process.terminate()
            process.wait(timeout=10)


def test_no_tensorflow_without_a_model(candidates, tmp_path):
    code = (
        "import sys; from otrain.labelling import open_session;"
        f"open_session({str(candidates)!r}, {str(tmp_path / 't')!r}, say=lambda m: None);"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_alerts_of_a_multi_alert_file_are_filed_as_their_own_fits(tmp_path):
    from conftest import SHARED

    parquet = SHARED / "ztf-alerts" / "fink_ztf_alerts.parquet"
    if not parquet.is_file():
        pytest.skip(f"real ZTF alerts not found at {parquet.parent} (../shared/data is absent)")
    pytest.importorskip("pyarrow")
    folder = tmp_path / "alerts"
    folder.mkdir()
    shutil.copy(parquet, folder)
    session = open_session(folder, tmp_path / "t", order="name", say=lambda m: None)
    assert len(session.references) == 51
    assert session.names[0].startswith("fink_ztf_alerts.parquet#")
    view = session.candidate(0)
    assert view["channels"] == ["SCI", "REF", "DIFF"] and np.isfinite(view["ra"])
    session.decide([{"id": 0, "label": "real"}])
    alert_id = session.names[0].split("#")[1]
    written = tmp_path / "t" / "true" / f"{alert_id}.fits"
    from otrain.cutouts import read_cutout

    image, keywords = read_cutout(written, channels=("SCI", "REF", "DIFF"))
    assert image.shape == (63, 63, 3) and keywords["candid"] == alert_id
    assert "#" not in "".join(p.name for p in (tmp_path / "t" / "true").iterdir())
    session.undo()
    assert not written.exists() and parquet.stat().st_size == (folder / parquet.name).stat().st_size


def test_a_connection_closed_by_the_browser_prints_no_traceback(capsys):
    from otrain.labelling._server import _Server

    server = object.__new__(_Server)  # handle_error needs no socket
    try:
        raise BrokenPipeError(32, "Broken pipe")
    except BrokenPipeError:
        server.handle_error(None, ("127.0.0.1", 1))
    assert capsys.readouterr().err == ""
    try:
        raise ValueError("a real bug")
    except ValueError:
        server.handle_error(None, ("127.0.0.1", 1))
    assert "a real bug" in capsys.readouterr().err
