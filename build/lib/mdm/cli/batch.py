"""``mdm caption`` and ``mdm answer``: a checkpoint captions images, or answers questions, in batches.

``mdm caption`` takes image files, folders and list files (:mod:`mdm.data.formats.image_lists`); ``mdm answer``
one question (``--question`` with ``--image`` or ``--scene``) or a questions JSONL (``--questions``). Both run
``--batch-size`` inputs a sampler call, print one tab-separated line a result and, with ``--out``, write JSON
lines (:func:`mdm.cli.outputs.write_jsonl`). Batch ``k`` is drawn with seed ``--seed + k`` (recorded on each
line): a result depends on its batch, so the same inputs, ``--seed`` and ``--batch-size`` give the same output.

Files a list or a questions file names that do not exist, and images in a folder or list that cannot be
decoded, are reported on stderr in one line each and left out; ``--strict`` refuses them (exit 2, naming the
list and the first paths). An image named on the command line itself must be readable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mdm.cli.common import output_file
from mdm.cli.outputs import batches, write_jsonl
from mdm.cli.sample import _pipeline, _sampler

SHOWN = 3  # paths named in a report line


def _names(paths: list[Path]) -> str:
    more = f" (and {len(paths) - SHOWN} more)" if len(paths) > SHOWN else ""
    return ", ".join(str(p) for p in paths[:SHOWN]) + more


def report_missing(missing: dict[Path, list[Path]], named: dict[Path, int], strict: bool) -> None:
    """One stderr line a list file naming images that do not exist; with ``strict`` a ``ValueError`` instead."""
    for source, gone in missing.items():
        what = f"{source}: {len(gone)} of the {named[source]} images it names do not exist"
        if strict:
            raise ValueError(f"{what}: {_names(gone)} (--strict; without it they are skipped)")
        print(f"mdm: warning: {what}, skipped: {_names(gone)}", file=sys.stderr)


def load_images(paths: list[Path], pipe, strict: bool, explicit: set[Path]) -> tuple[Any, list[Path]]:
    """The images of ``paths`` at the model's size, stacked, and the paths that loaded. An image that cannot be
    decoded is an error when it was named by itself (``explicit``) or under ``strict``; else reported and left out.
    """
    import torch

    from mdm.data.formats import load_image

    size, channels = pipe.config.layout.image_size, pipe.config.layout.image_channels
    images, kept, failed = [], [], []
    for path in paths:
        try:
            image = load_image(path, size)
        except OSError as e:  # load_image names the file
            if strict or path in explicit:
                raise
            failed.append((path, e))
            continue
        images.append(image[:1] if channels == 1 else image)
        kept.append(path)
    first = f"first: {' '.join(str(failed[0][1]).split())}" if failed else ""
    if not kept:
        raise ValueError(f"no readable images to work on: all {len(paths)} cannot be read ({first})")
    if failed:
        print(f"mdm: warning: {len(failed)} images cannot be read, skipped: {_names([p for p, _ in failed])} "
              f"({first})", file=sys.stderr)
    return torch.stack(images), kept


def _jsonl_out(args: argparse.Namespace, default: str) -> Path | None:
    """The ``--out`` JSONL file, checked before any sampling (None without ``--out``)."""
    return output_file(args.out, default, (".jsonl",)) if args.out else None


def cmd_caption(args: argparse.Namespace) -> int:
    from mdm.data.formats.image_lists import collect_images, is_image_file
    from mdm.tasks import Task

    out = _jsonl_out(args, "captions.jsonl")
    inputs = collect_images(args.images)
    if not inputs.paths:  # every image named is missing: one error, not a warning and then nothing
        gone = [p for paths in inputs.missing.values() for p in paths]
        raise ValueError(f"{', '.join(map(str, inputs.missing))}: none of the images named exists: {_names(gone)}")
    report_missing(inputs.missing, inputs.named, args.strict)
    pipe = _pipeline(args)
    pipe.require_trained(Task.IMAGE_TO_TEXT)
    explicit = {Path(p) for p in args.images if is_image_file(Path(p)) and Path(p).is_file()}
    images, paths = load_images(inputs.paths, pipe, args.strict, explicit)
    records = []
    for k, index in batches(range(len(paths)), args.batch_size):
        seed = args.seed + k
        captions = pipe.image_to_text(images[index.start:index.stop], _sampler(args), seed=seed)
        for i, caption in zip(index, captions):
            print(f"{paths[i]}\t{caption}", flush=True)
            records.append({"image": str(paths[i]), "caption": caption, "seed": seed})
    if out is not None:
        print(f"wrote {write_jsonl(out, records)}", file=sys.stderr)
    return 0


def cmd_answer(args: argparse.Namespace) -> int:
    from mdm.tasks import Task

    if args.questions is not None:
        if any(v is not None for v in (args.question, args.image, args.scene)):
            raise ValueError("mdm answer: --questions FILE reads every question, image and scene from the file; "
                             "drop --question, --image and --scene")
        return _answer_file(args)
    if args.question is None or (args.image is None) == (args.scene is None):
        raise ValueError("mdm answer: give --question TEXT with exactly one of --image FILE (VQA) or --scene TEXT "
                         "(text->text), or --questions FILE.jsonl")
    out = _jsonl_out(args, "answers.jsonl")
    pipe = _pipeline(args)
    pipe.require_trained(Task.VQA if args.image is not None else Task.TEXT_TO_TEXT)
    if args.image is not None:
        images, _ = load_images([Path(args.image)], pipe, True, {Path(args.image)})
        answer = pipe.vqa(images, [args.question], _sampler(args), seed=args.seed)[0]
        record = {"image": args.image}
    else:
        answer = pipe.text_to_text([args.scene], [args.question], _sampler(args), seed=args.seed)[0]
        record = {"scene": args.scene}
    print(answer)
    if out is not None:
        write_jsonl(out, [{**record, "question": args.question, "answer": answer, "seed": args.seed}])
    return 0


def _answer_file(args: argparse.Namespace) -> int:
    """Every question of ``--questions``: the VQA ones in batches, then the text->text ones, written in the
    file's order."""
    from mdm.data.formats.image_lists import read_questions
    from mdm.tasks import Task

    out = _jsonl_out(args, "answers.jsonl")
    questions, missing = read_questions(args.questions)
    if not questions:
        raise ValueError(f"{args.questions}: the images of all its questions are missing: "
                         f"{_names([p for paths in missing.values() for p in paths])}")
    with_images = sum(q.image is not None for q in questions)
    report_missing(missing, {p: with_images + len(m) for p, m in missing.items()}, args.strict)
    pipe = _pipeline(args)
    vqa = [q for q in questions if q.image is not None]
    text = [q for q in questions if q.image is None]
    for task, group in ((Task.VQA, vqa), (Task.TEXT_TO_TEXT, text)):
        if group:
            pipe.require_trained(task)
    if vqa:
        images, kept = load_images([q.image for q in vqa], pipe, args.strict, set())
        row = {path: i for i, path in enumerate(kept)}  # the image of each question that loaded
        vqa = [q for q in vqa if q.image in row]
    answers: dict[int, tuple[str, int]] = {}  # line -> (answer, seed)
    k = 0
    for group in (vqa, text):
        for _, chunk in batches(group, args.batch_size):
            seed = args.seed + k
            asked = [q.question for q in chunk]
            if chunk[0].image is not None:
                got = pipe.vqa(images[[row[q.image] for q in chunk]], asked, _sampler(args), seed=seed)
            else:
                got = pipe.text_to_text([q.scene for q in chunk], asked, _sampler(args), seed=seed)
            answers.update({q.line: (a, seed) for q, a in zip(chunk, got)})
            k += 1
    records = []
    for q in questions:
        if q.line not in answers:  # an image that could not be read, reported above
            continue
        answer, seed = answers[q.line]
        print(f"{q.image if q.image is not None else q.scene}\t{q.question}\t{answer}", flush=True)
        records.append({**q.record, "answer": answer, "seed": seed})
    if out is not None:
        print(f"wrote {write_jsonl(out, records)}", file=sys.stderr)
    return 0
