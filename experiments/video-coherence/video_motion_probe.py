"""Probe: why are a video model's clips inconsistent, wrong motion or a drifting shape?

    python experiments/video-coherence/video_motion_probe.py RUN_FOLDER [-n 100] [--frame-passes 1] [--threads 2]

Generates ``n`` class-conditional clips (classes 0..9 in turn, seed 0: the clips of
``mdm eval --suite moving-digits``) and scores them with the suite's judge
(:func:`mdm.evaluation.video.score_clips`) at growing centroid tolerances. A clip whose digit
moves right but changes shape fails at the default tolerance (digit size / 16) and passes at a
looser one; a clip whose digit moves wrong fails at every tolerance. Real clips spliced from the
halves of two show what a looser tolerance wrongly accepts. Also reported: the share of
clips whose digit keeps one class in every frame, and of clips whose centroid repeats with
period 2 (frame t within 0.5 px of frame t - 2 throughout while frame t - 1 is elsewhere), and
two pixel comparisons that separate copying from moving: the share of frame pairs (t, t + 4)
that are the same picture (on a 3-place canvas at one step a frame, every real clip repeats with
period 4), and the share of frames t + 1 that are frame t moved by one motion step along one or
both axes (the relation of real neighbours, whose digit always moves). Both assume a speed of one
step a frame. Two frames are "the same" when their mean absolute pixel difference is below 0.02.
Used for experiments/video-coherence/record.md ("Whole-code motion and a grid embedding",
"Whole frames as conditions" and "Taking away the copy").
"""
import argparse

import torch

from mdm.diffusion.sampling import SamplerConfig
from mdm.evaluation.judges.digit_classifier import train_digit_classifier
from mdm.evaluation.video import score_clips
from mdm.pipeline import MDMPipeline
from mdm.training.prepare import load_samples

TOLERANCES = (0.5, 1.0, 1.5, 2.0)
SAME = 0.02  # mean absolute pixel difference below which two frames are the same picture
LAG = 4  # the period of every real clip on a 3-place canvas at one step a frame


def moved(frame: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``frame`` (..., H, W) moved by (dy, dx) pixels, the uncovered border black."""
    out = torch.zeros_like(frame)
    h, w = frame.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        frame[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def copy_and_move(clips: torch.Tensor, step: int, lag: int = LAG) -> tuple[float, float]:
    """Shares of frame pairs (t, t + lag) that are the same picture, and of frames t + 1 that are frame t
    moved by ``step`` px along one or both axes (a plain copy does not count)."""
    same = (clips[:, lag:] - clips[:, :-lag]).abs().mean(dim=(2, 3, 4)) < SAME
    shifts = [(dy, dx) for dy in (-step, 0, step) for dx in (-step, 0, step) if (dy, dx) != (0, 0)]
    prev, nxt = clips[:, :-1], clips[:, 1:]
    error = torch.stack([(nxt - moved(prev, dy, dx)).abs().mean(dim=(2, 3, 4)) for dy, dx in shifts]).amin(0)
    return float(same.float().mean()), float((error < SAME).float().mean())


@torch.no_grad()
def judge(clips: torch.Tensor, labels: list[int], classifier, digit_size: int, step: int) -> dict:
    scores = {f"consistent at {tol:g} px": score_clips(clips, labels, classifier, digit_size, tol=tol).consistency
              for tol in TOLERANCES}
    judged = score_clips(clips, labels, classifier, digit_size)
    c = judged.centroids  # (n, T, 2)
    repeat2 = ((c[:, 2:] - c[:, :-2]).abs().amax(-1) <= 0.5).all(1)
    moves1 = ((c[:, 1:] - c[:, :-1]).abs().amax(-1) > 0.5).all(1)
    scores["frames with the requested digit"] = judged.frame_accuracy
    scores["clips with the requested digit in every frame"] = float(judged.frame_correct.all(1).float().mean())
    scores["clips repeating with period 2"] = float((repeat2 & moves1).float().mean())
    if clips.shape[1] > LAG:
        same, moves = copy_and_move(clips, step)
        scores[f"frame pairs (t, t + {LAG}) that are the same picture"] = same
        scores[f"frames t + 1 that are frame t moved by {step} px"] = moves
    return scores


def probe(run: str, n: int, frame_passes: int) -> tuple[dict, dict, dict]:
    """The scores of ``n`` generated clips, of ``n`` real held-out ones, and of real clips spliced from two
    (what a looser tolerance wrongly accepts)."""
    pipe = MDMPipeline.from_pretrained(run)
    if not pipe.is_video:
        raise SystemExit(f"{run} is an image model (layout.frames = 1); the probe needs a video model")
    labels = [i % 10 for i in range(n)]
    clips = pipe.class_to_video(labels, SamplerConfig(frame_passes=frame_passes), seed=0)
    held_out = load_samples(pipe.config, "val")[:n]
    classifier, _ = train_digit_classifier(8, seed=0)
    digit_size = held_out[0].meta["digit_size"]
    real, real_labels = torch.stack([s.video for s in held_out]), [s.label for s in held_out]
    half = real.shape[1] // 2  # the first half of clip i, then the second half of clip i + 1
    spliced = torch.cat([real[:, :half], real.roll(-1, dims=0)[:, half:]], dim=1)
    step = pipe.config.data.motion_step
    return (judge(clips, labels, classifier, digit_size, step), judge(real, real_labels, classifier, digit_size, step),
            judge(spliced, real_labels, classifier, digit_size, step))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run")
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--frame-passes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generated, real, spliced = probe(args.run, args.n, args.frame_passes)
    print(f"{args.run}: {args.n} class-conditional clips, frame_passes {args.frame_passes}")
    print("| score | generated | real held-out | real, spliced from two clips |\n|---|---|---|---|")
    for name, value in generated.items():
        print(f"| {name} | {100 * value:.1f}% | {100 * real[name]:.1f}% | {100 * spliced[name]:.1f}% |")


if __name__ == "__main__":
    main()
