"""The layers every model carries: the robust normalisation's median."""

import numpy as np
import pytest

from otrain.networks import StampNormalisation, median_by_sorting


def _robust_reference(stamps):
    """The robust normalisation written with numpy, one stamp and channel at a time."""
    out = np.zeros(stamps.shape, np.float64)
    for i in range(stamps.shape[0]):
        for c in range(stamps.shape[3]):
            plane = stamps[i, :, :, c].astype(np.float64)
            usable = np.isfinite(plane) & (np.abs(plane) < 1e30)
            if not usable.any():
                continue
            median = np.median(plane[usable])
            scale = max(1.4826 * np.median(np.abs(plane[usable] - median)), 1e-12)
            out[i, :, :, c] = np.where(usable, np.arcsinh((plane - median) / scale / 10), 0)
    return out


def _awkward_stamps(shape, rng):
    """Stamps with NaN, inf, masking sentinels, repeated values and odd and even
    numbers of usable pixels; one channel wholly masked, one with a single pixel."""
    stamps = rng.normal(0, 5, shape).astype(np.float32)
    stamps[1] = np.round(stamps[1])  # many repeated values
    holes = rng.random(shape) < 0.2
    stamps[holes] = rng.choice([np.nan, np.inf, -np.inf, 3.4028235e38], holes.sum())
    stamps[2, :, :, 0] = np.nan
    stamps[3, :, :, -1] = np.nan
    stamps[3, -1, -1, -1] = 7.0
    stamps[4, :, :, 0] = 2.0  # constant: no spread at all
    return stamps


@pytest.mark.parametrize("shape", [(6, 15, 15, 3), (6, 16, 16, 1), (6, 41, 63, 2)])
def test_robust_normalisation_matches_numpy(shape):
    stamps = _awkward_stamps(shape, np.random.default_rng(shape[1]))
    got = np.asarray(StampNormalisation("robust")(stamps))
    np.testing.assert_allclose(got, _robust_reference(stamps), rtol=2e-6, atol=2e-6)
    assert np.isfinite(got).all()


@pytest.mark.parametrize("shape", [(6, 15, 15, 3), (6, 16, 16, 1), (5, 1, 1, 2), (5, 1, 2, 1)])
def test_the_sorted_median_of_onnx_export_gives_the_same_numbers(shape):
    """Selection (scoring and training) and sorting (ONNX export) agree to the bit."""
    stamps = _awkward_stamps(shape, np.random.default_rng(7))
    layer = StampNormalisation("robust")
    selected = np.asarray(layer(stamps))
    with median_by_sorting():
        sorted_ = np.asarray(layer(stamps))
    np.testing.assert_array_equal(selected, sorted_)


def _ops_of_the_traced_layer():
    import tensorflow as tf

    layer = StampNormalisation("robust")
    graph = tf.function(layer).get_concrete_function(tf.TensorSpec((None, 9, 9, 1))).graph
    return {op.type for op in graph.get_operations()}


def test_selection_on_the_cpu_sorting_on_a_gpu(monkeypatch):
    """NthElement has a CPU kernel only: with a GPU in sight the median is sorted."""
    from otrain import networks

    monkeypatch.setattr(networks, "_gpu_visible", lambda: False)
    ops = _ops_of_the_traced_layer()
    assert "NthElement" in ops and "TopKV2" not in ops
    monkeypatch.setattr(networks, "_gpu_visible", lambda: True)
    ops = _ops_of_the_traced_layer()
    assert "NthElement" not in ops and "TopKV2" in ops
