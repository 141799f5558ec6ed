"""What every benchmark of :mod:`mdm.bench` shares: timing a call, its peak memory, and a fresh process per point.

Every measurement runs in a fresh ``spawn``-ed process (:func:`in_subprocess`) so that one
measurement's allocator state does not leak into the next. Peak memory is the resident
high-water mark during the timed calls (reset just before them) minus the resident size
just before them: what the call adds.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
import multiprocessing as mp
import resource
import statistics
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

from mdm.config import BackboneConfig, BackboneKind, from_dict
from mdm.nn.backbone import Backbone
from mdm.nn.flops import count_parameters
from mdm.nn.layout import SegmentSpec


@dataclass
class Timing:
    """What :func:`time_call` measured: the median latency, the resident memory the call adds at its peak, and
    how many timed calls the median is of."""

    seconds: float  # median
    peak_mb: float
    repeats: int


def status_mb(field: str) -> float | None:
    """A memory figure (``VmRSS``, ``VmHWM``) of this process from /proc/self/status, in MB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset this process's resident high-water mark (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def time_call(fn: Callable[[], Any], min_repeats: int = 3, min_seconds: float = 1.0,
          warmup: Callable[[], Any] | None = None) -> Timing:
    """Median latency of ``fn`` and the resident memory it adds at its peak.

    The peak is the high-water mark (``VmHWM``) reset just before the first call,
    minus the resident size then; where the reset is not allowed, the process's
    lifetime ``ru_maxrss`` is used instead (an over-estimate). ``warmup`` (default
    ``fn`` itself) runs once first: a cheaper call when ``fn`` takes minutes.
    """
    reset = reset_peak_rss()
    rss0 = status_mb("VmRSS") or 0.0
    (warmup or fn)()  # warm-up (allocator, lazy init); also the first memory peak
    times = []
    start = time.perf_counter()
    while len(times) < min_repeats or (time.perf_counter() - start < min_seconds and len(times) < 20):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    peak = status_mb("VmHWM") if reset else None
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return Timing(statistics.median(times), max(peak - rss0, 0.0), len(times))


def in_subprocess(target: Callable[..., dict], *args: Any, isolate: bool = True) -> dict:
    """Run ``target(*args)`` in a fresh process and return its dict (or {'error': ...}).

    ``isolate=False`` runs it here instead: faster, but the memory high-water mark
    then includes every earlier measurement, and the thread count stays changed.
    """
    if not isolate:
        return target(*args)
    # A process pool, not mp.Pool: if the child is killed (out of memory), the
    # executor raises BrokenProcessPool where mp.Pool would wait forever.
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        try:
            return pool.submit(target, *args).result()
        except Exception as e:  # an OOM kill or an error inside the child
            return {"error": f"{type(e).__name__}: {e}"}


def backbone_job(config_dict: dict, length: int, threads: int, seed: int, compile_blocks: bool = False) -> dict:
    """One forward pass of a backbone (batch 1, no grad) over one text segment of ``length`` positions: its
    median latency and the memory it adds. ``compile_blocks`` compiles every block first (``train.compile``);
    two untimed calls then pay the compile. Takes the config as a dict so that a spawned process can receive it."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    config = from_dict(BackboneConfig, config_dict)
    model = Backbone(config).eval()
    if compile_blocks:
        for block in model.blocks:
            block.compile()
    # One text segment filling the sequence: CLS + begin + time + body + end = length.
    layout = model.make_layout([SegmentSpec.text(length - 4)])
    content = torch.randn(1, layout.n_content, config.d_model)
    t = torch.full((1, layout.n_content), 500.0)
    seg_t = torch.full((1, 1), 500.0)
    run = lambda: model(content, t, seg_t, layout)  # noqa: E731
    with torch.no_grad():
        timing = time_call(run, warmup=(lambda: (run(), run())) if compile_blocks else None)
    return {"seconds": timing.seconds, "peak_mb": timing.peak_mb, "repeats": timing.repeats}


def parameter_matched_depth(mamba: BackboneConfig) -> int:
    """Transformer depth whose parameter count is closest to the Mamba backbone's."""
    with torch.device("meta"):
        target = count_parameters(Backbone(mamba))
        best = None
        for depth in range(1, mamba.n_layers + 1):
            cfg = replace(mamba, kind=BackboneKind.TRANSFORMER, n_layers=depth, long_skips=False)
            gap = abs(count_parameters(Backbone(cfg)) - target)
            if best is None or gap < best[0]:
                best = (gap, depth)
    return best[1]
