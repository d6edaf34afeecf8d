# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Training windows streamed from prepared Parquet shards, exactly resumable, and the collator that batches them."""

import zlib
from collections.abc import Iterator

import numpy as np
import torch

from ..feature_extraction_brainlm import BrainLMFeatureExtractor
from .prepared import read_recordings


class WindowStream(torch.utils.data.IterableDataset):
    """
    Random training windows streamed from Parquet shards (local paths or URLs), exactly resumable.

    Each epoch permutes the shards with `(seed, epoch)`; rank `r` of `world_size` takes shards `r, r + world_size, ...`
    of that permutation (so every rank reads whole shards; make the shard count a multiple of the world size).
    Recordings are read in order and cut by the processor (`BrainLMFeatureExtractor.windows`: normalised whole, model
    region order) into `crops_per_recording` windows at offsets drawn from `(seed, epoch, recording id)`; the windows
    of each block of `block_size` recordings are shuffled with `(seed, epoch, shard, block)`. Nothing depends on a
    shuffle buffer or RNG state, so `state_dict()` (epoch, shard, window position) restores the stream exactly.
    Iterating again after a complete pass repeats the epoch; call `set_epoch` for a new order. Recordings shorter
    than one window are skipped and counted in `skipped`.
    Yields dicts with `signal_values` `(V, T)` in model region order (float32 numpy), the recording `id` and the
    `crop` number (`id` and `crop` name a window uniquely within an epoch).
    """

    def __init__(
        self,
        data_files: list[str],
        processor: BrainLMFeatureExtractor,
        crops_per_recording: int = 4,
        block_size: int = 16,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        super().__init__()
        if not data_files:
            raise ValueError("WindowStream needs at least one shard.")
        self.data_files = sorted(str(f) for f in data_files)
        self.processor = processor
        self.crops_per_recording = crops_per_recording
        self.block_size = block_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self._shard_position, self._window_position = 0, 0, 0
        self.skipped: list[str] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._shard_position, self._window_position = epoch, 0, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "shard": self._shard_position, "window": self._window_position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self._shard_position, self._window_position = state["epoch"], state["shard"], state["window"]

    def shards_for_epoch(self, epoch: int) -> list[str]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.data_files))
        return [self.data_files[i] for i in order][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[dict]:
        shards = self.shards_for_epoch(self.epoch)
        while self._shard_position < len(shards):
            shard = shards[self._shard_position]
            windows = self._shard_windows(shard, self._shard_position)
            for index in range(self._window_position, len(windows)):
                self._window_position = index + 1
                yield windows[index]
            self._shard_position, self._window_position = self._shard_position + 1, 0
        self._shard_position = 0  # a finished pass starts over (same epoch, same order) unless set_epoch is called

    def _shard_windows(self, shard: str, shard_position: int) -> list[dict]:
        """Every window of one shard in its shuffled order (re-derived identically on resume)."""
        records = read_recordings(shard)
        length = self.processor.num_timepoints
        windows = []
        for block_start in range(0, len(records), self.block_size):
            block = []
            for record in records[block_start : block_start + self.block_size]:
                if len(record["series"]) < length:
                    self.skipped.append(record["id"])
                    continue
                named = {f"{shard}: {record['id']}": record["series"]}
                crops, _ = self.processor.windows(named, starts=self._crop_starts(record["id"]))  # (crops, V, T)
                block += [{"signal_values": crop, "id": record["id"], "crop": i} for i, crop in enumerate(crops)]
            rng = np.random.default_rng([self.seed, self.epoch, shard_position, block_start])
            windows += [block[i] for i in rng.permutation(len(block))]
        return windows

    def _crop_starts(self, record_id: str):
        """Window starts of a recording's crops, a pure function of `(seed, epoch, recording id)`."""
        rng = np.random.default_rng([self.seed, self.epoch, zlib.crc32(record_id.encode())])
        length = self.processor.num_timepoints
        return lambda num_timepoints: rng.integers(0, num_timepoints - length + 1, self.crops_per_recording)


class BrainLMCollator:
    """
    Stacks window items into model inputs: `signal_values` `(B, V, T)`, `coordinates` `(V, 3)` and, when the items
    have them, `labels` `(B, ...)`.
    """

    def __init__(self, processor: BrainLMFeatureExtractor):
        coordinates = processor.model_coordinates()
        self.coordinates = torch.from_numpy(coordinates) if coordinates is not None else None

    def __call__(self, items: list[dict]) -> dict:
        batch = {"signal_values": torch.from_numpy(np.stack([item["signal_values"] for item in items]))}
        if "labels" in items[0]:
            batch["labels"] = torch.from_numpy(np.stack([item["labels"] for item in items]))
        if self.coordinates is not None:
            batch["coordinates"] = self.coordinates
        return batch
