"""Atlases and parcellation on real data: the A424 atlas (or its stand-in: see conftest) and nibabel's 4-D image."""

import functools
import hashlib
import http.server
import shutil
import threading
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.processing import resample_from_to

from brainlm_hf.data.atlas import A424_FILES, A424_LABELS_FILES, load_a424, load_a424_networks, load_atlas
from brainlm_hf.data.parcellation import load_parcel_series, parcellate, repetition_time

from ..conftest import pin_a424_downloads, sha256

FUNCTIONAL = Path(nib.__file__).parent / "tests" / "data" / "functional.nii"


@pytest.fixture(scope="module")
def a424(a424_folder):
    return load_a424(a424_folder)


def signal_in_atlas_grid(atlas, series):
    """A 4-D image in the atlas grid whose every voxel of region i holds series[:, i]."""
    volume = np.asarray(atlas.image.dataobj).astype(int)
    region = np.searchsorted(atlas.labels, volume)
    data = np.zeros(volume.shape + (len(series),), dtype=np.float32)
    inside = volume > 0
    data[inside] = series.T[region[inside]]
    image = nib.Nifti1Image(data, atlas.image.affine)
    image.header.set_sform(atlas.image.affine, code=4)
    image.header.set_qform(atlas.image.affine, code=4)
    return image


def test_a424_loads_with_its_own_coordinates(a424, a424_folder):
    assert a424.num_regions == 424 and a424.labels.tolist() == list(range(1, 425))
    table = np.loadtxt(a424_folder / "A424_Coordinates.dat")
    np.testing.assert_array_equal(a424.coordinates, table[:, 1:4])
    assert a424.name == "A424"


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("chunk_size", [1, 7, 64])
def test_round_trip_recovers_a_known_signal_exactly(a424, tmp_path, suffix, chunk_size):
    series = np.random.default_rng(0).normal(size=(12, 424)).astype(np.float32) * 100
    path = tmp_path / f"bold{suffix}"
    nib.save(signal_in_atlas_grid(a424, series), path)
    recovered = parcellate(path, a424, chunk_size=chunk_size)
    assert recovered.dtype == np.float32 and recovered.shape == (12, 424)
    np.testing.assert_array_equal(recovered, series)


def test_real_functional_image_through_the_resampling_path(a424):
    image = nib.load(FUNCTIONAL)  # 17 x 21 x 3 voxels of 4 x 4 x 8 mm, 20 volumes, sform code 2 ('aligned')
    with pytest.raises(ValueError, match="have no voxel in the grid") as error:
        parcellate(image, a424)
    assert "allow_empty_labels=True" in str(error.value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        series = parcellate(image, a424, allow_empty_labels=True)
    assert any("Their columns are NaN" in str(w.message) for w in caught)
    # independent computation: nibabel's nearest-neighbour resampling, then a boolean mean per label
    labels = np.asarray(resample_from_to(a424.image, (image.shape[:3], image.affine), order=0).dataobj).astype(int)
    data = np.asarray(image.dataobj, dtype=np.float64)
    present = 0
    for column, label in enumerate(a424.labels):
        voxels = labels == label
        if voxels.any():
            present += 1
            np.testing.assert_allclose(series[:, column], data[voxels].mean(0), rtol=1e-5)
        else:
            assert np.isnan(series[:, column]).all()
    assert 0 < present < 424
    assert repetition_time(image) == 2.0


def test_refusals(a424, tmp_path):
    image = nib.load(FUNCTIONAL)
    with pytest.raises(ValueError, match="needs a 4-D"):
        parcellate(image.slicer[..., 0], a424)
    scanner = nib.Nifti1Image(np.asarray(image.dataobj), image.affine)
    scanner.header.set_sform(image.affine, code=1)
    scanner.header.set_qform(image.affine, code=0)
    with pytest.raises(ValueError, match="not in a standard space.*sform_code 1"):
        parcellate(scanner, a424)
    far = image.affine.copy()
    far[:3, 3] += 1000
    elsewhere = nib.Nifti1Image(np.asarray(image.dataobj), far)
    elsewhere.header.set_sform(far, code=4)
    with pytest.raises(ValueError, match="does not overlap the A424 atlas"):
        parcellate(elsewhere, a424)
    with pytest.raises(ValueError, match="resample=False"):
        parcellate(image, a424, resample=False)


def test_custom_atlas_coordinates_are_label_centroids_in_mm(tmp_path):
    volume = np.zeros((10, 10, 10), dtype=np.int16)
    volume[1:3, 1:3, 1:3] = 5  # centre voxel (1.5, 1.5, 1.5)
    volume[6, 7, 8] = 9
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10, -20, -30]
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "atlas.nii.gz")
    atlas = load_atlas(tmp_path / "atlas.nii.gz")
    assert atlas.labels.tolist() == [5, 9]
    np.testing.assert_allclose(atlas.coordinates, [[-7, -17, -27], [2, -6, -14]])


def test_ready_parcel_tables(tmp_path, a424_folder):
    example = load_parcel_series(a424_folder / "A424_example_fMRI.dat")
    assert example.shape == (99, 424) and example.dtype == np.float32
    for suffix, delimiter in [(".csv", ","), (".tsv", "\t")]:
        np.savetxt(tmp_path / f"x{suffix}", example[:5], delimiter=delimiter)
        np.testing.assert_allclose(load_parcel_series(tmp_path / f"x{suffix}"), example[:5], rtol=1e-6)
    np.save(tmp_path / "x.npy", example)
    np.testing.assert_array_equal(load_parcel_series(tmp_path / "x.npy"), example)
    with pytest.raises(ValueError, match="unsupported parcel table"):
        load_parcel_series(tmp_path / "x.mat")


@pytest.fixture
def atlas_server(tmp_path, a424_folder, monkeypatch):
    """A loopback HTTP server standing in for the pinned upstream URL (pins re-pinned to the stand-in's files)."""
    pin_a424_downloads(A424_FILES, a424_folder, monkeypatch)
    served = tmp_path / "served"
    served.mkdir()
    for local_name, (remote_name, _) in A424_FILES.items():
        shutil.copy(a424_folder / local_name, served / remote_name.replace("%2B", "+"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_download_checks_the_pinned_sha256(atlas_server, tmp_path):
    served, url = atlas_server
    atlas = load_a424(cache_dir=tmp_path / "cache", base_url=url)
    assert atlas.num_regions == 424
    cached = tmp_path / "cache" / "atlases" / "A424+2mm.nii.gz"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == A424_FILES["A424+2mm.nii.gz"][1]
    (served / "A424_Coordinates.txt").write_text("1 0 0 0\n")  # tampered upstream file
    with pytest.raises(ValueError, match="does not have the pinned SHA-256"):
        load_a424(cache_dir=tmp_path / "other_cache", base_url=url)


@pytest.mark.real_data("atlas")
def test_the_pins_and_facts_of_the_real_a424_files(a424_folder, a424):
    """The shipped SHA-256 pins are the real files'; and facts of the real atlas that the stand-in does not share."""
    for local_name, (_, pinned) in {**A424_FILES, **A424_LABELS_FILES}.items():
        assert sha256(a424_folder / local_name) == pinned, local_name
    volume = np.asarray(a424.image.dataobj)
    assert (volume == 405).sum() == 1 and (volume > 0).sum() == 133743
    np.testing.assert_array_equal(a424.coordinates[0], [14, -78, 4])
    assert load_a424_networks(a424_folder).count("Visual") == 65
