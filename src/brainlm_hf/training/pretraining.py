# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Masked-signal pretraining with Accelerate over streamed Parquet shards, resumable exactly.

Launch with `python` (one process) or `accelerate launch` (any number of processes and machines); the code is the
same. `pretrain(args)` builds a `PretrainingRun` (accelerator, model, optimizer, scheduler, batches and state in one
object) and runs it. Design choices, each forced by a measured trap (see the README):

* Data: every optimizer step consumes one micro-batch from each of `num_processes x gradient_accumulation_steps`
  `WindowStream`s; process p reads streams `p * GA ... p * GA + GA - 1`, one per accumulation micro-step. So a run
  with 2 processes sees the same windows per step as 1 process with twice the accumulation. The DataLoaders are not
  `prepare`d (that would shard the data a second time).
* Loading: a process's streams are batched by one `BatchStream` in `--dataloader_num_workers` worker processes
  (each stream split into as many parts by shards; step n takes its micro-batches from part n mod parts), made
  ahead (`--dataloader_prefetch_factor` per worker, plus a thread that keeps the next items ready, so even without
  workers the data path overlaps the step), pinned and copied with `non_blocking` when an accelerator is used.
  The masking noise is drawn in the workers too.
* Masks: the noise of every window is drawn from `(seed, epoch, window id)`, not from a process's RNG stream.
* Steps: training counts optimizer steps over endless streams (each part restarts its epoch on its own), so
  processes never wait for one another at an epoch end. The LR scheduler is stepped by hand once per optimizer step
  (a prepared scheduler steps once per process) and saved in the checkpoint's JSON state.
* Host syncs: the loss stays on the device; it is read (`.item()`, with the non-finite check) at logging and saving
  steps, and at every step only where that costs nothing (the CPU).
* Checks: before the first step, `checks` refuses a run that cannot work (no windows, fewer windows per epoch than
  one batch for some stream part, window length vs patch size, regions and coordinates vs the model) with one line.
* Output folder: one run per `output_dir` (`folders.claim_run_folder`: an OS lock, released when the process ends);
  a folder that holds an earlier run is refused unless `--resume_from_checkpoint` continues it or `--overwrite`
  replaces it (deleted once the run has passed its checks).
* Resume (`checkpoints`): a step checkpoint holds model, optimizer and RNG (`save_state`) and a JSON trainer state
  (step, scheduler, every process's `BatchStream` positions, the data's fingerprint and the stream layout); nothing
  is unpickled beyond tensors. `--resume_from_checkpoint latest` continues with the same losses as an uninterrupted
  run, also with loader workers (with any worker count dividing the one the run started with) and with another
  number of processes whose product with the accumulation steps is unchanged; other data or another layout is
  refused.
"""

import functools
import itertools
import json
import logging
import math
import queue
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from ..configuration_brainlm import PRESETS, BrainLMConfig
from ..data import PreparedDataset, WindowStream
from ..data.streaming import BatchStream
from ..errors import InvalidArgumentError, UserError
from ..feature_extraction_brainlm import BrainLMFeatureExtractor
from ..folders import claim_run_folder, clear_run_folder
from ..inference import map_windows
from ..metrics import baseline_predictions, masked_reconstruction_metrics
from ..modeling_brainlm import BrainLMForMaskedSignalModeling
from .checkpoints import data_fingerprint, load_checkpoint, save_checkpoint, stream_layout
from .checks import check_counts, check_pretraining_data, check_processor_for_model, saved_processor

if TYPE_CHECKING:
    from accelerate import Accelerator

logger = logging.getLogger(__name__)


OPTIMIZERS = ("adamw_torch_fused", "adamw_torch")  # transformers' names (`TrainingArguments.optim`)


@dataclass
class PretrainingArguments:
    """Arguments of `brainlm pretrain` / `examples/pretrain.py` (also readable from a JSON or YAML file)."""

    dataset: str = field(
        metadata={"help": "prepared dataset folder (brainlm prepare) or URL with train/ and processor"}
    )
    output_dir: str = field(metadata={"help": "checkpoints, logs, metrics and the final model"})
    model: str = field(default="brainlm-tiny", metadata={"help": "preset name, config.json, or checkpoint folder"})
    validation_split: str = field(default="validation", metadata={"help": "split evaluated every eval_steps"})
    mask_ratio: float | None = field(default=None, metadata={"help": "override the model config"})
    mask_strategy: str | None = field(default=None, metadata={"help": "random or forecast (tiles: predict_last)"})
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    base_learning_rate: float = field(default=1.5e-4, metadata={"help": "MAE scaling: lr = base * total batch / 256"})
    learning_rate: float | None = field(default=None, metadata={"help": "absolute learning rate (skips the scaling)"})
    warmup_steps: int = 50
    max_steps: int = 1000
    weight_decay: float = 0.05
    max_grad_norm: float = 1.0
    adam_beta2: float = 0.95
    optim: Literal[OPTIMIZERS] = field(
        default="adamw_torch_fused",
        metadata={"help": "adamw_torch_fused (one kernel for all parameters, transformers' default) or adamw_torch"},
    )
    mixed_precision: str = field(default="no", metadata={"help": "no, bf16 or fp16"})
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    crops_per_recording: int = 4
    dataloader_num_workers: int = field(
        default=0, metadata={"help": "loader worker processes per process (each stream is split into as many parts)"}
    )
    dataloader_prefetch_factor: int = field(default=2, metadata={"help": "batches made ahead per loader worker"})
    dataloader_pin_memory: bool = field(default=True, metadata={"help": "pin batches (only with an accelerator)"})
    torch_compile: bool = field(default=False, metadata={"help": "compile the model's forward with torch.compile"})
    eval_steps: int = 100
    eval_windows: int = field(default=64, metadata={"help": "validation windows evaluated (0: no evaluation)"})
    save_steps: int = 100
    save_total_limit: int = 2
    logging_steps: int = 10
    seed: int = 0
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "a checkpoint folder or 'latest'"})
    overwrite: bool = field(
        default=False,
        metadata={"help": "replace the earlier run in output_dir (without it, a folder that holds one is refused)"},
    )
    trust_checkpoint_pickles: bool = field(
        default=False,
        metadata={
            "help": "on resume, also load pickles that need full unpickling (FSDP's torch.distributed.checkpoint "
            "metadata): only for checkpoints you wrote yourself"
        },
    )
    report_to: list[str] = field(default_factory=list, metadata={"help": "tensorboard, trackio, wandb"})


EVALUATION_EPOCH = 2**32 - 1  # the noise key of evaluation masks, apart from every training epoch


@dataclass
class TrainingState:
    """What a resume needs beyond model, optimizer and RNG (JSON data; see `checkpoints`)."""

    data: dict  # `checkpoints.data_fingerprint` of the training data
    layout: dict  # `checkpoints.stream_layout`
    step: int = 0


def window_noise(seed: int, epoch: int, window_ids: list[str], num_tokens: int) -> torch.Tensor:
    """Masking noise `(B, L)` of each window, a pure function of (seed, epoch, window id)."""
    rows = [np.random.default_rng([seed, epoch, zlib.crc32(w.encode())]).random(num_tokens) for w in window_ids]
    return torch.from_numpy(np.stack(rows).astype(np.float32))


def pretrain(args: PretrainingArguments) -> dict:
    """Run pretraining; returns the final evaluation metrics (also written to `output_dir/metrics.json`)."""
    run = PretrainingRun.setup(args)
    try:
        run.train()
        return run.finish()
    finally:
        run.release()


@dataclass
class PretrainingRun:
    """
    One pretraining run and everything it holds: the accelerator, the prepared model and optimizer, the LR scheduler,
    this process's `BatchStream`, the dataset and the `TrainingState`. `setup` builds it (and resumes it when
    `args.resume_from_checkpoint` says so); `train` runs the optimizer steps until `max_steps`, saving and evaluating
    on the way; `finish` evaluates and writes the final model.
    """

    args: PretrainingArguments
    accelerator: "Accelerator"
    dataset: PreparedDataset
    model: torch.nn.Module  # prepared by the accelerator (DDP/FSDP wrappers); `plain_model` is the model itself
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    batches: BatchStream
    state: TrainingState
    lock: object = None  # the `folders.claim_run_folder` lock of output_dir (held by the main process)

    @classmethod
    def setup(cls, args: PretrainingArguments) -> "PretrainingRun":
        """Check the arguments and the data (one line naming the numbers otherwise), build every part of the run
        (the same initial weights on every process), resume it if asked, and write `pretraining_args.json`."""
        check_counts(
            crops_per_recording=(args.crops_per_recording, 1),
            per_device_train_batch_size=(args.per_device_train_batch_size, 1),
            gradient_accumulation_steps=(args.gradient_accumulation_steps, 1),
            dataloader_num_workers=(args.dataloader_num_workers, 0),
            dataloader_prefetch_factor=(args.dataloader_prefetch_factor, 1),
            logging_steps=(args.logging_steps, 1),
            save_steps=(args.save_steps, 1),
        )
        if args.optim not in OPTIMIZERS:
            raise InvalidArgumentError(
                f"optim must be one of {', '.join(OPTIMIZERS)} (transformers' names), got {args.optim!r}.",
                argument="optim",
            )
        accelerator = _accelerator(args)
        lock = _claim_output(accelerator, args)
        try:
            return cls._build(args, accelerator, lock)
        except BaseException:
            if lock is not None:
                lock.release()
            raise

    @classmethod
    def _build(cls, args: PretrainingArguments, accelerator: "Accelerator", lock) -> "PretrainingRun":
        """The rest of `setup`, once `output_dir` is claimed."""
        from accelerate.utils import set_seed

        set_seed(args.seed)  # the same initial weights on every process
        dataset = PreparedDataset(args.dataset)
        model = build_model(args)
        check_processor_for_model(dataset.processor, model.config, saved_processor(args.model), args.model)
        if not args.resume_from_checkpoint:  # a resumed run splits its data as the checkpoint says: checked below
            counts = _check_data(args, dataset, accelerator.num_processes, max(1, args.dataloader_num_workers))
        optimizer, scheduler = build_optimizer(model, args, accelerator.num_processes)
        model, optimizer = _prepare(accelerator, model, optimizer, args)
        streams = training_streams(args, dataset, accelerator.process_index, accelerator.num_processes)
        batches = training_batches(args, streams, accelerator.unwrap_model(model), dataset.processor)
        state = TrainingState(data_fingerprint(dataset), stream_layout(accelerator.num_processes, args))
        run = cls(args, accelerator, dataset, model, optimizer, scheduler, batches, state, lock)
        if args.resume_from_checkpoint:
            run.resume()
            batches.check_workers(args.dataloader_num_workers)
            counts = _check_data(args, dataset, accelerator.num_processes, batches.parts)
        run.start(counts)
        return run

    @property
    def output(self) -> Path:
        return Path(self.args.output_dir)

    @property
    def plain_model(self) -> BrainLMForMaskedSignalModeling:
        """The model itself: without DDP/FSDP wrappers and without a compiled wrapper."""
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False)

    def resume(self) -> None:
        """
        Restore model, optimizer, RNG, scheduler, step and this process's stream positions from a checkpoint
        (`checkpoints.load_checkpoint`: other data or another stream layout is refused). The streams of all processes
        are pooled and dealt again, so a run resumed on another number of processes with the same number of streams
        (processes x gradient accumulation steps) continues the same data. The optimizer runs as `--optim` says, also
        when the checkpoint was written by the other implementation (said in the log).
        """
        args, accelerator = self.args, self.accelerator
        expected = {"data": self.state.data, "layout": self.state.layout}
        saved = load_checkpoint(
            accelerator,
            self.output,
            args.resume_from_checkpoint,
            expected,
            trust_pickles=args.trust_checkpoint_pickles,
        )
        use_optim(self.optimizer, args.optim)
        self.scheduler.load_state_dict(saved["scheduler"])
        self.state.step = saved["step"]
        self.batches.load_state_dict(
            stream_state_for(
                saved["streams"],
                accelerator.process_index,
                accelerator.num_processes,
                args.gradient_accumulation_steps,
            )
        )

    def start(self, counts: dict) -> None:
        """Delete the earlier run (`overwrite`), write `pretraining_args.json`, log the training data's `counts` and
        start the trackers."""
        if self.accelerator.is_main_process:
            if self.args.overwrite and not self.args.resume_from_checkpoint:
                clear_run_folder(self.output)
            (self.output / "pretraining_args.json").write_text(json.dumps(asdict(self.args), indent=2))
            logger.info(f"Training data: {counts}")
        config = {k: v for k, v in asdict(self.args).items() if v is not None}
        self.accelerator.init_trackers("brainlm_pretraining", config=config)

    def train(self) -> None:
        """Optimizer steps until `max_steps`: a micro-batch from every stream, then log, checkpoint and evaluate."""
        from tqdm.auto import tqdm

        args, accelerator, state = self.args, self.accelerator, self.state
        forward = torch.compile(self.model) if args.torch_compile else self.model  # the prepared model is saved
        pin = args.dataloader_pin_memory and accelerator.device.type == "cuda"
        prefetch = args.dataloader_prefetch_factor
        loader = self.batches.loader(args.dataloader_num_workers, pin, prefetch, shared_buffers=prefetch + 4)
        feed = DataFeed(loader, f"process {accelerator.process_index}, {args.dataloader_num_workers} loader workers")
        progress = tqdm(total=args.max_steps, initial=state.step, disable=not accelerator.is_local_main_process)
        meter = _Throughput(accelerator.num_processes)
        losses = _LossWatch(accelerator, every_step=accelerator.device.type == "cpu")
        self.model.train()
        try:
            while state.step < args.max_steps:
                item = next(feed)
                losses.add(self.train_step(forward, item["batches"], meter), state.step + 1)
                self.batches.advance(item)  # after the step: the item's tensors may live in a reused shared buffer
                self.scheduler.step()
                state.step += 1
                progress.update(1)
                log_now = state.step % args.logging_steps == 0 or state.step == args.max_steps
                save_now = state.step % args.save_steps == 0 or state.step == args.max_steps
                if losses.due(log_now or save_now):
                    loss, bad = losses.read()
                    if bad is not None:
                        saved = self.save(name="nan")
                        raise RuntimeError(f"The loss is {bad[1]} at step {bad[0]}; the state was saved to {saved}.")
                    if log_now:
                        record = {"step": state.step, "loss": loss, "learning_rate": self.scheduler.get_last_lr()[0]}
                        _log(accelerator, self.output, {**record, **meter.read()}, progress)
                        losses.reset()
                if save_now:
                    self.save()
                if args.eval_steps and state.step % args.eval_steps == 0 and state.step < args.max_steps:
                    metrics = self.evaluate()
                    accelerator.log({f"eval_{k}": v for k, v in metrics.get("model", {}).items()}, step=state.step)
                    self.model.train()
        finally:
            feed.close()
            progress.close()

    def train_step(self, forward, batches: list[dict], meter: "_Throughput") -> torch.Tensor:
        """
        One optimizer step over one micro-batch of each stream (`forward`: the model or its compiled forward);
        returns the loss averaged over the streams, on the device (not synchronised).
        """
        accelerator, model, optimizer = self.accelerator, self.model, self.optimizer
        step_loss = 0.0
        device = accelerator.device
        for batch in batches:
            inputs = {
                k: batch[k].to(device, non_blocking=True) for k in ("signal_values", "coordinates") if k in batch
            }
            with accelerator.accumulate(model):
                out = forward(**inputs, noise=batch["noise"].to(device, non_blocking=True))
                accelerator.backward(out.loss)
                if accelerator.sync_gradients and self.args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), self.args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            step_loss = step_loss + out.loss.detach() / len(batches)
            meter.add(len(batch["window_ids"]), batch["noise"].shape[1])
        if not accelerator.sync_gradients:
            raise RuntimeError("Gradient accumulation fell out of step with the streams.")
        return step_loss

    def evaluate(self) -> dict:
        """`WindowReconstructions.metrics` of the first `eval_windows` windows of the validation split ({} if none,
        or with `eval_windows` 0)."""
        args = self.args
        shards = self.dataset.shards(args.validation_split)
        if not shards or args.eval_windows <= 0:
            return {}
        processor = self.dataset.processor
        return reconstruct_held_out(self.plain_model, processor, shards, args.eval_windows, seed=args.seed).metrics()

    def save(self, name: str = "") -> Path:
        """`checkpoints.save_checkpoint` of this run: every process's stream positions gathered with the scheduler,
        step, data fingerprint and layout."""
        from accelerate.utils import gather_object

        trainer_state = {
            "step": self.state.step,
            "scheduler": self.scheduler.state_dict(),
            "streams": gather_object([_stream_state(self.batches)]),  # every process's positions
            "data": self.state.data,
            "layout": self.state.layout,
        }
        return save_checkpoint(self.accelerator, self.output, trainer_state, self.args.save_total_limit, name)

    def finish(self) -> dict:
        """Final evaluation, `final/` (model + processor) and `metrics.json`; returns the metrics."""
        metrics = self.evaluate()
        state_dict = self.accelerator.get_state_dict(self.model)  # a collective under FSDP / DeepSpeed: all call it
        if self.accelerator.is_main_process:
            self.plain_model.save_pretrained(self.output / "final", state_dict=state_dict)
            self.dataset.processor.save_pretrained(self.output / "final")
            (self.output / "metrics.json").write_text(json.dumps(metrics, indent=2))
        self.accelerator.end_training()
        self.release()
        return metrics

    def release(self) -> None:
        """Give `output_dir` back to other runs (the process's end does it too)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def _check_data(args: PretrainingArguments, dataset: PreparedDataset, num_processes: int, parts: int) -> dict:
    """`checks.check_pretraining_data` for this run's training (and validation) shards."""
    return check_pretraining_data(
        dataset.shards("train"),
        dataset.processor,
        args.crops_per_recording,
        args.per_device_train_batch_size,
        num_processes,
        args.gradient_accumulation_steps,
        parts,
        dataset.shards(args.validation_split) if args.validation_split and args.eval_windows > 0 else [],
    )


def build_model(args: PretrainingArguments) -> BrainLMForMaskedSignalModeling:
    """A fresh model from a preset or a config.json, or a checkpoint to continue from."""
    overrides = {
        k: v for k, v in (("mask_ratio", args.mask_ratio), ("mask_strategy", args.mask_strategy)) if v is not None
    }
    if args.model in PRESETS:
        config = BrainLMConfig.from_preset(args.model, **overrides)
    elif args.model.endswith(".json"):
        config = BrainLMConfig.from_json_file(args.model)
        for key, value in overrides.items():
            setattr(config, key, value)
    else:
        model = BrainLMForMaskedSignalModeling.from_pretrained(
            args.model, attn_implementation=args.attn_implementation, **overrides
        )
        return _with_checkpointing(model, args)
    config._attn_implementation = args.attn_implementation
    return _with_checkpointing(BrainLMForMaskedSignalModeling(config), args)


def build_optimizer(model: BrainLMForMaskedSignalModeling, args: PretrainingArguments, num_processes: int):
    """AdamW (no weight decay on biases, norms and special tokens; `args.optim`: fused, or torch's default
    implementation) and a cosine schedule with warmup."""
    from transformers import get_cosine_schedule_with_warmup

    total_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * num_processes
    scaled = args.base_learning_rate * total_batch / 256
    learning_rate = scaled if args.learning_rate is None else args.learning_rate
    if not (math.isfinite(learning_rate) and learning_rate >= 0):  # 0 is used as given (nothing trains)
        argument = "learning_rate" if args.learning_rate is not None else "base_learning_rate"
        raise InvalidArgumentError(
            f"{argument}={getattr(args, argument)}: the learning rate must be a finite number >= 0, got "
            f"{learning_rate}.",
            argument=argument,
        )
    decayed = {n for n, p in model.named_parameters() if p.ndim >= 2 and "token" not in n}
    groups = [
        {"params": [p for n, p in model.named_parameters() if n in decayed], "weight_decay": args.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n not in decayed], "weight_decay": 0.0},
    ]
    fused = args.optim == "adamw_torch_fused"
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, args.adam_beta2), fused=fused or None)
    return optimizer, get_cosine_schedule_with_warmup(optimizer, args.warmup_steps, args.max_steps)


def training_streams(args: PretrainingArguments, dataset: PreparedDataset, process_index: int, num_processes: int):
    """This process's `gradient_accumulation_steps` streams, one per accumulation micro-step (see the module)."""
    files = dataset.shards("train")
    count = num_processes * args.gradient_accumulation_steps
    if len(files) < count:
        raise InvalidArgumentError(
            f"{len(files)} training shards for {count} streams (processes x gradient accumulation): prepare the "
            f"dataset with shard_multiple={count} or more shards.",
            argument="shard_multiple",
        )
    first = process_index * args.gradient_accumulation_steps
    return [
        WindowStream(
            files,
            dataset.processor,
            crops_per_recording=args.crops_per_recording,
            seed=args.seed,
            rank=first + k,
            world_size=count,
        )
        for k in range(args.gradient_accumulation_steps)
    ]


def training_batches(args: PretrainingArguments, streams, model, processor: BrainLMFeatureExtractor) -> BatchStream:
    """The `BatchStream` of this process's streams, split into `max(1, dataloader_num_workers)` parts, with the
    masking noise of every window made beside its batch."""
    num_tokens = model.num_tokens(processor.num_regions or 1, processor.num_timepoints)
    return BatchStream(
        streams,
        args.per_device_train_batch_size,
        parts=max(1, args.dataloader_num_workers),
        noise=functools.partial(window_noise, args.seed, num_tokens=num_tokens),
    )


def use_optim(optimizer, optim: str) -> None:
    """
    Make a restored AdamW run as `optim` says: loading a state dict brings back the saved param groups, whose
    `fused` flag is the implementation that wrote it. Switching moves each step count where that implementation
    reads it: the parameter's device (fused) or the CPU (torch's default, not capturable).
    """
    fused = optim == "adamw_torch_fused"
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds the torch optimizer
    written = "adamw_torch_fused" if inner.param_groups[0].get("fused") else "adamw_torch"
    if written == optim:
        return
    logger.warning(f"The checkpoint's optimizer ran {written}; continuing with {optim} as optim= says.")
    for group in inner.param_groups:
        group["fused"] = fused or None
        group["foreach"] = None
        for parameter in group["params"]:
            state = inner.state.get(parameter, {})
            if "step" in state:
                device = parameter.device if fused else torch.device("cpu")
                state["step"] = state["step"].to(device=device, dtype=torch.float32)


def stream_state_for(saved: list, process_index: int, num_processes: int, accumulation: int) -> dict:
    """
    The `BatchStream` state of process `process_index` from a checkpoint's `TrainingState.streams` (one entry per
    process that wrote it): every stream's positions pooled in stream order and dealt again, `accumulation` per
    process. Refuses another total number of streams, naming both.
    """
    entries = sorted(saved, key=lambda e: e["first_stream"])
    positions = [p for entry in entries for p in entry["batches"]["positions"]]
    wanted = num_processes * accumulation
    if len(positions) != wanted:
        raise InvalidArgumentError(
            f"The checkpoint's data is {len(positions)} streams ({len(entries)} processes x "
            f"{len(positions) // max(1, len(entries))} gradient accumulation steps) but this run has {wanted} "
            f"({num_processes} x {accumulation}): resume with the same product.",
            argument="gradient_accumulation_steps",
        )
    first = process_index * accumulation
    return dict(entries[0]["batches"], positions=positions[first : first + accumulation])


def _stream_state(batches: BatchStream) -> dict:
    """A process's entry of `TrainingState.streams`: the index of its first stream and its `BatchStream` state."""
    return {"first_stream": batches.streams[0].rank, "batches": batches.state_dict()}


class _LossWatch:
    """
    The training loss without a host sync per step: step losses are summed on the device, with the first non-finite
    one kept, and read (averaged over processes and over the steps since the last log) only when `due`: at every
    step with `every_step` (on the CPU, where reading costs nothing), else at logging and saving steps. Reading is a
    collective, at the same steps on every process.
    """

    def __init__(self, accelerator, every_step: bool):
        self.accelerator, self.every_step = accelerator, every_step
        self.first_bad = torch.tensor([-1.0, 0.0], device=accelerator.device)  # (step, loss), step -1: none yet
        self.reset()

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def add(self, loss: torch.Tensor, step: int) -> None:
        self.total, self.count = self.total + loss.float(), self.count + 1
        here = torch.stack([torch.full_like(loss, step).float(), loss.float()])
        self.first_bad = torch.where(~torch.isfinite(loss) & (self.first_bad[0] < 0), here, self.first_bad)

    def due(self, log_or_save: bool) -> bool:
        return self.every_step or log_or_save

    def read(self) -> tuple[float, tuple[int, float] | None]:
        """(the mean loss since the last reset, (step, loss) of the first non-finite step of any process or None)."""
        reduce = self.accelerator.reduce
        mean = reduce(self.total / self.count, "mean").item()
        step = int(reduce(self.first_bad[0].clone(), "max").item())
        return mean, (None if step < 0 else (step, reduce(self.first_bad[1].clone(), "mean").item()))


@dataclass
class WindowReconstructions:
    """Held-out windows in model order with the model's reconstruction and mask (1 = masked), each `(W, V, T)`."""

    signal: np.ndarray
    prediction: np.ndarray
    mask: np.ndarray

    def metrics(self) -> dict:
        """Masked-timepoint MSE, R^2 and Pearson r of the model and of the two model-free baselines."""
        results = {"model": masked_reconstruction_metrics(self.prediction, self.signal, self.mask)}
        for name, prediction in baseline_predictions(self.signal, self.mask).items():
            results[name] = masked_reconstruction_metrics(prediction, self.signal, self.mask)
        results["num_windows"] = len(self.signal)
        return results


def reconstruct_held_out(
    model: BrainLMForMaskedSignalModeling,
    processor: BrainLMFeatureExtractor,
    shards: list[str],
    max_windows: int | None = None,
    crops_per_recording: int = 4,
    seed: int = 0,
    batch_size: int = 16,
) -> WindowReconstructions:
    """
    The first `max_windows` windows (all by default) of `shards`, `crops_per_recording` per recording, reconstructed
    with fixed masks (noise keyed by `(seed, EVALUATION_EPOCH, window id)`): the same windows and masks every time.
    """
    stream = WindowStream(shards, processor, crops_per_recording=crops_per_recording, seed=seed)
    items = list(itertools.islice(stream, max_windows))
    windows = np.stack([item["signal_values"] for item in items])  # (W, V, T)
    ids = [f"{item['id']}/{item['crop']}" for item in items]
    noise = window_noise(seed, EVALUATION_EPOCH, ids, model.num_tokens(*windows.shape[1:]))  # (W, L)

    def reconstruct(batch, xyz, rows):
        out = model(batch, xyz, noise=noise[rows].to(batch.device))
        return out.logits, model.mask_to_signal(out.mask)

    prediction, mask = map_windows(model, windows, processor.model_coordinates(), reconstruct, batch_size)
    return WindowReconstructions(windows, prediction, mask)


def _claim_output(accelerator, args: PretrainingArguments):
    """`folders.claim_run_folder` of `output_dir` by the main process; a refusal is raised on every process."""
    from accelerate.utils import broadcast_object_list

    lock, refusal = None, None
    if accelerator.is_main_process:
        try:
            inputs = [path for path in (args.dataset, args.model) if Path(path).exists()]
            lock = claim_run_folder(args.output_dir, bool(args.resume_from_checkpoint), args.overwrite, inputs)
        except UserError as error:
            refusal = error
    if accelerator.num_processes > 1:
        shared = [refusal]
        broadcast_object_list(shared)
        refusal = shared[0]
    if refusal is not None:
        raise refusal
    return lock


def _accelerator(args: PretrainingArguments):
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    return Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=args.report_to or None,
        project_config=ProjectConfiguration(project_dir=args.output_dir),
    )


def _with_checkpointing(model, args: PretrainingArguments):
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable()
    return model


def _prepare(accelerator, model, optimizer, args: PretrainingArguments):
    if accelerator.state.deepspeed_plugin is not None:  # unprepared loaders: DeepSpeed cannot infer the batch size
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = (
            args.per_device_train_batch_size
        )
    return accelerator.prepare(model, optimizer)  # the DataLoaders are not prepared: the streams shard the data


class _Throughput:
    """Windows and tokens trained on since this process started the loop (a resume counts afresh), all processes."""

    def __init__(self, num_processes: int):
        self.num_processes, self.windows, self.tokens, self.started = num_processes, 0, 0, time.perf_counter()

    def add(self, windows: int, tokens_per_window: int) -> None:
        self.windows += windows
        self.tokens += windows * tokens_per_window

    def read(self) -> dict:
        seconds = time.perf_counter() - self.started
        windows = self.windows * self.num_processes
        return {
            "windows_per_s": windows / seconds,
            "tokens_per_s": self.tokens * self.num_processes / seconds,
            "windows": windows,
            "elapsed_s": seconds,
        }


def _log(accelerator, output: Path, record: dict, progress) -> None:
    accelerator.log(record, step=record["step"])
    if accelerator.is_main_process:
        with (output / "log.jsonl").open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        progress.set_postfix(loss=f"{record['loss']:.4f}", windows_per_s=f"{record['windows_per_s']:.1f}")


class DataFeed:
    """
    The items of a loader made ahead in a thread, so that the data path overlaps the training step even without
    loader workers (order unchanged). A wait for the next item longer than `patience` seconds is logged, and again
    every `patience` seconds, so a stall is visible; an error of the loader is raised here, as it was.
    """

    def __init__(self, loader, description: str, size: int = 2, patience: float = 60.0):
        self.description, self.patience = description, patience
        self._queue, self._stop = queue.Queue(maxsize=size), threading.Event()
        iterator = iter(loader)  # made here: a multi-worker iterator installs signal handlers (main thread only)
        self._thread = threading.Thread(target=self._run, args=(iterator,), daemon=True, name="brainlm-data-feed")
        self._thread.start()

    def _run(self, iterator) -> None:
        try:
            for item in iterator:
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as error:  # noqa: BLE001 - handed to the consuming thread
            self._put(("error", error))

    def _put(self, entry) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        return self

    def __next__(self):
        waited = 0.0
        while True:
            try:
                kind, value = self._queue.get(timeout=self.patience)
                break
            except queue.Empty:
                waited += self.patience
                logger.warning(f"Waited {waited:.3g} s for the next training batch ({self.description}).")
        if kind == "error":
            raise value
        if kind == "end":
            raise StopIteration
        return value

    def close(self, timeout: float = 30.0) -> None:
        """Stop making items and wait (up to `timeout` s) for the thread to finish the one in hand, so that it is
        not still running numpy or torch code while the process exits."""
        self._stop.set()
        self._thread.join(timeout)
