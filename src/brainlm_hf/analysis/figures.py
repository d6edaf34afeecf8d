# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Figures of the analyses, written as PNG files with matplotlib (the `demo` extra), without a display.

Every function draws one figure on its own `matplotlib.figure.Figure` (no pyplot state), saves it to `path` and
returns `path`. Arrays are in atlas order: V regions, T timepoints.
"""

from pathlib import Path

import numpy as np

from ..errors import InvalidArgumentError

DPI = 80


def _figure(width: float, height: float, **kwargs):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained", **kwargs)


def _save(figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return path


def plot_network_bars(names: list[str], scores, path, title: str = "CLS attention per network", errors=None) -> Path:
    """Bar chart of one score per network (`scores` `(K,)`, optional `errors` `(K,)`), highest first."""
    scores = np.asarray(scores)
    order = np.argsort(scores)[::-1]
    figure = _figure(7, 3.5)
    axis = figure.add_subplot()
    errors = None if errors is None else np.asarray(errors)[order]
    axis.bar([names[i] for i in order], scores[order], yerr=errors, color="C0")
    axis.set_ylabel("mean region score")
    axis.set_title(title)
    axis.tick_params(axis="x", labelrotation=30)
    return _save(figure, path)


def plot_glass_brain(coordinates, values, path, title: str = "CLS attention per region", label: str = "score") -> Path:
    """
    Region values on three orthogonal projections of the brain (sagittal, coronal, axial) from the region
    coordinates `(V, 3)` (MNI mm); colour and marker size follow `values` `(V,)`.
    """
    xyz, values = np.asarray(coordinates, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if xyz.shape != (len(values), 3):
        raise InvalidArgumentError(
            f"coordinates must have shape ({len(values)}, 3) to match the values, got {xyz.shape}.",
            argument="coordinates",
        )
    span = np.ptp(values) or 1.0
    sizes = 10 + 90 * (values - values.min()) / span
    order = np.argsort(values)  # strongest on top
    figure = _figure(11, 3.8)
    axes = figure.subplots(1, 3)
    views = (
        ("sagittal", 1, 2, "y (mm)", "z (mm)"),
        ("coronal", 0, 2, "x (mm)", "z (mm)"),
        ("axial", 0, 1, "x (mm)", "y (mm)"),
    )
    for axis, (name, h, v, h_label, v_label) in zip(axes, views, strict=True):
        points = axis.scatter(xyz[order, h], xyz[order, v], c=values[order], s=sizes[order], cmap="magma_r")
        axis.set_title(name)
        axis.set_xlabel(h_label)
        axis.set_ylabel(v_label)
        axis.set_aspect("equal")
    figure.colorbar(points, ax=axes, label=label, shrink=0.8)
    figure.suptitle(title)
    return _save(figure, path)


def plot_glass_brain_nilearn(
    coordinates, values, path, title: str = "CLS attention per region", display_mode: str = "lyrz"
) -> Path:
    """
    The same region values `(V,)` at their coordinates `(V, 3)` (MNI mm) on nilearn's glass brain
    (`nilearn.plotting.plot_markers`); needs the optional `plots` extra (`pip install brainlm_hf[plots]`).
    """
    try:
        from nilearn import plotting
    except ImportError as error:
        raise ImportError("plot_glass_brain_nilearn needs nilearn: pip install 'brainlm_hf[plots]'.") from error
    import matplotlib

    matplotlib.use("Agg")
    xyz, values = np.asarray(coordinates, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if xyz.shape != (len(values), 3):
        raise InvalidArgumentError(
            f"coordinates must have shape ({len(values)}, 3) to match the values, got {xyz.shape}.",
            argument="coordinates",
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    display = plotting.plot_markers(
        values, xyz, node_cmap="magma_r", display_mode=display_mode, title=title, node_size=20
    )
    display.savefig(str(path), dpi=DPI)
    display.close()
    return path


def plot_attention_heatmap(
    attention_map, path, region_names: list[str] | None = None, repetition_time: float | None = None, title=None
) -> Path:
    """Region x time heat map of CLS attention, `attention_map` `(V, T)`."""
    attention_map = np.asarray(attention_map)
    num_regions, num_timepoints = attention_map.shape
    figure = _figure(9, 6)
    axis = figure.add_subplot()
    extent = (0, num_timepoints * (repetition_time or 1), num_regions, 0)
    image = axis.imshow(attention_map, aspect="auto", cmap="viridis", extent=extent, interpolation="nearest")
    axis.set_xlabel("time (s)" if repetition_time else "timepoint")
    axis.set_ylabel("region")
    if region_names is not None:
        step = max(1, num_regions // 24)
        axis.set_yticks(np.arange(0, num_regions, step) + 0.5, [region_names[i] for i in range(0, num_regions, step)])
        axis.tick_params(axis="y", labelsize=6)
    figure.colorbar(image, ax=axis, label="CLS attention per cell")
    axis.set_title(title or "CLS attention over regions and time")
    return _save(figure, path)


def plot_reconstruction(
    signal,
    prediction,
    mask,
    path,
    regions=(0, 1, 2, 3),
    region_names: list[str] | None = None,
    repetition_time: float | None = None,
    title: str = "True vs reconstructed signal (masked timepoints shaded)",
) -> Path:
    """True vs stitched reconstruction of a few regions, `(V, T)` arrays, masked timepoints shaded."""
    signal, prediction, mask = np.asarray(signal), np.asarray(prediction), np.asarray(mask, dtype=bool)
    time = np.arange(signal.shape[-1]) * (repetition_time or 1)
    figure = _figure(10, 1.9 * len(regions))
    axes = figure.subplots(len(regions), 1, sharex=True, squeeze=False)[:, 0]
    for axis, region in zip(axes, regions, strict=True):
        axis.fill_between(time, 0, 1, where=mask[region], color="0.85", transform=axis.get_xaxis_transform())
        axis.plot(time, signal[region], color="black", lw=0.8, label="true")
        axis.plot(time, prediction[region], color="tab:red", lw=0.8, label="reconstruction")
        axis.set_ylabel(region_names[region] if region_names else f"region {region}", fontsize=8)
    axes[0].legend(loc="upper right", ncol=2, fontsize=8)
    axes[-1].set_xlabel("time (s)" if repetition_time else "timepoint")
    figure.suptitle(title)
    return _save(figure, path)


def plot_forecast(metrics: dict, path, repetition_time: float | None = None, title: str = "Forecast error") -> Path:
    """MSE and R^2 by horizon of each predictor: `metrics` as returned by `forecasting.Forecast.metrics()`."""
    figure = _figure(10, 3.5)
    axes = figure.subplots(1, 2)
    for name, values in metrics.items():
        horizon = np.arange(1, len(values["by_horizon"]["mse"]) + 1) * (repetition_time or 1)
        for axis, key in zip(axes, ("mse", "r2"), strict=True):
            axis.plot(horizon, values["by_horizon"][key], label=name, lw=2 if name == "model" else 1)
    for axis, key in zip(axes, ("MSE", "R^2"), strict=True):
        axis.set_xlabel("horizon (s)" if repetition_time else "horizon (timepoints)")
        axis.set_ylabel(key)
    axes[0].legend(fontsize=8)
    figure.suptitle(title)
    return _save(figure, path)
