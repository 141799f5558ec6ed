"""``mdm eval`` suites: a checkpoint, a sampler, a fixed seed -> a JSON and a Markdown table.

=============  ======================================================================
suite          what is measured
=============  ======================================================================
shapesworld    every task on held-out ShapesWorld scenes, scored by the referee
               (:mod:`mdm.evaluation.shapesworld`): Table 1's text->image row
               (GenEval-style attributes; FID, precision, recall on a scene parser
               the project trains, :mod:`mdm.evaluation.judges.shapes_classifier`) and
               Table 2 (caption CIDEr and truth, VQA accuracy)
digits         class->image, Table 1's class-conditional row: the share of generated
               digits that a classifier trained on the real digits
               (:mod:`mdm.evaluation.judges.digit_classifier`) recognises as the requested
               class, and FID, IS, precision, recall against the held-out real digits
               on that classifier's features
moving-       DiM video (DESIGN.md §5): class->video and caption->video clips judged
digits        frame by frame (:mod:`mdm.evaluation.video`): the share of frames
              showing the requested digit, the share of clips whose digit moves at
              constant velocity with bounces, the share of caption-conditioned clips
              that start in the caption's direction, and a frame-feature FID; the
              same scores of real and of VQ-reconstructed real clips, for scale
multiple-      text benchmarks in the HellaSwag / PIQA / ARC / BoolQ JSONL formats
choice         (``data=FILE``), each choice ranked by the model's ELBO
               (:mod:`mdm.evaluation.multiple_choice`); the first ``n`` questions
=============  ======================================================================

Results go to ``OUT/SUITE-TAG.json`` and ``.md``, where the tag names the
sampler (``dpmsolver++-20-cosine-g1``), so runs with different settings sit side
by side and can be diffed.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from mdm.diffusion.sampling import SamplerConfig
from mdm.evaluation import SUITES
from mdm.evaluation.image_quality import FeatureNetwork, InceptionFeatures
from mdm.evaluation.shapesworld import format_score
from mdm.pipeline import MDMPipeline

REFERENCE_SCENES = 500  # real training scenes: the reference distribution of ShapesWorld's FID


def sampler_tag(sampler: SamplerConfig) -> str:
    """The sampler's settings in a file name: two records of different settings never share one."""
    name = f"{sampler.solver.value}-{sampler.steps}-{sampler.selection.value}"
    if sampler.image_selection is not None:
        name += f"-image-{sampler.image_selection.value}"
    if sampler.commit_sample:
        name += "-sample"
    if sampler.temperature != 1.0:  # drawn states: commit_sample, and the absorbing process's tau-leaping
        name += f"-t{sampler.temperature:g}"
    name += f"-g{sampler.guidance_scale:g}"
    if sampler.frame_passes == 1:
        return name
    later = "" if sampler.later_guidance_scale is None else f"-later-g{sampler.later_guidance_scale:g}"
    return f"{name}-frames{sampler.frame_passes}{later}"


def _multiple_choice(pipe: MDMPipeline, checkpoint, data, n: int, seed: int,
                     progress: bool) -> tuple[dict, dict, None, int]:
    from mdm.evaluation.multiple_choice import load_multiple_choice, multiple_choice_accuracy

    if pipe.tokenizer is None or not {"scene", "caption"} <= set(pipe.text_lens):
        raise ValueError(f"suite multiple-choice needs a text model with scene and caption lengths; {checkpoint} "
                         f"has text lengths {pipe.text_lens}")
    items = load_multiple_choice(data)[:n]
    t0 = time.perf_counter()
    scores = multiple_choice_accuracy(pipe, items, seed=seed, progress=progress)
    return scores, {"multiple_choice": round(time.perf_counter() - t0, 1)}, None, len(items)


def _shapesworld(pipe: MDMPipeline, checkpoint, sampler: SamplerConfig, n: int, seed: int,
                 inception: FeatureNetwork | None) -> tuple[dict, dict, str | None]:
    from mdm.data.registry import load_builtin, shapesworld_config
    from mdm.evaluation.image_quality import frechet_distance
    from mdm.evaluation.judges.shapes_classifier import train_shapes_classifier
    from mdm.evaluation.shapesworld import score_tasks
    from mdm.training.prepare import load_samples, referee_kwargs

    config = pipe.config
    if config.data.name != "shapesworld":
        raise ValueError(f"suite shapesworld needs a ShapesWorld checkpoint; {checkpoint} was trained on "
                         f"{config.data.name!r}")
    samples = load_samples(config, "val")[:n]
    features = reference = None
    if n >= 4:  # FID needs a few images. The feature network has its own fixed seed, as the digit judge
        # has: the sampling seed must not change it.
        if inception is None:
            # the scenes of the checkpoint's level, at its image size
            scenes = shapesworld_config(config.data.level, config.layout.image_size)
            features, parser_accuracy = train_shapes_classifier(config.layout.image_size, seed=0, config=scenes)
        else:
            features, parser_accuracy = inception, None
        train = load_builtin("shapesworld", "train", size=REFERENCE_SCENES, seed=config.data.seed,
                             image_size=config.layout.image_size, channels=config.layout.image_channels,
                             level=config.data.level)
        reference = torch.stack([train[i].image for i in range(len(train))])
    t0 = time.perf_counter()
    result = score_tasks(pipe, samples, sampler, seed=seed, feature_network=features, reference=reference,
                         referee_options=referee_kwargs(config))
    scores, seconds = result.scores, result.seconds
    if features is not None:
        # What a perfect generator would get at this size: the prompts' real scenes against the reference.
        scores["real_held_out_fid"] = frechet_distance(reference, torch.stack([s.image for s in samples]), features)
        if parser_accuracy is not None:
            scores["feature_network_accuracy"] = parser_accuracy
    seconds["total"] = round(time.perf_counter() - t0, 1)
    return scores, seconds, None if features is None else features.name


def _digits(pipe: MDMPipeline, checkpoint, sampler: SamplerConfig, n: int, seed: int,
            inception: FeatureNetwork | None) -> tuple[dict, dict, str]:
    from mdm.data.digits import DigitsDataset
    from mdm.evaluation.judges.digit_classifier import train_digit_classifier
    from mdm.evaluation.image_quality import frechet_distance, image_quality

    config = pipe.config
    if config.data.name != "digits" or config.backbone.n_classes < 10:
        raise ValueError(f"suite digits needs a class-conditional Digits checkpoint (data.name digits, "
                         f"backbone.n_classes 10); {checkpoint} was trained on {config.data.name!r} with "
                         f"n_classes {config.backbone.n_classes}")
    # The judge has its own fixed seed: changing the sampling seed must not change the judge.
    classifier, real_accuracy = train_digit_classifier(config.layout.image_size, seed=0)
    labels = [i % 10 for i in range(n)]
    t0 = time.perf_counter()
    images = pipe.class_to_image(labels, sampler, seed=seed)
    seconds = {"class_to_image": round(time.perf_counter() - t0, 1)}
    predicted = classifier.predict(images.cpu())
    # The reference is every real training digit (the distribution the model learned); the held-out real
    # digits against the same reference give the FID a perfect generator would get at that size.
    reference = DigitsDataset("train", config.layout.image_size, seed=0).images
    held_out = DigitsDataset("test", config.layout.image_size, seed=0).images
    features = classifier if inception is None else inception
    quality = image_quality(reference, images.cpu().float(), features, seed=seed)
    scores = {"class_accuracy": float((predicted == torch.tensor(labels)).float().mean()), **quality.scores(),
              "real_held_out_fid": frechet_distance(reference, held_out, features),
              "classifier_real_accuracy": real_accuracy}
    return scores, seconds, features.name


def _moving_digits(pipe: MDMPipeline, checkpoint, sampler: SamplerConfig, n: int, seed: int,
                   inception: FeatureNetwork | None) -> tuple[dict, dict, str, dict]:
    """The scores, the seconds, the judge's name, and each condition's digit confusion of frames (requested x
    judged, for the record's per-digit table)."""
    from mdm.evaluation.judges.digit_classifier import train_digit_classifier
    from mdm.evaluation.image_quality import _fid_of_features
    from mdm.evaluation.video import score_clips, start_directions
    from mdm.training.prepare import load_samples

    config = pipe.config
    if config.data.name != "moving-digits" or not pipe.is_video or config.backbone.n_classes < 10:
        raise ValueError(f"suite moving-digits needs a class-conditional video checkpoint (data.name moving-digits, "
                         f"layout.frames > 1, backbone.n_classes 10); {checkpoint} was trained on "
                         f"{config.data.name!r} with layout.frames {config.layout.frames} and n_classes "
                         f"{config.backbone.n_classes}")
    if inception is not None:
        raise ValueError("suite moving-digits judges digit crops with the digit classifier; --inception does not "
                         "apply")
    classifier, real_accuracy = train_digit_classifier(8, seed=0)  # its own fixed seed, as the digits suite
    held_out = load_samples(config, "val")[:n]
    digit_size = held_out[0].meta["digit_size"]  # the judge's crop: the size the data draws digits at
    real = torch.stack([s.video for s in held_out])
    real_labels = [s.label for s in held_out]
    captions = [s.text("caption") for s in held_out]
    velocities = torch.stack([s.meta["velocity"] for s in held_out])

    labels = [i % 10 for i in range(n)]
    t0 = time.perf_counter()
    by_class = pipe.class_to_video(labels, sampler, seed=seed)
    seconds = {"class_to_image": round(time.perf_counter() - t0, 1)}
    t0 = time.perf_counter()
    by_caption = pipe.text_to_video(captions, sampler, seed=seed)
    seconds["text_to_image"] = round(time.perf_counter() - t0, 1)
    # The tokenizer's ceiling; raw pixel patches round-trip exactly, so a pixel model has none.
    reconstructed = None if pipe.continuous_images else pipe.decode_images(pipe.encode_images(real))

    judged = {name: score_clips(clips, lab, classifier, digit_size)
              for name, clips, lab in (("class", by_class, labels), ("caption", by_caption, real_labels),
                                       ("real", real, real_labels), ("vq", reconstructed, real_labels))
              if clips is not None}
    # The reference of the frame FID: the crops of 500 real training clips (the distribution learned).
    train = load_samples(replace(config, data=replace(config.data, train_size=500)), "train")
    reference = score_clips(torch.stack([s.video for s in train]), [s.label for s in train], classifier,
                            digit_size).features
    scores = {"frame_accuracy": judged["class"].frame_accuracy, "consistency": judged["class"].consistency,
              "frame_fid": _fid_of_features(reference, judged["class"].features),
              "first_frame_accuracy": judged["class"].first_frame_accuracy,
              "whole_clip_accuracy": judged["class"].whole_clip_accuracy,
              "caption_frame_accuracy": judged["caption"].frame_accuracy,
              "caption_consistency": judged["caption"].consistency,
              "caption_first_frame_accuracy": judged["caption"].first_frame_accuracy,
              "caption_whole_clip_accuracy": judged["caption"].whole_clip_accuracy,
              "caption_direction": float(start_directions(judged["caption"].centroids, velocities).float().mean()),
              "real_frame_accuracy": judged["real"].frame_accuracy, "real_consistency": judged["real"].consistency,
              "real_direction": float(start_directions(judged["real"].centroids, velocities).float().mean()),
              "real_held_out_frame_fid": _fid_of_features(reference, judged["real"].features),
              "classifier_real_accuracy": real_accuracy}
    if "vq" in judged:
        scores.update(vq_frame_accuracy=judged["vq"].frame_accuracy, vq_consistency=judged["vq"].consistency)
    confusion = {name: judged[name].confusion(10).tolist() for name in ("class", "caption")}
    return scores, seconds, classifier.name, confusion


def run_suite(checkpoint: str | Path, suite: str, sampler: SamplerConfig, n: int = 64, seed: int = 0,
              out: str | Path | None = None, use_ema: bool = True, device: str | torch.device = "cpu",
              data: str | Path | None = None, inception: str | Path | None = None, progress: bool = False) -> dict:
    """Evaluate ``checkpoint`` on ``suite``; returns (and with ``out`` writes) the result record.

    ``data``: the JSONL file of the ``multiple-choice`` suite. ``inception``: a file of FID
    Inception weights, to use Inception-v3 instead of the project's feature network.
    ``progress``: a bar over the solver steps of every generation (and over the questions).
    """
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; suites: {', '.join(SUITES)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if (suite == "multiple-choice") != (data is not None):
        raise ValueError("the multiple-choice suite needs --data FILE.jsonl, and only it reads one")
    # Loaded once, here: a missing file or torch-fidelity fails before any sampling.
    features = None if inception is None else InceptionFeatures(inception)
    pipe = MDMPipeline.from_pretrained(checkpoint, use_ema=use_ema, device=device)
    pipe.progress = progress
    config = pipe.config
    confusion = None
    if suite == "multiple-choice":
        scores, seconds, feature_name, n = _multiple_choice(pipe, checkpoint, data, n, seed, progress)
    elif suite == "shapesworld":
        scores, seconds, feature_name = _shapesworld(pipe, checkpoint, sampler, n, seed, features)
    elif suite == "moving-digits":
        scores, seconds, feature_name, confusion = _moving_digits(pipe, checkpoint, sampler, n, seed, features)
    else:
        scores, seconds, feature_name = _digits(pipe, checkpoint, sampler, n, seed, features)
    generation = seconds.get("class_to_image") or seconds.get("text_to_image")
    record = {"suite": suite, "data": None if data is None else str(data), "checkpoint": str(checkpoint),
              "weights": "ema" if use_ema else "raw",
              "backbone": config.backbone.kind.value, "scan_patterns": config.backbone.scan_patterns,
              "parameters": sum(p.numel() for p in pipe.network.parameters()),
              "images_per_s": round(n / generation, 3) if generation else None,
              "n_layers": config.backbone.n_layers, "sampler": sampler_tag(sampler), "n": n, "seed": seed,
              "scores": scores, "feature_network": feature_name, "seconds": seconds, "torch": torch.__version__,
              "machine": platform.machine(),
              "threads": torch.get_num_threads()}
    if confusion is not None:
        record["confusion"] = confusion
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        stem = f"{suite}-{sampler_tag(sampler)}"  # not Path.with_suffix: "-g1.5" would lose its ".5"
        if data is not None:
            stem = f"{suite}-{Path(data).stem}"
        (out / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
        (out / f"{stem}.md").write_text(format_record(record))
    return record


def compare_records(records: list[dict]) -> str:
    """Eval records side by side (one row each, one column per score): Table 3's layout.

    Records of different suites can be mixed; a score a record lacks is shown as ``–``.
    """
    if not records:
        raise ValueError("compare_records: no records")
    names: list[str] = []
    for r in records:
        names += [k for k in r["scores"] if k not in names]
    head = "| run | backbone | parameters | sampler | n | images/s | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * (6 + len(names))]
    for r in records:
        patterns = r.get("scan_patterns")  # absent from records written before it was recorded
        backbone = r["backbone"] + (f" `{patterns}`" if r["backbone"] == "mamba2" and patterns else "")
        backbone += f", {r['n_layers']} blocks"
        params = f"{r['parameters'] / 1e6:.2f}M" if r.get("parameters") else "–"
        speed = f"{r['images_per_s']:.2f}" if r.get("images_per_s") else "–"
        cells = [format_score(k, r["scores"][k]) if k in r["scores"] else "–" for k in names]
        lines.append(f"| {r['checkpoint']} | {backbone} | {params} | {r['sampler']} | {r['n']} | {speed} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def load_record(path: str | Path) -> dict:
    """A JSON record written by :func:`run_suite`; the error names the file and what is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"eval record {path} does not exist")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a JSON eval record ({e.msg})") from None
    missing = [k for k in ("suite", "checkpoint", "backbone", "n_layers", "sampler", "n", "scores")
               if not isinstance(record, dict) or k not in record]
    if missing:
        raise ValueError(f"{path}: not an mdm eval record (missing {', '.join(missing)})")
    return record


def format_record(record: dict) -> str:
    lines = [f"**{record['suite']}** — `{record['checkpoint']}` ({record['backbone']}, {record['n_layers']} blocks), "
             f"sampler `{record['sampler']}`, n = {record['n']}, seed {record['seed']}", "",
             "| score | value |", "|---|---|"]
    lines += [f"| {k} | {format_score(k, v)} |" for k, v in record["scores"].items()]
    network = record.get("feature_network")
    if network and network.startswith("inception"):
        lines += ["", f"FID, IS, precision and recall use {network}."]
    elif network:
        lines += ["", f"FID, IS, precision and recall use {network}, not Inception: "
                      f"they compare runs of this project, not the paper's numbers."]
    if record.get("confusion"):
        lines += ["", format_confusion(record["confusion"])]
    lines += ["", "seconds: " + ", ".join(f"{k} {v}" for k, v in record["seconds"].items()), ""]
    return "\n".join(lines)


def format_confusion(confusion: dict[str, list[list[int]]]) -> str:
    """A row a requested digit: each condition's share of frames judged right, and the digit most often judged
    instead (with its share), from ``{condition: counts[requested][judged]}``."""
    names = list(confusion)
    lines = ["| digit | " + " | ".join(f"{c}: right | {c}: most often instead" for c in names) + " |",
             "|---" * (1 + 2 * len(names)) + "|"]
    for digit in range(len(confusion[names[0]])):
        cells = []
        for name in names:
            row = confusion[name][digit]
            total = sum(row)
            wrong = max((k for k in range(len(row)) if k != digit), key=lambda k: row[k])
            cells += [f"{row[digit] / total:.0%}" if total else "–",
                      f"{wrong} ({row[wrong] / total:.0%})" if total and row[wrong] else "–"]
        lines.append(f"| {digit} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
