"""How `brainlm_hf.hub` resolves a name without reaching a Hub (release names from `brainlm_hf.convert`): short
release names, subfolders, native folders. Loading over HTTP: tests/integrations/test_hub_loading.py."""

import pytest

from brainlm_hf.convert import RELEASE_REPO, release_location
from brainlm_hf.hub import resolve_pretrained


@pytest.mark.parametrize(
    ("short_name", "subfolder"),
    [("brainlm-13m", "old_13M"), ("BrainLM-111M", "vitmae_111M"), ("brainlm-650m", "vitmae_650M")],
)
def test_a_short_name_is_the_release_repository_and_its_subfolder(short_name, subfolder):
    assert release_location(short_name) == (RELEASE_REPO, subfolder)


def test_other_names_pass_through_and_a_short_name_refuses_a_second_subfolder():
    assert release_location("someone/model", "sub") == ("someone/model", "sub")
    assert release_location("someone/model") == ("someone/model", "")
    with pytest.raises(ValueError, match="'brainlm-111m' names vandijklab/brainlm with subfolder 'vitmae_111M'"):
        release_location("brainlm-111m", "other")


def test_a_native_folder_goes_to_transformers_unchanged(pretrained):
    _, folder = pretrained
    kwargs = {"revision": "main", "subfolder": ""}
    assert resolve_pretrained(folder, kwargs) == (folder, kwargs)
    assert resolve_pretrained(None, {"config": None}) == (None, {"config": None})
