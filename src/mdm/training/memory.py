"""The memory one training step needs, measured before the first step, and a refusal when it cannot fit.

Why: a batch far too large for the machine (``train.batch_size=100000`` on a large data set) otherwise grows
to many GB inside step 1 and the kernel kills the process without a word. The estimate is two parts:

- **state**: the parameters' bytes times four (the weights, their gradients, AdamW's two moments) plus the
  EMA's copy of the weights and buffers (:class:`mdm.training.loop.EMA`); under FSDP each process holds
  ``1 / world_size`` of it.
- **activations**: measured, not guessed. The very forward of a training step
  (:func:`mdm.training.loop.step_losses`) runs on one and on two samples of the run's data, for every task
  of every source the run trains, under :func:`torch.autograd.graph.saved_tensors_hooks`; the bytes of the
  distinct storages saved for backward (a view's storage counted once, the parameters' own left out) give a
  fixed part and a part per sample, and the largest task's line is taken at the per-process batch.

The probe leaves the run as it found it: its draws come from a generator of its own (and the global
streams are forked), every module's train/eval mode and every buffer (a time warp's level statistics)
are restored, and nothing steps the optimizer or the EMA, so a run's weights are bit-identical with and
without it (``tests/training/test_memory.py``). Transient buffers of the backward pass (a gradient being
formed) are not counted, so the estimate is a floor within a small factor, not a bound.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from mdm.config import MDMConfig
from mdm.diffusion.batch_random import BatchRandom
from mdm.diffusion.multimodal import MultimodalDiffusion
from mdm.nn.network import MDMNetwork
from mdm.tasks import Task, TokenizedData
from mdm.training.loop import TrainingObjective, autocast_for, step_losses
from mdm.training.mixture import Mixture

MEMINFO = Path("/proc/meminfo")
REFUSE_FACTOR = 2.0  # refuse when one step needs more than this times the free memory


class MemoryEstimateError(ValueError):
    """One step of the run needs far more memory than the machine has free; names ``train.batch_size``."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one training step needs in one process: ``state + fixed + per_sample * batch``."""

    state: int  # weights, gradients, AdamW moments, EMA
    fixed: int  # activations that do not grow with the batch (e.g. the candidates' latents)
    per_sample: int  # activations saved for backward per sample
    batch: int  # samples a process (train.batch_size / processes)
    processes: int = 1

    @property
    def activations(self) -> int:
        return self.fixed + self.per_sample * self.batch

    @property
    def total(self) -> int:
        return self.state + self.activations

    def largest_batch(self, free: int) -> int:
        """The largest ``train.batch_size`` (over every process) whose step fits in ``free`` bytes; 0 if none."""
        room = free - self.state - self.fixed
        if room <= 0 or self.per_sample <= 0:
            return 0 if room <= 0 else self.batch * self.processes
        return (room // self.per_sample) * self.processes


def format_bytes(n: float) -> str:
    """``1.2 GB`` or ``35 MB``: one decimal of GB from 1 GB up (decimal units, as ``free`` and ``df -H`` print)."""
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def state_bytes(network: nn.Module, shards: int = 1) -> int:
    """Weights + gradients + AdamW's two moments of every parameter, and the EMA's copy of weights and buffers.

    ``shards``: processes that split the parameters (FSDP); each holds about its share of them.
    """
    params = sum(p.numel() * p.element_size() for p in network.parameters())
    buffers = sum(b.numel() * b.element_size() for b in network.buffers())
    return (4 * params + (params + buffers)) // max(shards, 1)


def saved_tensor_bytes(run, exclude: set[int] = frozenset()) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``run()`` executes.

    Storages are told apart by their data pointer, so a view's storage counts once; ``exclude`` holds the data
    pointers not to count (the parameters', already counted as state). The graph is dropped on return.
    """
    seen: dict[int, int] = {}
    kept: list[Tensor] = []  # alive until the end, so no freed storage's address is reused and miscounted

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr and ptr not in exclude:
            seen[ptr] = max(seen.get(ptr, 0), storage.nbytes())
            kept.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run()
    del out, kept
    return sum(seen.values())


def trained_pairs(data: TokenizedData | Mixture, weights: dict[str, float]) -> list[tuple[int, Task]]:
    """Every (source, task) a step may draw: a source of positive weight and a task of positive weight it supports
    (the choices of :func:`mdm.training.mixture.task_sampler`)."""
    mixture = Mixture.of(data)
    return [(i, Task(name)) for i, source in enumerate(mixture.sources) if source.weight > 0
            for name, w in weights.items() if w > 0 and source.data.supports(Task(name))]


@contextlib.contextmanager
def _untouched(network: nn.Module, device: torch.device):
    """Restore every module's train/eval mode, every buffer and the global random streams after the block."""
    modes = [(m, m.training) for m in network.modules()]
    buffers = [(b, b.detach().clone()) for b in network.buffers()]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            yield
        finally:
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)
            for m, mode in modes:
                m.train(mode)


def probe_activations(network: MDMNetwork, diffusion: MultimodalDiffusion, data: TokenizedData | Mixture,
                      config: MDMConfig, sizes: tuple[int, ...] = (1, 2)) -> dict[tuple[int, Task], list[int]]:
    """Saved-for-backward bytes of a training step's forward on ``sizes`` samples, per (source, task).

    The samples are the source's first, repeated; every task's sequence has the same length whatever sample
    fills it (texts are padded to their role's length), so one sample stands for all.
    """
    device = next(network.parameters()).device
    mixture = Mixture.of(data)
    objective = TrainingObjective(network, diffusion)
    autocast = autocast_for(device, config.train.mixed_precision)
    exclude = {t.untyped_storage().data_ptr() for t in (*network.parameters(), *network.buffers())}
    found: dict[tuple[int, Task], list[int]] = {}
    with _untouched(network, device):
        network.train()
        generator = torch.Generator(device).manual_seed(0)  # the probe's own draws; the run's stay untouched
        for source, task in trained_pairs(data, config.train.drawn_task_weights()):
            found[source, task] = []
            for n in sizes:
                batch = mixture.sources[source].data.subset(torch.zeros(n, dtype=torch.long)).to(device)
                rng = BatchRandom(generator, device)
                found[source, task].append(saved_tensor_bytes(
                    lambda: step_losses(objective, network, task, batch, rng, autocast), exclude))
    return found


def estimate_step_memory(network: MDMNetwork, diffusion: MultimodalDiffusion, data: TokenizedData | Mixture,
                         config: MDMConfig, processes: int = 1, sharded: bool = False) -> MemoryEstimate:
    """The memory one step of ``config`` needs in one of ``processes`` processes (call before any sharding).

    Activations follow a line through the probes at one and two samples; the task whose line is highest at
    the per-process batch decides.
    """
    batch = config.train.batch_size // processes
    lines = []
    for one, two in probe_activations(network, diffusion, data, config).values():
        per_sample = max(two - one, 0)
        lines.append((max(one - per_sample, 0), per_sample))
    fixed, per_sample = max(lines, key=lambda line: line[0] + line[1] * batch, default=(0, 0))
    return MemoryEstimate(state_bytes(network, processes if sharded else 1), fixed, per_sample, batch, processes)


def free_memory_bytes(device: torch.device | str) -> int | None:
    """Memory this process could still take: CUDA's free bytes on the device, else ``MemAvailable`` of
    ``/proc/meminfo`` (None where it cannot be read, e.g. macOS: then the estimate is printed alone)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_step_memory(estimate: MemoryEstimate, free: int | None) -> str:
    """The log line of ``estimate``; a :class:`MemoryEstimateError` when it exceeds ``REFUSE_FACTOR`` times
    ``free`` (a step that would surely be killed, while an estimate a little over the free memory may still
    fit once caches are dropped)."""
    line = (f"memory: one step needs about {format_bytes(estimate.total)} (weights, gradients, AdamW and EMA "
            f"{format_bytes(estimate.state)}; activations {format_bytes(estimate.activations)} at "
            f"{estimate.batch} samples a process)")
    if free is None:
        return line + "; free memory unknown"
    if estimate.total > REFUSE_FACTOR * free:
        fit = estimate.largest_batch(free)
        hint = (f"at most ~{_round_down(fit)} fit; lower train.batch_size" if fit > 0 else
                "not even one sample a process fits; choose a smaller model (backbone.*) or a machine with more "
                "memory")
        raise MemoryEstimateError(
            f"train.batch_size {estimate.batch * estimate.processes} needs about {format_bytes(estimate.total)} "
            f"for one step, over twice the {format_bytes(free)} free: {hint}")
    return line + f"; {format_bytes(free)} free"


def _round_down(n: int) -> int:
    """``n`` down to two significant digits (12345 -> 12000): the estimate is not exact to the sample."""
    if n < 100:
        return n
    step = 10 ** (len(str(n)) - 2)
    return n // step * step


__all__ = ["MemoryEstimate", "MemoryEstimateError", "check_step_memory", "estimate_step_memory",
           "free_memory_bytes", "probe_activations", "saved_tensor_bytes", "state_bytes"]
