"""How `parcellate` reads NIfTI files: its own `.nii` / `.nii.gz` readers give nibabel's arrays bit for bit, with the
fast gzip decoder (ISA-L, optional) and with the standard library's fallback, in memory bounded by a chunk."""

import gzip
import tracemalloc

import nibabel as nib
import numpy as np
import pytest

from brainlm_hf.data import parcellation
from brainlm_hf.data.atlas import load_atlas
from brainlm_hf.data.parcellation import parcellate
from brainlm_hf.errors import InvalidArgumentError

SHAPE = (9, 10, 11)
AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])
RNG = np.random.default_rng(0)
# (stored dtype, byte order, scl_slope, scl_inter): slopes and intercepts whose products round differently in
# float32 and float64, so that scaling in another precision or order than nibabel's would show
STORAGE = {
    "int16": ("int16", "<", None, None),
    "int16-scaled": ("int16", "<", 0.37, -12.5),
    "int16-big-endian-scaled": ("int16", ">", 1.3, 7.1),
    "float32": ("float32", "<", None, None),
    "float32-scaled": ("float32", "<", 2.7, 0.3),
}


def write_image(path, storage: str, num_volumes: int = 23, shape=SHAPE) -> nib.Nifti1Image:
    """A 4-D image in `shape`, stored as `STORAGE[storage]` says; float32 images hold NaN, -0.0 and subnormals."""
    dtype, endianness, slope, inter = STORAGE[storage]
    if dtype == "int16":
        data = RNG.integers(-32768, 32768, size=(*shape, num_volumes)).astype(np.int16)
    else:
        data = (RNG.standard_normal(size=(*shape, num_volumes)) * 1e3).astype(np.float32)
        data[0, 0, 0, :3] = [np.nan, -0.0, 1e-42]
    header = nib.Nifti1Header(endianness=endianness)
    header.set_data_dtype(dtype)
    image = nib.Nifti1Image(data, AFFINE, header=header)
    image.header.set_slope_inter(slope, inter)
    image.header.set_sform(AFFINE, code=4)
    nib.save(image, path)
    return nib.load(path)


def nibabel_values(image: nib.Nifti1Image, voxels: np.ndarray) -> np.ndarray:
    """nibabel's default reading: the whole image as float32, `(T, len(voxels))` at flat Fortran-order voxels."""
    data = image.get_fdata(dtype=np.float32)
    return data.reshape(-1, data.shape[3], order="F")[voxels].T


def read_at(image: nib.Nifti1Image, voxels: np.ndarray, chunk_size: int) -> np.ndarray:
    # each chunk is valid until the next one: copied as it comes
    chunks = [(start, values.copy()) for start, values in parcellation._chunks_at(image, voxels, chunk_size, "bold")]
    assert [start for start, _ in chunks] == list(range(0, image.shape[3], chunk_size))
    return np.concatenate([values for _, values in chunks])


def assert_same_bits(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal as float32 bit patterns: NaN equals NaN, -0.0 differs from 0.0."""
    assert actual.dtype == expected.dtype == np.float32 and actual.shape == expected.shape
    np.testing.assert_array_equal(actual.view(np.uint32), expected.view(np.uint32))


@pytest.fixture(params=["isal", "isal without its C reader", "gzip"])
def decoder(request, monkeypatch):
    """Each gzip decoder in turn: ISA-L's C reader, ISA-L's public `igzip.open` (a python-isal without the private
    reader; both skipped when ISA-L is not installed) and the standard library's fallback."""
    if request.param == "gzip":
        monkeypatch.setattr(parcellation, "isal_zlib", None)
    else:
        isal_zlib = pytest.importorskip("isal.isal_zlib", reason="the fast decoder is optional (the `nifti` extra)")
        if request.param == "isal without its C reader":
            monkeypatch.delattr(isal_zlib, "_GzipReader")
    return request.param


@pytest.mark.parametrize("storage", list(STORAGE))
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_values_equal_nibabel_bit_for_bit(tmp_path, decoder, storage, suffix):
    image = write_image(tmp_path / f"bold{suffix}", storage)
    assert parcellation._file_kind(image) == suffix  # this module's reader, not nibabel's proxy
    voxels = RNG.permutation(np.prod(SHAPE))[:300]  # any order, as region-sorted voxels are
    for chunk_size in (1, 4, 64):
        assert_same_bits(read_at(image, voxels, chunk_size), nibabel_values(image, voxels))


def test_the_fast_decoder_is_used_when_installed_and_fills_the_volume_buffer_in_place(tmp_path, monkeypatch):
    """With ISA-L installed, a `.nii.gz` goes through its C reader, and every `readinto` gets a view of the one
    volume buffer (no bytes object in between)."""
    isal_zlib = pytest.importorskip("isal.isal_zlib", reason="the fast decoder is optional")
    filled = []

    class Recording:
        def __init__(self, file, buffer_size):
            self.reader = real_reader(file, buffer_size)

        def readinto(self, buffer):
            filled.append(np.frombuffer(buffer, dtype=np.uint8).__array_interface__["data"][0])
            return self.reader.readinto(buffer)

        def read(self, size):
            return self.reader.read(size)

    real_reader = isal_zlib._GzipReader
    monkeypatch.setattr(isal_zlib, "_GzipReader", Recording)
    image = write_image(tmp_path / "bold.nii.gz", "int16-scaled")
    voxels = RNG.permutation(np.prod(SHAPE))[:300]
    assert_same_bits(read_at(image, voxels, 4), nibabel_values(image, voxels))
    volume_bytes = int(np.prod(SHAPE)) * 2
    assert len(filled) >= image.shape[3]  # one or more per volume (and the header's)
    assert len(set(filled[1:])) <= 2  # after the header: the volume buffer's start, or a point within it
    assert max(filled[1:]) - min(filled[1:]) < volume_bytes


def write_atlas(path, shape=SHAPE):
    """Three labels (3, 1, 7) in blocks of `shape`, background (0) elsewhere."""
    labels = np.zeros(shape, dtype=np.int16)
    half = [size // 2 for size in shape]
    labels[: half[0]], labels[half[0] :, : half[1]], labels[half[0] :, half[1] :, : half[2]] = 3, 1, 7
    nib.save(nib.Nifti1Image(labels, AFFINE), path)
    return load_atlas(path)


@pytest.fixture
def toy_atlas(tmp_path):
    return write_atlas(tmp_path / "atlas.nii.gz")


@pytest.mark.parametrize("storage", ["int16-scaled", "float32"])
def test_parcellate_equals_nibabels_own_reading_of_the_same_bytes(tmp_path, decoder, toy_atlas, storage):
    image = write_image(tmp_path / "bold.nii.gz", storage)
    in_memory = nib.Nifti1Image.from_bytes(gzip.decompress((tmp_path / "bold.nii.gz").read_bytes()))
    assert parcellation._file_kind(in_memory) is None  # no file behind it: nibabel's proxy reads it
    expected = parcellate(in_memory, toy_atlas, chunk_size=5)
    assert_same_bits(parcellate(image, toy_atlas, chunk_size=5), expected)
    assert_same_bits(parcellate(tmp_path / "bold.nii.gz", toy_atlas), expected)


def test_gzip_memory_does_not_grow_with_the_recording(tmp_path, decoder):
    """200 or 400 volumes (14 or 28 MB), read 4 at a time: the same peak, give or take a 1 MiB block of the decoder.
    Both files are longer than the threaded decoder reads ahead (a few 1 MiB blocks), so both peaks hold its queue
    at its full depth, however far the thread got ahead on a busy machine."""
    shape = (24, 26, 28)
    atlas = write_atlas(tmp_path / "atlas.nii.gz", shape)
    peaks = []
    for num_volumes in (200, 400):
        write_image(tmp_path / f"bold{num_volumes}.nii.gz", "float32", num_volumes, shape)
        tracemalloc.start()
        try:
            parcellate(tmp_path / f"bold{num_volumes}.nii.gz", atlas, chunk_size=4)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] - peaks[0] < 2**21, f"peaks {peaks} bytes"


@pytest.mark.parametrize("damage, error", [("truncated", EOFError), ("wrong CRC", OSError)])
def test_a_damaged_file_is_named(tmp_path, decoder, toy_atlas, damage, error):
    path = tmp_path / "bold.nii.gz"
    image = write_image(path, "float32", num_volumes=40)  # the header is read: the data are read by parcellate
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[-8:-4] = bytes(a ^ 0xFF for a in data[-8:-4])  # the trailer's CRC-32 of the data
    path.write_bytes(bytes(data))
    with pytest.raises(error, match="bold.nii.gz"):
        parcellate(image, toy_atlas)


@pytest.mark.parametrize("chunk_size", [0, -8, 2.5, True, "8"])
def test_a_chunk_size_that_is_not_a_positive_integer_is_refused_by_name(tmp_path, toy_atlas, chunk_size):
    image = write_image(tmp_path / "bold.nii.gz", "float32")
    with pytest.raises(InvalidArgumentError, match=r"chunk_size must be a positive integer, got"):
        parcellate(image, toy_atlas, chunk_size=chunk_size)
