"""``mdm sample``, ``generate``, ``eval``, ``compare``: a trained checkpoint at work (``caption`` and ``answer``:
:mod:`mdm.cli.batch`). ``--out-dir`` writes one file a sample beside the grid (:mod:`mdm.cli.outputs`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mdm.cli.common import FIGURE_SUFFIXES, output_file, set_threads
from mdm.cli.outputs import output_dir, write_sample_files


def _sampler(args: argparse.Namespace):
    from mdm.diffusion.sampling import SamplerConfig

    return SamplerConfig(solver=args.solver, steps=args.steps, selection=args.selection,
                         image_selection=args.image_selection, commit_sample=args.commit_sample, temperature=args.temperature,
                         guidance_scale=args.guidance, frame_passes=args.frame_passes,
                         later_guidance_scale=args.later_guidance)


def _pipeline(args: argparse.Namespace):
    from mdm.pipeline import MDMPipeline

    set_threads(args)
    return MDMPipeline.from_pretrained(args.checkpoint, use_ema=not args.raw_weights, device=args.device)


def _grid_out(args: argparse.Namespace, default_name: str) -> str | Path:
    """Where the grid goes: ``--out`` when given, else ``default_name`` inside ``--out-dir`` (so that a command
    asked to write into a folder leaves nothing in the working directory), else in the working directory."""
    if args.out is not None:
        return args.out
    return Path(args.out_dir) / default_name if args.out_dir is not None else default_name


def cmd_sample(args: argparse.Namespace) -> int:
    from mdm.evaluation.figures import image_caption_grid
    from mdm.tasks import Task

    if (args.prompt is None) == (args.label is None):
        raise ValueError("mdm sample: give exactly one of --prompt TEXT (text->image) or --label N (class->image)")
    default = "samples.gif" if args.video else "samples.png"
    out = output_file(_grid_out(args, default), default, (".gif", ".mp4") if args.video else FIGURE_SUFFIXES)
    files = output_dir(args.out_dir) if args.out_dir is not None else None
    if args.video and args.fps < 1:
        raise ValueError(f"mdm sample --video: --fps must be >= 1, got {args.fps}")
    pipe = _pipeline(args)
    if args.video != pipe.is_video:
        raise ValueError(f"mdm sample: {args.checkpoint} is a video model (layout.frames = {pipe.frames}); add --video"
                         if pipe.is_video else
                         f"mdm sample --video: {args.checkpoint} is an image model (layout.frames = 1); sample it "
                         f"without --video, or give a video checkpoint (trained with a video config such as "
                         f"moving-digits)")
    pipe.require_trained(Task.TEXT_TO_IMAGE if args.prompt is not None else Task.CLASS_TO_IMAGE)
    # A video model's image tasks return clips (b, T, c, s, s): the same calls serve both.
    if args.prompt is not None:
        images = pipe.text_to_image([args.prompt] * args.n, _sampler(args), seed=args.seed)
        titles = [args.prompt] * args.n
    else:
        images = pipe.class_to_image([args.label] * args.n, _sampler(args), seed=args.seed)
        titles = [f"class {args.label}"] * args.n
    if files is not None:  # one file a sample (a folder of frames a clip) and what made it
        asked = {"prompt": args.prompt} if args.prompt is not None else {"label": args.label}
        print(f"wrote {args.n} {'clips' if args.video else 'images'} and "
              f"{write_sample_files(files, images, [{**asked, 'seed': args.seed}] * args.n)}")
    if args.video:  # one animation (GIF / MP4) of all clips and a frame strip PNG beside it
        from mdm.evaluation.figures import video_strip, write_animation

        strip = video_strip(images, titles, out.with_name(out.stem + "-frames.png"),
                            title=f"{images.shape[1]} frames per clip, left to right")
        print(f"wrote {write_animation(images, out, fps=args.fps)} and {strip}")
        return 0
    path = image_caption_grid(images, titles, out, referee=False)
    print(f"wrote {path}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from mdm.evaluation.figures import image_caption_grid, judged_grid_title
    from mdm.tasks import Task
    from mdm.training.prepare import referee_kwargs

    out = output_file(_grid_out(args, "generated.png"), "generated.png")
    files = output_dir(args.out_dir) if args.out_dir is not None else None
    pipe = _pipeline(args)
    pipe.require_trained(Task.JOINT)
    images, captions = pipe.joint(args.n, _sampler(args), seed=args.seed)
    title, referee = judged_grid_title("image and caption generated together", pipe.config.data.name)
    path = image_caption_grid(images, captions, out, title=title, referee=referee,
                              referee_options=referee_kwargs(pipe.config))
    for caption in captions:
        print(caption)
    if files is not None:
        records = [{"caption": caption, "seed": args.seed} for caption in captions]
        print(f"wrote {args.n} images and {write_sample_files(files, images, records)}")
    print(f"wrote {path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from mdm.evaluation.suites import format_record, run_suite

    set_threads(args)
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
