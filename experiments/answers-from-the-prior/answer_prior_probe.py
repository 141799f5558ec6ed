"""Probe: does a ShapesWorld checkpoint read the scene, or answer from the question alone?

    python experiments/answers-from-the-prior/answer_prior_probe.py RUN_OR_CHECKPOINT [-n 256] [--threads 1]

For the first n held-out scenes, prints per question kind (colour, count, position, shape,
size) the exact-match accuracy of text->text and VQA (DPM-Solver++ 20 steps, EMA weights),
beside two answer priors computed on the training split, which never look at a scene:

* question prior: the training split's most frequent answer to the same question text;
* kind prior: the most frequent answer of that question kind.

A model that scores near the question prior has learned which words answer which question,
not how to find them in the scene (experiments/answers-from-the-prior/).
"""
from __future__ import annotations

import argparse
import collections

import torch

from mdm.diffusion.sampling import SamplerConfig
from mdm.evaluation.vqa_accuracy import exact_match
from mdm.pipeline import MDMPipeline
from mdm.training.prepare import load_samples

KINDS_COLUMNS = ("text->text", "VQA", "question prior", "kind prior")


def main(checkpoint: str, n: int, threads: int) -> None:
    """Print the per-kind table (markdown) for the first ``n`` held-out scenes."""
    if n < 1:
        raise SystemExit(f"-n must be >= 1, got {n}")
    torch.set_num_threads(threads)
    pipe = MDMPipeline.from_pretrained(checkpoint)
    config = pipe.config
    if config.data.name != "shapesworld":
        raise SystemExit(f"{checkpoint}: data.name is {config.data.name!r}; this probe needs a shapesworld model")
    train, held_out = load_samples(config, "train"), load_samples(config, "val")[:n]
    by_question, by_kind = collections.defaultdict(collections.Counter), collections.defaultdict(collections.Counter)
    for s in train:
        by_question[s.text("question")][s.text("answer")] += 1
        by_kind[s.meta["question_kind"]][s.text("answer")] += 1

    def most_common(counter: collections.Counter) -> str | None:
        return counter.most_common(1)[0][0] if counter else None

    questions = [s.text("question") for s in held_out]
    sampler = SamplerConfig(steps=20)
    from_text = pipe.text_to_text([s.text("scene") for s in held_out], questions, sampler)
    from_image = pipe.vqa(torch.stack([s.image for s in held_out]), questions, sampler)
    rows = collections.defaultdict(lambda: [0] * (1 + len(KINDS_COLUMNS)))
    for s, question, text_answer, image_answer in zip(held_out, questions, from_text, from_image):
        truth, kind = s.text("answer"), s.meta["question_kind"]
        priors = (most_common(by_question[question]), most_common(by_kind[kind]))
        hits = (exact_match(text_answer, truth), exact_match(image_answer, truth),
                *(prior is not None and exact_match(prior, truth) for prior in priors))
        for key in (kind, "all"):
            rows[key][0] += 1
            rows[key][1:] = [a + int(b) for a, b in zip(rows[key][1:], hits)]
    print(f"{checkpoint}: {len(held_out)} held-out scenes, accuracy in %")
    print("| kind | n | " + " | ".join(KINDS_COLUMNS) + " |")
    print("|---|---|" + "---|" * len(KINDS_COLUMNS))
    for kind in sorted(k for k in rows if k != "all") + ["all"]:
        count, *hits = rows[kind]
        print(f"| {kind} | {count} | " + " | ".join(f"{100 * h / count:.1f}" for h in hits) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("-n", type=int, default=256, help="held-out scenes (default 256)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    main(args.checkpoint, args.n, args.threads)
