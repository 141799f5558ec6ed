"""How well does a moving-digits checkpoint continue a motion from clean frames?

For held-out clips, frames 0..k-1 are given clean (tau = 0, as the sampler's frame passes keep them) and the
rest is noised at one level; the network predicts the VQ codes of frame k, which the kept frames determine
(on this world a digit's place in frame k >= 2 follows from frames 0 and 1). Reported per k: the score entropy
of frame k's codes and the share of its ink codes (not the background code) predicted right by argmax.
The clip's class is given, as `class_to_video` gives it.

    python experiments/video-consistency/motion_probe.py SNAP [SNAP ...] [-n 200] [--level 0.95] [--ks 2 3]
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from mdm.diffusion.multimodal import Segment
from mdm.nn.layout import SegmentSpec
from mdm.pipeline import MDMPipeline
from mdm.training.prepare import load_samples


def frame_k_scores(pipe: MDMPipeline, codes: torch.Tensor, labels: torch.Tensor, k: int, level: float,
                   seed: int = 0) -> tuple[float, float]:
    """(mean score entropy, ink-code argmax accuracy) of frame ``k``'s codes with frames 0..k-1 clean."""
    network, diffusion = pipe.network, pipe.diffusion
    side = pipe.config.layout.image_size // pipe.config.layout.vq_factor
    frame = side * side
    spec = SegmentSpec.video(pipe.frames, side, side)
    video = Segment(spec, codes, True)
    layout = network.make_layout([spec])
    mu = network.vae.encode(codes, spec.modality)[0]
    process = diffusion.process(network, spec.modality)
    noised = process.corrupt_at(network, spec, codes, mu, level, torch.Generator().manual_seed(seed))
    kept = torch.zeros(codes.shape, dtype=torch.bool)
    kept[:, :k * frame] = True
    z = torch.where(kept[..., None], mu, noised.z)
    tau = torch.where(kept, torch.zeros_like(noised.tau), noised.tau)
    out = diffusion.logits(network, z, tau, noised.segment_tau[:, None], layout, labels)[-1]
    target = slice(k * frame, (k + 1) * frame)
    logp, states = out[:, target].float().log_softmax(-1), video.states[:, target]
    loss = -logp.gather(-1, states[..., None])[..., 0].mean()
    ink = states != codes.flatten().mode().values
    return float(loss), float((logp.argmax(-1) == states)[ink].float().mean())


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--raw-weights", action="store_true", help="score the raw weights, not the EMA")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"| run | " + " | ".join(f"frame {k} from 0..{k - 1}: SE; ink codes right" for k in args.ks) + " |")
    print("|---|" + "---|" * len(args.ks))
    for run in args.runs:
        pipe = MDMPipeline.from_pretrained(run, use_ema=not args.raw_weights)
        pipe.diffusion = type(pipe.diffusion)(replace(pipe.config.diffusion, cond_dropout=0.0), pipe.config.vae)
        held = load_samples(pipe.config, "val")[:args.n]
        codes = pipe.encode_images(torch.stack([s.video for s in held]))
        labels = torch.tensor([s.label for s in held])
        cells = [frame_k_scores(pipe, codes, labels, k, args.level) for k in args.ks]
        print(f"| {run} | " + " | ".join(f"{se:.3f}; {acc:.1%}" for se, acc in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
