"""One readable training loop: build -> step -> EMA -> log (Sec 5.1 of arXiv 2510.13253).

AdamW without weight decay, linear warm-up, gradient clipping, an EMA of the
weights used for sampling. Every step draws one task of the mixture (which
segments are noised, DESIGN.md §4) and a batch of the tokenized data for it.

The EMA decay ramps up as ``min(decay, (1 + step) / (10 + step))``: with the
paper's 0.9999 and a run of a few thousand steps, a fixed decay would leave the
EMA weights near their initialisation.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from mdm.config import MDMConfig, TrainConfig
from mdm.diffusion.process import MultimodalDiffusion
from mdm.nn.layout import Modality
from mdm.nn.network import MDMNetwork
from mdm.tasks import Task, TokenizedData, task_segments


def build_model(config: MDMConfig, vocab_sizes: dict[Modality | str, int]) -> tuple[MDMNetwork, MultimodalDiffusion]:
    torch.manual_seed(config.train.seed)
    return MDMNetwork(config, vocab_sizes), MultimodalDiffusion(config.diffusion, config.vae)


class EMA:
    """Exponential moving average of a module's floating-point state (parameters and buffers)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for ema_t, t in zip(self.model.state_dict().values(), model.state_dict().values()):
            if ema_t.dtype.is_floating_point:
                ema_t.lerp_(t, 1.0 - decay)
            else:
                ema_t.copy_(t)


def task_sampler(data: TokenizedData, weights: dict[str, float], generator: torch.Generator):
    """A function drawing the task of each step from the weights of the tasks ``data`` supports."""
    tasks = [Task(name) for name, w in weights.items() if w > 0 and data.supports(Task(name))]
    if not tasks:
        raise ValueError(f"no task of the mixture {weights} is supported by the data (parts: {sorted(data.parts())})")
    probs = torch.tensor([weights[t.value] for t in tasks], dtype=torch.float64)

    def draw() -> Task:
        return tasks[int(torch.multinomial(probs, 1, generator=generator))]

    return draw


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up to ``lr`` then constant (the paper gives no decay)."""
    return config.lr * min(1.0, (step + 1) / max(config.warmup_steps, 1))


def train_loop(network: MDMNetwork, diffusion: MultimodalDiffusion, data: TokenizedData, config: TrainConfig,
               log_path: str | Path | None = None, progress: bool = True,
               time_budget_s: float | None = None) -> tuple[EMA, list[dict]]:
    """Train ``network`` in place; returns the EMA and one log dict per ``log_every`` steps."""
    device = next(network.parameters()).device
    data = data.to(device)
    generator = torch.Generator().manual_seed(config.seed)  # tasks and batch indices, on the CPU
    noise_generator = torch.Generator(device).manual_seed(config.seed + 1)  # the diffusion's noise, beside the model
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    ema = EMA(network, config.ema_decay)
    draw_task = task_sampler(data, config.task_weights, generator)
    log_file = open(log_path, "a") if log_path else None
    history: list[dict] = []
    network.train()
    start = time.perf_counter()
    bar = tqdm(range(config.steps), desc="train", disable=not progress)
    running: dict[str, float] = {}
    try:
        for step in bar:
            task = draw_task()
            index = torch.randint(len(data), (config.batch_size,), generator=generator)
            batch = data.subset(index.to(device))
            labels = batch.labels if task is Task.CLASS_TO_IMAGE else None
            losses = diffusion.training_losses(network, task_segments(task, batch), labels, noise_generator)
            if not torch.isfinite(losses["loss"]):
                raise FloatingPointError(f"non-finite loss at step {step} (task {task.value}): "
                                         f"{ {k: float(v) for k, v in losses.items()} }")
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, config)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(network.parameters(), config.grad_clip)
            optimizer.step()
            ema.update(network, step)
            for k, v in losses.items():
                running[k] = running.get(k, 0.0) + float(v.detach())
            running[f"se_{task.value}"] = running.get(f"se_{task.value}", 0.0) + float(losses["se"])
            running[f"n_{task.value}"] = running.get(f"n_{task.value}", 0) + 1
            if (step + 1) % config.log_every == 0 or step == config.steps - 1:
                n = config.log_every if (step + 1) % config.log_every == 0 else (step + 1) % config.log_every
                entry = {"step": step + 1, "time_s": round(time.perf_counter() - start, 1),
                         "lr": lr_at(step, config), "grad_norm": float(grad_norm)}
                entry.update({k: round(v / n, 4) for k, v in running.items() if not k.startswith(("se_", "n_"))})
                for t in Task:
                    if running.get(f"n_{t.value}"):
                        entry[f"se_{t.value}"] = round(running[f"se_{t.value}"] / running[f"n_{t.value}"], 4)
                running = {}
                history.append(entry)
                bar.set_postfix(loss=entry["loss"], se=entry["se"])
                if log_file:
                    log_file.write(json.dumps(entry) + "\n")
                    log_file.flush()
            if time_budget_s is not None and time.perf_counter() - start > time_budget_s:
                break
    finally:
        if log_file:
            log_file.close()
    network.eval()
    return ema, history
