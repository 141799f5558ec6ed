"""Fig. 5 in one run: images/s by resolution and latency by token length, Mamba against the Transformer.

The paper's Fig. 5 plots images per second against resolution: the Mamba stack's
cost grows linearly with the number of image tokens, attention's quadratically, so
the gap widens with resolution. Here a class-conditional model of the chosen
backbone config samples a batch of images with the real sampler (DPM-Solver++,
the configured steps, multi-step selection) at each resolution; the VQ grid side
is ``resolution / vq_factor``, so the sequence holds ``(resolution / vq_factor)^2``
image tokens. Weights are random: the cost of a network call does not depend on
them. The second half times one forward pass of each backbone (batch 1) at growing
token lengths, :func:`mdm.bench.timing.backbone_job` -- the same measurement as ``mdm bench
backbone``. Each point runs in a fresh process (:func:`mdm.bench.timing.in_subprocess`).
"""

from __future__ import annotations

import platform
from dataclasses import replace

import torch

from mdm.bench import timing
from mdm.config import BackboneConfig, BackboneKind, MDMConfig, from_dict, load_config, to_dict
from mdm.diffusion.multimodal import Segment
from mdm.diffusion.sampling import SamplerConfig, sample
from mdm.nn.layout import Modality, SegmentSpec
from mdm.training.loop import build_model

DEFAULT_RESOLUTIONS = (32, 64, 128, 256)
DEFAULT_LENGTHS = (256, 1024, 4096, 16384)


def _sampling_job(config_dict: dict, resolution: int, batch: int, steps: int, threads: int, seed: int) -> dict:
    torch.set_num_threads(threads)
    config = from_dict(MDMConfig, config_dict, "throughput")
    network, diffusion = build_model(config, {Modality.IMAGE: 256})
    network.eval()
    side = resolution // config.layout.vq_factor
    segments = [Segment(SegmentSpec.image(side, side), None, True)]
    labels = torch.zeros(batch, dtype=torch.long)

    def run(solver_steps: int) -> None:
        with torch.no_grad():
            sample(network, diffusion, segments, labels, SamplerConfig(steps=solver_steps), batch,
                   torch.Generator().manual_seed(seed))

    # Warm-up with one network call at this length; then the median of the runs that fit in 3 s (one
    # run when a run is slower than that).
    measured = timing.time_call(lambda: run(steps), min_repeats=1, min_seconds=3.0, warmup=lambda: run(1))
    return {"resolution": resolution, "tokens": side * side, "seconds": measured.seconds,
            "images_per_s": batch / measured.seconds, "repeats": measured.repeats, "peak_mb": measured.peak_mb}


def bench_throughput(config: MDMConfig, resolutions: tuple[int, ...] = DEFAULT_RESOLUTIONS, batch: int = 4,
                     steps: int = 20, threads: int | None = None, max_seconds: float = 120.0,
                     seed: int = 0, lengths: tuple[int, ...] = DEFAULT_LENGTHS, isolate: bool = True) -> dict:
    """Images/s of ``config``'s backbone and of a parameter-matched Transformer at each resolution,
    and the forward latency of both at each token length.

    A backbone stops at the first resolution (length) that took longer than ``max_seconds``.
    ``isolate=False`` measures in this process (:func:`mdm.bench.timing.in_subprocess`).
    """
    threads = threads or torch.get_num_threads()
    mamba = config.backbone
    if mamba.kind is not BackboneKind.MAMBA2:
        raise ValueError(f"bench throughput compares a mamba2 config with the Transformer; got {mamba.kind.value}")
    transformer: BackboneConfig = replace(mamba, kind=BackboneKind.TRANSFORMER,
                                          n_layers=timing.parameter_matched_depth(mamba))
    result = {"batch": batch, "steps": steps, "threads": threads, "vq_factor": config.layout.vq_factor,
              "machine": platform.machine(), "torch": torch.__version__, "runs": {}}
    for name, backbone in (("mamba", mamba), ("transformer", transformer)):
        rows = []
        for resolution in resolutions:
            side = resolution // config.layout.vq_factor
            c = replace(config, backbone=replace(backbone, max_seq_len=max(backbone.max_seq_len, side * side + 64),
                                                 n_classes=max(backbone.n_classes, 1)),
                        layout=replace(config.layout, image_size=resolution))
            row = timing.in_subprocess(_sampling_job, to_dict(c), resolution, batch, steps, threads, seed,
                                       isolate=isolate)
            if "error" in row:  # out of memory or a failure in the child: keep what was measured, stop here
                print(f"{name:<12} {resolution:>4} px  failed: {row['error']}", flush=True)
                break
            rows.append(row)
            print(f"{name:<12} {resolution:>4} px  {row['tokens']:>6} tokens  {row['images_per_s']:8.3f} images/s",
                  flush=True)
            if row["seconds"] > max_seconds:
                break
        latency = []
        for length in lengths:
            job_config = to_dict(replace(backbone, max_seq_len=max(backbone.max_seq_len, length)))
            row = timing.in_subprocess(timing.backbone_job, job_config, length, threads, seed, isolate=isolate)
            if "error" in row:
                print(f"{name:<12} {length:>6} tokens  failed: {row['error']}", flush=True)
                break
            latency.append({"length": length, **row})
            print(f"{name:<12} {length:>6} tokens  {row['seconds']:8.4f} s per forward", flush=True)
            if row["seconds"] > max_seconds:
                break
        result["runs"][name] = {"n_layers": backbone.n_layers, "rows": rows, "latency": latency}
    return result


def format_throughput(result: dict) -> str:
    runs = result["runs"]
    resolutions = sorted({r["resolution"] for run in runs.values() for r in run["rows"]})
    lines = [f"images/s, batch {result['batch']}, DPM-Solver++ {result['steps']} steps, {result['threads']} threads",
             "", "| resolution | image tokens | " + " | ".join(
                 f"{k} ({v['n_layers']} blocks)" for k, v in runs.items()) + " |",
             "|---|---|" + "---|" * len(runs)]
    for res in resolutions:
        cells, tokens = [], None
        for run in runs.values():
            row = next((r for r in run["rows"] if r["resolution"] == res), None)
            cells.append("–" if row is None else f"{row['images_per_s']:.3f}")
            tokens = tokens or (row and row["tokens"])
        lines.append(f"| {res} | {tokens} | " + " | ".join(cells) + " |")
    lengths = sorted({r["length"] for run in runs.values() for r in run.get("latency", [])})
    if lengths:
        lines += ["", "seconds per forward pass (batch 1, no grad)", "",
                  "| tokens | " + " | ".join(runs) + " | Transformer / Mamba |", "|---|" + "---|" * (len(runs) + 1)]
        for length in lengths:
            secs = [next((r.get("seconds") for r in run["latency"] if r["length"] == length), None)
                    for run in runs.values()]
            ratio = f"{secs[1] / secs[0]:.2f}x" if len(secs) == 2 and all(secs) else "–"
            lines.append(f"| {length} | " + " | ".join("–" if x is None else f"{x:.4f}" for x in secs)
                         + f" | {ratio} |")
    return "\n".join(lines) + "\n"


def plot_throughput(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, run in result["runs"].items():
        rows = run["rows"]
        ax.plot([r["resolution"] for r in rows], [r["images_per_s"] for r in rows], marker="o",
                label=f"{name} ({run['n_layers']} blocks)")
        latency = [r for r in run.get("latency", []) if r.get("seconds")]
        ax2.plot([r["length"] for r in latency], [r["seconds"] for r in latency], marker="o", label=name)
    for a in (ax, ax2):
        a.set_xscale("log", base=2)
        a.set_yscale("log")
        a.legend()
    ax.set_xlabel("resolution (px)")
    ax.set_ylabel("images / s")
    ax.set_title(f"sampling, DPM-Solver++ {result['steps']} steps, batch {result['batch']}")
    ax2.set_xlabel("tokens")
    ax2.set_ylabel("seconds per forward")
    ax2.set_title("latency by token length (batch 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def default_config() -> MDMConfig:
    """The ``small`` model, class-conditional, VQ codes of 4x4 pixels (as the 32-px ShapesWorld VQ)."""
    config = load_config("small")
    return replace(config, layout=replace(config.layout, vq_factor=4, image_channels=3))
