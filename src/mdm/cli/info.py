"""``mdm info`` and ``mdm bench``: what a config costs, and how fast it runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mdm.config import apply_overrides, load_config


def _human(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f} "


def cmd_info(args: argparse.Namespace) -> int:
    """Parameters and FLOPs per token of a config, built on the meta device (nothing allocated)."""
    import torch

    from mdm.nn.backbone import Backbone
    from mdm.nn.flops import backbone_flops_per_token, count_parameters
    from mdm.nn.layout import SegmentSpec

    config = load_config(args.config, args.overrides)
    with torch.device("meta"):
        backbone = Backbone(config.backbone)
    rows, cols = config.layout.image_grid
    frames = config.layout.frames
    image = SegmentSpec.video(frames, rows, cols) if frames > 1 else SegmentSpec.image(rows, cols)
    layout = backbone.make_layout([image, SegmentSpec.text(config.layout.text_len)])
    length = args.seq_len or layout.length
    n_params = count_parameters(backbone)
    flops = backbone_flops_per_token(config.backbone, length)
    info = {
        "config": config.name, "backbone": config.backbone.kind.value, "n_layers": config.backbone.n_layers,
        "d_model": config.backbone.d_model, "parameters": n_params,
        "image_tokens": image.n_content, "image_token_kind": config.layout.image_tokens.value,
        "text_tokens": config.layout.text_len,
        "sequence_length": length, "flops_per_token": flops, "flops_per_sequence": flops * length,
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"{config.name}: {config.backbone.kind.value} backbone, {config.backbone.n_layers} blocks of width "
              f"{config.backbone.d_model}")
        print(f"  parameters          {_human(n_params)} ({n_params:,})")
        grid = f"{frames} frames x {rows}x{cols}" if frames > 1 else f"{rows}x{cols}"
        f = config.layout.vq_factor
        kind = f"{f}x{f}-pixel patches" if config.layout.continuous_images else f"VQ codes of {f}x{f} pixels"
        print(f"  sequence            {grid} image tokens ({kind}) + {config.layout.text_len} text tokens "
              f"-> {length} positions")
        print(f"  FLOPs per token     {_human(flops)}FLOP (matmuls; 2 per multiply-add)")
        print(f"  FLOPs per sequence  {_human(flops * length)}FLOP")
    return 0


def cmd_bench_throughput(args: argparse.Namespace) -> int:
    from mdm.evaluation.throughput import bench_throughput, default_config, format_throughput, plot_throughput

    config = default_config() if args.config is None else load_config(args.config)
    config = apply_overrides(config, args.overrides) if args.overrides else config
    try:
        resolutions = tuple(int(x) for x in args.resolutions.split(","))
        lengths = tuple(int(x) for x in args.lengths.split(","))
    except ValueError:
        raise ValueError(f"--resolutions and --lengths must be comma-separated integers, got "
                         f"{args.resolutions!r} and {args.lengths!r}") from None
    if any(n < 8 for n in lengths):
        raise ValueError(f"--lengths must be >= 8 tokens, got {lengths}")
    bad = [r for r in resolutions if r <= 0 or r % config.layout.vq_factor]
    if bad:
        raise ValueError(f"--resolutions {bad} must be positive multiples of layout.vq_factor "
                         f"{config.layout.vq_factor}")
    if args.batch < 1 or args.steps < 1:
        raise ValueError("--batch and --steps must be >= 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = bench_throughput(config, resolutions, args.batch, args.steps, args.threads, args.max_seconds,
                              lengths=lengths)
    (out / "throughput.json").write_text(json.dumps(result, indent=2))
    table = format_throughput(result)
    (out / "throughput.md").write_text(table)
    plot_throughput(result, out / "throughput.png")
    print(table)
    print(f"plot: {out / 'throughput.png'}")
    return 0


def cmd_bench_video(args: argparse.Namespace) -> int:
    from mdm.evaluation.video_scaling import bench_video, format_video, parse_shapes, plot_video

    config = load_config(args.config, args.overrides)
    shapes = parse_shapes(args.shapes)
    if args.memory_limit_gb <= 0 or args.max_seconds <= 0:
        raise ValueError("--memory-limit-gb and --max-seconds must be > 0")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = bench_video(config, shapes, threads=args.threads, max_seconds=args.max_seconds,
                         memory_limit_gb=args.memory_limit_gb, progress=lambda m: print(m, file=sys.stderr))
    (out / "video.json").write_text(json.dumps(result, indent=2))
    table = format_video(result)
    (out / "video.md").write_text(table + "\n")
    plot_video(result, out / "video.png")
    print(table)
    print(f"plot: {out / 'video.png'}")
    return 0


def cmd_bench_backbone(args: argparse.Namespace) -> int:
    from mdm.bench import bench_backbone, format_table, plot

    config = load_config(args.config, args.overrides)
    lengths = tuple(int(x) for x in args.lengths.split(",")) if args.lengths else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kwargs = {"lengths": lengths} if lengths else {}
    result = bench_backbone(config.backbone, threads=args.threads, max_seconds=args.max_seconds,
                            ref_max_length=args.ref_max_length, progress=lambda m: print(m, file=sys.stderr),
                            isolate=not args.in_process, **kwargs)
    (out / "backbone.json").write_text(json.dumps(result, indent=2))
    table = format_table(result)
    (out / "backbone.md").write_text(table + "\n")
    print(table)
    if args.plot:
        plot(result, out / "backbone.png")
        print(f"plot: {out / 'backbone.png'}")
    print(f"results: {out / 'backbone.json'}")
    return 0
