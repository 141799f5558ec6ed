"""Why is a generated clip's first frame the wrong digit? A clean wrong digit, or an unreadable one?

The frame-pass sampler's run 0 draws the whole clip and keeps frame 0, so frame 0 of a clip drawn with one pass
(same seed, same guidance) is the frame 0 that `mdm eval --frame-passes 8` scores, at an eighth of the cost.
For each guidance scale given this samples class-conditioned clips (labels i % 10, as the suite does), crops
frame 0 as the judge does and records, for every wrong one, the judge's pick, its probability, the requested
digit's probability and the frame's ink mass against the real frames'. It prints per-digit accuracy and the
confusions, and writes a strip of the wrong first frames.

    python experiments/video-first-frame/probe.py RUN -n 100 --guidance 1.5 2 3 --out DIR
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch

from mdm.diffusion.sampler_config import SamplerConfig
from mdm.evaluation.figures import video_strip
from mdm.evaluation.judges.digit_classifier import train_digit_classifier
from mdm.evaluation.video import digit_crops, ink_centroids, score_clips
from mdm.pipeline import MDMPipeline
from mdm.training.prepare import load_samples


def judge_first_frames(clips: torch.Tensor, classifier, digit_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame 0 of clips (b, T, c, H, W) -> the judge's probabilities (b, 10) and the ink mass (b,)."""
    first = clips[:, :1]
    crops = digit_crops(first, ink_centroids(first), digit_size, classifier.image_size)
    with torch.no_grad():
        probs = classifier(crops).softmax(-1)
    return probs, first.float().clamp(0, 1).sum((1, 2, 3, 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.5])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)

    pipe = MDMPipeline.from_pretrained(args.checkpoint, use_ema=True)
    held_out = load_samples(pipe.config, "val")[:args.n]
    digit_size = held_out[0].meta["digit_size"]
    classifier, _ = train_digit_classifier(8, seed=0)
    real = torch.stack([s.video for s in held_out])
    real_probs, real_mass = judge_first_frames(real, classifier, digit_size)
    real_labels = torch.tensor([s.label for s in held_out])
    labels = torch.tensor([i % 10 for i in range(args.n)])

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"checkpoint": args.checkpoint, "n": args.n, "steps": args.steps, "seed": args.seed,
               "real_first_frame_accuracy": float((real_probs.argmax(-1) == real_labels).float().mean()),
               "real_confidence_median": float(real_probs.max(-1).values.median()),
               "real_ink_min": float(real_mass.min()), "by_guidance": {}}
    for g in args.guidance:
        sampler = SamplerConfig(steps=args.steps, guidance_scale=g)
        clips = pipe.class_to_video(labels.tolist(), sampler, seed=args.seed)
        probs, mass = judge_first_frames(clips, classifier, digit_size)
        picked = probs.argmax(-1)
        # how many of frames 1..T-1 of the same one-pass draw the suite's judge reads as the requested digit: a
        # wrong frame 0 in a clip whose other frames are right is frame 0's defect (placement, a ghost)
        rest_right = score_clips(clips, labels, classifier, digit_size).frame_correct[:, 1:].sum(1)
        wrong = (picked != labels).nonzero().flatten().tolist()
        rows = [{"clip": i, "requested": int(labels[i]), "judged": int(picked[i]),
                 "p_judged": round(float(probs[i, picked[i]]), 3), "p_requested": round(float(probs[i, labels[i]]), 3),
                 "ink": round(float(mass[i]), 1), "later_frames_right": int(rest_right[i])} for i in wrong]
        per_digit = {d: float((picked[labels == d] == d).float().mean()) for d in range(10)}
        confident = sum(r["p_judged"] >= 0.9 for r in rows)
        summary["by_guidance"][f"{g:g}"] = {
            "first_frame_accuracy": 1 - len(wrong) / args.n,
            "wrong": len(wrong),
            "wrong_judged_confidently": confident,  # p >= 0.9: a clean digit of another class
            "wrong_requested_second": sum(int(probs[i].argsort(descending=True)[1]) == int(labels[i])
                                          for i in wrong),
            # frame 0 wrong while most of frames 1..T-1 are right: frame 0's own defect
            "wrong_only_frame_0": sum(r["later_frames_right"] > (clips.shape[1] - 1) / 2 for r in rows),
            "wrong_faint": sum(r["ink"] < real_mass.min().item() / 2 for r in rows),
            "right_confidence_median": (float(probs[picked == labels].max(-1).values.median())
                                        if len(wrong) < args.n else None),
            "per_digit": per_digit,
            "confusions": Counter(f"{r['requested']}->{r['judged']}" for r in rows).most_common(),
            "clips": rows}
        if wrong:
            shown = wrong[:16]
            video_strip(clips[shown], [f"{int(labels[i])} as {int(picked[i])} ({float(probs[i, picked[i]]):.2f})"
                                       for i in shown], out / f"wrong-first-frames-g{g:g}.png",
                        f"class path, guidance {g:g}: wrong first frames (requested as judged, p)")
        brief = {k: v for k, v in summary["by_guidance"][f"{g:g}"].items() if k != "clips"}
        print(f"guidance {g:g}: {json.dumps(brief)}", flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
