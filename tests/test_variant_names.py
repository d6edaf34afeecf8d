"""One home for each variant name: the constants that list them match what implements them, and no other module of
the package lists them again or compares `token_layout` with a string."""

import ast
import importlib

import pytest
import torch

from brainlm_hf import BrainLMConfig, BrainLMFeatureExtractor, BrainLMModel
from brainlm_hf.configuration_brainlm import MASK_STRATEGIES, POOLINGS, TOKEN_LAYOUTS, ConfigValueError
from brainlm_hf.modeling_brainlm import LAYOUTS, layout_for

from .test_import_direction import package_modules, source_root

# "module.CONSTANT" of each list of variant names; its module is the one place that may spell the list out
VARIANTS = [
    "configuration_brainlm.TOKEN_LAYOUTS",
    "configuration_brainlm.POOLINGS",
    "feature_extraction_brainlm.NORMALIZATIONS",
    "feature_extraction_brainlm.SHORT_RECORDINGS",
    "analysis.recording_embeddings.POOLINGS",
    "analysis.recording_embeddings.WINDOW_POLICIES",
    "training.pretraining.OPTIMIZERS",
]


def variant_values() -> dict[str, tuple]:
    values = {}
    for name in VARIANTS:
        module, constant = name.rsplit(".", 1)
        values[name] = getattr(importlib.import_module(f"brainlm_hf.{module}"), constant)
    return values


def relisted_variants(tree: ast.AST, module: str, variants: dict[str, tuple]) -> list[str]:
    """Literal tuples, lists and sets of two or more strings, all names of one variant list, in a module that is the
    home of no list holding them."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Tuple | ast.List | ast.Set):
            continue
        if not node.elts or not all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
            continue
        names = {e.value for e in node.elts}
        lists = [variant for variant, values in variants.items() if len(names) >= 2 and names <= set(values)]
        if lists and not any(variant.startswith(module + ".") for variant in lists):  # not in a home of those names
            found.append(f"{module}:{node.lineno}: {sorted(names)} re-lists {' / '.join(lists)}")
    return found


def token_layout_comparisons(tree: ast.AST, module: str) -> list[str]:
    """`... token_layout == "tile_2d"` and the like: outside the model, code asks `layout_for(config)`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            named = any(isinstance(s, ast.Attribute) and s.attr == "token_layout" for s in sides)
            if named and any(isinstance(s, ast.Constant) and isinstance(s.value, str) for s in sides):
                found.append(f"{module}:{node.lineno}: compares token_layout with a string")
    return found


def test_no_module_relists_variant_names_or_compares_token_layout_strings():
    variants, offending = variant_values(), []
    model = {"configuration_brainlm", "modeling_brainlm", "feature_extraction_brainlm"}
    for module, path in package_modules(source_root()).items():
        tree = ast.parse(path.read_text(), filename=str(path))
        offending += relisted_variants(tree, module, variants)
        if module not in model:
            offending += token_layout_comparisons(tree, module)
    assert not offending, "\n".join(offending)


def test_the_checks_find_a_relisted_name_list_and_a_layout_comparison():
    tree = ast.parse(
        'choices = ["cls", "mean"]\nif config.token_layout == "tile_2d":\n    pass\nstats = ("mean", "std")\n'
    )
    assert relisted_variants(tree, "cli", {"configuration_brainlm.POOLINGS": POOLINGS}) == [
        "cli:1: ['cls', 'mean'] re-lists configuration_brainlm.POOLINGS"
    ]
    assert relisted_variants(tree, "configuration_brainlm", {"configuration_brainlm.POOLINGS": POOLINGS}) == []
    assert token_layout_comparisons(tree, "cli") == ["cli:2: compares token_layout with a string"]


def test_each_token_layout_has_its_object_and_its_mask_strategies():
    assert tuple(LAYOUTS) == TOKEN_LAYOUTS == tuple(MASK_STRATEGIES)
    for name in TOKEN_LAYOUTS:
        config = BrainLMConfig.from_preset("brainlm-tiny", token_layout=name, image_size=40, patch_size=20)
        assert layout_for(config).name == name
    with pytest.raises(ConfigValueError, match=r"token_layout must be one of \('region_window', 'tile_2d'\)"):
        BrainLMConfig.from_preset("brainlm-tiny", token_layout="tiles")


def test_each_pooling_pools_and_another_name_is_refused():
    config = BrainLMConfig.from_preset("brainlm-tiny", num_hidden_layers=1, mask_ratio=0.0)
    model = BrainLMModel(config).eval()
    signal, coordinates = torch.randn(2, 8, 2 * config.patch_size), torch.randn(8, 3)
    outputs = model(signal, coordinates)
    for pooling in POOLINGS:
        assert model.pool(outputs, 8, 2 * config.patch_size, pooling).shape == (2, config.hidden_size)
    with pytest.raises(ValueError, match=r"pooling must be one of \('cls', 'mean'\), got 'max'"):
        model.pool(outputs, 8, 2 * config.patch_size, "max")
    with pytest.raises(ConfigValueError, match=r"pooling must be one of \('cls', 'mean'\)"):
        BrainLMConfig.from_preset("brainlm-tiny", pooling="max")


@pytest.mark.parametrize(
    "setting, constant", [("normalization", "NORMALIZATIONS"), ("short_recordings", "SHORT_RECORDINGS")]
)
def test_each_processor_setting_is_accepted_and_another_is_refused(setting, constant):
    values = variant_values()[f"feature_extraction_brainlm.{constant}"]
    for value in values:
        assert getattr(BrainLMFeatureExtractor(**{setting: value}), setting) == value
    with pytest.raises(ValueError, match=f"{setting} must be one of"):
        BrainLMFeatureExtractor(**{setting: "other"})
