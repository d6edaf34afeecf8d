# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Masked-signal pretraining with Accelerate over streamed Parquet shards, resumable exactly.

Launch with `python` (one process) or `accelerate launch` (any number of processes and machines); the code is the
same. Design choices, each forced by a measured trap (see the README):

* Data: every optimizer step consumes one micro-batch from each of `num_processes x gradient_accumulation_steps`
  `WindowStream`s; process p reads streams `p * GA ... p * GA + GA - 1`, one per accumulation micro-step. So a run
  with 2 processes sees the same windows per step as 1 process with twice the accumulation. The DataLoaders are not
  `prepare`d (that would shard the data a second time).
* Masks: the noise of every window is drawn from `(seed, epoch, window id)`, not from a process's RNG stream.
* Steps: training counts optimizer steps over endless streams (each restarts its epoch on its own), so processes
  never wait for one another at an epoch end. The LR scheduler is stepped by hand once per optimizer step and
  registered for checkpointing (a prepared scheduler steps once per process).
* Resume: `save_state` stores model, optimizer, scheduler, RNG and a `TrainingState` with every process's stream
  positions; `--resume_from_checkpoint latest` continues with the same losses as an uninterrupted run.
"""

import itertools
import json
import math
import re
import shutil
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..configuration_brainlm import PRESETS, BrainLMConfig
from ..data import BrainLMCollator, PreparedDataset, WindowStream
from ..feature_extraction_brainlm import BrainLMFeatureExtractor
from ..inference import map_windows
from ..modeling_brainlm import BrainLMForMaskedSignalModeling
from .metrics import baseline_predictions, masked_reconstruction_metrics


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
    mixed_precision: str = field(default="no", metadata={"help": "no, bf16 or fp16"})
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    crops_per_recording: int = 4
    eval_steps: int = 100
    eval_windows: int = 64
    save_steps: int = 100
    save_total_limit: int = 2
    logging_steps: int = 10
    seed: int = 0
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "a checkpoint folder or 'latest'"})
    report_to: list[str] = field(default_factory=list, metadata={"help": "tensorboard, trackio, wandb"})


EVALUATION_EPOCH = 2**32 - 1  # the noise key of evaluation masks, apart from every training epoch


@dataclass
class TrainingState:
    """Everything beyond model, optimizer, scheduler and RNG that a resume needs, for every process."""

    step: int = 0
    streams: list = field(default_factory=list)  # per process: the state of each of its streams

    def state_dict(self) -> dict:
        return {"step": self.step, "streams": self.streams}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.streams = state["step"], state["streams"]


def window_noise(seed: int, epoch: int, window_ids: list[str], num_tokens: int) -> torch.Tensor:
    """Masking noise `(B, L)` of each window, a pure function of (seed, epoch, window id)."""
    rows = [np.random.default_rng([seed, epoch, zlib.crc32(w.encode())]).random(num_tokens) for w in window_ids]
    return torch.from_numpy(np.stack(rows).astype(np.float32))


def pretrain(args: PretrainingArguments) -> dict:
    """Run pretraining; returns the final evaluation metrics (also written to `output_dir/metrics.json`)."""
    from accelerate.utils import set_seed

    accelerator = _accelerator(args)
    set_seed(args.seed)  # the same initial weights on every process
    dataset = PreparedDataset(args.dataset)
    model = build_model(args)
    optimizer, scheduler = build_optimizer(model, args, accelerator.num_processes)
    model, optimizer = _prepare(accelerator, model, optimizer, args)
    streams = training_streams(args, dataset, accelerator.process_index, accelerator.num_processes)
    state = TrainingState(streams=[[s.state_dict() for s in streams]] * accelerator.num_processes)
    accelerator.register_for_checkpointing(scheduler, state)
    if args.resume_from_checkpoint:
        resume(accelerator, Path(args.output_dir), args.resume_from_checkpoint, state, streams)
    _start_run(accelerator, args)
    train(accelerator, model, optimizer, scheduler, state, streams, dataset, args)
    return finish(accelerator, model, dataset, args)


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
    """AdamW (no weight decay on biases, norms and special tokens) and a cosine schedule with warmup."""
    from transformers import get_cosine_schedule_with_warmup

    total_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * num_processes
    scaled = args.base_learning_rate * total_batch / 256
    learning_rate = scaled if args.learning_rate is None else args.learning_rate
    if not (math.isfinite(learning_rate) and learning_rate >= 0):  # 0 is used as given (nothing trains)
        given = f"--learning_rate {args.learning_rate}" if args.learning_rate is not None else "--base_learning_rate"
        raise ValueError(f"{given}: the learning rate must be a finite number >= 0, got {learning_rate}.")
    decayed = {n for n, p in model.named_parameters() if p.ndim >= 2 and "token" not in n}
    groups = [
        {"params": [p for n, p in model.named_parameters() if n in decayed], "weight_decay": args.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n not in decayed], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, args.adam_beta2))
    return optimizer, get_cosine_schedule_with_warmup(optimizer, args.warmup_steps, args.max_steps)


def training_streams(args: PretrainingArguments, dataset: PreparedDataset, process_index: int, num_processes: int):
    """This process's `gradient_accumulation_steps` streams, one per accumulation micro-step (see the module)."""
    files = dataset.shards("train")
    count = num_processes * args.gradient_accumulation_steps
    if len(files) < count:
        raise ValueError(
            f"{len(files)} training shards for {count} streams (processes x gradient accumulation): prepare the "
            f"dataset with --shard-multiple {count} or more shards."
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


def resume(accelerator, output: Path, checkpoint: str, state: TrainingState, streams: list[WindowStream]) -> None:
    """Restore model, optimizer, scheduler, RNG and this process's stream positions from a checkpoint."""
    accelerator.load_state(_checkpoint_path(output, checkpoint))
    for stream, stream_state in zip(streams, state.streams[accelerator.process_index], strict=True):
        stream.load_state_dict(stream_state)


def train(accelerator, model, optimizer, scheduler, state: TrainingState, streams, dataset, args) -> None:
    """Optimizer steps until `max_steps`: a micro-batch from every stream, then log, checkpoint and evaluate."""
    from tqdm.auto import tqdm

    output, batch_size = Path(args.output_dir), args.per_device_train_batch_size
    sources = [_full_batches(stream, _loader(stream, dataset.processor, batch_size), batch_size) for stream in streams]
    progress = tqdm(total=args.max_steps, initial=state.step, disable=not accelerator.is_local_main_process)
    meter = _Throughput(accelerator.num_processes)
    model.train()
    while state.step < args.max_steps:
        loss = train_step(accelerator, model, optimizer, streams, sources, args, meter)
        scheduler.step()
        state.step += 1
        progress.update(1)
        if not math.isfinite(loss):
            saved = save_checkpoint(accelerator, output, state, streams, args.save_total_limit, name="nan")
            raise RuntimeError(f"The loss is {loss} at step {state.step}; the state was saved to {saved}.")
        if state.step % args.logging_steps == 0 or state.step == args.max_steps:
            record = {"step": state.step, "loss": loss, "learning_rate": scheduler.get_last_lr()[0], **meter.read()}
            _log(accelerator, output, record, progress)
        if state.step % args.save_steps == 0 or state.step == args.max_steps:
            save_checkpoint(accelerator, output, state, streams, args.save_total_limit)
        if args.eval_steps and state.step % args.eval_steps == 0 and state.step < args.max_steps:
            metrics = evaluate_reconstruction(accelerator.unwrap_model(model), dataset, args)
            accelerator.log({f"eval_{k}": v for k, v in metrics.get("model", {}).items()}, step=state.step)
            model.train()
    progress.close()


def train_step(accelerator, model, optimizer, streams, sources, args, meter: "_Throughput") -> float:
    """One optimizer step over one micro-batch of each stream; returns the loss averaged over streams and processes."""
    step_loss = 0.0
    for stream, source in zip(streams, sources, strict=True):
        batch, ids = next(source)
        num_tokens = accelerator.unwrap_model(model).num_tokens(*batch["signal_values"].shape[1:])
        noise = window_noise(args.seed, stream.epoch, ids, num_tokens)
        with accelerator.accumulate(model):
            out = model(**_to_device(batch, accelerator.device), noise=noise.to(accelerator.device))
            accelerator.backward(out.loss)
            if accelerator.sync_gradients and args.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
        step_loss += out.loss.detach() / len(streams)
        meter.add(len(ids), num_tokens)
    if not accelerator.sync_gradients:
        raise RuntimeError("Gradient accumulation fell out of step with the streams.")
    return accelerator.reduce(step_loss, "mean").item()


def finish(accelerator, model, dataset: PreparedDataset, args: PretrainingArguments) -> dict:
    """Final evaluation, `final/` (model + processor) and `metrics.json`; returns the metrics."""
    metrics = evaluate_reconstruction(accelerator.unwrap_model(model), dataset, args)
    state_dict = accelerator.get_state_dict(model)  # a collective under FSDP / DeepSpeed: every process calls it
    if accelerator.is_main_process:
        output = Path(args.output_dir)
        accelerator.unwrap_model(model).save_pretrained(output / "final", state_dict=state_dict)
        dataset.processor.save_pretrained(output / "final")
        (output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    accelerator.end_training()
    return metrics


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


def evaluate_reconstruction(
    model: BrainLMForMaskedSignalModeling, dataset: PreparedDataset, args: PretrainingArguments
) -> dict:
    """`WindowReconstructions.metrics` of the first `eval_windows` windows of the validation split ({} if none)."""
    shards = dataset.shards(args.validation_split)
    if not shards:
        return {}
    return reconstruct_held_out(model, dataset.processor, shards, args.eval_windows, seed=args.seed).metrics()


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


def _start_run(accelerator, args: PretrainingArguments) -> None:
    if accelerator.is_main_process:
        output = Path(args.output_dir)
        output.mkdir(parents=True, exist_ok=True)
        (output / "pretraining_args.json").write_text(json.dumps(asdict(args), indent=2))
    accelerator.init_trackers("brainlm_pretraining", config={k: v for k, v in asdict(args).items() if v is not None})


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


def _loader(stream: WindowStream, processor: BrainLMFeatureExtractor, batch_size: int):
    # own generator: creating an iterator must not draw from the global RNG (it would shift dropout after resume)
    collate = BrainLMCollator(processor)

    def collate_with_ids(items):
        return collate(items), [f"{item['id']}/{item['crop']}" for item in items]

    return torch.utils.data.DataLoader(
        stream, batch_size=batch_size, collate_fn=collate_with_ids, generator=torch.Generator()
    )


def _full_batches(stream: WindowStream, loader, batch_size: int):
    """Endless full batches of one stream: a short last batch is dropped and the stream moves to its next epoch."""
    while True:
        for batch, ids in loader:
            if len(ids) == batch_size:
                yield batch, ids
        stream.set_epoch(stream.epoch + 1)


def save_checkpoint(accelerator, output: Path, state: TrainingState, streams, limit: int, name: str = "") -> Path:
    """
    `save_state` into `checkpoints/checkpoint_<step>`, keeping the newest `limit` step checkpoints. The state is
    written to `<folder>.partial` and renamed when complete, so a run killed while saving never leaves a
    checkpoint that `--resume_from_checkpoint latest` would pick up half-written.
    """
    from accelerate.utils import gather_object

    state.streams = gather_object([[stream.state_dict() for stream in streams]])  # every process's positions
    folder = output / "checkpoints" / f"checkpoint_{state.step}{'_' + name if name else ''}"
    partial = folder.with_name(folder.name + ".partial")
    if accelerator.is_main_process and partial.exists():  # left by a run killed while saving
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if folder.exists():
            shutil.rmtree(folder)
        partial.rename(folder)
    if accelerator.is_main_process and not name:
        for old in _step_checkpoints(output)[:-limit]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return folder


def _step_checkpoints(output: Path) -> list[Path]:
    folders = [p for p in (output / "checkpoints").glob("checkpoint_*") if re.fullmatch(r"checkpoint_\d+", p.name)]
    return sorted(folders, key=lambda p: int(p.name.split("_")[1]))


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def _checkpoint_path(output: Path, name: str) -> str:
    if name != "latest":
        return name
    checkpoints = _step_checkpoints(output)
    if not checkpoints:
        raise FileNotFoundError(f"No checkpoint to resume from in {output / 'checkpoints'}.")
    return str(checkpoints[-1])
