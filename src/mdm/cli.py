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


def cmd_data_preview(args: argparse.Namespace) -> int:
    from mdm.data.preview import preview

    path = preview(args.name, args.out or f"preview-{args.name}.png", n=args.n, split=args.split, seed=args.seed)
    print(f"wrote {path}")
    return 0


def cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from mdm.data.text_tokenizer import TextTokenizer

    tokenizer = TextTokenizer.train(args.input, args.vocab_size, args.out,
                                    character_coverage=args.character_coverage)
    print(f"trained a unigram SentencePiece model with {tokenizer.vocab_size} pieces -> {Path(args.out)}")
    return 0


def cmd_vq_train(args: argparse.Namespace) -> int:
    import torch

    from mdm.data.preview import load_builtin
    from mdm.data.vq import VQVAE, VQConfig, codebook_usage, train_vq

    dataset = load_builtin(args.data, "train", size=args.size, seed=args.seed, image_size=args.image_size)
    images = torch.stack([dataset[i].image for i in range(len(dataset))])
    config = VQConfig(in_channels=images.shape[1], downsample=args.downsample, codebook_size=args.codebook_size)
    torch.manual_seed(args.seed)
    model = VQVAE(config)
    history = train_vq(model, images, steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    model.save(args.out)
    model.eval()
    with torch.no_grad():
        val = load_builtin(args.data, "val", size=256, seed=args.seed, image_size=args.image_size)
        val_images = torch.stack([val[i].image for i in range(len(val))])
        recon = model.decode(model.encode(val_images))
        l2 = torch.mean((recon - val_images) ** 2).item()
        baseline = torch.mean((images.mean(0, keepdim=True) - val_images) ** 2).item()
        usage = codebook_usage(model.encode(val_images), config.codebook_size)
    print(f"{args.steps} steps, final train loss {history[-1].get('loss', float('nan')):.4f}")
    print(f"validation L2 (Eq. 15) {l2:.5f}  vs mean-image baseline {baseline:.5f}; "
          f"codebook perplexity {usage['perplexity']:.1f}, used {100 * usage['used_fraction']:.0f}%")
    print(f"saved -> {args.out}")
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

    data = sub.add_parser("data", help="built-in datasets").add_subparsers(dest="what", required=True)
    p = data.add_parser("preview", help="write a PNG grid of samples with their captions/questions/answers")
    p.add_argument("name", choices=["shapesworld", "digits", "moving-digits"])
    p.add_argument("--out", default=None, help="PNG path (default preview-NAME.png)")
    p.add_argument("-n", type=int, default=12, help="number of samples")
    p.add_argument("--split", default="train", help="train, val or test")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_data_preview)

    tok = sub.add_parser("tokenizer", help="text tokenizer").add_subparsers(dest="what", required=True)
    p = tok.add_parser("train", help="train a SentencePiece unigram model (App. D)")
    p.add_argument("--input", required=True, help="corpus: a text file, one sentence per line")
    p.add_argument("--vocab-size", type=int, required=True, help="pieces (32000 at scale; small for small corpora)")
    p.add_argument("--out", default="tokenizer", help="output folder (tokenizer.model, tokenizer.vocab)")
    p.add_argument("--character-coverage", type=float, default=0.9995)
    p.set_defaults(func=cmd_tokenizer_train)

    vq = sub.add_parser("vq", help="the stage-0 image tokenizer").add_subparsers(dest="what", required=True)
    p = vq.add_parser("train", help="train a VQ-VAE on a built-in dataset and report Eq. 15's L2")
    p.add_argument("--data", default="shapesworld", choices=["shapesworld", "digits"])
    p.add_argument("--size", type=int, default=4096, help="training images")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--downsample", type=int, default=4, choices=[2, 4, 8])
    p.add_argument("--codebook-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="vq", help="output folder (config.json, model.safetensors)")
    p.set_defaults(func=cmd_vq_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"mdm: config error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:
        print(f"mdm: error: {e}", file=sys.stderr)
        return 2
