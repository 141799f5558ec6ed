"""``mdm info``: what a config costs, counted on the meta device."""

from __future__ import annotations

import argparse
import json

from mdm.config import load_config


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
