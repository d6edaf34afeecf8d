"""`parcellate` against the field's references on an image on the A424 grid (the real atlas or its stand-in):
nilearn's `NiftiLabelsMasker(strategy="mean")` and the original toolkit's per-label `nanmean` loop, written out
here as `convert_fMRIvols_to_A424` (vandijklab/BrainLM `toolkit/BrainLM_Toolkit.py` at `faeea4d`, lines 40-71) runs
it."""

import nibabel as nib
import numpy as np
import pytest

from brainlm_hf.data.atlas import load_a424
from brainlm_hf.data.parcellation import parcellate

TIMEPOINTS = 8


@pytest.fixture(scope="module")
def image_and_atlas(a424_folder):
    """A424 and a float32 BOLD image on its grid: positive intensities around 1e4 that vary within each region."""
    atlas = load_a424(a424_folder)
    rng = np.random.default_rng(0)
    shape = atlas.image.shape + (TIMEPOINTS,)
    data = (10000 + 300 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    image = nib.Nifti1Image(data, atlas.image.affine)
    image.header.set_sform(atlas.image.affine, code=4)
    image.header.set_qform(atlas.image.affine, code=4)
    return image, atlas


def original_parcellation(image: nib.Nifti1Image, atlas_image: nib.Nifti1Image) -> np.ndarray:
    """The original toolkit's loop: per label, `np.nanmean` of its voxels (float64, `get_fdata`), NaN set to 0."""
    label = atlas_image.get_fdata().flatten()
    dts = image.get_fdata()
    m = dts.reshape((-1, dts.shape[-1])).T
    series = np.zeros((m.shape[0], 424))
    for i in range(1, 425):
        series[:, i - 1] = np.nanmean(m[:, label == i], axis=1)
    series[np.isnan(series)] = 0
    return series


def test_parcellate_equals_nilearns_labels_masker_mean(image_and_atlas):
    from nilearn.maskers import NiftiLabelsMasker

    image, atlas = image_and_atlas
    ours = parcellate(image, atlas)
    masker = NiftiLabelsMasker(labels_img=atlas.image, strategy="mean", keep_masked_labels=False)
    theirs = masker.fit_transform(image)
    assert theirs.shape == ours.shape == (TIMEPOINTS, 424)
    np.testing.assert_array_equal(ours, theirs.astype(np.float32))


def test_parcellate_equals_the_original_nanmean_loop_to_float32_accumulation(image_and_atlas):
    image, atlas = image_and_atlas
    ours = parcellate(image, atlas)
    theirs = original_parcellation(image, atlas.image)
    voxels = np.bincount(np.asarray(atlas.image.dataobj).astype(int).ravel())[1:]
    # a float32 sum of n values of about 1e4 is within n * eps * 1e4 of the exact one, so the mean within n * eps * 1e4
    bound = voxels.max() * np.finfo(np.float32).eps * np.abs(np.asarray(image.dataobj)).max()
    assert np.abs(ours - theirs).max() <= bound
