"""The vendored reference fixtures (tests/fixtures/reference) are a lossless copy of ../shared/reference."""

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file

from ..conftest import REFERENCE, SHARED, reference_bytes, reference_json, reference_specs, reference_tensors, sha256


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """The raw bytes of a tensor, so that NaN equals NaN and -0.0 differs from 0.0."""
    return tensor.contiguous().reshape(-1).view(torch.uint8)


def listed(name: str) -> dict:
    """Shape and dtype of each tensor of source file `name` (a model or `case/run/kind.safetensors`): index.json."""
    cases = reference_json("index.json")["cases"]
    parts = name.removesuffix(".safetensors").split("/")
    if parts[1] == "model":
        return cases[parts[0]]["state_dict"]
    return cases[parts[0]]["runs"][parts[1]][parts[2]]


def test_every_vendored_file_rebuilds_its_source_exactly(a424_folder):
    """Copies and packed files give the source bytes (SHA-256); inputs need the real coordinates for that (below)."""
    for name, spec in reference_specs().items():
        if spec.get("copy"):
            assert sha256(REFERENCE / name) == spec["sha256"], name
            continue
        tensors = reference_tensors(*name.split("/"), a424=a424_folder)
        expected = listed(name)
        assert sorted(tensors) == sorted(spec.get("kept", expected)), name
        for key, tensor in tensors.items():
            shape, dtype = expected[key]["shape"], getattr(torch, expected[key]["dtype"])
            assert list(tensor.shape) == shape and tensor.dtype == dtype, f"{name}: {key}"
        if "kept" not in spec and "a424_offsets" not in spec:
            assert hashlib.sha256(reference_bytes(*name.split("/"))).hexdigest() == spec["sha256"], name


@pytest.mark.real_data("atlas")
def test_vendored_inputs_with_the_real_a424_coordinates_rebuild_the_original_bytes(a424_folder):
    packed = [name for name, spec in reference_specs().items() if "a424_offsets" in spec]
    assert packed
    for name in packed:
        rebuilt = reference_bytes(*name.split("/"), a424=a424_folder)
        assert hashlib.sha256(rebuilt).hexdigest() == reference_specs()[name]["sha256"], name


@pytest.mark.real_data("reference", "atlas")
def test_vendored_fixtures_equal_the_shared_originals(a424_folder):
    """Tensor by tensor (bit for bit) and file by file, against ../shared/reference itself."""
    shared = SHARED / "reference"
    for name, digest in json.loads((REFERENCE / "fixtures.json").read_text())["sources"].items():
        assert sha256(shared / name) == digest, f"{name} changed: rerun tests/fixtures/make_reference_fixtures.py"
    for name, spec in reference_specs().items():
        if spec.get("copy"):
            assert (REFERENCE / name).read_bytes() == (shared / name).read_bytes(), name
            continue
        original = load_file(shared / name)
        vendored = reference_tensors(*name.split("/"), a424=a424_folder)
        assert sorted(vendored) == sorted(spec.get("kept", original)), name
        for key, tensor in vendored.items():
            assert tensor.dtype == original[key].dtype and tensor.shape == original[key].shape, f"{name}: {key}"
            assert torch.equal(bits(tensor), bits(original[key])), f"{name}: {key}"
