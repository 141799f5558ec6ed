"""``mdm eval`` suites: a checkpoint, a sampler, a fixed seed -> a JSON and a Markdown table.

=============  ======================================================================
suite          what is measured
=============  ======================================================================
shapesworld    every task on held-out ShapesWorld scenes, scored by the referee
               (:mod:`mdm.evaluation.shapesworld`)
digits         class->image: the share of generated digits that a classifier trained
               on the real digits (:mod:`mdm.evaluation.digit_classifier`) recognises
               as the requested class, plus that classifier's held-out accuracy
=============  ======================================================================

Results go to ``OUT/SUITE-TAG.json`` and ``.md``, where the tag names the
sampler (``dpmsolver++-20-cosine-g1``), so runs with different settings sit side
by side and can be diffed.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from mdm.diffusion.sampling import SamplerConfig
from mdm.tasks import MDMPipeline

SUITES = ("shapesworld", "digits")


def sampler_tag(sampler: SamplerConfig) -> str:
    return f"{sampler.solver.value}-{sampler.steps}-{sampler.selection.value}-g{sampler.guidance_scale:g}"


def run_suite(checkpoint: str | Path, suite: str, sampler: SamplerConfig, n: int = 64, seed: int = 0,
              out: str | Path | None = None, use_ema: bool = True, device: str | torch.device = "cpu") -> dict:
    """Evaluate ``checkpoint`` on ``suite``; returns (and with ``out`` writes) the result record."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; suites: {', '.join(SUITES)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    pipe = MDMPipeline.from_pretrained(checkpoint, use_ema=use_ema, device=device)
    config = pipe.network.config
    if suite == "shapesworld":
        if config.data.name != "shapesworld":
            raise ValueError(f"suite shapesworld needs a ShapesWorld checkpoint; {checkpoint} was trained on "
                             f"{config.data.name!r}")
        from mdm.evaluation.shapesworld import score_tasks
        from mdm.training.prepare import load_samples

        samples = load_samples(config, "val")[:n]
        t0 = time.perf_counter()
        result = score_tasks(pipe, samples, sampler, seed=seed)
        scores, seconds = result.scores, result.seconds
        seconds["total"] = round(time.perf_counter() - t0, 1)
    else:
        if config.data.name != "digits" or config.backbone.n_classes < 10:
            raise ValueError(f"suite digits needs a class-conditional Digits checkpoint (data.name digits, "
                             f"backbone.n_classes 10); {checkpoint} was trained on {config.data.name!r} with "
                             f"n_classes {config.backbone.n_classes}")
        from mdm.evaluation.digit_classifier import train_digit_classifier

        # The judge has its own fixed seed: changing the sampling seed must not change the judge.
        classifier, real_accuracy = train_digit_classifier(config.layout.image_size, seed=0)
        labels = [i % 10 for i in range(n)]
        t0 = time.perf_counter()
        images = pipe.class_to_image(labels, sampler, seed=seed)
        seconds = {"class_to_image": round(time.perf_counter() - t0, 1)}
        predicted = classifier.predict(images.cpu())
        scores = {"class_accuracy": float((predicted == torch.tensor(labels)).float().mean()),
                  "classifier_real_accuracy": real_accuracy}
    record = {"suite": suite, "checkpoint": str(checkpoint), "weights": "ema" if use_ema else "raw",
              "backbone": config.backbone.kind.value,
              "n_layers": config.backbone.n_layers, "sampler": sampler_tag(sampler), "n": n, "seed": seed,
              "scores": scores, "seconds": seconds, "torch": torch.__version__, "machine": platform.machine(),
              "threads": torch.get_num_threads()}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        stem = f"{suite}-{sampler_tag(sampler)}"  # not Path.with_suffix: "-g1.5" would lose its ".5"
        (out / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
        (out / f"{stem}.md").write_text(format_record(record))
    return record


def format_record(record: dict) -> str:
    lines = [f"**{record['suite']}** — `{record['checkpoint']}` ({record['backbone']}, {record['n_layers']} blocks), "
             f"sampler `{record['sampler']}`, n = {record['n']}, seed {record['seed']}", "",
             "| score | value |", "|---|---|"]
    lines += [f"| {k} | {100 * v:.1f}% |" for k, v in record["scores"].items()]
    lines += ["", "seconds: " + ", ".join(f"{k} {v}" for k, v in record["seconds"].items()), ""]
    return "\n".join(lines)
