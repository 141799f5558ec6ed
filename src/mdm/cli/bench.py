"""``mdm bench backbone|train-step|throughput|video``: check the arguments, run one benchmark of :mod:`mdm.bench`, write
NAME.json / NAME.md (and NAME.png) to ``--out`` and print the table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from mdm.config import apply_overrides, load_config


def _progress(message: str) -> None:
    """Progress lines go to stderr, so that stdout holds only the table."""
    print(message, file=sys.stderr)


def _out_folder(args: argparse.Namespace) -> Path:
    """``--out``, created before the benchmark runs so that an unwritable folder fails before minutes of timing."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _report(out: Path, name: str, result: dict, table: str,
            plot: Callable[[dict, Path], None] | None = None) -> None:
    """Write ``name``.json (the record), ``name``.md (the table) and, given ``plot``, ``name``.png; print the table."""
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    (out / f"{name}.md").write_text(table.rstrip("\n") + "\n")
    print(table)
    if plot is not None:
        plot(result, out / f"{name}.png")
        print(f"plot: {out / f'{name}.png'}")


def cmd_bench_backbone(args: argparse.Namespace) -> int:
    from mdm.bench.backbone import bench_backbone, format_table, plot

    config = load_config(args.config, args.overrides)
    lengths = tuple(int(x) for x in args.lengths.split(",")) if args.lengths else None
    out = _out_folder(args)
    kwargs = {"lengths": lengths} if lengths else {}
    result = bench_backbone(config.backbone, threads=args.threads, max_seconds=args.max_seconds,
                            ref_max_length=args.ref_max_length, progress=_progress, isolate=not args.in_process,
                            compile_blocks=args.compile, **kwargs)
    _report(out, "backbone", result, format_table(result), plot if args.plot else None)
    print(f"results: {out / 'backbone.json'}")
    return 0


def cmd_bench_train_step(args: argparse.Namespace) -> int:
    from mdm.bench.train_step import bench_train_step, format_train_step

    config = load_config(args.config, args.overrides)
    if args.repeats < 1 or args.warmup < 0 or args.profile_steps < 0 or (args.batch is not None and args.batch < 1):
        raise ValueError("--repeats and --batch must be >= 1, --warmup and --profile-steps >= 0")
    out = _out_folder(args)
    result = bench_train_step(config, task=args.task, threads=args.threads, repeats=args.repeats,
                              warmup=args.warmup, profile_steps=args.profile_steps, top=args.top,
                              batch_size=args.batch, progress=_progress, isolate=not args.in_process,
                              compile_blocks=args.compile)
    name = f"train-step-{config.name}"
    _report(out, name, result, format_train_step(result))
    print(f"results: {out / f'{name}.json'}")
    return 0


def cmd_bench_throughput(args: argparse.Namespace) -> int:
    from mdm.bench.throughput import bench_throughput, default_config, format_throughput, plot_throughput

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
    out = _out_folder(args)
    result = bench_throughput(config, resolutions, args.batch, args.steps, args.threads, args.max_seconds,
                              lengths=lengths, isolate=not args.in_process)
    _report(out, "throughput", result, format_throughput(result), plot_throughput)
    return 0


def cmd_bench_video(args: argparse.Namespace) -> int:
    from mdm.bench.video import bench_video, format_video, parse_shapes, plot_video

    config = load_config(args.config, args.overrides)
    shapes = parse_shapes(args.shapes)
    if args.memory_limit_gb <= 0 or args.max_seconds <= 0:
        raise ValueError("--memory-limit-gb and --max-seconds must be > 0")
    out = _out_folder(args)
    result = bench_video(config, shapes, threads=args.threads, max_seconds=args.max_seconds,
                         memory_limit_gb=args.memory_limit_gb, progress=_progress)
    _report(out, "video", result, format_video(result), plot_video)
    return 0
