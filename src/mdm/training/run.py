"""A training run in a folder: stage 0 (tokenizers), the loop, checkpoints, logs, sample grids.

The run folder::

    config.yaml        the resolved config of the run
    tokenizer/, vq/    stage 0, trained once and reused by a resumed run
    checkpoint/        the latest checkpoint (see :mod:`mdm.training.checkpoint`); also what
                       ``MDMPipeline.from_pretrained(run folder)`` loads
    log.jsonl          one line per ``train.log_every`` steps, every loss term of Eq. 18
    tensorboard/       the same scalars, when tensorboard is installed
    samples/           image+caption grids every ``train.sample_every`` steps

Under ``torchrun`` rank 0 prepares stage 0 and writes every file; the other
ranks wait at a barrier and load what it wrote.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from mdm.config import MDMConfig, save_config
from mdm.training.checkpoint import CheckpointError, load_checkpoint, read_config, save_checkpoint
from mdm.training.distributed import DistributedContext
from mdm.training.loop import Trainer, build_model
from mdm.training.prepare import PreparedData, prepare_data

CHECKPOINT_DIR = "checkpoint"


@dataclass
class RunResult:
    folder: Path
    trainer: Trainer
    data: PreparedData
    resumed_from: int  # the step the run resumed from (0 for a new run)


def checkpoint_folder(run_or_checkpoint: str | Path) -> Path:
    """The checkpoint of a run folder, or the folder itself if it is a checkpoint."""
    path = Path(run_or_checkpoint)
    for candidate in (path / CHECKPOINT_DIR, path / f"{CHECKPOINT_DIR}.previous"):
        if (candidate / "config.json").is_file():
            return path / CHECKPOINT_DIR
    return path


def resume_config(folder: str | Path) -> MDMConfig:
    """The config a run folder was trained with (from its checkpoint)."""
    return read_config(checkpoint_folder(folder))[0]


def _check_out(folder: Path, resume: bool) -> None:
    has_checkpoint = (folder / CHECKPOINT_DIR / "config.json").is_file() or \
        (folder / f"{CHECKPOINT_DIR}.previous" / "config.json").is_file()
    if has_checkpoint and not resume:
        raise ValueError(f"{folder} already holds a run: pass --resume to continue it, or choose another --out")
    if resume and not has_checkpoint:
        raise FileNotFoundError(f"--resume: {folder} has no {CHECKPOINT_DIR}/ to resume from")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create the output folder {folder}: {e.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise ValueError(f"the output folder {folder} is not writable")


def train_run(config: MDMConfig, out: str | Path, resume: bool = False, progress: bool = True,
              time_budget_s: float | None = None, device: str | torch.device | None = None,
              log: Callable[[str], None] = print,
              on_log: Callable[[Trainer, dict], None] | None = None) -> RunResult:
    """Train ``config`` in folder ``out`` (new, or continued with ``resume``); returns the trainer and data."""
    out = Path(out)
    dist = DistributedContext.from_env()
    say = log if dist.is_main else (lambda _msg: None)
    if dist.is_main:
        _check_out(out, resume)
    dist.barrier()
    device = torch.device(device) if device is not None else dist.device()

    if dist.is_main:
        data = prepare_data(config, out, progress=progress, log=say)
    dist.barrier()
    if not dist.is_main:
        data = prepare_data(config, out, progress=False, log=say)  # loads what rank 0 trained

    vocab = {}
    if data.tokenizer is not None:
        vocab["text"] = data.tokenizer.vocab_size
    if data.vq is not None:
        vocab["image"] = data.vq.config.codebook_size
    network, diffusion = build_model(config, vocab)
    network.to(device)
    trainer = Trainer(network, diffusion, data.train, config.train, dist, log_path=out / "log.jsonl",
                      tensorboard_dir=out / "tensorboard")
    resumed_from = 0
    if resume:
        ckpt = load_checkpoint(checkpoint_folder(out), expect_config=config)
        if ckpt.trainer is None:
            raise CheckpointError(f"{ckpt.folder} holds weights only (no trainer state): it cannot be resumed")
        network.load_state_dict(ckpt.network.state_dict())
        trainer.load_state(ckpt.trainer["tensors"], ckpt.trainer["meta"])
        resumed_from = trainer.step
        say(f"resumed {out} at step {resumed_from}")
    if dist.is_main:
        save_config(config, out / "config.yaml")

    def save(tr: Trainer) -> None:
        if dist.is_main:
            tensors, meta = tr.state()
            save_checkpoint(out / CHECKPOINT_DIR, config=config, network=network,
                            ema_state=tr.ema.model.state_dict(), tokenizer=data.tokenizer, vq=data.vq,
                            text_lens=data.text_lens, step=tr.step, trainer_tensors=tensors, trainer_meta=meta)
        dist.barrier()

    n = sum(p.numel() for p in network.parameters())
    say(f"model: {config.backbone.kind.value} backbone, {config.backbone.n_layers} blocks x {config.backbone.d_model}, "
        f"{n / 1e6:.2f}M parameters; {len(data.train)} training samples; {dist.world_size} process(es) on {device}")
    trainer.run(time_budget_s=time_budget_s, progress=progress, on_log=on_log,
                checkpoint_every=config.train.checkpoint_every, save=save, catch_interrupt=True)
    return RunResult(out, trainer, data, resumed_from)
