"""Ranking unlabelled candidates: the strategies, on stamps and on files, and the page's use."""

import numpy as np
import pytest
from conftest import cosmic_ray, point_source, tiny_network, write_stamp

from otrain.active_learning import STRATEGIES, order_by_scores, rank_candidates
from otrain.exceptions import LabellingError

# -- orders from scores (no network) --------------------------------------------------


def test_uncertainty_puts_the_closest_to_the_threshold_first():
    p = np.array([0.9, 0.45, np.nan, 0.05, 0.62])
    assert order_by_scores("uncertainty", 5, p_real=p, threshold=0.5).tolist() == [1, 4, 0, 3, 2]
    # The threshold is the model's, not 0.5.
    assert order_by_scores("uncertainty", 5, p_real=p, threshold=0.8)[0] == 0


def test_mc_dropout_score_name_and_random():
    std = np.array([0.01, 0.2, 0.05, np.nan])
    assert order_by_scores("mc-dropout", 4, p_real_std=std).tolist() == [1, 2, 0, 3]
    p = np.array([0.2, 0.9, 0.5, 0.7])
    assert order_by_scores("score", 4, p_real=p).tolist() == [1, 3, 2, 0]
    assert order_by_scores("name", 4).tolist() == [0, 1, 2, 3]
    a = order_by_scores("random", 50, random_state=3)
    assert sorted(a.tolist()) == list(range(50))
    assert np.array_equal(a, order_by_scores("random", 50, random_state=3))
    assert not np.array_equal(a, order_by_scores("random", 50, random_state=4))


def test_ties_are_broken_at_random_but_reproducibly():
    p = np.full(20, 0.3)
    first = order_by_scores("uncertainty", 20, p_real=p, random_state=1)
    assert np.array_equal(first, order_by_scores("uncertainty", 20, p_real=p, random_state=1))
    assert not np.array_equal(first, np.arange(20))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(strategy="entropy"), "strategy must be one of"),
        (dict(strategy="uncertainty"), "needs the model's scores"),
        (dict(strategy="mc-dropout"), "needs Monte-Carlo dropout scores"),
        (dict(strategy="score", p_real=[0.1, 0.2]), "2 scores for 3 candidates"),
    ],
)
def test_order_errors(kwargs, message):
    strategy = kwargs.pop("strategy")
    with pytest.raises(LabellingError, match=message):
        order_by_scores(strategy, 3, **kwargs)


def test_strategies_without_a_model():
    ranking = rank_candidates(None, ["a", "b", "c"], strategy="random", random_state=0)
    assert sorted(ranking.order.tolist()) == [0, 1, 2] and ranking.p_real is None
    with pytest.raises(LabellingError, match="needs a model"):
        rank_candidates(None, ["a"], strategy="uncertainty")
    assert set(STRATEGIES) == {"random", "uncertainty", "mc-dropout", "score", "name"}


# -- with a fitted network -------------------------------------------------------------


@pytest.fixture(scope="module")
def stamps():
    rng = np.random.default_rng(0)
    real = [point_source(32, flux=rng.uniform(40, 400), rng=rng) for _ in range(60)]
    bogus = [cosmic_ray(32, rng=rng) for _ in range(60)]
    X = np.array(real + bogus, dtype=np.float32)[..., np.newaxis]
    y = np.array([1] * 60 + [0] * 60)
    return X, y


@pytest.fixture(scope="module")
def model_file(stamps, tmp_path_factory):
    from otrain import CutoutClassifier, save_model

    X, y = stamps
    classifier = CutoutClassifier(
        network=tiny_network, epochs=3, batch_size=32, learning_rate=5e-3, random_state=0
    ).fit(X, y, channels=("DIFF",))
    classifier.set_threshold(0.4)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    save_model(classifier, path)
    return classifier, path


@pytest.fixture(scope="module")
def candidate_files(stamps, tmp_path_factory):
    X, _ = stamps
    folder = tmp_path_factory.mktemp("candidates")
    paths = [str(write_stamp(folder / f"c{i:03d}.fits", X[i, ..., 0])) for i in range(0, 120, 4)]
    write_stamp(folder / "edge.fits", X[1, ..., 0], EDGE="True")
    (folder / "zz_bad.fits").write_bytes(b"not FITS")
    return folder, paths


def test_ranking_stamps_by_uncertainty_and_mc_dropout(model_file, stamps):
    classifier, _ = model_file
    X, _ = stamps
    ranking = rank_candidates(classifier, X[:40], strategy="uncertainty")
    p = classifier.predict_proba(X[:40])[:, 1]
    assert ranking.threshold == 0.4
    np.testing.assert_allclose(ranking.p_real, p, rtol=1e-5)
    distance = np.abs(p - 0.4)[ranking.order]
    assert np.all(np.diff(distance) >= -1e-6)
    mc = rank_candidates(classifier, X[:40], strategy="mc-dropout", mc_samples=5, random_state=0)
    assert np.all(mc.p_real_std >= 0) and mc.p_real_std.max() > 0
    assert np.all(np.diff(mc.p_real_std[mc.order]) <= 1e-9)


def test_ranking_files_from_a_model_file(model_file, candidate_files, stamps):
    classifier, path = model_file
    folder, paths = candidate_files
    files = [*paths, str(folder / "edge.fits"), str(folder / "zz_bad.fits")]
    ranking = rank_candidates(path, files, strategy="uncertainty")
    # The edge cutout and the unreadable file are not scored: they come last.
    assert set(ranking.order[-2:].tolist()) == {len(paths), len(paths) + 1}
    assert np.isnan(ranking.p_real[-2:]).all() and np.isfinite(ranking.p_real[:-2]).all()
    assert [reason for _, reason in ranking.skipped if "zz_bad" in reason]
    # The files hold stamps[::4]: the same probabilities as the classifier's own.
    X = stamps[0][::4]
    np.testing.assert_allclose(ranking.p_real[:-2], classifier.predict_proba(X)[:, 1], atol=1e-5)


def test_a_model_that_does_not_fit_the_cutouts_is_one_clear_error(model_file, tmp_path):
    from conftest import write_triplet

    _, path = model_file
    # Files without the model's DIFF channel.
    noise = np.zeros((32, 32))
    files = [str(write_triplet(tmp_path / f"t{i}.fits", noise, noise, noise)) for i in range(2)]
    from astropy.io import fits

    for name in files:
        with fits.open(name, mode="update") as hdul:
            hdul[3].name = "DIFFIMG"
    with pytest.raises(LabellingError, match="could score none of the 2 candidates"):
        rank_candidates(path, files, strategy="uncertainty")
    # Stamps smaller than the model's.
    small = [str(write_stamp(tmp_path / f"small{i}.fits", np.zeros((16, 16)))) for i in range(2)]
    with pytest.raises(LabellingError, match="16x16"):
        rank_candidates(path, small, strategy="uncertainty")


def test_the_page_orders_by_uncertainty_and_caches_the_scores(
    model_file, candidate_files, tmp_path
):
    from otrain.labelling import SCORES_NAME, open_session

    _, path = model_file
    folder, paths = candidate_files
    lines = []
    session = open_session(folder, tmp_path / "t", model=path, say=lines.append)
    assert session.description.startswith("order: uncertainty · model tiny.keras")
    assert any("scoring 32 candidates" in line for line in lines)
    assert (tmp_path / "t" / SCORES_NAME).is_file()
    scored = np.isfinite(session.p_real)
    distance = np.abs(session.p_real - 0.4)
    shown = [i for i in session.queue(40) if scored[i]]
    assert np.all(np.diff(distance[shown]) >= -1e-6)
    first = session.queue(1)[0]
    view = session.candidate(first)
    assert view["p_real"] == pytest.approx(session.p_real[first], abs=1e-4)
    session.decide([{"id": first, "label": "real"}])
    row = (tmp_path / "t" / "labels.csv").read_text().splitlines()[-1].split(",")
    assert float(row[3]) == pytest.approx(session.p_real[first], rel=1e-4)
    # A restart reads the scores back instead of scoring again.
    lines.clear()
    again = open_session(folder, tmp_path / "t", model=path, say=lines.append)
    assert any("read from" in line for line in lines)
    assert not any(line.startswith("scoring") for line in lines)
    np.testing.assert_allclose(again.p_real, session.p_real, equal_nan=True)
    # mc-dropout scores are other scores: computed once more, with their spread.
    mc = open_session(
        folder, tmp_path / "t", model=path, order="mc-dropout", mc_samples=3, say=lines.append
    )
    assert np.nanmax(mc.p_real_std) > 0
