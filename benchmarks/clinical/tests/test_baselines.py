"""Benchmark splits, metrics, functional connectivity and the classic predictors."""

import numpy as np
import pytest
import torch

from benchmarks.clinical.baselines import (
    baseline_inputs,
    correlation_matrices,
    expand_positions,
    functional_connectivity,
    gcn_fit_predict,
    linear_probe,
    lstm_fit_predict,
    mlp_probe,
    standardize_targets,
    subject_kfold,
    svm_probe,
    time_split,
)
from brainlm_hf.metrics import classification_metrics, regression_metrics


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny torch models: one thread is faster (and the benchmark runs them the same way)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_subject_kfold_is_subject_disjoint_and_tests_everyone_once():
    subjects = np.array(["a", "b", "a", "c", "d", "b", "e", "f", "e", "g"])
    folds = subject_kfold(subjects, n_splits=3, seed=0)
    assert len(folds) == 3
    tested = np.concatenate([test for _, test in folds])
    np.testing.assert_array_equal(np.sort(tested), np.arange(len(subjects)))  # every recording tested exactly once
    for train, test in folds:
        assert not set(subjects[train]) & set(subjects[test])
        assert len(train) + len(test) == len(subjects)
    assert [t.tolist() for _, t in subject_kfold(subjects, 3, 0)] == [t.tolist() for _, t in folds]
    assert [t.tolist() for _, t in subject_kfold(subjects, 3, 1)] != [t.tolist() for _, t in folds]
    for bad in (1, 8):
        with pytest.raises(ValueError, match="n_splits"):
            subject_kfold(subjects, bad, 0)


def test_time_split_leaves_a_gap_and_tests_every_window_once():
    folds = time_split(12, n_splits=5, gap=1)
    tested = np.concatenate([test for _, test in folds])
    np.testing.assert_array_equal(np.sort(tested), np.arange(12))
    for train, test in folds:
        assert np.all(np.diff(test) == 1)  # a contiguous block
        distance = np.abs(train[:, None] - test[None, :]).min()
        assert distance >= 2  # one window of gap: never adjacent, never overlapping
    # the hand-worked middle fold: blocks [0 1 2] [3 4 5] [6 7] [8 9] [10 11]; block 2 drops windows 5 and 8
    np.testing.assert_array_equal(folds[2][0], [0, 1, 2, 3, 4, 9, 10, 11])
    np.testing.assert_array_equal(time_split(6, 2, gap=0)[0][0], [3, 4, 5])
    with pytest.raises(ValueError, match="n_splits"):
        time_split(3, 4)
    with pytest.raises(ValueError, match="no training"):
        time_split(3, 3, gap=2)


def test_expand_positions_indexes_each_recordings_windows():
    np.testing.assert_array_equal(expand_positions([0, 2], num_recordings=2, num_windows=3), [0, 2, 3, 5])


def test_functional_connectivity_by_hand():
    x, y, z = [1.0, 2, 3, 4], [1.0, 3, 2, 4], [2.0, 1, 4, 3]
    recording = np.stack([x, y, z], axis=1)[None]  # (1, T=4, V=3)
    # centred: x [-1.5 -.5 .5 1.5], y [-1.5 .5 -.5 1.5], z [-.5 -1.5 1.5 .5]; sum of squares 5 each
    # r(x, y) = 4 / 5, r(x, z) = 3 / 5, r(y, z) = 0 / 5
    np.testing.assert_allclose(functional_connectivity(recording), [np.arctanh([0.8, 0.6, 0.0])], atol=1e-12)
    matrices = correlation_matrices(recording)
    np.testing.assert_allclose(matrices[0], np.corrcoef(recording[0].T), atol=1e-12)
    with pytest.raises(ValueError, match="constant region"):
        correlation_matrices(np.ones((1, 4, 2)))


def test_standardize_and_metrics_by_hand():
    train, test = standardize_targets(np.array([1.0, 3.0]), np.array([2.0, 5.0]))
    np.testing.assert_allclose(train, [-1, 1])
    np.testing.assert_allclose(test, [0, 3])  # training mean 2 and std 1, not the test set's
    with pytest.raises(ValueError, match="constant"):
        standardize_targets(np.ones(3), np.ones(2))
    metrics = regression_metrics(predictions=np.array([1.0, 2.0]), targets=np.array([0.0, 2.0]))
    assert (metrics["mse"], metrics["r2"]) == (0.5, 0.5)  # R^2 around the targets' mean: 1 - 1 / 2
    labels = np.array([0, 0, 1, 2])
    probabilities = np.array([[0.8, 0.1, 0.1], [0.05, 0.7, 0.25], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    metrics = classification_metrics(scores=probabilities, labels=labels)
    assert metrics["accuracy"] == 0.75
    assert metrics["balanced_accuracy"] == pytest.approx((0.5 + 1 + 1) / 3)
    # one-vs-rest AUROC: class 0, positives 0.8 and 0.05 vs negatives 0.1, 0.1: 2 of 4 pairs -> 0.5; classes 1, 2: 1
    assert metrics["auroc"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert np.isnan(classification_metrics(scores=probabilities[:2], labels=np.array([0, 0]))["auroc"])


def synthetic_cohort(seed: int = 0, recordings: int = 60, timepoints: int = 40, regions: int = 6):
    """Recordings `(N, T, V)` where the target sets how strongly regions 0-2 share a common signal."""
    rng = np.random.default_rng(seed)
    target = rng.uniform(0, 1, recordings)
    shared = rng.standard_normal((recordings, timepoints, 1))
    series = rng.standard_normal((recordings, timepoints, regions))
    series[:, :, :3] += 2 * target[:, None, None] * shared
    series = (series - series.mean(1, keepdims=True)) / series.std(1, keepdims=True)
    return series.astype(np.float32), (target - target.mean()) / target.std()


PREDICTORS = {
    "linear": (linear_probe, lambda s: functional_connectivity(s)),
    "svm": (svm_probe, lambda s: functional_connectivity(s)),
    "mlp": (mlp_probe, lambda s: functional_connectivity(s)),
    "lstm": (lstm_fit_predict, lambda s: s),
    "gcn": (gcn_fit_predict, correlation_matrices),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_predictors_beat_the_mean_on_a_known_regression(name):
    predictor, features = PREDICTORS[name]
    series, target = synthetic_cohort()
    inputs, groups = features(series), np.arange(len(series))
    prediction = predictor(inputs[:45], target[:45], groups[:45], inputs[45:], False, 0)
    assert prediction.shape == (15,)
    mean_mse = np.mean((target[45:] - target[:45].mean()) ** 2)
    assert np.mean((prediction - target[45:]) ** 2) < 0.6 * mean_mse


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_predictors_classify_a_known_problem(name):
    predictor, features = PREDICTORS[name]
    series, target = synthetic_cohort(seed=1)
    labels = (target > 0).astype(int)
    inputs, groups = features(series), np.arange(len(series)) % 5
    probabilities = predictor(inputs[:45], labels[:45], groups[:45], inputs[45:], True, 0)
    assert probabilities.shape == (15, 2)
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-6)
    assert (probabilities.argmax(1) == labels[45:]).mean() >= 0.8  # chance is about 0.5


@pytest.mark.slow
def test_predictors_are_deterministic_for_a_seed():
    series, target = synthetic_cohort()
    runs = [
        gcn_fit_predict(
            correlation_matrices(series[:40]), target[:40], np.arange(40), correlation_matrices(series[40:]), False, 3
        )
        for _ in range(2)
    ]
    np.testing.assert_array_equal(*runs)


def test_baseline_inputs_cover_the_benchmark_rows():
    series, _ = synthetic_cohort(recordings=4)
    rows = baseline_inputs(series)
    assert list(rows) == ["Raw data (ridge)", "SVR / SVC (FC)", "MLP (FC)", "LSTM (time series)", "GCN (FC graph)"]
    shapes = [inputs.shape for inputs, _ in rows.values()]
    assert shapes == [(4, 240), (4, 15), (4, 15), (4, 40, 6), (4, 6, 6)]
