"""Sweep: the first frame pass's guidance scale against the digit and the motion of class-conditional clips.

    python experiments/video-coherence/video_guidance_sweep.py RUN_FOLDER 1 1.5 2 [-n 100] [--later 1] [--frame-passes 8]

For each run-0 guidance scale, draws the ``n`` class-conditional clips of ``mdm eval --suite
moving-digits`` (classes 0..9 in turn, seed 0, so a scale's row equals that suite's class scores at
``--guidance G --later-guidance L``) and judges them with the suite's judge
(:func:`mdm.evaluation.video.score_clips`). Besides the suite's scores it prints the share of clips
with the requested digit in each frame, which shows whether a wrong digit comes from frame 0 (the
condition) or from the frames drawn after it (the copy). Only the class task, so a scale costs
about 2 minutes for 100 clips at 2 threads, not the suite's 5.
Used for experiments/video-coherence/record.md ("Twelfth session").
"""
import argparse
import time

import torch

from mdm.diffusion.sampling import SamplerConfig
from mdm.evaluation.judges.digit_classifier import train_digit_classifier
from mdm.evaluation.video import score_clips
from mdm.pipeline import MDMPipeline
from mdm.training.prepare import load_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run")
    parser.add_argument("scales", type=float, nargs="+", help="guidance scales of frame pass 0")
    parser.add_argument("--later", type=float, default=1.0, help="guidance of the later frame passes")
    parser.add_argument("--frame-passes", type=int, default=8)
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.frame_passes < 2:
        parser.error("--frame-passes must be >= 2: the sweep sets the guidance of the first pass apart from the rest")
    torch.set_num_threads(args.threads)
    pipe = MDMPipeline.from_pretrained(args.run)
    if not pipe.is_video:
        raise SystemExit(f"{args.run} is an image model (layout.frames = 1); the sweep needs a video model")
    classifier, _ = train_digit_classifier(8, seed=0)
    digit_size = load_samples(pipe.config, "val")[0].meta["digit_size"]
    labels = [i % 10 for i in range(args.n)]
    print(f"{args.run}: {args.n} class-conditional clips, {args.frame_passes} frame passes, later runs at "
          f"guidance {args.later:g}")
    print("| run-0 guidance | frames with the digit | consistent | frame 0 | every frame | by frame | seconds |")
    print("|---|---|---|---|---|---|---|")
    for scale in args.scales:
        sampler = SamplerConfig(frame_passes=args.frame_passes, guidance_scale=scale,
                                later_guidance_scale=args.later)
        t0 = time.perf_counter()
        clips = pipe.class_to_video(labels, sampler, seed=0)
        seconds = time.perf_counter() - t0
        judged = score_clips(clips, labels, classifier, digit_size)
        by_frame = " ".join(f"{100 * v:.0f}" for v in judged.frame_correct.float().mean(0).tolist())
        print(f"| {scale:g} | {100 * judged.frame_accuracy:.1f}% | {100 * judged.consistency:.0f}% | "
              f"{100 * judged.first_frame_accuracy:.0f}% | {100 * judged.whole_clip_accuracy:.0f}% | {by_frame} | "
              f"{seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
