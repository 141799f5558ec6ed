"""Does the way the sampler commits codes decide whether a clip's first frame shows the requested digit?

A first frame is four ink codes (a local VQ-VAE, the digit 2x2 codes), committed in parallel: two halves of
two digits are a wrong frame even where the model knows the digit. This draws class-conditioned clips in one
pass (frame 0 of one pass is the frame 0 that ``mdm eval --frame-passes 8`` scores, at an eighth of the cost)
with each sampler variant and scores frame 0 with the suite's judge.

    python experiments/video-sampler/probe.py RUN -n 200 --out DIR [--variants NAME ...]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from mdm.diffusion.sampler_config import CommitSchedule, SamplerConfig
from mdm.evaluation.judges.digit_classifier import train_digit_classifier
from mdm.evaluation.video import score_clips
from mdm.pipeline import MDMPipeline
from mdm.training.prepare import load_samples

VARIANTS = {  # name -> SamplerConfig keywords beside steps and guidance. On the Gaussian-latent path (the video
    # preset's) the temperature acts only on drawn commits (commit_sample), so it is no variant of its own
    "confident-argmax": {},  # the path's default: commit the most confident positions, each to its argmax
    "confident-sample": {"commit_sample": True},
    "confident-sample-t0.8": {"commit_sample": True, "temperature": 0.8},
    "linear-argmax": {"image_selection": CommitSchedule.LINEAR},
}

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=1.5)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pipe = MDMPipeline.from_pretrained(args.checkpoint, use_ema=True)
    digit_size = load_samples(pipe.config, "val")[0].meta["digit_size"]
    classifier, _ = train_digit_classifier(8, seed=0)
    labels = [i % 10 for i in range(args.n)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.variants:
        sampler = SamplerConfig(steps=args.steps, guidance_scale=args.guidance, **VARIANTS[name])
        clips = pipe.class_to_video(labels, sampler, seed=args.seed)
        judged = score_clips(clips, labels, classifier, digit_size)
        results[name] = {"first_frame_accuracy": judged.first_frame_accuracy,
                         "one_pass_frame_accuracy": judged.frame_accuracy,
                         "one_pass_consistency": judged.consistency}
        print(name, json.dumps(results[name]), flush=True)
    record = {"checkpoint": args.checkpoint, "n": args.n, "steps": args.steps, "guidance": args.guidance,
              "seed": args.seed, "variants": results}
    (out / "probe.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
