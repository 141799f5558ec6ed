"""The ``mdm`` command line: glue only. Each subcommand resolves a config and calls one library function."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mdm.config import PRESETS, ConfigError, MDMConfig, apply_overrides, load_config


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


PREVIEW_KEYS = ("data.level", "data.question_kinds")


def cmd_data_preview(args: argparse.Namespace) -> int:
    from mdm.config import DataConfig
    from mdm.data.preview import preview

    other = [o for o in args.overrides if o.split("=", 1)[0].strip() not in PREVIEW_KEYS]
    if other:
        raise ConfigError(f"mdm data preview takes the overrides {', '.join(PREVIEW_KEYS)} "
                          f"(e.g. data.level=easy), got {', '.join(other)}")
    data = apply_overrides(MDMConfig(data=DataConfig(name=args.name)), args.overrides).data
    path = preview(args.name, args.out or f"preview-{args.name}.png", n=args.n, split=args.split, seed=args.seed,
                   level=data.level, question_kinds=tuple(data.question_kinds))
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
    config = VQConfig(in_channels=images.shape[1], downsample=args.downsample, codebook_size=args.codebook_size,
                      local=args.local)
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


# ---------------------------------------------------------------------------- training and sampling

def cmd_quickstart(args: argparse.Namespace) -> int:
    from mdm.quickstart import quickstart

    _threads(args)
    result = quickstart(args.out, minutes=args.minutes, n_eval=args.n_eval, overrides=args.overrides,
                        progress=not args.no_progress)
    return 130 if result.figure is None else 0


def cmd_train(args: argparse.Namespace) -> int:
    from mdm.training.loop import NonFiniteLossError
    from mdm.training.run import resume_config, train_run

    _threads(args)
    if args.resume and args.config is None:
        config = resume_config(args.out, args.overrides)
    else:
        config = load_config(args.config or "shapesworld", args.overrides)
    is_main = os.environ.get("RANK", "0") == "0"  # under torchrun, one process speaks
    try:
        result = train_run(config, args.out, resume=args.resume, progress=not args.no_progress,
                           time_budget_s=None if args.minutes is None else 60 * args.minutes, device=args.device,
                           log=print if is_main else (lambda _msg: None))
    except NonFiniteLossError as e:
        if is_main:
            print(f"mdm: training stopped: {e}", file=sys.stderr)
        return 1
    trainer = result.trainer
    if not is_main:
        return 130 if trainer.interrupted else 0
    return _report_train_end(config, args.out, trainer.step, trainer.interrupted, trainer.history)


def _report_train_end(config: MDMConfig, out: str, step: int, interrupted: bool, history: list[dict]) -> int:
    if interrupted:
        print(f"interrupted at step {step}; checkpoint saved in {out}/checkpoint "
              f"(continue with: mdm train --out {out} --resume)")
        return 130
    if not history:
        print(f"{out} is already at step {step} of train.steps={config.train.steps}; raise train.steps "
              f"to train more")
        return 0
    print(f"step {step}: loss {history[-1]['loss']:.4f}; checkpoint in {out}/checkpoint, "
          f"log in {out}/log.jsonl")
    return 0


def _sampler(args: argparse.Namespace):
    from mdm.diffusion.sampling import SamplerConfig

    return SamplerConfig(solver=args.solver, steps=args.steps, selection=args.selection,
                         image_selection=args.image_selection, commit_sample=args.commit_sample, temperature=args.temperature,
                         guidance_scale=args.guidance, frame_passes=args.frame_passes,
                         later_guidance_scale=args.later_guidance)


def _pipeline(args: argparse.Namespace):
    from mdm.tasks import MDMPipeline

    _threads(args)
    return MDMPipeline.from_pretrained(args.checkpoint, use_ema=not args.raw_weights, device=args.device)


def _load_images(paths: list[str], pipe) -> "torch.Tensor":
    import torch

    from mdm.data.formats import load_image

    size = pipe.network.config.layout.image_size
    images = [load_image(p, size) for p in paths]
    c = pipe.network.config.layout.image_channels
    return torch.stack([im[:1] if c == 1 else im for im in images])


def cmd_sample(args: argparse.Namespace) -> int:
    from mdm.evaluation.figures import image_caption_grid

    if (args.prompt is None) == (args.label is None):
        raise ValueError("mdm sample: give exactly one of --prompt TEXT (text->image) or --label N (class->image)")
    out = Path(args.out or ("samples.gif" if args.video else "samples.png"))
    if args.video and out.suffix.lower() not in (".gif", ".mp4"):
        raise ValueError(f"mdm sample --video: --out {out} must end in .gif or .mp4 (the frame strip goes beside it)")
    if args.video and args.fps < 1:
        raise ValueError(f"mdm sample --video: --fps must be >= 1, got {args.fps}")
    pipe = _pipeline(args)
    if args.video != pipe.is_video:
        raise ValueError(f"mdm sample: {args.checkpoint} is a video model (layout.frames = {pipe.frames}); add --video"
                         if pipe.is_video else
                         f"mdm sample --video: {args.checkpoint} is an image model (layout.frames = 1); sample it "
                         f"without --video, or give a video checkpoint (trained with a video config such as "
                         f"moving-digits)")
    # A video model's image tasks return clips (b, T, c, s, s): the same calls serve both.
    if args.prompt is not None:
        images = pipe.text_to_image([args.prompt] * args.n, _sampler(args), seed=args.seed)
        titles = [args.prompt] * args.n
    else:
        images = pipe.class_to_image([args.label] * args.n, _sampler(args), seed=args.seed)
        titles = [f"class {args.label}"] * args.n
    if args.video:  # one animation (GIF / MP4) of all clips and a frame strip PNG beside it
        from mdm.evaluation.figures import video_strip, write_animation

        strip = video_strip(images, titles, out.with_name(out.stem + "-frames.png"),
                            title=f"{images.shape[1]} frames per clip, left to right")
        print(f"wrote {write_animation(images, out, fps=args.fps)} and {strip}")
        return 0
    path = image_caption_grid(images, titles, out, referee=False)
    print(f"wrote {path}")
    return 0


def cmd_caption(args: argparse.Namespace) -> int:
    pipe = _pipeline(args)
    captions = pipe.image_to_text(_load_images(args.images, pipe), _sampler(args), seed=args.seed)
    for path, caption in zip(args.images, captions):
        print(f"{path}\t{caption}")
    return 0


def cmd_answer(args: argparse.Namespace) -> int:
    pipe = _pipeline(args)
    if (args.image is None) == (args.scene is None):
        raise ValueError("mdm answer: give exactly one of --image FILE (VQA) or --scene TEXT (text->text)")
    if args.image is not None:
        answer = pipe.vqa(_load_images([args.image], pipe), [args.question], _sampler(args), seed=args.seed)[0]
    else:
        answer = pipe.text_to_text([args.scene], [args.question], _sampler(args), seed=args.seed)[0]
    print(answer)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from mdm.evaluation.figures import image_caption_grid, judged_grid_title
    from mdm.training.prepare import referee_kwargs

    pipe = _pipeline(args)
    images, captions = pipe.joint(args.n, _sampler(args), seed=args.seed)
    title, referee = judged_grid_title("image and caption generated together", pipe.network.config.data.name)
    path = image_caption_grid(images, captions, args.out, title=title, referee=referee,
                              referee_options=referee_kwargs(pipe.network.config))
    for caption in captions:
        print(caption)
    print(f"wrote {path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from mdm.evaluation.suites import format_record, run_suite

    _threads(args)
    record = run_suite(args.checkpoint, args.suite, _sampler(args), n=args.n, seed=args.seed, out=args.out,
                       use_ema=not args.raw_weights, device=args.device, data=args.data, inception=args.inception,
                       progress=sys.stderr.isatty())
    print(format_record(record))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from mdm.evaluation.suites import compare_records, load_record

    table = compare_records([load_record(path) for path in args.records])
    if args.out:
        Path(args.out).write_text(table)
    print(table)
    return 0


def _threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _add_sampler_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a run folder (its checkpoint/) or a checkpoint folder")
    p.add_argument("--steps", type=int, default=20, help="sampler steps (1-1000; default 20)")
    p.add_argument("--solver", default="dpmsolver++", choices=["dpmsolver++", "ddpm"],
                   help="Gaussian processes: DPM-Solver++ order 2 (default) or DDPM ancestral")
    p.add_argument("--selection", default="cosine", choices=["cosine", "linear", "off"],
                   help="multi-step selection commit schedule (Thm 3): the most confident positions first; off = "
                        "the plain solver (absorbing process: random unmasking, SEDD's tau-leaping)")
    p.add_argument("--image-selection", default=None, choices=["cosine", "linear", "off"],
                   help="image segments' schedule (default: --selection, but off for the absorbing process, "
                        "whose argmax commits collapse the images' diversity)")
    p.add_argument("--commit-sample", action="store_true",
                   help="with --selection cosine/linear: commit each position (in the order of its confidence) to a "
                        "state drawn from the model instead of the most likely one; more diverse samples")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="softmax temperature of drawn states (--commit-sample; --selection off on the absorbing "
                        "process)")
    p.add_argument("--guidance", type=float, default=1.0,
                   help="classifier-free guidance scale (0 = unconditional, 1 = conditional, >1 = guided)")
    p.add_argument("--frame-passes", type=int, default=1,
                   help="video: solver runs, run j keeping frame j for the later ones (default 1: the whole clip "
                        "at once; each run costs one sampling)")
    p.add_argument("--later-guidance", type=float, default=None,
                   help="video with --frame-passes: the guidance scale of the runs after the first (default: "
                        "--guidance). The first run settles the first frame; the later ones draw the rest from "
                        "the kept frames")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sampling noise (same seed, same samples)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--raw-weights", action="store_true", help="use the trained weights instead of the EMA")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


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

    p = bench.add_parser("throughput", help="images/s by resolution, Mamba vs a parameter-matched Transformer "
                                            "(Fig. 5)")
    p.add_argument("--config", default=None,
                   help="preset or YAML with a mamba2 backbone (default: small, with 4x4-pixel VQ codes)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.add_argument("--resolutions", default="32,64,128,256", help="comma-separated image sizes in pixels")
    p.add_argument("--lengths", default="256,1024,4096,16384",
                   help="comma-separated token lengths for the forward latency")
    p.add_argument("--batch", type=int, default=4, help="images sampled together")
    p.add_argument("--steps", type=int, default=20, help="DPM-Solver++ steps")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--max-seconds", type=float, default=120.0,
                   help="stop a backbone after the first resolution slower than this")
    p.add_argument("--out", default="bench-results", help="folder for throughput.json / .md / .png")
    p.set_defaults(func=cmd_bench_throughput)

    p = bench.add_parser("video", help="latency and memory of DiM vs full spatio-temporal attention as clips grow")
    _add_config_args(p, "moving-digits")
    p.add_argument("--shapes", default="4x8x8,8x8x8,8x16x16,16x16x16,16x32x32,32x32x32,64x32x32,64x64x64",
                   help="comma-separated clip shapes FRAMESxROWSxCOLS in VQ codes")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--max-seconds", type=float, default=60.0,
                   help="skip a shape whose predicted latency exceeds this")
    p.add_argument("--memory-limit-gb", type=float, default=24.0,
                   help="address-space cap of each measuring process: a clip that needs more does not fit")
    p.add_argument("--out", default="bench-results", help="folder for video.json / .md / .png")
    p.set_defaults(func=cmd_bench_video)

    data = sub.add_parser("data", help="built-in datasets").add_subparsers(dest="what", required=True)
    p = data.add_parser("preview", help="write a PNG grid of samples with their captions/questions/answers")
    p.add_argument("name", choices=["shapesworld", "digits", "moving-digits"])
    p.add_argument("--out", default=None, help="PNG path (default preview-NAME.png)")
    p.add_argument("-n", type=int, default=12, help="number of samples")
    p.add_argument("--split", default="train", help="train, val or test")
    p.add_argument("--seed", type=int, default=0, help="random seed of the generated scenes")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="shapesworld: data.level=easy|medium|hard (default hard) and data.question_kinds=[...]")
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
    p.add_argument("--local", action="store_true",
                   help="each code sees and decodes to its own patch only (data.vq_local in a config)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="random seed of the initial weights and batches")
    p.add_argument("--out", default="vq", help="output folder (config.json, model.safetensors)")
    p.set_defaults(func=cmd_vq_train)

    p = sub.add_parser("quickstart", help="train a small MDM on ShapesWorld (minutes on a CPU), then sample, "
                                          "answer and score every task")
    p.add_argument("--out", default="runs/quickstart", help="run folder (reused if it already holds the model)")
    p.add_argument("--minutes", type=float, default=None, help="cap on training minutes (default: the preset's steps)")
    p.add_argument("--n-eval", type=int, default=64, help="held-out scenes scored per task")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides of the quickstart preset")
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("train", help="train a model in a run folder (checkpoints, logs; --resume continues it)",
                       description="Train MDM. Under torchrun (--nproc_per_node N) the same command runs data "
                                   "parallel. Every key of a config can be overridden as section.key=value; a "
                                   "mistyped key is an error that lists the valid keys of its section.")
    p.add_argument("--config", default=None,
                   help=f"a preset ({', '.join(PRESETS)}) or a YAML file (default: shapesworld, or the "
                        f"run's own config with --resume)")
    p.add_argument("--out", required=True, help="run folder: config.yaml, checkpoint/, log.jsonl, tensorboard/")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint (exactly)")
    p.add_argument("--minutes", type=float, default=None, help="stop (and save) after this many minutes")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. train.steps=4000 train.lr=3e-4 backbone.kind=transformer")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="text->image (--prompt) or class->image (--label) to a PNG grid; "
                                      "--video: clips to a GIF/MP4 and a frame strip")
    _add_sampler_args(p)
    p.add_argument("--prompt", default=None, help="a caption to draw")
    p.add_argument("--label", type=int, default=None, help="a class label to draw")
    p.add_argument("-n", type=int, default=8, help="images (clips)")
    p.add_argument("--video", action="store_true",
                   help="a video checkpoint (DiM): write the clips as one animation (--out .gif or .mp4; MP4 needs "
                        "ffmpeg or mdm[video]) and their frames as OUT-frames.png")
    p.add_argument("--fps", type=int, default=4, help="frames per second of the animation (--video)")
    p.add_argument("--out", default=None, help="PNG path (default samples.png); with --video a .gif or .mp4 "
                                               "(default samples.gif)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("caption", help="image->text: caption image files")
    _add_sampler_args(p)
    p.add_argument("images", nargs="+", help="image files (resized to the model's image size)")
    p.set_defaults(func=cmd_caption)

    p = sub.add_parser("answer", help="answer a question about an image (VQA) or a scene described in text")
    _add_sampler_args(p)
    p.add_argument("--question", required=True)
    p.add_argument("--image", default=None, help="image file (VQA)")
    p.add_argument("--scene", default=None, help="a scene in words (text->text)")
    p.set_defaults(func=cmd_answer)

    p = sub.add_parser("eval", help="score a checkpoint on a suite (shapesworld: every task with the referee; "
                                    "digits: class->image with a digit classifier; moving-digits: DiM video)")
    _add_sampler_args(p)
    from mdm.evaluation import SUITES

    p.add_argument("--suite", required=True, choices=SUITES,
                   help="shapesworld: every task, referee + CIDEr + VQA accuracy + FID (Tables 1-2); digits: "
                        "class->image accuracy, FID, IS, precision, recall (Table 1); moving-digits: per-frame "
                        "digit accuracy, trajectory consistency, frame FID of generated clips; multiple-choice: "
                        "ELBO ranking of --data")
    p.add_argument("-n", type=int, default=64, help="samples per task (multiple-choice: the first n questions)")
    p.add_argument("--data", default=None,
                   help="multiple-choice suite: a JSONL file in the HellaSwag, PIQA, ARC or BoolQ format")
    p.add_argument("--inception", default=None,
                   help="FID Inception weights file: FID/IS/precision/recall on Inception-v3 (needs torch-fidelity) "
                        "instead of the project's feature network")
    p.add_argument("--out", default="eval-results", help="folder for SUITE-SAMPLER.json / .md")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="eval records (the JSON files of mdm eval) side by side in one Markdown "
                                       "table, e.g. Table 3's ablation")
    p.add_argument("records", nargs="+", help="JSON files written by mdm eval")
    p.add_argument("--out", default=None, help="also write the table to this Markdown file")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("generate", help="images and their captions generated together (joint) to a PNG")
    _add_sampler_args(p)
    p.add_argument("-n", type=int, default=8, help="image+caption pairs")
    p.add_argument("--out", default="generated.png", help="PNG path")
    p.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse fills a trailing KEY=VALUE list only when it comes right after the other positionals;
    # KEY=VALUE words after an option (``preview shapesworld --out x.png data.level=easy``) join it here
    if extra and isinstance(getattr(args, "overrides", None), list) and all(
            "=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    code = _run(args)
    from mdm.training.distributed import DistributedContext

    if DistributedContext.launched():  # a torchrun worker, whatever its outcome
        DistributedContext.close_env()
        DistributedContext.exit_worker(code)  # does not return
    return code


def _run(args: argparse.Namespace) -> int:
    """The command's exit code; the errors a user can cause become a message and code 2."""
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"mdm: config error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ModuleNotFoundError, ValueError) as e:
        print(f"mdm: error: {e}", file=sys.stderr)
        return 2
    except PermissionError as e:
        print(f"mdm: error: {e}", file=sys.stderr)
        return 2
