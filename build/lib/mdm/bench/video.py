"""Latency and memory of DiM against full spatio-temporal attention as clips grow (DESIGN.md §5).

``mdm bench video`` builds the backbone of a video config (DiM: bidirectional
Mamba-2 blocks with frame-major / space-major scans) and a Transformer with full
attention over every (frame, row, column) token, its depth matched to DiM's
parameter count, and for each clip shape T x H x W (in VQ codes) measures one
forward pass at batch 1 without gradients:

* latency: the median of repeats (:func:`mdm.bench.timing.time_call`);
* peak memory: the resident high-water mark the pass adds (same function).

The Transformer is measured twice: with PyTorch's fused attention (on CPU a
flash-style kernel that never holds the T*H*W x T*H*W score matrix, so its
memory stays linear and only its time grows quadratically), and with the
explicit score matrix (``SDPBackend.MATH``, what attention costs without a
fused kernel). Every measurement runs in a fresh process whose address space is
capped at ``memory_limit_gb`` (default 24 GiB, this machine's memory): a shape
that does not fit fails there with an allocation error, recorded as such,
instead of swapping the machine. A shape is skipped when the previous one's
latency, extrapolated quadratically (Transformer) or linearly (DiM), predicts
more than ``max_seconds`` -- unless its memory, extrapolated quadratically for the
explicit score matrix and linearly otherwise, predicts more than the cap: then it
is run, to find the first clip that does not fit (the allocation fails within the
first layer). Only allocation failures count as "does not fit"; any other error
is recorded as an error. Shapes are measured from the smallest clip up.
"""

from __future__ import annotations

import math
import platform
import resource
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from mdm.bench import timing
from mdm.config import BackboneConfig, BackboneKind, MDMConfig, from_dict, to_dict
from mdm.nn.backbone import Backbone
from mdm.nn.flops import count_parameters
from mdm.nn.layout import SegmentSpec, SequenceLayout

DEFAULT_SHAPES = ((4, 8, 8), (8, 8, 8), (8, 16, 16), (16, 16, 16), (16, 32, 32), (32, 32, 32), (64, 32, 32),
                  (64, 64, 64))
VARIANTS = ("dim", "transformer_fused", "transformer_explicit")


def parse_shapes(spec: str) -> tuple[tuple[int, int, int], ...]:
    """``"8x8x8,16x16x16"`` -> ((8, 8, 8), (16, 16, 16)), frames x rows x columns of VQ codes."""
    shapes = []
    for item in spec.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"--shapes: {item.strip()!r} is not FRAMESxROWSxCOLS of positive integers "
                             f"(e.g. 8x6x6,16x16x16)")
        shapes.append(tuple(int(p) for p in parts))
    return tuple(shapes)


def _video_job(config_dict: dict, shape: tuple[int, int, int], threads: int, explicit_attention: bool,
               memory_limit_gb: float) -> dict:
    limit = int(memory_limit_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = from_dict(BackboneConfig, config_dict)
    model = Backbone(config).eval()
    layout = model.make_layout([SegmentSpec.video(*shape)])
    content = torch.randn(1, layout.n_content, config.d_model)
    t, seg_t = torch.full((1, layout.n_content), 500.0), torch.full((1, 1), 500.0)
    attention = sdpa_kernel([SDPBackend.MATH]) if explicit_attention else nullcontext()  # default: fused
    try:
        with torch.no_grad(), attention:
            measured = timing.time_call(lambda: model(content, t, seg_t, layout), min_repeats=2, min_seconds=0.5)
    except (RuntimeError, MemoryError) as e:
        message = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        if isinstance(e, MemoryError) or "allocate" in str(e) or "out of memory" in str(e):
            return {"does_not_fit": message}  # the address-space cap
        return {"error": message}
    return {"seconds": measured.seconds, "peak_mb": measured.peak_mb, "repeats": measured.repeats}


def bench_video(config: MDMConfig, shapes: tuple[tuple[int, int, int], ...] = DEFAULT_SHAPES,
                threads: int | None = None, max_seconds: float = 60.0, memory_limit_gb: float = 24.0,
                progress: Callable[[str], None] = print) -> dict:
    """The table of the module docstring as a JSON-ready dict."""
    if config.backbone.kind is not BackboneKind.BIMAMBA2:
        raise ValueError(f"bench video compares a DiM (backbone.kind bimamba2) config with attention; got "
                         f"backbone.kind {config.backbone.kind.value}")

    threads = threads or torch.get_num_threads()
    shapes = tuple(sorted(shapes, key=math.prod))  # the extrapolations below assume growing clips
    longest = max(SequenceLayout([SegmentSpec.video(*s)], row_pad=config.backbone.row_pad).length for s in shapes)
    dim = replace(config.backbone, max_seq_len=max(config.backbone.max_seq_len, longest))
    transformer = replace(dim, kind=BackboneKind.TRANSFORMER, n_layers=timing.parameter_matched_depth(dim),
                          long_skips=False)
    with torch.device("meta"):
        params = {"dim": count_parameters(Backbone(dim)), "transformer": count_parameters(Backbone(transformer))}
    result: dict[str, Any] = {"machine": platform.machine(), "threads": threads, "torch": torch.__version__,
                              "memory_limit_gb": memory_limit_gb, "params": params,
                              "dim": to_dict(dim), "transformer_depth": transformer.n_layers,
                              "shapes": [list(s) for s in shapes], "runs": {v: {} for v in VARIANTS}}
    for variant in VARIANTS:
        cfg = dim if variant == "dim" else transformer
        power = 1 if variant == "dim" else 2  # of latency
        memory_power = 2 if variant == "transformer_explicit" else 1  # only the explicit score matrix is quadratic
        last = None
        for shape in shapes:
            tokens, key = math.prod(shape), "x".join(map(str, shape))
            if last is not None:
                predicted = last[1] * (tokens / last[0]) ** power
                too_big = last[2].get("peak_mb", 0.0) * (tokens / last[0]) ** memory_power > memory_limit_gb * 1024
                if predicted > max_seconds and not too_big:
                    result["runs"][variant][key] = {"skipped": f"predicted {predicted:.0f} s > {max_seconds:g} s"}
                    continue
                if "does_not_fit" in last[2]:
                    result["runs"][variant][key] = {"does_not_fit": f"a smaller clip ({last[3]}) did not fit"}
                    continue
            progress(f"{variant} @ {key} ({tokens} tokens)")
            r = timing.in_subprocess(_video_job, to_dict(cfg), shape, threads, variant == "transformer_explicit",
                               memory_limit_gb)
            r["tokens"] = tokens
            result["runs"][variant][key] = r
            if "seconds" in r:
                last = (tokens, r["seconds"], r, key)
            elif "does_not_fit" in r:
                last = (tokens, 0.0, r, key)
    result["summary"] = summarize_video(result)
    return result


def _growth(points: list[tuple[int, float]]) -> float | None:
    """The exponent k of cost ~ tokens^k between the two longest measured clips."""
    if len(points) < 2:
        return None
    (n0, c0), (n1, c1) = points[-2], points[-1]
    return math.log(c1 / c0) / math.log(n1 / n0) if c0 > 0 and c1 > 0 and n1 > n0 else None


def summarize_video(result: dict) -> dict:
    s: dict[str, Any] = {}
    for variant, runs in result["runs"].items():
        timed = [(r["tokens"], r["seconds"]) for r in runs.values() if "seconds" in r]
        s[f"{variant}_latency_exponent"] = _growth(timed)
        s[f"{variant}_memory_exponent"] = _growth([(r["tokens"], r["peak_mb"]) for r in runs.values()
                                                   if "seconds" in r and r["peak_mb"] > 1])
        s[f"{variant}_largest_measured"] = max((k for k, r in runs.items() if "seconds" in r),
                                               key=lambda k: math.prod(map(int, k.split("x"))), default=None)
        fails = [k for k, r in runs.items() if "does_not_fit" in r and "smaller clip" not in r["does_not_fit"]]
        s[f"{variant}_first_does_not_fit"] = fails[0] if fails else None
    return s


def format_video(result: dict) -> str:
    p = result["params"]
    head = ["clip T x H x W (codes)", "tokens", f"DiM ({p['dim'] / 1e6:.2f}M) s / MB",
            f"Transformer, fused attention ({p['transformer'] / 1e6:.2f}M) s / MB",
            "Transformer, explicit attention s / MB"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(r: dict) -> str:
        if "seconds" in r:
            return f"{r['seconds']:.3f} / {r['peak_mb']:.0f}"
        if "does_not_fit" in r:
            return f"does not fit in {result['memory_limit_gb']:g} GiB"
        if "error" in r:
            return f"error: {r['error'][:60]}"
        return "skipped (too slow)" if "skipped" in r else "-"

    for shape in result["shapes"]:
        key = "x".join(map(str, shape))
        row = [key, str(math.prod(shape))] + [cell(result["runs"][v].get(key, {})) for v in VARIANTS]
        rows.append("| " + " | ".join(row) + " |")
    rows += ["", f"forward, batch 1, fp32, no grad; {result['threads']} threads, torch {result['torch']}; "
                 f"Transformer depth {result['transformer_depth']} (parameter-matched); every measurement in a "
                 f"fresh process capped at {result['memory_limit_gb']:g} GiB of address space.",
             "summary: " + ", ".join(f"{k} = {v:.2f}" if isinstance(v, float) else f"{k} = {v}"
                                     for k, v in result["summary"].items())]
    return "\n".join(rows)


def plot_video(result: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = {"dim": "DiM (bidirectional Mamba-2)", "transformer_fused": "Transformer, fused attention",
              "transformer_explicit": "Transformer, explicit attention"}
    for variant, runs in result["runs"].items():
        pts = sorted((r["tokens"], r["seconds"], r["peak_mb"]) for r in runs.values() if "seconds" in r)
        if pts:
            n, sec, mb = zip(*pts)
            ax1.plot(n, sec, marker="o", label=labels[variant])
            ax2.plot(n, [max(m, 1.0) / 1024 for m in mb], marker="o", label=labels[variant])
    ax2.axhline(result["memory_limit_gb"], color="grey", linestyle="--", label=f"{result['memory_limit_gb']:g} GiB")
    ax1.set(xscale="log", yscale="log", xlabel="clip tokens (T x H x W codes)", ylabel="forward latency (s)",
            title="Latency, batch 1, fp32")
    ax2.set(xscale="log", yscale="log", xlabel="clip tokens (T x H x W codes)", ylabel="peak memory added (GiB)",
            title="Memory")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
