"""`brainlm_hf.inference`: a model mapped over windows in batches, and per-recording means."""

import numpy as np
import pytest
import torch

from brainlm_hf import BrainLMModel
from brainlm_hf.inference import average_by_recording, map_windows


def test_map_windows_is_the_unbatched_forward_in_eval_mode_for_any_batch_size(config, inputs):
    torch.manual_seed(0)
    model = BrainLMModel(config).train()
    windows, coordinates = inputs["signal_values"].numpy(), inputs["coordinates"].numpy()
    rows_seen = []

    def step(batch, xyz, rows):
        rows_seen.append(rows)
        hidden = model(signal_values=batch, coordinates=xyz).last_hidden_state
        return hidden[:, 0], hidden

    with torch.no_grad():
        expected = model.eval()(**inputs).last_hidden_state  # (3, tokens, hidden)
    model.train()
    cls, hidden = map_windows(model, windows, coordinates, step, batch_size=2)
    assert not model.training and [(r.start, r.stop) for r in rows_seen] == [(0, 2), (2, 4)]
    assert cls.dtype == hidden.dtype == np.float32 and hidden.shape == tuple(expected.shape)
    np.testing.assert_allclose(cls, expected[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hidden, expected.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        map_windows(model, windows, coordinates, step, batch_size=0)
    with pytest.raises(ValueError, match="No windows to run the model on"):
        map_windows(model, windows[:0], coordinates, step)


def test_average_by_recording_by_hand():
    values = np.array([[1.0, 2.0], [3.0, 4.0], [10.0, 20.0]])
    means = average_by_recording(values, np.array([0, 0, 1]), 2)
    assert means.dtype == np.float32
    np.testing.assert_array_equal(means, [[2.0, 3.0], [10.0, 20.0]])
