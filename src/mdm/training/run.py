"""A training run in a folder: stage 0 (tokenizers), the loop, checkpoints, logs, sample grids.

The run folder::

    config.yaml        the resolved config of the run
    tokenizer/, vq/    stage 0, trained once, written atomically and reused only under the data and
                       layout settings that made it (:mod:`mdm.training.stage0_files`)
    checkpoint/        the latest checkpoint (see :mod:`mdm.checkpoint`); also what
                       ``MDMPipeline.from_pretrained(run folder)`` loads
    log.jsonl          one line per ``train.log_every`` steps, every loss term of Eq. 18 (each step once:
                       a resumed run drops the lines after its checkpoint before logging them again)
    .lock              while a training writes the folder: its PID and host (:mod:`mdm.training.run_lock`)
    tensorboard/       the same scalars, when tensorboard is installed
    samples/           image+caption grids every ``train.sample_every`` steps

Under ``torchrun`` rank 0 prepares stage 0 and writes every file; the other
ranks wait for it (and get its errors) and load what it wrote.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from mdm.checkpoint import (CHECKPOINT_DIR, CheckpointError, checkpoint_folder, config_differences, has_checkpoint,
                            load_checkpoint, make_writable_folder, read_config, save_checkpoint)
from mdm.config import MDMConfig, apply_overrides, save_config
from mdm.diffusion.sampling import SamplerConfig
from mdm.diffusion.schedule import check_schedules
from mdm.diffusion.time_warp import TimeWarp
from mdm.nn.layout import Modality
from mdm.pipeline import MDMPipeline
from mdm.tasks import Task, check_task_weights
from mdm.training.distributed import DistributedContext
from mdm.training.ema import ema_window_note
from mdm.training.loop import Trainer, build_model, missing_compiler
from mdm.training.memory import check_step_memory, estimate_step_memory, free_memory_bytes
from mdm.training.mixture import check_mixture, prepare_mixture
from mdm.training.prepare import PreparedData, prepare_data, referee_kwargs
from mdm.training.run_lock import run_folder_lock


@dataclass
class RunResult:
    folder: Path
    trainer: Trainer
    data: PreparedData
    resumed_from: int  # the step the run resumed from (0 for a new run)


def write_sample_grid(trainer: Trainer, diffusion, data: PreparedData, config: MDMConfig, path: Path, n: int = 8,
                      network=None) -> Path | None:
    """A grid from the EMA weights of a task the run trains: image+caption together, or one image per class;
    for a video model one row of frames per clip.

    ``network``: the weights to sample from when not ``trainer.ema.model`` (a whole copy of a sharded EMA).
    """
    from mdm.evaluation.figures import image_caption_grid, judged_grid_title, video_strip  # matplotlib, when asked

    pipe = MDMPipeline(network or trainer.ema.model, diffusion, data.tokenizer, data.vq, data.text_lens, config)
    sampler = SamplerConfig(steps=20)
    trained = {Task(t) for t in trained_tasks(trainer.config.drawn_task_weights(), data)}
    if Task.JOINT in trained:
        images, titles = pipe.joint(n, sampler, seed=0)
        title, referee = judged_grid_title(f"step {trainer.step}: image + caption together",
                                           config.data.name)
    elif Task.CLASS_TO_IMAGE in trained:
        labels = [i % config.backbone.n_classes for i in range(n)]
        images, titles = pipe.class_to_image(labels, sampler, seed=0), [f"class {c}" for c in labels]
        title, referee = f"step {trainer.step}", False
    else:
        return None
    if pipe.is_video:
        return video_strip(images, titles, path, title=title)
    return image_caption_grid(images, titles, path, title=title, referee=referee,
                              referee_options=referee_kwargs(config))


def trained_tasks(task_weights: dict[str, float], data: PreparedData) -> list[str]:
    """The tasks a run trains: a positive weight, and data that has their parts (a ShapesWorld run trains no
    class->image whatever its weight)."""
    return [t for t, w in task_weights.items() if w > 0 and data.train.supports(Task(t))]


def write_time_warp(network: torch.nn.Module, path: Path) -> Path | None:
    """The plot of the network's fitted time warps (``diffusion.time_warping``), or None without one."""
    warps = {m.value: TimeWarp(network.level_stats(m)) for m in Modality if network.level_stats(m) is not None}
    if not warps:
        return None
    from mdm.evaluation.figures import time_warp_figure  # matplotlib, when asked
    return time_warp_figure(warps, path)


def _require_checkpoint(folder: str | Path) -> None:
    if not has_checkpoint(folder):
        raise FileNotFoundError(f"--resume: {folder} has no {CHECKPOINT_DIR}/ to resume from")


def resume_config(folder: str | Path, overrides: list[str] | None = None) -> MDMConfig:
    """The config a run folder was trained with (from its checkpoint), with ``section.key=value`` overrides."""
    _require_checkpoint(folder)
    config = read_config(checkpoint_folder(folder))[0]
    return apply_overrides(config, overrides) if overrides else config


# Train keys a resumed run may change without changing the computation of the steps it repeats.
# A checkpoint holds whole tensors whichever strategy wrote it, so a run may resume under another.
# With a decaying learning rate, train.steps is the decay's length, so it is not among them.
# train.compile changes only how sums are rounded (its test: losses within 1e-4 of the eager ones).
RESUMABLE_TRAIN_KEYS = ("steps", "log_every", "checkpoint_every", "sample_every", "distributed", "compile")


def check_resume_config(requested: MDMConfig, saved: MDMConfig) -> None:
    """Refuse a resumed run whose config would not continue the saved run exactly (names every key)."""
    resumable = [k for k in RESUMABLE_TRAIN_KEYS if k != "steps" or saved.train.lr_decay == "constant"]
    diff = [d for d in config_differences(requested, saved, ("train", "data"))
            if d.split(":")[0].split(".", 1)[1] not in resumable or not d.startswith("train.")]
    if diff:
        why = (f" (train.steps is the length of the run's train.lr_decay {saved.train.lr_decay})"
               if any(d.startswith("train.steps") for d in diff) else "")
        raise ValueError("--resume: these keys differ from the run's own config (requested != saved), so the "
                         "resumed run would not continue it exactly; start a new --out instead: " + "; ".join(diff)
                         + why)


def trim_log(path: Path, step: int) -> None:
    """Keep the lines of ``log.jsonl`` up to ``step``, the checkpoint a run resumes from.

    The steps after that checkpoint were logged and then lost with the process; the resumed run trains
    and logs them again, and each step must appear once. A line cut short by the kill is dropped too.
    """
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("step"), int) and entry["step"] <= step:
            kept.append(line + "\n")
    tmp = path.with_name(path.name + ".saving")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


def _check_out(folder: Path, resume: bool) -> None:
    """Under the folder's lock: a new run never overwrites another's checkpoint (``--resume`` was checked before)."""
    if has_checkpoint(folder) and not resume:
        raise ValueError(f"{folder} already holds a run: pass --resume to continue it, or choose another --out")


def step_memory(network: torch.nn.Module, diffusion, data: PreparedData, config: MDMConfig,
                dist: DistributedContext, device: torch.device) -> str:
    """The log line of the memory one step needs (:mod:`mdm.training.memory`), or its refusal.

    Called on rank 0 before the Trainer wraps or shards the network, so the probe runs the plain network
    and no collective; the processes of one run hold alike shares, so rank 0 speaks for all.
    """
    estimate = estimate_step_memory(network, diffusion, data.train, config, dist.world_size, dist.sharded)
    return check_step_memory(estimate, free_memory_bytes(device))


def curriculum_cut_note(config: MDMConfig, step: int, out: Path) -> str | None:
    """What a run that stopped inside its curriculum (a time budget, Ctrl-C, few ``train.steps``) never trained:
    the tasks only the mixture after it draws, which the checkpoint still lists as its tasks. None otherwise."""
    train = config.train
    if step >= train.curriculum_steps:
        return None
    drawn = {task for task, weight in train.curriculum_task_weights.items() if weight > 0}
    untrained = sorted(task for task, weight in train.task_weights.items() if weight > 0 and task not in drawn)
    if not untrained:
        return None
    return (f"note: the run stopped at step {step}, inside its curriculum (train.curriculum_steps = "
            f"{train.curriculum_steps}), so {', '.join(untrained)} never trained; continue it past step "
            f"{train.curriculum_steps}: mdm train --out {out} --resume (with train.steps=N if it reached its steps)")


def check_config(config: MDMConfig) -> None:
    """The checks of ``config`` that need the modules it names (schedules, tasks, a mixture's files), before any work
    is done."""
    check_schedules(config.diffusion)
    check_task_weights(config.train.task_weights)
    check_task_weights(config.train.curriculum_task_weights, "train.curriculum_task_weights")
    if config.data.name == "mixture":
        check_mixture(config)


def train_run(config: MDMConfig, out: str | Path, resume: bool = False, progress: bool = True,
              time_budget_s: float | None = None, device: str | torch.device | None = None,
              log: Callable[[str], None] = print,
              on_log: Callable[[Trainer, dict], None] | None = None) -> RunResult:
    """Train ``config`` in folder ``out`` (new, or continued with ``resume``); returns the trainer and data.

    The writing process holds the folder's lock (:mod:`mdm.training.run_lock`) from before its first check
    to its last write, so a second training into ``out`` is refused instead of corrupting this one.
    """
    check_config(config)
    out = Path(out)
    dist = DistributedContext.from_env(device, config.train.distributed)
    if resume:
        _require_checkpoint(out)
    if dist.is_main:
        make_writable_folder(out, "the output folder")
    with run_folder_lock(out, "mdm train", enabled=dist.is_main):
        return _train_locked(config, out, dist, resume, progress, time_budget_s, device, log, on_log)


def _train_locked(config: MDMConfig, out: Path, dist: DistributedContext, resume: bool, progress: bool,
                  time_budget_s: float | None, device: str | torch.device | None, log: Callable[[str], None],
                  on_log: Callable[[Trainer, dict], None] | None) -> RunResult:
    say = log if dist.is_main else (lambda _msg: None)
    _check_out(out, resume)
    if resume:
        check_resume_config(config, resume_config(out))
    device = dist.device() if device is None or torch.device(device).type == "cuda" else torch.device(device)
    reason = missing_compiler(device) if config.train.compile else None
    if reason is not None:  # the fallback: the same model, eager blocks, slower steps
        say(f"train.compile: {reason}; training with eager blocks (install one to compile them, or set "
            f"train.compile=false to silence this)")
        config = replace(config, train=replace(config.train, compile=False))

    # Stage 0 on rank 0 (its errors reach every rank); the others then load what it saved.
    prepare = prepare_mixture if config.data.name == "mixture" else prepare_data
    data = dist.on_main(prepare, config, out, progress=progress, log=say)
    if not dist.is_main:
        data = prepare(config, out, progress=False, log=say)
    classes = data.train.num_classes()
    if classes > config.backbone.n_classes:
        raise ValueError(f"the data has {classes} classes but backbone.n_classes is "
                         f"{config.backbone.n_classes}: set backbone.n_classes={classes}")

    vocab = {}
    if data.tokenizer is not None:
        vocab["text"] = data.tokenizer.vocab_size
    if config.layout.continuous_images and "image" in data.train.parts():
        vocab["image"] = config.layout.patch_features  # a continuous token's values, not a vocabulary
    elif data.vq is not None:
        vocab["image"] = data.vq.config.codebook_size
    network, diffusion = build_model(config, vocab)
    ckpt = None
    if resume:  # every rank reads the whole checkpoint; the weights go in before any sharding
        ckpt = load_checkpoint(checkpoint_folder(out), expect_config=config)
        if ckpt.trainer is None or ckpt.ema_state is None:
            raise CheckpointError(f"{ckpt.folder} holds weights only (no trainer state): it cannot be resumed")
        network.load_state_dict(ckpt.network.state_dict())
    network.to(device)
    say(dist.on_main(step_memory, network, diffusion, data, config, dist, device))
    trainer = Trainer(network, diffusion, data.train, config.train, dist, log_path=out / "log.jsonl",
                      tensorboard_dir=out / "tensorboard")
    resumed_from = 0
    if ckpt is not None:
        trainer.load_state(ckpt.trainer["tensors"], ckpt.trainer["meta"], ckpt.ema_state)
        resumed_from = trainer.step
        if dist.is_main:
            trim_log(out / "log.jsonl", resumed_from)
        say(f"resumed {out} at step {resumed_from}")
    dist.on_main(save_config, config, out / "config.yaml")

    def save(tr: Trainer) -> None:
        # Gathering whole tensors is a collective under FSDP (every rank); rank 0 writes them.
        model_state, ema_state = dist.full_state(network), dist.full_state(tr.ema.model)
        tensors, meta = tr.state()
        dist.on_main(save_checkpoint, out / CHECKPOINT_DIR, config=config, network=network, model_state=model_state,
                     ema_state=ema_state, tokenizer=data.tokenizer, vq=data.vq, text_lens=data.text_lens,
                     step=tr.step, trainer_tensors=tensors, trainer_meta=meta,
                     trained_tasks=trained_tasks(config.train.drawn_task_weights(), data))
        dist.on_main(write_time_warp, network, out / "time-warp.png")

    def whole_ema() -> torch.nn.Module | None:
        """Rank 0's whole copy of a sharded EMA, to sample from (None when the EMA is not sharded)."""
        if not dist.sharded:
            return None
        state = dist.full_state(trainer.ema.model)
        if not dist.is_main:
            return None
        with torch.random.fork_rng(devices=[]):  # building a network draws its initial weights
            whole = build_model(config, vocab)[0].to(device).eval()
        whole.load_state_dict(state)
        return whole

    def sample_hook(tr: Trainer) -> None:
        every = config.train.sample_every
        if every and tr.step % every == 0:
            path = dist.on_main(write_sample_grid, tr, diffusion, data, config,
                                out / "samples" / f"step-{tr.step:07d}.png", network=whole_ema())
            if path is not None:
                say(f"step {tr.step}: wrote {path}")

    n = sum(p.numel() for p in network.parameters())
    local = sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in network.parameters())
    say(f"model: {config.backbone.kind.value} backbone, {config.backbone.n_layers} blocks x {config.backbone.d_model}, "
        f"{n / 1e6:.2f}M parameters; {len(data.train)} training samples; {dist.world_size} process(es) on {device}"
        + (f", fsdp: {local / 1e6:.2f}M parameters held here" if dist.sharded else ""))
    trainer.run(time_budget_s=time_budget_s, progress=progress, on_log=on_log, on_step=sample_hook,
                checkpoint_every=config.train.checkpoint_every, save=save, catch_interrupt=True)
    # the steps the run made (a time budget may end it long before train.steps)
    for note in (curriculum_cut_note(config, trainer.step, out),
                 ema_window_note(trainer.step, config.train.ema_decay, config.train.ema_power)):
        if note:
            say(note)
    return RunResult(out, trainer, data, resumed_from)
