"""The time of one training step of a preset's whole model, Mamba against the parameter-matched Transformer.

``mdm bench backbone`` times a forward pass of the backbone alone at growing lengths;
the runs of this project train at 100-200 tokens, where a step also pays the backward
pass, AdamW and the embeddings and heads around the backbone. This benchmark times
exactly what :meth:`mdm.training.loop.Trainer.train_step` does (forward, Eq. 18 loss,
backward, gradient clipping, AdamW, EMA) on one fixed task of the preset, at the
preset's batch size and sequence length, for:

* ``mamba`` -- the preset's model (its backbone as configured);
* ``transformer`` -- the same model with a Transformer backbone whose depth matches the
  Mamba backbone's parameter count (:func:`mdm.bench.timing.parameter_matched_depth`).

The data are random ids of the preset's shapes (no tokenizer or VQ-VAE is trained: the
cost of a step does not depend on the values). Both models are built in one process and
their steps alternate, so that a load on the machine slows both alike; the figure of each
is the median over repeats. A per-op profile (:mod:`torch.profiler`, self CPU time) of
the forward and of the backward pass shows where the time goes.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch.profiler import ProfilerActivity, profile

from mdm.bench.timing import in_subprocess, parameter_matched_depth
from mdm.config import BackboneKind, MDMConfig, from_dict, to_dict
from mdm.diffusion.batch_random import BatchRandom
from mdm.nn.flops import count_parameters
from mdm.nn.layout import Modality
from mdm.tasks import TASK_PARTS, Task, TokenizedData, task_segments
from mdm.training.loop import Trainer, build_model, missing_compiler

ANSWER_LEN = 4  # tokens of a synthetic answer when data.text_lens gives none (a few words with eos)


def synthetic_data(config: MDMConfig, n: int, seed: int = 0) -> tuple[TokenizedData, dict[Modality, int]]:
    """``n`` random samples with the shapes a training run of ``config`` sees, and the vocabulary sizes.

    Images: a (side x side) grid of VQ ids below ``data.codebook_size`` (clips of ``layout.frames``
    frames), or float patches on the continuous path. Texts: every role of the tasks, of
    ``data.text_lens`` tokens (``layout.text_len`` for a role it omits; answers ``ANSWER_LEN``).
    """
    g = torch.Generator().manual_seed(seed)
    layout, data = config.layout, config.data
    side = layout.image_size // layout.vq_factor
    shape = (n, side, side) if layout.frames == 1 else (n, layout.frames, side, side)
    if layout.continuous_images:
        codes = torch.rand(*shape, layout.patch_features, generator=g)
        vocab = {Modality.IMAGE: layout.patch_features}
    else:
        codes = torch.randint(data.codebook_size, shape, generator=g)
        vocab = {Modality.IMAGE: data.codebook_size}
    roles = {part for parts in TASK_PARTS.values() for part, _ in parts if part != "image"}
    lens = {role: int(data.text_lens.get(role, ANSWER_LEN if role == "answer" else layout.text_len))
            for role in roles}
    # ids 0-3 are the tokenizer's specials; draw ordinary pieces
    texts = {role: torch.randint(4, data.vocab_size, (n, length), generator=g) for role, length in lens.items()}
    vocab[Modality.TEXT] = data.vocab_size
    labels = torch.randint(max(config.backbone.n_classes, 1), (n,), generator=g)
    return TokenizedData(codes, texts, labels), vocab


def _variants(config: MDMConfig) -> dict[str, MDMConfig]:
    """The preset's model, and the same model with the parameter-matched Transformer backbone."""
    mamba = config.backbone
    if mamba.kind is BackboneKind.TRANSFORMER:
        raise ValueError("bench train-step compares a Mamba backbone with the Transformer; the config's is "
                         "already a transformer")
    depth = parameter_matched_depth(mamba)
    transformer = replace(mamba, kind=BackboneKind.TRANSFORMER, n_layers=depth, long_skips=False)
    return {"mamba": config, "transformer": replace(config, backbone=transformer)}


class TrainStep:
    """One model's training step on one task, whole (:meth:`Trainer.train_step`) or in its three phases for the
    profile: the task alone, no curriculum, fp32, blocks compiled when ``compile_blocks``. Public so that a probe
    comparing two configs times the step this benchmark times."""

    def __init__(self, config: MDMConfig, task: Task, data: TokenizedData, vocab: dict[Modality, int],
                 compile_blocks: bool) -> None:
        network, diffusion = build_model(config, vocab)
        train = replace(config.train, task_weights={task.value: 1.0}, curriculum_steps=0, compile=compile_blocks,
                        mixed_precision="no")
        self.trainer = Trainer(network, diffusion, data, train)
        self.trainer.network.train()
        self.task = task
        self.params = count_parameters(network)
        self.backbone_params = count_parameters(network.backbone)
        batch = data.subset(torch.arange(train.batch_size) % len(data))
        self.segments = task_segments(task, batch, question_first=network.layout_config.question_first)
        self.labels = batch.labels if task is Task.CLASS_TO_IMAGE else None
        self.length = network.make_layout([s.spec for s in self.segments]).length

    def step(self) -> None:
        self.trainer.train_step()

    def forward(self) -> torch.Tensor:
        t = self.trainer
        rng = BatchRandom(t.noise_generator, t.device)
        return t.objective(self.segments, self.labels, rng)["loss"]

    def backward(self, loss: torch.Tensor) -> None:
        self.trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()

    def update(self) -> None:
        t = self.trainer
        torch.nn.utils.clip_grad_norm_(t.network.parameters(), t.config.grad_clip)
        t.optimizer.step()
        t.ema.update(t.network, t.step)


def _top_ops(prof: profile, steps: int, top: int) -> dict[str, Any]:
    """The ``top`` ops by self CPU time, in ms per step, with their share of the phase's self time."""
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return {"total_ms": total / 1e3 / steps,
            "ops": [{"name": e.key, "self_ms": e.self_cpu_time_total / 1e3 / steps, "calls": e.count // steps,
                     "share": e.self_cpu_time_total / total} for e in events[:top]]}


def _profile(step: TrainStep, steps: int, top: int) -> dict[str, Any]:
    """Self CPU time by op of the forward pass and of the backward pass, each profiled on its own."""
    fwd = profile(activities=[ProfilerActivity.CPU], acc_events=True)  # events of every step, not the last only
    bwd = profile(activities=[ProfilerActivity.CPU], acc_events=True)
    for _ in range(steps):
        with fwd:
            loss = step.forward()
        with bwd:
            step.backward(loss)
        step.update()
    return {"forward": _top_ops(fwd, steps, top), "backward": _top_ops(bwd, steps, top)}


def train_step_job(config_dict: dict, task: str, threads: int, repeats: int, warmup: int,
                   profile_steps: int, top: int, batch_size: int | None, compile_blocks: bool = False) -> dict:
    """Build both models in this process, alternate their timed steps, then profile each.

    ``compile_blocks`` compiles the backbone blocks of both models as ``train.compile`` does (the
    warm-up steps then include the compile). Takes the config as a dict so that a spawned process
    can receive it.
    """
    torch.set_num_threads(threads)
    config = from_dict(MDMConfig, config_dict, "train-step")
    if batch_size is not None:
        config = replace(config, train=replace(config.train, batch_size=batch_size))
    data, vocab = synthetic_data(config, max(config.train.batch_size, 64))
    steps = {name: TrainStep(cfg, Task(task), data, vocab, compile_blocks) for name, cfg in _variants(config).items()}
    for s in steps.values():
        for _ in range(warmup):
            s.step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    phases: dict[str, dict[str, list[float]]] = {name: {"forward": [], "backward": [], "update": []} for name in steps}
    for _ in range(repeats):  # interleaved: a load on the machine slows both alike
        for name, s in steps.items():
            t0 = time.perf_counter()
            s.step()
            times[name].append(time.perf_counter() - t0)
        for name, s in steps.items():  # the same step in its phases (one call each, no profiler)
            t0 = time.perf_counter()
            loss = s.forward()
            t1 = time.perf_counter()
            s.backward(loss)
            t2 = time.perf_counter()
            s.update()
            t3 = time.perf_counter()
            for phase, dt in zip(("forward", "backward", "update"), (t1 - t0, t2 - t1, t3 - t2)):
                phases[name][phase].append(dt)
    models = {}
    for name, s in steps.items():
        models[name] = {
            "n_layers": s.trainer.network.backbone.config.n_layers,
            "params": s.params, "backbone_params": s.backbone_params, "length": s.length,
            "seconds": statistics.median(times[name]), "times": times[name],
            "phases": {p: statistics.median(v) for p, v in phases[name].items()},
            "profile": _profile(s, profile_steps, top) if profile_steps else None,
        }
    return models


def machine() -> dict[str, Any]:
    """What a timing record needs to be read later: the CPU, torch, the load when it ran and the commit."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
                               capture_output=True, text=True, check=True).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
            "load_average": list(os.getloadavg()), "commit": commit}


def bench_train_step(config: MDMConfig, task: str = "joint", threads: int | None = None, repeats: int = 10,
                     warmup: int = 2, profile_steps: int = 3, top: int = 12, batch_size: int | None = None,
                     progress: Callable[[str], None] = print, isolate: bool = True,
                     compile_blocks: bool = False) -> dict:
    """Time a training step of ``config``'s model and of the parameter-matched Transformer (module docstring).

    ``compile_blocks`` times both with their backbone blocks compiled (``train.compile``), whatever the
    config says; otherwise both run eagerly.
    """
    if Task(task) not in TASK_PARTS:
        raise ValueError(f"unknown task {task!r}")
    if repeats < 1 or warmup < 0 or profile_steps < 0:
        raise ValueError("repeats must be >= 1, warmup and profile_steps >= 0")
    threads = threads or torch.get_num_threads()
    _variants(config)  # fail here, not in the child, on a transformer config
    reason = missing_compiler(torch.device("cpu")) if compile_blocks else None
    if reason is not None:
        raise ValueError(f"--compile: {reason}")
    progress(f"train-step {config.name} task {task}: {warmup} warm-up and {repeats} timed steps per model, "
             f"{threads} threads")
    load_before = os.getloadavg()
    models = in_subprocess(train_step_job, to_dict(config), task, threads, repeats, warmup, profile_steps, top,
                           batch_size, compile_blocks, isolate=isolate)
    if "error" in models:
        raise RuntimeError(f"bench train-step failed: {models['error']}")
    info = machine()
    info["threads"], info["load_average_before"] = threads, list(load_before)
    batch = batch_size or config.train.batch_size
    return {"config": config.name, "task": task, "batch_size": batch, "repeats": repeats, "machine": info,
            "compiled_blocks": compile_blocks,
            "models": models, "mamba_over_transformer": models["mamba"]["seconds"] / models["transformer"]["seconds"]}


def format_train_step(result: dict) -> str:
    """Markdown: one row per model (step time and its phases), then each model's top ops forward and backward."""
    rows = [f"### train step: {result['config']}, task {result['task']}, batch {result['batch_size']}", "",
            "| model | params | backbone params | length | step s (median) | forward s | backward s | "
            "clip+AdamW+EMA s |", "|---|---|---|---|---|---|---|---|"]
    for name, m in result["models"].items():
        p = m["phases"]
        rows.append(f"| {name} | {m['params'] / 1e6:.2f}M | {m['backbone_params'] / 1e6:.2f}M | {m['length']} | "
                    f"{m['seconds']:.4f} | {p['forward']:.4f} | {p['backward']:.4f} | {p['update']:.4f} |")
    mc = result["machine"]
    blocks = "compiled blocks (both models)" if result.get("compiled_blocks") else "eager"
    rows += ["", f"Mamba / Transformer step time: {result['mamba_over_transformer']:.2f}x. {blocks}, fp32, "
                 f"{mc['threads']} threads, median of {result['repeats']} interleaved steps; torch {mc['torch']}, "
                 f"{mc['cpu']} ({mc['cores']} cores), load average {mc['load_average_before'][0]:.2f} before and "
                 f"{mc['load_average'][0]:.2f} after, commit {mc['commit']}."]
    for name, m in result["models"].items():
        for phase, prof in (m["profile"] or {}).items():
            rows += ["", f"#### {name} {phase}: top ops by self CPU time ({prof['total_ms']:.1f} ms per step)", "",
                     "| op | self ms / step | share | calls / step |", "|---|---|---|---|"]
            rows += [f"| `{op['name']}` | {op['self_ms']:.2f} | {100 * op['share']:.1f}% | {op['calls']} |"
                     for op in prof["ops"]]
    return "\n".join(rows)
