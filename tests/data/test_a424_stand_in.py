"""The synthetic A424 stand-in (tests/a424_stand_in.py) is a valid A424 folder, in the formats of the real one."""

import csv

import nibabel as nib
import numpy as np
import pytest

from brainlm_hf.data.atlas import load_a424, load_a424_networks

from ..a424_stand_in import AFFINE, HEADER, LEVELS, SHAPE, write_a424_stand_in


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    return write_a424_stand_in(tmp_path_factory.mktemp("stand_in"))


def test_the_stand_in_loads_as_the_a424_atlas(stand_in):
    atlas = load_a424(stand_in)
    assert atlas.labels.tolist() == list(range(1, 425)) and atlas.image.shape == SHAPE
    np.testing.assert_array_equal(atlas.image.affine, AFFINE)
    assert atlas.image.get_data_dtype() == np.float32 and int(atlas.image.header["sform_code"]) == 4
    volume = np.asarray(atlas.image.dataobj).astype(int)
    sizes = np.bincount(volume.ravel())[1:]
    assert sizes.min() > 0 and 100_000 < sizes.sum() < 300_000  # every region present; about a brain's volume
    # the coordinates are the label centroids rounded to even mm, right hemisphere (1-180) mirroring 181-360
    centroids = nib.affines.apply_affine(
        AFFINE, np.stack([np.argwhere(volume == label).mean(0) for label in (1, 424)])
    )
    assert np.abs(atlas.coordinates[[0, 423]] - centroids).max() <= 1
    assert (atlas.coordinates % 2 == 0).all()
    assert (atlas.coordinates[:180, 0] > 0).all() and (atlas.coordinates[180:360, 0] < 0).all()
    for level in LEVELS:
        networks = load_a424_networks(stand_in, level=level)
        assert len(networks) == 424 and ("unassigned" in networks) == level.startswith("AAc")
    assert set(load_a424_networks(stand_in)) == {
        "Visual",
        "Ventral Salience",
        "Central Executive",
        "Sensorimotor",
        "Default Mode",
        "Dorsal Salience",
        "Subcortical",
    }
    example = np.loadtxt(stand_in / "A424_example_fMRI.dat")
    assert example.shape == (99, 424) and (example > 1000).all() and 5_000 < example.mean() < 20_000


def test_the_stand_in_is_reproducible(stand_in, tmp_path):
    again = write_a424_stand_in(tmp_path)
    for path in stand_in.iterdir():
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name


@pytest.mark.real_data("atlas")
def test_the_stand_in_has_the_formats_of_the_real_files(stand_in, a424_folder):
    real, ours = nib.load(a424_folder / "A424+2mm.nii.gz"), nib.load(stand_in / "A424+2mm.nii.gz")
    assert ours.shape == real.shape and ours.get_data_dtype() == real.get_data_dtype()
    np.testing.assert_array_equal(ours.affine, real.affine)
    for code in ("sform_code", "qform_code", "xyzt_units"):
        assert ours.header[code] == real.header[code], code
    real_table = (a424_folder / "A424_Coordinates.dat").read_bytes()
    ours_table = (stand_in / "A424_Coordinates.dat").read_bytes()
    assert ours_table.count(b"\r\n") == real_table.count(b"\r\n") == 423 and not ours_table.endswith(b"\n")
    assert real_table.split(b"\r\n")[0].count(b"\t") == ours_table.split(b"\r\n")[0].count(b"\t") == 3
    with open(a424_folder / "A424_Labels_AA-AAc_main_maps.csv", encoding="utf-8-sig", newline="") as handle:
        real_rows = list(csv.reader(handle))
    with open(stand_in / "A424_Labels_AA-AAc_main_maps.csv", encoding="utf-8-sig", newline="") as handle:
        our_rows = list(csv.reader(handle))
    assert our_rows[0] == real_rows[0] == HEADER and len(our_rows) == len(real_rows) == 425
    assert {len(row) for row in our_rows} == {len(row) for row in real_rows} == {len(HEADER)}
    for level in ("AA-7", "AAc-6"):  # the same network names where the real table names the networks
        assert set(load_a424_networks(stand_in, level=level)) == set(load_a424_networks(a424_folder, level=level))
    real_example = np.loadtxt(a424_folder / "A424_example_fMRI.dat")
    assert np.loadtxt(stand_in / "A424_example_fMRI.dat").shape == real_example.shape
