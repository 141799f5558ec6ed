"""One readable training loop: build -> step -> EMA -> log -> checkpoint (Sec 5.1 of arXiv 2510.13253).

AdamW (no weight decay unless configured), linear warm-up, gradient clipping, an
EMA of the weights used for sampling. Every step draws a source of the data (one, or a
data mixture's: :mod:`mdm.training.mixture`), one task of the mixture it supports (which
segments are noised, DESIGN.md §4) and a global batch of that source for
it; under data parallelism every process draws the same task and indices from
the same seed and keeps its own rows, and :class:`BatchRandom` gives each sample
the same noise whichever process holds it. So one process and N processes with
the same global batch are the same computation (up to the order of float sums).

The EMA decay ramps up as ``min(decay, (1 + step) / (ema_power + 2 + step))``
(:func:`mdm.training.ema.ema_decay_at`): with the paper's 0.9999 and a run of a few
thousand steps, a fixed decay would leave the EMA weights near their initialisation.

Resumption is exact: :meth:`Trainer.state` holds the optimizer moments, the EMA,
both random generators and the partial log window, so a run stopped after step k
and resumed computes the same losses as one that never stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from mdm.config import MDMConfig, TrainConfig
from mdm.diffusion.batch_random import BatchRandom
from mdm.diffusion.multimodal import MultimodalDiffusion
from mdm.nn.layout import Modality
from mdm.nn.network import MDMNetwork
from mdm.tasks import Task, TokenizedData, task_segments
from mdm.training.distributed import DistributedContext
from mdm.training.ema import EMA
from mdm.training.mixture import Mixture, task_sampler
from mdm.training.optimizer import lr_at, parameter_groups


def build_model(config: MDMConfig, vocab_sizes: dict[Modality | str, int]) -> tuple[MDMNetwork, MultimodalDiffusion]:
    """The network (initialised from ``config.train.seed``) and its diffusion."""
    torch.manual_seed(config.train.seed)
    d = config.diffusion
    network = MDMNetwork(config.backbone, config.layout, config.vae, vocab_sizes, d.masked_modalities(),
                         d.self_conditioning, d.warped_modalities())
    return network, MultimodalDiffusion(config.diffusion, config.vae)


def compile_blocks(network: MDMNetwork) -> bool:
    """``torch.compile`` every backbone block in place (``train.compile``); False, with one warning
    naming the reason, when this machine cannot compile (then the blocks stay eager: the same model).

    Only the blocks: there the SSD's many small elementwise kernels (the decay
    matrix, its masks and exponentials, the gate) fuse. On ``moving-digits`` at
    2 threads a step took 0.35 s instead of 0.42 s, and a 27-minute run made 4792
    steps instead of 3753 (experiments/video-coherence). Compiling the whole loss
    as well made a ``moving-digits`` step only 3% faster again but took five times
    as long to compile (250 s against 48 s, 2 threads), which a 27-minute run
    cannot afford. In place (``nn.Module.compile``), so the parameter names and
    the checkpoints stay those of the eager network, and the EMA copy (made
    before) samples eagerly.
    """
    reason = missing_compiler(next(network.parameters()).device)
    if reason is not None:
        warnings.warn(f"train.compile: {reason}; the blocks run eagerly", stacklevel=2)
        return False
    for block in network.backbone.blocks:
        block.compile()
    return True


def cpu_compiler() -> str:
    """The C++ compiler inductor calls for CPU kernels (its ``cpp.cxx`` default)."""
    return os.environ.get("CXX", "clang++" if sys.platform == "darwin" else "g++")


def missing_compiler(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot build kernels for ``device`` here, or None when it can: on a CPU,
    inductor builds C++ kernels and needs a C++ compiler on PATH (otherwise it fails inside the first
    step, deep in a backtrace). A GPU's Triton is not checked here."""
    compiler = cpu_compiler()
    if device.type == "cpu" and shutil.which(compiler) is None:
        return (f"torch.compile on a CPU builds C++ kernels, and the compiler {compiler!r} (the CXX variable, "
                f"else g++) is not on PATH")
    return None


class TrainingObjective(nn.Module):
    """The network with its Eq. 18 loss as ``forward``, the unit a data-parallel engine wraps."""

    def __init__(self, network: MDMNetwork, diffusion: MultimodalDiffusion) -> None:
        super().__init__()
        self.network, self.diffusion = network, diffusion

    def forward(self, segments, class_labels: Tensor | None, rng: BatchRandom) -> dict[str, Tensor]:
        return self.diffusion.training_losses(self.network, segments, class_labels, rng)


def step_losses(objective: nn.Module, network: MDMNetwork, task: Task, batch: TokenizedData, rng: BatchRandom,
                autocast: contextlib.AbstractContextManager) -> dict[str, Tensor]:
    """The Eq. 18 losses of one step's ``batch`` for ``task``: the forward of :meth:`Trainer.train_step`.

    A function of its own so that the memory probe (:mod:`mdm.training.memory`) measures this very forward
    rather than a copy of it that could drift.
    """
    labels = batch.labels if task is Task.CLASS_TO_IMAGE else None
    with autocast:
        segments = task_segments(task, batch, question_first=network.layout_config.question_first)
        return objective(segments, labels, rng)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the message names the step and task."""


class Trainer:
    """Owns a run's mutable state: step, optimizer, EMA, generators, the current log window."""

    def __init__(self, network: MDMNetwork, diffusion: MultimodalDiffusion, data: TokenizedData | Mixture,
                 config: TrainConfig, dist: DistributedContext | None = None,
                 log_path: str | Path | None = None, tensorboard_dir: str | Path | None = None) -> None:
        self.network, self.diffusion, self.config = network, diffusion, config
        self.dist = dist or DistributedContext()
        self.device = next(network.parameters()).device
        if config.batch_size % self.dist.world_size:
            raise ValueError(f"train.batch_size {config.batch_size} must be divisible by the number of processes "
                             f"{self.dist.world_size}")
        self.data = Mixture.of(data).to(self.device)
        self.logs_sources = isinstance(data, Mixture)  # a mixture's log counts the draws of each source
        self.step = 0
        self.generator = torch.Generator().manual_seed(config.seed)  # tasks and batch indices, on the CPU
        self.noise_generator = torch.Generator(self.device).manual_seed(config.seed + 1)
        self.ema = EMA(network, config.ema_decay, config.ema_power)  # copied whole, before any sharding
        if config.compile:
            compile_blocks(network)
        self.objective = self.dist.wrap(TrainingObjective(network, diffusion), units=network.backbone.blocks)
        self.dist.shard(self.ema.model, self.ema.model.backbone.blocks)  # FSDP: the EMA keeps the same shards
        self.optimizer = torch.optim.AdamW(parameter_groups(network, config), lr=config.lr,
                                           weight_decay=config.weight_decay)
        self.draw = task_sampler(self.data, config.task_weights, self.generator)
        self.draw_curriculum = (task_sampler(self.data, config.curriculum_task_weights, self.generator)
                                if config.curriculum_steps else None)
        # the diffusion config after and during the curriculum (indexed by "in the curriculum"), which may give
        # its own clean-frame and self-conditioning shares
        own = {name: p for name, p in (("clean_frames_prob", config.curriculum_clean_frames_prob),
                                       ("self_conditioning_prob", config.curriculum_self_conditioning_prob))
               if p is not None}
        self.stage_diffusion = (diffusion.config, replace(diffusion.config, **own) if own else diffusion.config)
        self.running: dict[str, float] = {}
        self.history: list[dict] = []
        self.elapsed = 0.0  # training seconds over every call of run(), resumptions included
        self.log_path = Path(log_path) if log_path and self.dist.is_main else None
        self.tensorboard_dir = tensorboard_dir if self.dist.is_main else None
        self._stop_requested = False
        self.autocast = autocast_for(self.device, config.mixed_precision)
        self.lr = lr_at(0, config, 0.0)  # the rate of the last step, for the log

    # ------------------------------------------------------------------ state
    def state(self) -> tuple[dict[str, Tensor], dict]:
        """(tensors, json-able meta) that :meth:`load_state` restores exactly, with the EMA weights.

        Under FSDP this gathers the optimizer moments to rank 0: every rank must call it.
        """
        tensors = {"rng.generator": self.generator.get_state(), "rng.noise": self.noise_generator.get_state().cpu()}
        opt = self.dist.optimizer_state(self.network, self.optimizer)
        for idx, st in opt["state"].items():
            for key, value in st.items():
                tensors[f"optimizer.{idx}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
        meta = {"step": self.step, "elapsed_s": self.elapsed, "running": self.running,
                "param_groups": opt["param_groups"]}
        return tensors, meta

    def load_state(self, tensors: dict[str, Tensor], meta: dict, ema_state: dict[str, Tensor]) -> None:
        """Restore :meth:`state` and the EMA weights (saved beside it as the checkpoint's ``ema.safetensors``)."""
        self.step, self.elapsed, self.running = int(meta["step"]), float(meta["elapsed_s"]), dict(meta["running"])
        self.generator.set_state(tensors["rng.generator"])
        self.noise_generator.set_state(tensors["rng.noise"])  # a CPU byte tensor, also for a CUDA generator
        state: dict[int, dict] = {}
        for name, value in tensors.items():
            if name.startswith("optimizer."):
                _, idx, key = name.split(".", 2)
                state.setdefault(int(idx), {})[key] = value.to(self.device) if key != "step" else value
        self.dist.load_optimizer_state(self.network, self.optimizer,
                                       {"state": state, "param_groups": meta["param_groups"]})
        self.dist.load_full_state(self.ema.model, ema_state)

    # ------------------------------------------------------------------ one step
    def train_step(self, progress: float | None = None) -> dict[str, float]:
        """One optimizer step; ``progress`` is the share of the run done, for a decaying rate (:func:`lr_at`)."""
        config, dist = self.config, self.dist
        in_curriculum = self.step < config.curriculum_steps
        source, task = (self.draw_curriculum if in_curriculum else self.draw)()
        stage = self.stage_diffusion[in_curriculum]
        if self.diffusion.config is not stage:
            self.diffusion.train_with(stage)
        data = self.data.sources[source].data
        index = torch.randint(len(data), (config.batch_size,), generator=self.generator)
        rows = dist.rows(config.batch_size)
        batch = data.subset(index[rows].to(self.device))
        rng = BatchRandom(self.noise_generator, self.device, rows if dist.world_size > 1 else None,
                          config.batch_size if dist.world_size > 1 else None)
        losses = step_losses(self.objective, self.network, task, batch, rng, self.autocast)
        loss = dist.mean(losses["loss"].detach())
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite loss at step {self.step + 1} (task {task.value}): "
                f"{ {k: float(v.detach()) for k, v in losses.items()} }; the run stops here and the last checkpoint "
                f"is kept. Try a lower train.lr or train.grad_clip.")
        self.lr = lr_at(self.step, config, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * group.get("lr_scale", 1.0)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        grad_norm = dist.local_value(torch.nn.utils.clip_grad_norm_(self.network.parameters(), config.grad_clip))
        self.optimizer.step()
        self.ema.update(self.network, self.step)
        self.step += 1
        out = {k: float(dist.mean(v.detach())) for k, v in losses.items()}
        out["task"], out["grad_norm"] = task.value, float(grad_norm)
        if self.logs_sources:
            out["source"] = self.data.sources[source].name
        return out

    # ------------------------------------------------------------------ the loop
    def run(self, steps: int | None = None, time_budget_s: float | None = None, progress: bool = True,
            on_log: Callable[["Trainer", dict], None] | None = None,
            on_step: Callable[["Trainer"], None] | None = None,
            checkpoint_every: int = 0, save: Callable[["Trainer"], None] | None = None,
            catch_interrupt: bool = False) -> list[dict]:
        """Train until step ``steps`` (default ``config.steps``) or the time budget; returns the log entries.

        ``on_log`` gets every log entry, ``on_step`` is called after every step. ``save``
        is called every ``checkpoint_every`` steps and when the loop ends (once per step
        at most). With ``catch_interrupt`` the first Ctrl-C finishes the current step,
        saves and returns (``self.interrupted`` is set); a second one aborts at once.
        Under data parallelism the processes agree on stopping (budget or Ctrl-C on any
        of them) before they leave the loop, so none is left waiting in a collective.
        """
        steps = self.config.steps if steps is None else steps
        self.interrupted = False
        saved_at = self.step if self.step >= steps else None  # a finished run is not saved again
        log_file = open(self.log_path, "a") if self.log_path else None
        writer = _tensorboard(self.tensorboard_dir)
        self.network.train()
        start, elapsed0 = time.perf_counter(), self.elapsed
        bar = tqdm(total=steps, initial=self.step, desc="train", disable=not (progress and self.dist.is_main),
                   dynamic_ncols=True)
        previous = signal.signal(signal.SIGINT, self._on_interrupt) if catch_interrupt else None
        try:
            while self.step < steps:
                out = self.train_step(self._run_progress(time.perf_counter() - start, time_budget_s))
                self.elapsed = elapsed0 + time.perf_counter() - start
                bar.update(1)
                self._accumulate(out)
                if self.step % self.config.log_every == 0 or self.step == steps:
                    entry = self._flush_log()
                    bar.set_postfix(loss=entry["loss"], se=entry["se"], **({"mse": entry["mse"]} if entry.get("mse")
                                                                           else {}))
                    if log_file:
                        log_file.write(json.dumps(entry) + "\n")
                        log_file.flush()
                    if writer:
                        for k, v in entry.items():
                            if k != "step" and isinstance(v, (int, float)):
                                writer.add_scalar(k, v, self.step)
                    if on_log:
                        on_log(self, entry)
                if on_step:
                    on_step(self)
                stop = self.dist.any(self._stop_requested or (
                    time_budget_s is not None and time.perf_counter() - start > time_budget_s))
                if save and checkpoint_every and self.step % checkpoint_every == 0 and self.step < steps:
                    save(self)
                    saved_at = self.step
                if stop:
                    self.interrupted = self.dist.any(self._stop_requested)
                    break
            if save and saved_at != self.step:
                save(self)
        finally:
            if catch_interrupt:
                signal.signal(signal.SIGINT, previous)
            bar.close()
            if log_file:
                log_file.close()
            if writer:
                writer.close()
        self.network.eval()
        return self.history

    def _run_progress(self, call_s: float, time_budget_s: float | None) -> float | None:
        """The share of the run done, for ``train.lr_decay``: steps done of ``train.steps``, or of the time budget.

        ``train.steps`` rather than the ``steps`` a caller passes to :meth:`run`, which only
        says where this call stops: scripts that train in chunks keep one decay. With a time
        budget the decay follows whichever ends first, so a run cut at 27 minutes ends near
        ``lr * lr_final_fraction``; its rates then depend on the machine's speed (not
        reproducible step for step). Each call measures its own time: resuming such a run
        restarts the decay (a warm restart), over the new call's budget or, without one,
        from ``step / train.steps``. Under data parallelism the processes average their
        clocks, so every process sets the same rate.
        """
        if self.config.lr_decay == "constant":
            return None
        done = self.step / self.config.steps
        if time_budget_s is not None:
            clock = torch.tensor(call_s / time_budget_s, dtype=torch.float64, device=self.device)
            done = max(done, float(self.dist.mean(clock)))
        return done

    def _on_interrupt(self, signum, frame) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True
        if self.dist.is_main:
            print("\ninterrupt: finishing this step and saving a checkpoint (Ctrl-C again to abort)", flush=True)

    def _accumulate(self, out: dict) -> None:
        task = out.pop("task")
        if "source" in out:
            key = f"draws:{out.pop('source')}:{task}"
            self.running[key] = self.running.get(key, 0) + 1
        for k, v in out.items():
            self.running[k] = self.running.get(k, 0.0) + v
        # the task's diffusion term: score entropy, plus the noise MSE of continuous image segments
        self.running[f"se_{task}"] = self.running.get(f"se_{task}", 0.0) + out["se"] + out.get("mse", 0.0)
        self.running[f"n_{task}"] = self.running.get(f"n_{task}", 0) + 1
        self.running["n"] = self.running.get("n", 0) + 1

    def _flush_log(self) -> dict:
        r, n = self.running, max(self.running.get("n", 1), 1)
        entry = {"step": self.step, "time_s": round(self.elapsed, 1), "lr": self.lr}
        entry.update({k: round(v / n, 4) for k, v in r.items()
                      if not k.startswith(("se_", "n_", "draws:")) and k != "n"})
        for t in Task:
            if r.get(f"n_{t.value}"):
                entry[f"se_{t.value}"] = round(r[f"se_{t.value}"] / r[f"n_{t.value}"], 4)
        for key, count in r.items():  # a mixture's steps of the window: {source: {task: steps}}
            if key.startswith("draws:"):
                source, task = key[len("draws:"):].rsplit(":", 1)
                entry.setdefault("draws", {}).setdefault(source, {})[task] = int(count)
        self.running = {}
        self.history.append(entry)
        return entry


def autocast_for(device: torch.device, mode: str):
    """bf16 autocast on a CUDA device that supports it (``auto`` or ``bf16``); plain fp32 otherwise."""
    if mode == "bf16" or (mode == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _tensorboard(folder):
    if folder is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is the optional [train] extra; the JSONL log is always written
        return None
    return SummaryWriter(str(folder))


def train_loop(network: MDMNetwork, diffusion: MultimodalDiffusion, data: TokenizedData, config: TrainConfig,
               log_path: str | Path | None = None, progress: bool = True,
               time_budget_s: float | None = None) -> tuple[EMA, list[dict]]:
    """Train ``network`` in place for ``config.steps`` (or the budget); returns the EMA and the log entries."""
    trainer = Trainer(network, diffusion, data, config, log_path=log_path)
    history = trainer.run(time_budget_s=time_budget_s, progress=progress)
    return trainer.ema, history


__all__ = ["EMA", "NonFiniteLossError", "Trainer", "TrainingObjective", "autocast_for", "build_model", "lr_at",
           "step_losses", "task_sampler", "train_loop"]
