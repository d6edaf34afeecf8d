"""Values read from arguments and headers are checked for plausibility: TRs (NaN, out of the range of fMRI, in
milliseconds written as seconds), unknown TRs under a target TR, and empty recordings."""

import nibabel as nib
import numpy as np
import pytest

from brainlm_hf import BrainLMFeatureExtractor
from brainlm_hf.data import prepare_dataset
from brainlm_hf.data.recordings import load_recording
from brainlm_hf.errors import InvalidArgumentError, InvalidFileError, InvalidInputError

from ..conftest import save_region_image, toy_atlas


def processor(**overrides) -> BrainLMFeatureExtractor:
    settings = {"normalization": "zscore", "num_timepoints": 10, "repetition_time": 0.8}
    return BrainLMFeatureExtractor(**{**settings, **overrides})


def recording(frames: int = 20, regions: int = 3) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(frames, regions)).astype(np.float32)


BAD_TRS = [
    (float("nan"), "got nan"),
    (float("inf"), "got inf"),
    (-2.0, "got -2.0"),
    (0.0, "got 0.0"),
    ("2", "got '2'"),
    (2000.0, "2000 s, outside the range of fMRI TRs.*milliseconds.*give 2\\b"),
    (0.001, "0.001 s, outside the range of fMRI TRs"),
]


@pytest.mark.parametrize(("tr", "message"), BAD_TRS)
def test_an_implausible_tr_is_refused_in_every_api_that_takes_one(tr, message):
    """One TR for all, one per recording (list, dict) and the whole-recording path: each names the recording."""
    p = processor()
    calls = [
        lambda: p(recording(), sliding_windows=True, repetition_time=tr),
        lambda: p([recording(), recording()], sliding_windows=True, repetition_time=[0.8, tr]),
        lambda: p([recording(), recording()], repetition_time=[0.8, tr]),
        lambda: p.windows({"run-a": recording(), "run-b": recording()}, repetition_times={"run-b": tr}),
        lambda: p.fit([recording()], repetition_times=tr),
        lambda: p.resample(recording(), tr),
    ]
    for call in calls:
        with pytest.raises(InvalidArgumentError, match=message):
            call()
    with pytest.raises(InvalidArgumentError, match="run-b"):
        calls[3]()
    with pytest.raises(InvalidArgumentError, match="recording 1"):
        calls[1]()


def test_the_processor_tr_is_checked_like_a_recording_tr():
    with pytest.raises(InvalidArgumentError, match="milliseconds"):
        processor(repetition_time=735.0)
    assert processor(repetition_time=0.05).repetition_time == 0.05  # the range is inclusive: fast sequences


def test_a_plausible_tr_is_used_and_none_is_unknown():
    """The NaN that used to mean unknown no longer does; None still does (no resampling)."""
    p = processor()
    assert len(p.windows([recording(40)], repetition_times=[None])[0]) == 4
    assert len(p.windows([recording(40)], repetition_times=[2.0])[0]) == 10  # 98 frames: 9 windows + the end


@pytest.mark.parametrize("shape", [(0, 3), (5, 0), (0, 0)])
def test_an_empty_recording_is_refused_even_when_padding(shape):
    """A 0-timepoint recording padded would be one window of NaN (the mean of nothing)."""
    empty = np.zeros(shape, np.float32)
    for short_recordings in ("pad", "refuse"):
        p = processor(short_recordings=short_recordings)
        with pytest.raises(InvalidInputError, match="recording 0 is empty"):
            p(empty, sliding_windows=True)
        with pytest.raises(InvalidInputError, match="empty run is empty"):
            p.windows({"empty run": empty})
        with pytest.raises(InvalidInputError, match="recording 0 is empty"):
            p(empty)


def nifti_with_tr(path, labels, tr: float, unit: str):
    save_region_image(path, labels, recording(12), 1.0)
    image = nib.load(path)
    image.header.set_zooms((3.0, 3.0, 3.0, tr))
    image.header.set_xyzt_units("mm", unit)
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), image.affine, image.header), path)


@pytest.mark.parametrize(("tr", "unit", "message"), [(2000.0, "sec", "milliseconds"), (0.002, "sec", "minutes")])
def test_a_header_tr_out_of_the_range_of_fmri_names_the_file_and_the_fix(tmp_path, tr, unit, message):
    """A converter that wrote milliseconds with units "sec": refused (it was upsampled 2,700 times), naming the file,
    the likely cause and how to give the TR; an explicit TR wins over the header and is used."""
    atlas, labels = toy_atlas(tmp_path, 4)
    path = tmp_path / "sub-01_bold.nii.gz"
    nifti_with_tr(path, labels, tr, unit)
    expected = f"sub-01_bold.nii.gz: the repetition time in its header.*{message}.*repetition_time="
    with pytest.raises(InvalidFileError, match=expected):
        load_recording(path, atlas)
    assert load_recording(path, atlas, 2.0)[1] == 2.0


def test_a_header_tr_in_milliseconds_with_its_unit_is_read_as_seconds(tmp_path):
    atlas, labels = toy_atlas(tmp_path, 4)
    nifti_with_tr(tmp_path / "sub-01_bold.nii.gz", labels, 2000.0, "msec")
    assert load_recording(tmp_path / "sub-01_bold.nii.gz", atlas)[1] == 2.0


def test_prepare_refuses_recordings_of_unknown_tr_under_a_tr_of_the_windows(tmp_path):
    """A NIfTI at 2 s and parcel tables of unknown TR, with a target TR: the tables were windowed as if sampled at
    it. Without a target the NIfTI's TR would be assumed for them just the same. Both name the tables."""
    atlas, labels = toy_atlas(tmp_path, 4)
    save_region_image(tmp_path / "sub-01_bold.nii.gz", labels, recording(60), 2.0)
    for subject in ("02", "03"):
        np.save(tmp_path / f"sub-{subject}_bold.npy", recording(160))
    options = {"atlas": atlas, "num_timepoints": 40, "normalization": "zscore", "splits": {"train": 1.0}}
    for target in (0.735, None):
        with pytest.raises(InvalidInputError, match="TR of 2 of 3 recordings is unknown.*sub-02_bold.npy.*repetition"):
            prepare_dataset(tmp_path / "sub-*", tmp_path / "out", target_repetition_time=target, **options)
    tables = prepare_dataset(tmp_path / "sub-*.npy", tmp_path / "tables", **options)  # no TR at all: none assumed
    assert tables["repetition_time"] is None
