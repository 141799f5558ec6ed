"""The ``mdm`` command line: glue only. Each subcommand resolves a config and calls one library function."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mdm.config import PRESETS, ConfigError, load_config


def _add_config_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--config", default=default,
                   help=f"a preset ({', '.join(PRESETS)}) or a YAML file (default: {default})")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. backbone.d_model=256 backbone.scan_patterns=12/1")


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
    layout = backbone.make_layout([SegmentSpec.image(rows, cols), SegmentSpec.text(config.layout.text_len)])
    length = args.seq_len or layout.length
    n_params = count_parameters(backbone)
    flops = backbone_flops_per_token(config.backbone, length)
    info = {
        "config": config.name, "backbone": config.backbone.kind.value, "n_layers": config.backbone.n_layers,
        "d_model": config.backbone.d_model, "parameters": n_params,
        "image_tokens": rows * cols, "text_tokens": config.layout.text_len,
        "sequence_length": length, "flops_per_token": flops, "flops_per_sequence": flops * length,
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"{config.name}: {config.backbone.kind.value} backbone, {config.backbone.n_layers} blocks of width "
              f"{config.backbone.d_model}")
        print(f"  parameters          {_human(n_params)} ({n_params:,})")
        print(f"  sequence            {rows}x{cols} image tokens + {config.layout.text_len} text tokens "
              f"-> {length} positions")
        print(f"  FLOPs per token     {_human(flops)}FLOP (matmuls; 2 per multiply-add)")
        print(f"  FLOPs per sequence  {_human(flops * length)}FLOP")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mdm", description="Multi-modal Diffusion Mamba (arXiv 2510.13253)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="parameters and FLOPs per token of a config (no allocation)")
    _add_config_args(p, "tiny")
    p.add_argument("--seq-len", type=int, default=None, help="sequence length for FLOPs (default: the layout's)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    bench = sub.add_parser("bench", help="speed benchmarks").add_subparsers(dest="what", required=True)
    p = bench.add_parser("backbone", help="latency and memory of Mamba vs Transformer backbones and the SSD scan")
    _add_config_args(p, "small")
    p.add_argument("--lengths", default=None, help="comma-separated sequence lengths (default 256,...,65536)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--max-seconds", type=float, default=30.0,
                   help="skip a Transformer length whose predicted latency exceeds this")
    p.add_argument("--ref-max-length", type=int, default=16384,
                   help="longest length at which to time the sequential SSD reference")
    p.add_argument("--out", default="bench-results", help="folder for backbone.json / .md / .png")
    p.add_argument("--plot", action="store_true", help="also write backbone.png")
    p.add_argument("--in-process", action="store_true",
                   help="measure in this process instead of one fresh process per measurement (faster; memory "
                        "figures then include earlier measurements)")
    p.set_defaults(func=cmd_bench_backbone)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"mdm: config error: {e}", file=sys.stderr)
        return 2
