"""Speed and memory of the backbones and of the SSD scan (the paper's Fig. 5 and App. E claim).

``mdm bench backbone`` measures, for sequence lengths 256 ... 65536:

* forward latency (median of repeats, batch 1, no grad) and peak memory of the
  Mamba backbone, the Transformer at equal width and depth, and the Transformer
  with its depth chosen to match the Mamba backbone's parameter count
  (two Mamba-2 blocks have about the parameters of one attention + MLP block);
* the SSD scan alone: chunked against the sequential reference, and the
  chunked scan's matmul GFLOP/s against this machine's measured fp32 matmul peak.

Every measurement runs in a fresh process and reports the memory it adds
(:mod:`mdm.bench.timing`). A Transformer length is skipped when its predicted time
(quadratic extrapolation of the previous one) exceeds ``max_seconds``.
"""

from __future__ import annotations

import json
import platform
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch

from mdm.bench.timing import backbone_job, in_subprocess, parameter_matched_depth, time_call
from mdm.config import BackboneConfig, BackboneKind, to_dict
from mdm.nn.backbone import Backbone
from mdm.nn.flops import backbone_flops_per_token, count_parameters, ssd_flops
from mdm.nn.ssd import ssd_chunked, ssd_ref
from mdm.training.loop import missing_compiler

DEFAULT_LENGTHS = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


def _ssd_job(length: int, n_heads: int, head_dim: int, d_state: int, chunk_size: int, threads: int,
             reference: bool, compile_scan: bool = False, cpu_kernels: bool = True) -> dict:
    torch.set_num_threads(threads)
    chunked = torch.compile(ssd_chunked, dynamic=False) if compile_scan else ssd_chunked
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, length, n_heads, head_dim, generator=g)
    dt = torch.nn.functional.softplus(torch.randn(1, length, n_heads, generator=g) - 2)
    A = -torch.rand(n_heads, generator=g) * 4 - 0.5
    B = torch.randn(1, length, 1, d_state, generator=g)
    C = torch.randn(1, length, 1, d_state, generator=g)
    D = torch.ones(n_heads)
    with torch.no_grad():
        if reference:
            timing = time_call(lambda: ssd_ref(x, dt, A, B, C, D), min_repeats=1, min_seconds=0.0)
        else:
            def run():
                return chunked(x, dt, A, B, C, D, chunk_size=chunk_size, cpu_kernel_ok=cpu_kernels)
            timing = time_call(run, warmup=(lambda: (run(), run())) if compile_scan else None)
    return {"seconds": timing.seconds, "peak_mb": timing.peak_mb, "repeats": timing.repeats}


def _matmul_job(n: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    timing = time_call(lambda: a @ b, min_repeats=5, min_seconds=1.0)
    return {"gflops": 2 * n**3 / timing.seconds / 1e9, "seconds": timing.seconds}


def bench_backbone(config: BackboneConfig, lengths: tuple[int, ...] = DEFAULT_LENGTHS, threads: int | None = None,
                   max_seconds: float = 30.0, ref_max_length: int = 16384,
                   progress: Callable[[str], None] = print, isolate: bool = True,
                   compile_blocks: bool = False) -> dict:
    """Run the whole benchmark; returns a JSON-ready dict (see module docstring).

    ``compile_blocks`` times every backbone with its blocks compiled (``train.compile``'s
    ``torch.compile``) and the chunked scan compiled; the compile itself is not timed.
    """
    threads = threads or torch.get_num_threads()
    reason = missing_compiler(torch.device("cpu")) if compile_blocks else None
    if reason is not None:
        raise ValueError(f"--compile: {reason}")
    mamba = replace(config, kind=BackboneKind.MAMBA2, max_seq_len=max(max(lengths), config.max_seq_len))
    depth = parameter_matched_depth(mamba)
    variants = {
        "mamba": mamba,
        "transformer_same_depth": replace(mamba, kind=BackboneKind.TRANSFORMER, long_skips=False),
        "transformer_param_matched": replace(mamba, kind=BackboneKind.TRANSFORMER, n_layers=depth, long_skips=False),
    }
    with torch.device("meta"):
        params = {name: count_parameters(Backbone(cfg)) for name, cfg in variants.items()}

    progress(f"measuring fp32 matmul peak ({threads} threads)")
    peak = in_subprocess(_matmul_job, 2048, threads, isolate=isolate)
    result: dict[str, Any] = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": threads,
                    "torch": torch.__version__, "matmul_fp32_gflops": peak.get("gflops")},
        "compiled": compile_blocks,
        "config": to_dict(mamba), "params": params, "transformer_param_matched_depth": depth,
        "lengths": list(lengths), "backbone": {name: {} for name in variants}, "ssd": {},
    }
    for name, cfg in variants.items():
        last = None
        for length in lengths:
            if name != "mamba" and last is not None:
                predicted = last[1] * (length / last[0]) ** 2
                if predicted > max_seconds:
                    result["backbone"][name][str(length)] = {"skipped": f"predicted {predicted:.0f}s > {max_seconds}s"}
                    continue
            progress(f"{name} @ {length}")
            r = in_subprocess(backbone_job, to_dict(cfg), length, threads, 0, compile_blocks, isolate=isolate)
            if "seconds" in r:
                r["flops_per_token"] = backbone_flops_per_token(cfg, length)
                last = (length, r["seconds"])
            result["backbone"][name][str(length)] = r

    d_inner = mamba.expand * mamba.d_model
    n_heads = d_inner // mamba.head_dim
    for length in lengths:
        progress(f"ssd @ {length}")
        chunked = in_subprocess(_ssd_job, length, n_heads, mamba.head_dim, mamba.d_state, mamba.chunk_size,
                                 threads, False, compile_blocks, mamba.cpu_kernels, isolate=isolate)
        entry = {"chunked": chunked}
        if "seconds" in chunked:
            flops = ssd_flops(length, n_heads, mamba.head_dim, 1, mamba.d_state, mamba.chunk_size, length)
            chunked["gflops"] = flops / chunked["seconds"] / 1e9
            if peak.get("gflops"):
                chunked["share_of_matmul_peak"] = chunked["gflops"] / peak["gflops"]
        if length <= ref_max_length:
            entry["sequential"] = in_subprocess(_ssd_job, length, n_heads, mamba.head_dim, mamba.d_state,
                                                 mamba.chunk_size, threads, True, isolate=isolate)
        result["ssd"][str(length)] = entry
    result["summary"] = summarize(result)
    return result


def _seconds(result: dict, name: str, length: int) -> float | None:
    return result["backbone"][name].get(str(length), {}).get("seconds")


def crossover(result: dict, name: str) -> int | None:
    """First measured length from which the Mamba backbone is faster than ``name`` at every longer length."""
    lengths = [l for l in result["lengths"] if _seconds(result, "mamba", l) is not None]
    out = None
    for length in reversed(lengths):
        other = _seconds(result, name, length)
        if other is None:
            if result["backbone"][name].get(str(length), {}).get("skipped"):
                out = length  # skipped because it was predicted to be far slower
                continue
            break
        if _seconds(result, "mamba", length) < other:
            out = length
        else:
            break
    return out


def summarize(result: dict) -> dict:
    s: dict[str, Any] = {}
    m = lambda l: _seconds(result, "mamba", l)  # noqa: E731
    if m(1024) and m(16384):
        s["mamba_16384_over_1024"] = m(16384) / m(1024)
    for name in ("transformer_same_depth", "transformer_param_matched"):
        s[f"crossover_{name}"] = crossover(result, name)
        for length in (8192, 16384):
            if m(length) and _seconds(result, name, length):
                s[f"speedup_vs_{name}_{length}"] = _seconds(result, name, length) / m(length)
    ssd = result["ssd"].get("16384", {})
    if ssd.get("sequential", {}).get("seconds") and ssd.get("chunked", {}).get("seconds"):
        s["ssd_chunked_speedup_16384"] = ssd["sequential"]["seconds"] / ssd["chunked"]["seconds"]
    shares = [e["chunked"]["share_of_matmul_peak"] for e in result["ssd"].values()
              if "share_of_matmul_peak" in e.get("chunked", {})]
    if shares:
        s["ssd_share_of_matmul_peak_range"] = [min(shares), max(shares)]
    return s


def format_table(result: dict) -> str:
    """A Markdown table of the benchmark."""
    names = list(result["backbone"])
    p = result["params"]
    head = ["length"] + [f"{n} ({p[n] / 1e6:.2f}M) s / MB" for n in names] + [
        "ssd chunked s", "ssd seq s", "ssd GFLOP/s (% peak)"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(r: dict) -> str:
        if "seconds" in r:
            return f"{r['seconds']:.4f} / {r['peak_mb']:.0f}"
        return "skipped" if "skipped" in r else ("error" if "error" in r else "-")

    for length in result["lengths"]:
        row = [str(length)] + [cell(result["backbone"][n].get(str(length), {})) for n in names]
        ssd = result["ssd"].get(str(length), {})
        ch, sq = ssd.get("chunked", {}), ssd.get("sequential", {})
        row.append(f"{ch['seconds']:.4f}" if "seconds" in ch else "-")
        row.append(f"{sq['seconds']:.3f}" if "seconds" in sq else "-")
        row.append(f"{ch['gflops']:.1f} ({100 * ch.get('share_of_matmul_peak', 0):.1f}%)" if "gflops" in ch else "-")
        rows.append("| " + " | ".join(row) + " |")
    m = result["machine"]
    rows.append("")
    rows.append(f"{'compiled blocks and scan' if result.get('compiled') else 'eager'}, "
                f"fp32, batch 1, {m['threads']} threads, torch {m['torch']}; fp32 matmul peak "
                f"{m['matmul_fp32_gflops']:.1f} GFLOP/s; param-matched Transformer depth "
                f"{result['transformer_param_matched_depth']}.")
    rows.append("summary: " + json.dumps(result["summary"]))
    return "\n".join(rows)


def plot(result: dict, path: str | Path) -> None:
    """Latency vs length (log-log) for every backbone, and the SSD chunked vs sequential."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, runs in result["backbone"].items():
        pts = [(int(l), r["seconds"]) for l, r in runs.items() if "seconds" in r]
        if pts:
            ax1.plot(*zip(*pts), marker="o", label=f"{name} ({result['params'][name] / 1e6:.1f}M)")
    ax1.set(xscale="log", yscale="log", xlabel="sequence length (tokens)", ylabel="forward latency (s)",
            title="Backbone forward, batch 1, fp32")
    ax1.legend(fontsize=8)
    for key in ("chunked", "sequential"):
        pts = [(int(l), e[key]["seconds"]) for l, e in result["ssd"].items() if "seconds" in e.get(key, {})]
        if pts:
            ax2.plot(*zip(*pts), marker="o", label=f"SSD {key}")
    ax2.set(xscale="log", yscale="log", xlabel="sequence length (tokens)", ylabel="latency (s)",
            title="SSD scan alone")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
