"""Why are generated moving-digit clips inconsistent? Sort the inconsistent clips by what went wrong.

Samples clips from the class (or the held-out captions) with the suite's sampler flags, judges them as
`mdm eval --suite moving-digits` does, and for every clip the judge calls inconsistent records:
  - `still`: the ink centroid never gets 1 px from where it started;
  - `ghost`: some frame's ink is spread wider than any real frame's (two half-digits, a smear); measured as the
    centroid-centred ink radius against the largest over the held-out real clips;
  - `fades`: some frame's ink mass is below half the real frames' smallest;
  - `jump`: none of those, the path just does not fit a bouncing constant velocity;
the frame where the path first leaves the best one-step-at-a-time fit, and the smallest tolerance (px) at which
the clip would pass. It writes a frame strip of the first 16 inconsistent clips.

    python experiments/video-consistency/probe.py RUN --task class -n 100 --frame-passes 8 --guidance 1.5 \
        --later-guidance 1 --out experiments/video-consistency/RUN-class
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch

from mdm.data.moving_digits import trajectory_is_consistent
from mdm.diffusion.sampler_config import SamplerConfig
from mdm.evaluation.figures import video_strip
from mdm.evaluation.judges.digit_classifier import train_digit_classifier
from mdm.evaluation.video import score_clips
from mdm.pipeline import MDMPipeline
from mdm.training.prepare import load_samples


def ink_stats(clips: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame: ink mass (b, T) and the ink's RMS radius around its centroid (b, T), in pixels."""
    ink = clips.float().clamp(0, 1).sum(2)  # (b, T, H, W)
    H, W = ink.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                            indexing="ij")
    mass = ink.sum((-2, -1)).clamp_min(1e-6)
    dx = xs - centroids[..., 0, None, None]
    dy = ys - centroids[..., 1, None, None]
    radius = ((ink * (dx ** 2 + dy ** 2)).sum((-2, -1)) / mass).sqrt()
    return mass, radius


def smallest_tolerance(positions: torch.Tensor, canvas: int, size: int, top: float = 4.0) -> float:
    """The smallest tol (to 1/16 px, up to ``top``) at which the judge accepts the path; inf beyond."""
    lo, hi = 0.0, top
    if not trajectory_is_consistent(positions, canvas, size, tol=hi, unknown_offset=size / 2):
        return float("inf")
    while hi - lo > 1 / 16:
        mid = (lo + hi) / 2
        if trajectory_is_consistent(positions, canvas, size, tol=mid, unknown_offset=size / 2):
            hi = mid
        else:
            lo = mid
    return hi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--task", choices=["class", "caption"], default="class")
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=1.5)
    parser.add_argument("--frame-passes", type=int, default=8)
    parser.add_argument("--later-guidance", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--raw-weights", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)

    pipe = MDMPipeline.from_pretrained(args.checkpoint, use_ema=not args.raw_weights)
    sampler = SamplerConfig(steps=args.steps, guidance_scale=args.guidance, frame_passes=args.frame_passes,
                            later_guidance_scale=args.later_guidance)
    held_out = load_samples(pipe.config, "val")[:args.n]
    digit_size = held_out[0].meta["digit_size"]
    canvas = pipe.config.layout.image_size
    classifier, _ = train_digit_classifier(8, seed=0)
    if args.task == "class":
        labels = [i % 10 for i in range(args.n)]
        clips = pipe.class_to_video(labels, sampler, seed=args.seed)
        titles = [str(label) for label in labels]
    else:
        labels = [s.label for s in held_out]
        clips = pipe.text_to_video([s.text("caption") for s in held_out], sampler, seed=args.seed)
        titles = [s.text("caption").replace("the digit ", "") for s in held_out]
    real = torch.stack([s.video for s in held_out])
    judged = score_clips(clips, labels, classifier, digit_size)
    real_judged = score_clips(real, [s.label for s in held_out], classifier, digit_size)
    real_mass, real_radius = ink_stats(real, real_judged.centroids)
    mass, radius = ink_stats(clips, judged.centroids)
    max_radius, min_mass = float(real_radius.max()), float(real_mass.min())

    kinds, rows, bad = Counter(), [], []
    for i in range(args.n):
        if bool(judged.consistent[i]):
            continue
        travel = float((judged.centroids[i] - judged.centroids[i, :1]).abs().max())
        if travel < 1.0:
            kind = "still"
        elif float(radius[i].max()) > max_radius:
            kind = "ghost"
        elif float(mass[i].min()) < min_mass / 2:
            kind = "fades"
        else:
            kind = "jump"
        kinds[kind] += 1
        tol = smallest_tolerance(judged.centroids[i] - digit_size / 4, canvas, digit_size)
        # the first frame t at which frames 0..t stop fitting (the judge on a prefix)
        first_break = next((t for t in range(3, clips.shape[1] + 1)
                            if not trajectory_is_consistent(judged.centroids[i, :t] - digit_size / 4, canvas,
                                                            digit_size, tol=digit_size / 16,
                                                            unknown_offset=digit_size / 2)), None)
        rows.append({"clip": i, "label": labels[i], "kind": kind, "tolerance_px": tol,
                     "first_break_frame": None if first_break is None else first_break - 1,
                     "frames_right": int(judged.frame_correct[i].sum()),
                     "max_radius": round(float(radius[i].max()), 2), "min_mass": round(float(mass[i].min()), 1)})
        bad.append(i)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    breaks = Counter(r["first_break_frame"] for r in rows)
    tols = sorted(r["tolerance_px"] for r in rows)
    summary = {"checkpoint": args.checkpoint, "task": args.task, "n": args.n, "sampler": vars(args),
               "consistency": judged.consistency, "frame_accuracy": judged.frame_accuracy,
               "inconsistent": len(rows), "kinds": dict(kinds), "first_break_frame": dict(sorted(breaks.items(),
                                                                                             key=str)),
               "tolerance_px_quartiles": [tols[len(tols) // 4], tols[len(tols) // 2], tols[3 * len(tols) // 4]]
               if tols else [], "consistency_of_right_clips": float(judged.consistent[judged.frame_correct.all(1)]
                                                                   .float().mean()),
               "real_max_radius": round(max_radius, 2), "real_min_mass": round(min_mass, 1), "clips": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    if bad:
        shown = bad[:16]
        video_strip(clips[shown], [f"{titles[i]} ({kinds_of})" for i, kinds_of in
                                   zip(shown, [r["kind"] for r in rows[:16]])], out / "inconsistent.png",
                    f"{args.task}: inconsistent clips")
    print(json.dumps({k: v for k, v in summary.items() if k != "clips"}, indent=1))


if __name__ == "__main__":
    main()
