"""Every MDM task on ShapesWorld, scored by the analytic referee (GenEval in miniature, DESIGN.md §6-7).

=============  ================================================================
task           score
=============  ================================================================
text_to_image  attribute accuracy of the generated image against the caption's
               objects (``t2i_attributes``: mean of colour, shape, size, position)
               and ``t2i_all`` (every requested object fully right)
               with a feature network: ``t2i_fid``, ``t2i_precision``,
               ``t2i_recall`` against real reference scenes (by default the
               prompts' own; :mod:`mdm.evaluation.image_quality`)
image_to_text  ``caption_all_true``: captions whose every stated attribute is
               true of the image; ``caption_precision``: true claims / claims;
               ``caption_cider``: CIDEr-D against every template's caption of the
               scene (:mod:`mdm.evaluation.captioning`)
vqa            VQA accuracy: with one reference answer, exact match after the
               official answer normalisation (:mod:`mdm.evaluation.vqa_accuracy`);
               ``vqa_KIND`` the same within one question kind (colour, ...)
text_to_text   the same, for a question about a scene described in words
joint          ``joint_agreement``: generated image and generated caption agree
               (every claim of the caption true of the image)
=============  ================================================================
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from mdm.evaluation.judges.referee import score_caption, score_generation
from mdm.data.sample import Sample
from mdm.data.shapesworld import reference_captions
from mdm.diffusion.sampling import SamplerConfig
from mdm.evaluation.captioning import cider
from mdm.evaluation.image_quality import FeatureNetwork, image_quality
from mdm.evaluation.vqa_accuracy import exact_match
from mdm.pipeline import MDMPipeline

TASKS = ("text_to_image", "image_to_text", "vqa", "text_to_text", "joint")


@dataclass
class TaskScores:
    scores: dict[str, float] = field(default_factory=dict)
    examples: dict[str, list] = field(default_factory=dict)  # a few (input, output) pairs per task
    seconds: dict[str, float] = field(default_factory=dict)


def _mean(rows: list[dict[str, float]], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows) if rows else float("nan")


def score_tasks(pipe: MDMPipeline, samples: list[Sample], sampler: SamplerConfig | None = None,
                tasks: tuple[str, ...] = TASKS, seed: int = 0, n_examples: int = 4,
                feature_network: FeatureNetwork | None = None, reference: torch.Tensor | None = None,
                referee_options: Mapping[str, Any] | None = None) -> TaskScores:
    """Run ``tasks`` on ``samples`` (ShapesWorld, with objects in ``meta``) and score them.

    ``feature_network``: also FID / precision / recall of text->image (needs >= 4 samples)
    against ``reference`` real images (default: the samples' own images).
    ``referee_options``: the referee's keyword arguments for the samples' level, its position
    grid (:func:`mdm.evaluation.judges.referee.referee_options`; none for the default 3x3 grid).
    """
    if not samples:
        raise ValueError("score_tasks: no samples to score")
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"score_tasks: unknown tasks {sorted(unknown)}; valid: {', '.join(TASKS)}")
    sampler = sampler or SamplerConfig(steps=20)
    ref = dict(referee_options or {})
    out = TaskScores()
    images = torch.stack([s.image for s in samples])
    questions = [s.text("question") for s in samples]
    answers = [s.text("answer") for s in samples]

    def timed(name, fn):
        t0 = time.perf_counter()
        result = fn()
        out.seconds[name] = round(time.perf_counter() - t0, 2)
        return result

    if "text_to_image" in tasks:
        prompts = [s.text("caption") for s in samples]
        gen = timed("text_to_image", lambda: pipe.text_to_image(prompts, sampler, seed=seed))
        rows = [score_generation(gen[i], samples[i].meta["objects"], **ref) for i in range(len(samples))]
        attrs = [k for k in ("color", "shape", "size", "position") if k in rows[0]]
        out.scores["t2i_attributes"] = sum(_mean(rows, k) for k in attrs) / len(attrs)
        for k in attrs:
            out.scores[f"t2i_{k}"] = _mean(rows, k)
        out.scores["t2i_all"] = _mean(rows, "all")
        if feature_network is not None and len(samples) >= 4:
            quality = image_quality(images if reference is None else reference, gen.cpu(), feature_network,
                                    seed=seed)
            out.scores.update({"t2i_fid": quality.fid, "t2i_precision": quality.precision,
                               "t2i_recall": quality.recall})
        out.examples["text_to_image"] = [(prompts[i], gen[i]) for i in range(min(n_examples, len(samples)))]
    if "image_to_text" in tasks:
        caps = timed("image_to_text", lambda: pipe.image_to_text(images, sampler, seed=seed))
        rows = [score_caption(images[i], caps[i], **ref) for i in range(len(samples))]
        out.scores["caption_all_true"] = _mean(rows, "all_true")
        out.scores["caption_precision"] = _mean(rows, "precision")
        out.scores["caption_cider"] = cider(caps, [reference_captions(s.meta["objects"]) for s in samples])[0]
        out.examples["image_to_text"] = [(images[i], caps[i]) for i in range(min(n_examples, len(samples)))]
    if "vqa" in tasks:
        got = timed("vqa", lambda: pipe.vqa(images, questions, sampler, seed=seed))
        out.scores.update(_accuracy_by_kind("vqa", samples, [exact_match(g, a) for g, a in zip(got, answers)]))
        out.examples["vqa"] = [(questions[i], got[i], answers[i]) for i in range(min(n_examples, len(samples)))]
    if "text_to_text" in tasks:
        scenes = [s.text("scene") for s in samples]
        got = timed("text_to_text", lambda: pipe.text_to_text(scenes, questions, sampler, seed=seed))
        out.scores.update(_accuracy_by_kind("text_to_text", samples,
                                            [exact_match(g, a) for g, a in zip(got, answers)]))
        out.examples["text_to_text"] = [(scenes[i], questions[i], got[i], answers[i])
                                        for i in range(min(n_examples, len(samples)))]
    if "joint" in tasks:
        imgs, caps = timed("joint", lambda: pipe.joint(len(samples), sampler, seed=seed))
        rows = [score_caption(imgs[i], caps[i], **ref) for i in range(len(samples))]
        out.scores["joint_agreement"] = _mean(rows, "all_true")
        out.examples["joint"] = [(imgs[i], caps[i]) for i in range(min(n_examples, len(samples)))]
    return out


def _accuracy_by_kind(name: str, samples: list[Sample], correct: list[bool]) -> dict[str, float]:
    """``name``: the share of answers right; ``name_KIND``: the share within each question kind (colour,
    shape, size, count, position), which tells a model that fails one kind from one that fails all."""
    scores = {name: sum(correct) / len(correct)}
    kinds = [s.meta.get("question_kind") for s in samples]
    for kind in sorted({k for k in kinds if k}):
        hits = [c for c, k in zip(correct, kinds) if k == kind]
        scores[f"{name}_{kind}"] = sum(hits) / len(hits)
    return scores


def format_score(name: str, value: float) -> str:
    """Accuracies as percentages; FID, IS and CIDEr as plain numbers (their own scales)."""
    if name.endswith(("fid", "inception_score", "cider")):
        return f"{value:.3f}"
    return f"{100 * value:.1f}%"


def format_scores(scores: dict[str, float]) -> str:
    """Scores as aligned ``name  value`` lines."""
    width = max(map(len, scores), default=0)
    return "\n".join(f"  {k:<{width}}  {format_score(k, v):>7}" for k, v in scores.items())
