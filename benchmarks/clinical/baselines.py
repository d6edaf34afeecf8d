# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Classic predictors of a subject-level variable from fMRI, and the splits and metrics of the clinical benchmark.

Every predictor has the signature `fit_predict(x_train, y_train, groups, x_test, classification, seed)`:

* `x_*`: its inputs, one row per recording (raw windows, functional connectivity, time series, FC matrices or
  BrainLM embeddings; see `baseline_inputs`);
* `y_train`: `(N,)` standardised targets (regression) or class labels `0 .. C-1` (classification);
* `groups`: `(N,)` the unit that must not straddle an inner split (the subject, or a window's position in time);
* returns `(M,)` predictions (regression) or `(M, C)` class probabilities (classification).

Each has a fixed small tuning budget spent on the training data only: scikit-learn models pick one of 2-3
regularisation values by 3-fold group cross-validation (`GridSearchCV`, `GroupKFold`); the torch models (LSTM, GCN)
pick a hidden size on one group-disjoint inner hold-out (25 %), then retrain on all training data for a fixed number
of epochs.

Functional connectivity (FC) is the upper triangle of each recording's Pearson correlation matrix, Fisher
z-transformed (`arctanh`). Needs scikit-learn (the `demo` extra).
"""

from collections.abc import Callable

import numpy as np
import torch
from sklearn.base import clone
from sklearn.linear_model import Ridge, RidgeClassifier
from sklearn.model_selection import GridSearchCV, GroupKFold, GroupShuffleSplit
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR

TORCH_GRID = {"hidden_size": (16, 64)}


# ----------------------------------------------------------------------------------------------------- splits


def subject_kfold(subjects, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """
    K-fold cross-validation by subject: each subject's recordings are all in the test set of exactly one fold.

    Args:
        subjects (array-like of shape `(N,)`): subject id of each recording.
        n_splits: number of folds, 2 .. number of distinct subjects.
        seed: seeds the assignment of subjects to folds.

    Returns `n_splits` pairs `(train_index, test_index)` of sorted recording indices.
    """
    subjects = np.asarray(subjects)
    unique = np.unique(subjects)
    if not 2 <= n_splits <= len(unique):
        raise ValueError(f"n_splits must be between 2 and the number of subjects ({len(unique)}), got {n_splits}.")
    shuffled = np.random.default_rng(seed).permutation(unique)
    folds = []
    for held_out in np.array_split(shuffled, n_splits):
        test = np.isin(subjects, held_out)
        folds.append((np.flatnonzero(~test), np.flatnonzero(test)))
    return folds


def time_split(num_windows: int, n_splits: int, gap: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """
    K-fold cross-validation by time within each recording, for recordings cut into `num_windows` consecutive
    non-overlapping windows: fold k tests on the k-th contiguous block of windows and trains on the windows outside
    it, leaving out the `gap` windows next to the block on each side (so training and test windows are separated by
    at least `gap` windows of time).

    Returns `n_splits` pairs `(train_positions, test_positions)` of window positions `0 .. num_windows - 1`; apply
    them to every recording (`expand_positions`).
    """
    if not 2 <= n_splits <= num_windows or gap < 0:
        raise ValueError(
            f"Need 2 <= n_splits <= num_windows ({num_windows}) and gap >= 0, got n_splits={n_splits}, gap={gap}: "
            "cut the recordings into more windows or use fewer splits."
        )
    positions = np.arange(num_windows)
    folds = []
    for block in np.array_split(positions, n_splits):
        train = positions[(positions < block[0] - gap) | (positions > block[-1] + gap)]
        if not len(train):
            raise ValueError(f"With {num_windows} windows, {n_splits} splits and gap {gap} a fold has no training.")
        folds.append((train, block))
    return folds


def expand_positions(positions: np.ndarray, num_recordings: int, num_windows: int) -> np.ndarray:
    """Window positions -> sample indices when sample `r * num_windows + p` is window `p` of recording `r`."""
    return (np.arange(num_recordings)[:, None] * num_windows + np.asarray(positions)[None]).ravel()


# ---------------------------------------------------------------------------------------------------- metrics


def standardize_targets(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both `(N,)` target vectors standardised with the mean and std of the training one."""
    scale = train.std()
    if scale == 0:
        raise ValueError("The training targets are constant: nothing to regress (check the target column).")
    return (train - train.mean()) / scale, (test - train.mean()) / scale


# ------------------------------------------------------------------------------------------------- features


def correlation_matrices(recordings: np.ndarray) -> np.ndarray:
    """`(N, T, V)` recordings -> `(N, V, V)` Pearson correlation matrices (a constant region is an error)."""
    recordings = np.asarray(recordings, dtype=np.float64)
    centred = recordings - recordings.mean(1, keepdims=True)
    norms = np.sqrt((centred**2).sum(1))
    if (norms == 0).any():
        raise ValueError("A recording has a constant region: its correlations are undefined (drop the region).")
    centred /= norms[:, None, :]
    return np.einsum("ntv,ntw->nvw", centred, centred)


def functional_connectivity(recordings: np.ndarray) -> np.ndarray:
    """`(N, T, V)` recordings -> `(N, V (V - 1) / 2)` Fisher-z Pearson correlations, upper triangle, row-major."""
    matrices = correlation_matrices(recordings)
    upper = np.triu_indices(matrices.shape[-1], k=1)
    return np.arctanh(np.clip(matrices[:, upper[0], upper[1]], -0.999999, 0.999999))


def baseline_inputs(recordings: np.ndarray) -> dict[str, tuple[np.ndarray, Callable]]:
    """
    The benchmark's classic rows for `(N, T, V)` normalised recordings: row name -> (inputs `(N, ...)`, predictor).
    """
    connectivity = functional_connectivity(recordings)
    return {
        "Raw data (ridge)": (recordings.reshape(len(recordings), -1), linear_probe),
        "SVR / SVC (FC)": (connectivity, svm_probe),
        "MLP (FC)": (connectivity, mlp_probe),
        "LSTM (time series)": (recordings, lstm_fit_predict),
        "GCN (FC graph)": (correlation_matrices(recordings), gcn_fit_predict),
    }


# ---------------------------------------------------------------------------------------- scikit-learn rows


def linear_probe(x_train, y_train, groups, x_test, classification: bool, seed: int) -> np.ndarray:
    """Ridge regression (or ridge classifier) on standardised features, `alpha` in {1, 100, 10^4}."""
    estimator = RidgeClassifier() if classification else Ridge()
    grid = {"alpha": [1.0, 1e2, 1e4]}
    return _grid_search(estimator, grid, x_train, y_train, groups, x_test, classification)


def svm_probe(x_train, y_train, groups, x_test, classification: bool, seed: int) -> np.ndarray:
    """RBF support-vector regression (or classification) on standardised features, `C` in {0.1, 1, 10}."""
    estimator = SVC(random_state=seed) if classification else SVR()
    return _grid_search(estimator, {"C": [0.1, 1.0, 10.0]}, x_train, y_train, groups, x_test, classification)


def mlp_probe(x_train, y_train, groups, x_test, classification: bool, seed: int) -> np.ndarray:
    """One hidden layer of 32 ReLU units (Adam, 100 epochs), L2 `alpha` in {1, 100}."""
    model = MLPClassifier if classification else MLPRegressor
    estimator = model(hidden_layer_sizes=(32,), max_iter=100, random_state=seed)
    return _grid_search(estimator, {"alpha": [1.0, 1e2]}, x_train, y_train, groups, x_test, classification)


def _grid_search(estimator, grid, x_train, y_train, groups, x_test, classification: bool) -> np.ndarray:
    pipeline = make_pipeline(StandardScaler(), clone(estimator))
    grid = {f"{pipeline.steps[-1][0]}__{key}": values for key, values in grid.items()}
    scoring = "accuracy" if classification else "neg_mean_squared_error"
    folds = GroupKFold(n_splits=min(3, len(np.unique(groups))))
    search = GridSearchCV(pipeline, grid, scoring=scoring, cv=folds).fit(x_train, y_train, groups=groups)
    if not classification:
        return search.predict(x_test)
    if hasattr(search.best_estimator_, "predict_proba"):
        return search.predict_proba(x_test)
    return _softmax(search.decision_function(x_test))


def _softmax(scores: np.ndarray) -> np.ndarray:
    """Decision scores `(N, C)` (or `(N,)` for two classes) -> probabilities `(N, C)`."""
    scores = np.stack([-scores, scores], 1) / 2 if scores.ndim == 1 else scores
    return torch.softmax(torch.as_tensor(scores, dtype=torch.float64), -1).numpy()


# ------------------------------------------------------------------------------------------------ torch rows


class LSTMPredictor(torch.nn.Module):
    """`(B, T, V)` series -> `(B, outputs)`: one LSTM layer, its outputs averaged over time, then a linear layer."""

    def __init__(self, num_regions: int, hidden_size: int, outputs: int):
        super().__init__()
        self.lstm = torch.nn.LSTM(num_regions, hidden_size, batch_first=True)
        self.head = torch.nn.Linear(hidden_size, outputs)

    def forward(self, series: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(series)[0].mean(1))


class GCNPredictor(torch.nn.Module):
    """
    `(B, V, V)` correlation matrices -> `(B, outputs)`: a 2-layer graph convolution (Kipf & Welling) on the graph of
    absolute correlations with self-loops, `A = D^-1/2 (|FC| with unit diagonal) D^-1/2`, node features = the FC rows,
    `H_{l+1} = ReLU(A H_l W_l)`, nodes averaged, then a linear layer.
    """

    def __init__(self, num_regions: int, hidden_size: int, outputs: int):
        super().__init__()
        self.layers = torch.nn.ModuleList(
            [torch.nn.Linear(num_regions, hidden_size), torch.nn.Linear(hidden_size, hidden_size)]
        )
        self.head = torch.nn.Linear(hidden_size, outputs)

    def forward(self, correlations: torch.Tensor) -> torch.Tensor:
        adjacency = correlations.abs()
        adjacency = adjacency + torch.diag_embed(1 - torch.diagonal(adjacency, dim1=-2, dim2=-1))
        degree = adjacency.sum(-1).rsqrt()
        adjacency = degree[..., :, None] * adjacency * degree[..., None, :]
        hidden = correlations
        for layer in self.layers:
            hidden = torch.relu(adjacency @ layer(hidden))
        return self.head(hidden.mean(1))


def lstm_fit_predict(x_train, y_train, groups, x_test, classification: bool, seed: int) -> np.ndarray:
    """
    LSTM on the region time series `(N, T, V)`, averaged over non-overlapping bins of time so that at most 100 steps
    remain (an LSTM over 600 steps is slow on a CPU); 30 epochs.
    """
    step = -(-np.shape(x_train)[1] // 100)
    return _torch_fit_predict(
        LSTMPredictor, _bin_time(x_train, step), y_train, groups, _bin_time(x_test, step), classification, seed, 30
    )


def gcn_fit_predict(x_train, y_train, groups, x_test, classification: bool, seed: int) -> np.ndarray:
    """2-layer GCN on correlation matrices `(N, V, V)` (see `GCNPredictor`); 100 epochs."""
    return _torch_fit_predict(GCNPredictor, x_train, y_train, groups, x_test, classification, seed, 100)


def _bin_time(series, step: int) -> np.ndarray:
    series = np.asarray(series)
    usable = series.shape[1] // step * step
    return series[:, :usable].reshape(len(series), usable // step, step, -1).mean(2)


def _torch_fit_predict(build, x_train, y_train, groups, x_test, classification, seed, epochs) -> np.ndarray:
    """Pick the hidden size on a group-disjoint inner hold-out, retrain on everything, predict `x_test`."""
    x_train, x_test = (torch.as_tensor(np.asarray(x), dtype=torch.float32) for x in (x_train, x_test))
    y = torch.as_tensor(y_train, dtype=torch.long if classification else torch.float32)
    outputs = int(y.max()) + 1 if classification else 1
    inner, held_out = next(GroupShuffleSplit(1, test_size=0.25, random_state=seed).split(x_train, groups=groups))
    losses = {}
    for hidden_size in TORCH_GRID["hidden_size"]:
        model = _train(build(x_train.shape[-1], hidden_size, outputs), x_train[inner], y[inner], epochs, seed)
        losses[hidden_size] = _loss(_predict(model, x_train[held_out]), y[held_out]).item()
    best = min(losses, key=losses.get)
    model = _train(build(x_train.shape[-1], best, outputs), x_train, y, epochs, seed)
    prediction = _predict(model, x_test)
    return prediction.softmax(-1).numpy() if classification else prediction[:, 0].numpy()


def _train(model: torch.nn.Module, x, y, epochs: int, seed: int, batch_size: int = 16) -> torch.nn.Module:
    torch.manual_seed(seed)
    for parameter in model.parameters():  # re-initialise under the seed: results do not depend on call order
        if parameter.dim() > 1:
            torch.nn.init.xavier_uniform_(parameter)
        else:
            torch.nn.init.zeros_(parameter)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(batch_size):
            optimizer.zero_grad()
            _loss(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def _predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def _loss(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if y.dtype == torch.long:
        return torch.nn.functional.cross_entropy(output, y)
    return torch.nn.functional.mse_loss(output[:, 0], y)
