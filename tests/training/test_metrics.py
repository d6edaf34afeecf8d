"""Masked reconstruction metrics and baselines: hand-computed values, and the offline `evaluate` module."""

import numpy as np
import pytest

from brainlm_hf.metrics import EVALUATE_MODULE, baseline_predictions, masked_reconstruction_metrics


def test_metrics_on_hand_computed_values():
    target = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    prediction = np.array([[[9.0, 2.5, 2.0, 9.0]]])
    mask = np.array([[[0, 1, 1, 0]]])  # only timepoints 1 and 2 are scored: targets 2, 3; predictions 2.5, 2
    metrics = masked_reconstruction_metrics(prediction, target, mask)
    assert metrics["mse"] == pytest.approx((0.25 + 1.0) / 2)
    assert metrics["r2"] == pytest.approx(1 - 1.25 / 0.5)  # SST around the masked mean 2.5: 0.25 + 0.25
    assert metrics["pearson_r"] == pytest.approx(-1.0)
    assert metrics["num_masked"] == 2
    with pytest.raises(ValueError, match="selects no timepoint"):
        masked_reconstruction_metrics(prediction, target, np.zeros_like(mask))


def test_baselines_on_hand_computed_values():
    signal = np.array([[[0.0, 10.0, 20.0, 30.0, 40.0], [5.0, 5.0, 5.0, 5.0, 5.0]]])
    mask = np.array([[[0, 1, 1, 0, 1], [1, 1, 1, 1, 1]]])
    baselines = baseline_predictions(signal, mask)
    # region 0: visible timepoints 0 and 3 (values 0 and 30); region 1: nothing visible -> 0
    np.testing.assert_allclose(baselines["region_mean"][0, 0], 15.0)
    np.testing.assert_allclose(baselines["region_mean"][0, 1], 0.0)
    np.testing.assert_allclose(baselines["linear_interpolation"][0, 0], [0, 10, 20, 30, 30])  # constant after t = 3
    np.testing.assert_allclose(baselines["linear_interpolation"][0, 1], 0.0)


def test_the_evaluate_module_loads_offline_and_agrees():
    import evaluate

    rng = np.random.default_rng(0)
    target = rng.normal(size=(3, 4, 10))
    prediction = target + rng.normal(scale=0.5, size=target.shape)
    mask = (rng.random(target.shape) < 0.4).astype(np.float32)
    metric = evaluate.load(EVALUATE_MODULE)
    for p, t, m in zip(prediction, target, mask, strict=True):
        metric.add(predictions=p.ravel(), references=t.ravel(), mask=m.ravel())
    result = metric.compute()
    expected = masked_reconstruction_metrics(prediction, target, mask)
    for key in ("mse", "r2", "pearson_r"):
        assert result[key] == pytest.approx(expected[key], rel=1e-5)


def test_order_sensitive_metrics_take_keywords_only():
    """R^2 is not symmetric: a positional (possibly swapped) call must be impossible."""
    from brainlm_hf.metrics import classification_metrics, regression_metrics

    targets, predictions = np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.0, 1.0, 2.0, 6.0])
    with pytest.raises(TypeError):
        regression_metrics(predictions, targets)
    with pytest.raises(TypeError):
        classification_metrics(np.eye(2), np.array([0, 1]))
    right = regression_metrics(predictions=predictions, targets=targets)["r2"]
    swapped = regression_metrics(predictions=targets, targets=predictions)["r2"]
    assert right == pytest.approx(1 - 9 / 5) and swapped == pytest.approx(1 - 9 / 20.75)  # different: order matters
