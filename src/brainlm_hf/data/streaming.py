# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Training windows streamed from prepared Parquet shards, exactly resumable, and the collator that batches them.

* `WindowStream`: the windows of one rank's shards, epoch by epoch, a pure function of (seed, epoch, position).
  In a `DataLoader` with workers, worker k of K reads the shards k, k + K, ... of the rank's shards of the epoch, so
  every window comes once.
* `BatchStream`: endless full batches of one or more `WindowStream`s built inside the DataLoader workers
  (`batch_size=None`), whose positions the consuming process records batch by batch: a checkpoint of
  `BatchStream.state_dict()` resumes exactly, with workers (see its docstring for the worker-count rule).
* `BrainLMCollator`: window items -> model inputs.
"""

import itertools
import zlib
from collections.abc import Callable, Iterator

import numpy as np
import torch

from .. import feature_extraction_brainlm as feature_extraction
from ..errors import InvalidArgumentError, InvalidFileError, InvalidInputError, UserError, one_line
from ..feature_extraction_brainlm import BrainLMFeatureExtractor
from .prepared import read_recordings, read_shapes, shard_columns


class WindowStream(torch.utils.data.IterableDataset):
    """
    Random training windows streamed from Parquet shards (local paths or URLs), exactly resumable.

    Each epoch permutes the shards with `(seed, epoch)`; rank `r` of `world_size` takes shards `r, r + world_size, ...`
    of that permutation (so every rank reads whole shards; make the shard count a multiple of the world size).
    Recordings are read in order and cut by the processor (`BrainLMFeatureExtractor.recording_windows`, the steps of
    its `windows`: normalised with statistics of the whole recording, read from the shard's `series_mean` /
    `series_std` when it stores them so that only the windows are read, model region order) into `crops_per_recording`
    windows at offsets drawn from `(seed, epoch, recording id)`; the windows of each block of `block_size` recordings
    are shuffled with `(seed, epoch, shard position, block)`. Nothing depends on a shuffle buffer or RNG state, so
    `state_dict()` (epoch, shard, window position) restores the stream exactly. Iterating again after a complete pass
    repeats the epoch; call `set_epoch` for a new order. Recordings shorter than one window are skipped (and, in the
    iterating process, listed in `skipped`).

    In a `DataLoader` with `num_workers=K > 1`, worker k iterates the shards k, k + K, ... of this rank's shards of
    the epoch (each window once, the order interleaved by the loader); `state_dict()` then does not follow the
    workers: use `BatchStream` for exact resume with workers.

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
            raise InvalidArgumentError("WindowStream needs at least one shard.", argument="data_files")
        if crops_per_recording < 1:
            raise InvalidArgumentError(
                f"crops_per_recording must be at least 1, got {crops_per_recording}: each recording gives that many "
                "training windows per epoch.",
                argument="crops_per_recording",
            )
        if block_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise InvalidArgumentError(
                f"Need block_size >= 1 and 0 <= rank < world_size, got {block_size}, {rank}, {world_size}."
            )
        self.data_files = sorted(str(f) for f in data_files)
        self.processor = processor
        self.crops_per_recording = crops_per_recording
        self.block_size = block_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self._shard_position, self._window_position = 0, 0, 0
        self.skipped: list[str] = []
        self._columns: dict[str, list[str]] = {}  # shard -> its extra columns read (`_extra_columns`), read once
        self._verified: set[tuple[str, str]] = set()  # (shard, id) whose stored statistics match its series

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
        worker = torch.utils.data.get_worker_info()
        if worker is not None and worker.num_workers > 1:
            if (self._shard_position, self._window_position) != (0, 0):
                raise InvalidArgumentError(
                    "This WindowStream was resumed mid-epoch; a DataLoader with several workers cannot continue its "
                    "position (use BatchStream, which records every worker's position, or num_workers <= 1)."
                )
            for item, _ in self.windows(self.epoch, worker.id, worker.num_workers):
                yield item
            return
        for item, (shard, window) in self.windows(self.epoch, 0, 1, self._shard_position, self._window_position):
            self._shard_position, self._window_position = shard, window
            yield item
        self._shard_position = self._window_position = 0  # a finished pass starts over unless set_epoch is called

    def windows(
        self, epoch: int, part: int = 0, parts: int = 1, shard: int = 0, window: int = 0, cut: bool = True
    ) -> Iterator[tuple[dict, tuple[int, int]]]:
        """
        The windows of `part` of `parts` of this rank's shards in `epoch` (its shards `part, part + parts, ...`),
        from position (`shard` in the part, `window` in that shard), each with the position after it. With
        `cut=False` an item holds, instead of `signal_values`, `window`: `(RecordingWindows, start)`, to be cut
        later (`RecordingWindows.cut([start], out=...)`: `BatchStream` cuts straight into its batches).
        """
        shards = self.shards_for_epoch(epoch)
        for index in range(shard, len(range(part, len(shards), parts))):
            position = part + index * parts  # in this rank's shards of the epoch: the key of its block shuffles
            for offset, item in self._shard_windows(
                shards[position], epoch, position, window if index == shard else 0, cut
            ):
                yield item, (index, offset + 1)

    def _shard_windows(
        self, shard: str, epoch: int, position: int, start: int, cut: bool = True
    ) -> Iterator[tuple[int, dict]]:
        """The windows of one shard in their shuffled order, from window `start`, with their index in the shard
        (see `windows` for `cut`)."""
        zscore = self.processor.normalization == "zscore"  # stored statistics: only the windows are read
        records = read_recordings(shard, self._extra_columns(shard), statistics=zscore)
        self._check_atlas(shard, records)
        length, crops = self.processor.num_timepoints, self.crops_per_recording
        for record in records:  # its length at the processor's TR
            record["length"] = self.processor.resampled_length(len(record["series"]), record.get("repetition_time"))
        self.skipped += [record["id"] for record in records if record["length"] < length]
        index = 0
        for block_start in range(0, len(records), self.block_size):
            block_records = [r for r in records[block_start : block_start + self.block_size] if r["length"] >= length]
            count = crops * len(block_records)
            if index + count <= start:  # before the resume position: not even cut
                index += count
                continue
            block = []
            for record in block_records:
                name, tr = f"{shard}: {record['id']}", record.get("repetition_time")
                self._verify_statistics(shard, record)
                source = self.processor.recording_windows(record["series"], name, tr, record.get("statistics"))
                starts = self._crop_starts(record["id"], epoch, source.num_timepoints)
                windows = source.cut(starts) if cut else [(source, s) for s in starts]
                key = "signal_values" if cut else "window"
                block += [{key: window, "id": record["id"], "crop": i} for i, window in enumerate(windows)]
            order = np.random.default_rng([self.seed, epoch, position, block_start]).permutation(len(block))
            for j in range(max(0, start - index), count):
                yield index + j, block[order[j]]
            index += count

    def _extra_columns(self, shard: str) -> list[str]:
        """The shard's `repetition_time` column when the processor resamples (it has a TR), and its `atlas` column
        when the processor names its atlas, where the shard has them."""
        if shard not in self._columns:
            wanted = ["repetition_time"] if self.processor.repetition_time is not None else []
            wanted += ["atlas"] if self.processor.atlas else []
            self._columns[shard] = [name for name in wanted if name in shard_columns(shard)] if wanted else []
        return self._columns[shard]

    def _verify_statistics(self, shard: str, record: dict) -> None:
        """
        Refuse stored `series_mean` / `series_std` that are not those of the recording's series (an edited or
        mismatched shard would stream windows of the wrong spread), naming the shard, recording and regions. Checked
        the first time this stream meets the recording (a pass over it, as a shard without statistics costs every
        epoch), then trusted.
        """
        if record.get("statistics") is None or (shard, record["id"]) in self._verified:
            return
        series = record["series"]
        stored = [np.asarray(value, np.float32) for value in record["statistics"]]
        shapes = stored[0].shape == stored[1].shape == (series.shape[1],)
        if not shapes or not (np.isfinite(stored).all() and (stored[1] >= 0).all()):
            return  # refused by the processor (`statistics=`), which names the shapes or the values
        mean, std = feature_extraction.zscore_statistics(series)
        scale = np.maximum(std, np.finfo(np.float32).tiny)
        wrong = (np.abs(stored[0] - mean) > 1e-4 * scale) | (np.abs(stored[1] - std) > 1e-4 * scale)
        if wrong.any():
            regions = np.flatnonzero(wrong)
            raise InvalidFileError(
                f"{shard}: the stored series_mean / series_std of recording {record['id']!r} are not those of its "
                f"series (regions {regions[:10].tolist()}{' ...' if len(regions) > 10 else ''}; e.g. std "
                f"{stored[1][regions[0]]:.4g} stored, {std[regions[0]]:.4g} computed): the shard was edited or "
                "damaged; prepare the dataset again."
            )
        self._verified.add((shard, record["id"]))

    def _check_atlas(self, shard: str, records: list[dict]) -> None:
        """Refuse recordings that the shard records as parcellated with another atlas than the processor's: the
        regions differ even where their count agrees."""
        other = next((r for r in records if r.get("atlas") and r["atlas"] != self.processor.atlas), None)
        if other is not None:
            raise InvalidInputError(
                f"{shard}: recording {other['id']!r} is parcellated with the atlas {other['atlas']!r}, but the "
                f"processor is for {self.processor.atlas!r}: stream it with the processor of its dataset "
                "(PreparedDataset(...).processor), or prepare the recordings with this processor's atlas."
            )

    def _crop_starts(self, record_id: str, epoch: int, num_timepoints: int) -> np.ndarray:
        """Window starts of a recording's crops, a pure function of `(seed, epoch, recording id)`."""
        rng = np.random.default_rng([self.seed, epoch, zlib.crc32(record_id.encode())])
        return rng.integers(0, num_timepoints - self.processor.num_timepoints + 1, self.crops_per_recording)


class BatchStream(torch.utils.data.IterableDataset):
    """
    Endless full batches of one or more `WindowStream`s, made in DataLoader workers, exactly resumable with workers.

    Each stream is split into `parts` parts (part p reads the shards p, p + parts, ... of the stream's shards of an
    epoch). A part turns its windows into full batches of `batch_size` epoch after epoch (the short last batch of a
    part's epoch is dropped; a part whose whole epoch holds fewer windows than one batch raises instead of looping).
    Item n is `{"part", "positions", "batches"}`: one batch of every stream, all from part `(next + n) % parts`, each
    `{"signal_values" (B, V, T), "coordinates" (V, 3) when known, "window_ids", "epoch", "noise" (B, L) when a noise
    function is given}`. So the sequence of items depends on `parts` only, never on how many workers make them:
    worker j of K (K must divide `parts`) makes the items of parts `next + j, next + j + K, ...` and the DataLoader's
    round robin returns them in that very order. Each window is cut (normalised, model region order) straight into
    its row of the batch, never into an array of its own first: the numbers are those of `WindowStream`'s windows.

    The consuming process calls `advance(item)` for every item it uses; `state_dict()` (plain JSON data: the number
    of parts, the next part and every part's epoch, shard and window position for each stream) then resumes exactly
    with any worker count that divides `parts` (0 workers included): the batches made ahead by workers but not used
    are simply made again. Another worker count is refused, naming both.

    `loader(..., shared_buffers=n)` makes the workers write their batches into `n` buffers each of shared memory
    allocated once, instead of new shared memory for every batch (whose fresh pages cost about as much as making the
    batch; measured: 2 workers 1.4x one process without, 1.8x with): an item's tensors are then views of its buffer
    until `advance(item)` gives the buffer back, so use (or copy) them before. With `pin_memory` they are copied into
    pinned memory and the buffer is given back at once.

    Args:
        streams: the `WindowStream`s; item n holds one batch of each, in this order.
        batch_size: windows per batch.
        parts: the number of parts each stream is split into (usually the number of DataLoader workers, at least 1).
        noise (*optional*): `noise(epoch, window_ids)` -> masking noise `(B, L)`, computed in the workers.
    """

    def __init__(
        self,
        streams: list[WindowStream],
        batch_size: int,
        parts: int = 1,
        noise: Callable[[int, list[str]], torch.Tensor] | None = None,
    ):
        super().__init__()
        if batch_size < 1 or parts < 1 or not streams:
            raise InvalidArgumentError(
                f"BatchStream needs streams, batch_size >= 1 and parts >= 1, got {batch_size}, {parts}."
            )
        self.streams, self.batch_size, self.noise = list(streams), batch_size, noise
        self.coordinates = BrainLMCollator(streams[0].processor).coordinates
        self.load_state_dict(
            {
                "parts": parts,
                "next": 0,
                "positions": [[{"epoch": s.epoch, "shard": 0, "window": 0}] * parts for s in self.streams],
            }
        )

    @property
    def parts(self) -> int:
        return self._parts

    def state_dict(self) -> dict:
        return {
            "parts": self._parts,
            "next": self._next,
            "positions": [[dict(p) for p in stream] for stream in self._positions],
        }

    def load_state_dict(self, state: dict) -> None:
        if len(state["positions"]) != len(self.streams) or any(len(p) != state["parts"] for p in state["positions"]):
            raise InvalidArgumentError(
                f"The batch stream state holds {len(state['positions'])} streams of {state['parts']} parts; this "
                f"BatchStream has {len(self.streams)} streams.",
                argument="state",
            )
        self._parts, self._next = int(state["parts"]), int(state["next"])
        self._positions = [[dict(p) for p in stream] for stream in state["positions"]]

    def advance(self, item: dict) -> None:
        """Record that `item` was used: the parts' positions after it, and the part that comes next (and give its
        shared buffer back, if it has one)."""
        for positions, position in zip(self._positions, item["positions"], strict=True):
            positions[item["part"]] = dict(position)
        self._next = (item["part"] + 1) % self._parts
        if item.get("slot") is not None:
            item.pop("buffers").release(item.pop("slot")[0])

    def loader(
        self,
        num_workers: int = 0,
        pin_memory: bool = False,
        prefetch_factor: int | None = None,
        shared_buffers: int = 0,
    ):
        """
        A DataLoader over this stream (`batch_size=None`: the items are batches already), refusing a worker count
        that does not divide `parts`. With `shared_buffers > 0` and workers, the batches come through that many
        reused shared-memory buffers per worker (see the class docstring; at least `prefetch_factor + 4`, so that
        the workers never wait for a buffer while their items queue up).
        """
        self.check_workers(num_workers)
        buffers = None
        if num_workers and shared_buffers:
            buffers = _SharedBuffers(self, num_workers, max(shared_buffers, (prefetch_factor or 2) + 4))
        self._buffers = buffers  # travels to the workers with this object
        loader = torch.utils.data.DataLoader(
            self,
            batch_size=None,
            num_workers=num_workers,
            pin_memory=pin_memory and buffers is None,
            prefetch_factor=prefetch_factor if num_workers else None,
            collate_fn=_as_is,
            generator=torch.Generator(),  # creating an iterator must not draw from the global RNG
        )
        return _LoaderErrors(
            loader if buffers is None else _BufferedLoader(loader, buffers, self.coordinates, pin_memory)
        )

    def check_workers(self, num_workers: int) -> None:
        if num_workers < 0:
            raise InvalidArgumentError(
                f"The number of DataLoader workers must be 0 or more, got {num_workers}.", argument="num_workers"
            )
        if self._parts % max(1, num_workers):
            divisors = [k for k in range(1, self._parts + 1) if self._parts % k == 0]
            raise InvalidArgumentError(
                f"The data is split into {self._parts} parts (the worker count it started with) but {num_workers} "
                f"DataLoader workers cannot share them exactly: resume with a worker count that divides "
                f"{self._parts} ({', '.join(map(str, divisors))}, or 0).",
                argument="num_workers",
            )

    def __iter__(self) -> Iterator[dict]:
        worker = torch.utils.data.get_worker_info()
        index, count = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        self.check_workers(count)
        buffers = getattr(self, "_buffers", None) if worker is not None else None
        parts = [(self._next + index + count * i) % self._parts for i in range(self._parts // count)]
        sources = {part: [self._batches(s, part) for s in range(len(self.streams))] for part in parts}
        while True:
            for part in parts:
                made = [next(source) for source in sources[part]]
                slot = buffers.acquire(index) if buffers is not None else None
                batches = [
                    self._collate(items, epoch, None if slot is None else buffers.views(index, slot, stream))
                    for stream, (items, epoch, _) in enumerate(made)
                ]
                item = {"part": part, "positions": [position for _, _, position in made], "batches": batches}
                if slot is not None:
                    item["slot"] = (index, slot)
                yield item

    def _batches(self, index: int, part: int) -> Iterator[tuple[list[dict], int, dict]]:
        """Endless full batches (their window items) of one part of one stream, each with its epoch and the part's
        position after it."""
        stream, size = self.streams[index], self.batch_size
        position = self._positions[index][part]
        epoch, start = position["epoch"], (position["shard"], position["window"])
        while True:
            items, made, seen = [], 0, 0
            for item, (shard, window) in stream.windows(epoch, part, self._parts, *start, cut=False):
                items.append(item)
                seen += 1
                if len(items) == size:
                    yield items, epoch, {"epoch": epoch, "shard": shard, "window": window}
                    items, made = [], made + 1
            if not made and start == (0, 0):  # a whole epoch without one batch: every later epoch would be alike
                raise InvalidInputError(
                    f"Stream {stream.rank} of {stream.world_size}, part {part} of {self._parts}: epoch {epoch} has "
                    f"{seen} windows, fewer than one batch of {size}; lower the batch size, raise "
                    "crops_per_recording, use fewer DataLoader workers or add recordings."
                )
            epoch, start = epoch + 1, (0, 0)

    def _collate(self, items: list[dict], epoch: int, into: tuple | None = None) -> dict:
        """A batch of window items (not cut yet: each is cut straight into its row of the batch); `into`: the
        (signal, noise) views of a shared buffer to write it in (the tensors are then attached in the consuming
        process)."""
        window_ids = [f"{item['id']}/{item['crop']}" for item in items]
        source = items[0]["window"][0]
        shape = (len(items), source.series.shape[1], source.processor.num_timepoints)
        signal = into[0] if into is not None else _new_batch(shape)
        rows = signal.numpy()
        for row, item in enumerate(items):
            source, start = item["window"]
            source.cut([start], out=rows[row : row + 1])
        if into is not None:
            if self.noise is not None:
                into[1].copy_(self.noise(epoch, window_ids))
            return {"window_ids": window_ids, "epoch": epoch}
        batch = {"signal_values": signal, "window_ids": window_ids, "epoch": epoch}
        if self.coordinates is not None:
            batch["coordinates"] = self.coordinates
        if self.noise is not None:
            batch["noise"] = self.noise(epoch, window_ids)
        return batch


class _SharedBuffers:
    """
    For each loader worker, `size` item buffers in shared memory (signal `(streams, B, V, T)` and noise
    `(streams, B, L)`), allocated by the consuming process before the workers start, and a semaphore counting the
    free ones. A worker takes its buffers in turn (waiting while none is free, and giving up if the consuming process
    is gone); the consumer gives them back in the same order (`BatchStream.advance`). The consumer counts the items
    it holds per worker (`held`), so that asking for an item that no buffer is left for is an error, not a wait that
    never ends.
    """

    def __init__(self, batches: BatchStream, workers: int, size: int):
        import multiprocessing
        import os

        stream = batches.streams[0]
        regions = stream.processor.num_regions or read_shapes(stream.data_files[0])[0][1]
        shape = (workers, size, len(batches.streams), batches.batch_size)
        self.signal = _shared_tensor((*shape, regions, stream.processor.num_timepoints))
        width = batches.noise(0, ["probe/0"]).shape[-1] if batches.noise is not None else 0
        self.noise = _shared_tensor((*shape, width)) if width else None
        self.free = [multiprocessing.get_context().Semaphore(size) for _ in range(workers)]
        self.closed = multiprocessing.get_context().Event()
        self.size, self.parent, self.made = size, os.getpid(), 0
        self.held = [0] * workers  # consumer side: items handed out and not given back, per worker

    def acquire(self, worker: int) -> int:
        import os

        while not self.free[worker].acquire(timeout=1.0):
            if os.getppid() != self.parent:
                raise RuntimeError("The process that reads these batches is gone.")
        if self.closed.is_set():
            raise RuntimeError("The loader that reads these batches is closed.")
        self.made += 1
        return (self.made - 1) % self.size

    def views(self, worker: int, slot: int, stream: int) -> tuple:
        return self.signal[worker, slot, stream], None if self.noise is None else self.noise[worker, slot, stream]

    def release(self, worker: int) -> None:
        self.held[worker] -= 1
        self.free[worker].release()

    def close(self) -> None:
        """Wake every worker that waits for a buffer, to stop (the consumer is done): without it, a worker would
        wait until the DataLoader's shutdown gives up on it (seconds per worker)."""
        self.closed.set()
        for free in self.free:
            for _ in range(self.size):
                free.release()

    def check_free(self, worker: int) -> None:
        """Refuse to wait for an item of `worker` while the consumer holds all its buffers (it would wait forever)."""
        if self.held[worker] >= self.size:
            raise InvalidArgumentError(
                f"BatchStream.loader(shared_buffers={self.size}): all {self.size} shared buffers of loader worker "
                f"{worker} hold items that were not given back, so no further batch can be made: call "
                "BatchStream.advance(item) once done with each item (its buffer is then reused), or pass "
                "shared_buffers=0 for batches in memory of their own.",
                argument="shared_buffers",
            )


class _BufferedLoader:
    """The consuming side of `_SharedBuffers`: attaches each item's buffer views (or pinned copies) to its batches."""

    def __init__(self, loader, buffers: _SharedBuffers, coordinates, pin_memory: bool):
        self.loader, self.buffers, self.coordinates, self.pin_memory = loader, buffers, coordinates, pin_memory
        if pin_memory and coordinates is not None:
            self.coordinates = coordinates.pin_memory()

    def __iter__(self) -> Iterator[dict]:
        return self._items(iter(self.loader))  # the workers start here, in the caller's thread

    def _items(self, items: Iterator[dict]) -> Iterator[dict]:
        try:
            yield from self._attached(items)
        finally:
            self.buffers.close()

    def _attached(self, items: Iterator[dict]) -> Iterator[dict]:
        workers = len(self.buffers.held)
        for count in itertools.count():
            self.buffers.check_free(count % workers)  # the DataLoader takes the workers' items in turn
            item = next(items, None)
            if item is None:
                return
            worker, slot = item["slot"]
            self.buffers.held[worker] += 1
            for stream, batch in enumerate(item["batches"]):
                signal, noise = self.buffers.views(worker, slot, stream)
                batch["signal_values"] = signal.pin_memory() if self.pin_memory else signal
                if noise is not None:
                    batch["noise"] = noise.pin_memory() if self.pin_memory else noise
                if self.coordinates is not None:
                    batch["coordinates"] = self.coordinates
            if self.pin_memory:  # copied: the buffer can be reused at once
                self.buffers.release(worker)
                item["slot"] = None
            else:
                item["buffers"] = self.buffers
            yield item


class LoaderWorkerError(UserError, RuntimeError):
    """A DataLoader worker that died (killed by a signal, e.g. by the out-of-memory killer, or exited)."""


class _LoaderErrors:
    """
    Iterates a loader (its iterator, and so its workers, made by `iter` in the caller's thread) and turns what
    its workers' failures become in torch into errors that say what happened: a worker killed or gone is a
    `LoaderWorkerError` that names the likely cause and the fix; a `UserError` raised in a worker (e.g. a shard
    deleted while streaming), which torch re-raises with the worker's traceback in its message, is raised again
    with its own message.
    """

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self) -> Iterator[dict]:
        return _translated(iter(self.loader))


def _translated(items: Iterator[dict]) -> Iterator[dict]:
    try:
        yield from items
    except UserError as error:
        message = str(error)
        if not message.startswith("Caught "):
            raise
        original = message.rstrip().splitlines()[-1].split(": ", 1)[-1]  # "module.Type: message" of the worker
        raise type(error)(original, argument=error.argument) from None
    except RuntimeError as error:
        if "DataLoader worker" not in str(error):
            raise
        fix = (
            "use fewer loader workers (dataloader_num_workers) or a smaller dataloader_prefetch_factor, or free "
            "memory; a run resumes from its latest checkpoint (resume_from_checkpoint='latest')"
        )
        raise LoaderWorkerError(
            f"{one_line(error).rstrip('.')}. A worker killed by signal 9 (SIGKILL) was most often stopped by the "
            f"out-of-memory killer: {fix}."
        ) from error


def _shared_tensor(shape: tuple) -> torch.Tensor:
    """A float32 tensor allocated straight in shared memory (as PyTorch's `default_collate` does in workers)."""
    template = torch.empty(0, dtype=torch.float32)
    return template.new(template._typed_storage()._new_shared(int(np.prod(shape)))).resize_(shape)


def _as_is(item):
    return item


class BrainLMCollator:
    """
    Stacks window items into model inputs: `signal_values` `(B, V, T)`, `coordinates` `(V, 3)` and, when the items
    have them, `labels` `(B, ...)` and `timepoint_mask` `(B, T)`. In a DataLoader worker the batch is written
    straight into shared memory (as PyTorch's `default_collate` does), so handing it to the main process copies
    nothing.
    """

    def __init__(self, processor: BrainLMFeatureExtractor):
        coordinates = processor.model_coordinates()
        self.coordinates = torch.from_numpy(coordinates) if coordinates is not None else None

    def __call__(self, items: list[dict]) -> dict:
        batch = {"signal_values": _stack([item["signal_values"] for item in items])}
        if "labels" in items[0]:
            batch["labels"] = torch.from_numpy(np.stack([item["labels"] for item in items]))
        if "timepoint_mask" in items[0]:
            batch["timepoint_mask"] = _stack([item["timepoint_mask"] for item in items])
        if self.coordinates is not None:
            batch["coordinates"] = self.coordinates
        return batch


def _stack(arrays: list[np.ndarray]) -> torch.Tensor:
    if np.asarray(arrays[0]).dtype != np.float32:
        return torch.from_numpy(np.stack(arrays))
    out = _new_batch((len(arrays), *np.shape(arrays[0])))
    np.stack(arrays, out=out.numpy())
    return out


def _new_batch(shape: tuple) -> torch.Tensor:
    """An empty float32 batch: in shared memory in a DataLoader worker (as PyTorch's `default_collate` does), so
    that handing it to the main process copies nothing."""
    if torch.utils.data.get_worker_info() is not None:
        return _shared_tensor(shape)
    return torch.empty(shape, dtype=torch.float32)
