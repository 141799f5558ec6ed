"""How much does a moving-digits checkpoint read its condition when it draws a clip from noise?

For held-out clips, the whole clip is noised at one level (no clean frames, as the first frame pass starts)
and the network predicts the VQ codes of frame 0. The probe compares the codes' score entropy and the share of
frame-0 codes predicted right (argmax) under:
  - the clip's own caption, the same caption with another digit word, and no caption (the null condition);
  - the clip's own class label, another label, and the null class.
The gap wrong - right says how much the digit in the condition moves the prediction.

It also measures the caption's VAE latents: how far the digit word's latent sits from the other digits' (the
signal the denoiser has to read) against how far the EMA and raw weights put it (how much the encoder still
moves over the EMA's ~1000 steps).

    python experiments/video-seeds/condition_probe.py RUN [RUN ...] [-n 200] [--levels 0.5 0.8 0.95] [--raw-weights]
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from mdm.data.digits import digit_caption
from mdm.diffusion.multimodal import Segment
from mdm.nn.layout import Modality, SegmentSpec
from mdm.pipeline import MDMPipeline
from mdm.training.prepare import load_samples


def frame0_scores(pipe: MDMPipeline, codes: torch.Tensor, captions: list[str] | None, labels: torch.Tensor | None,
                  level: float, null_caption: bool = False, seed: int = 0) -> tuple[float, float]:
    """(mean score entropy, argmax accuracy of ink codes) over frame 0's codes, the clip noised whole at
    ``level``; ``null_caption`` feeds the caption's null condition (noise at tau = T, as guidance's) instead."""
    network, diffusion = pipe.network, pipe.diffusion
    side = pipe.config.layout.image_size // pipe.config.layout.vq_factor
    video = Segment(SegmentSpec.video(pipe.frames, side, side), codes, True)
    segments = [video]
    if captions is not None:
        ids = pipe.encode_text(captions, "caption")
        segments = [Segment(SegmentSpec.text(ids.shape[1]), ids, False), video]
    layout = network.make_layout([s.spec for s in segments])
    generator = torch.Generator().manual_seed(seed)
    zs, taus, seg_taus = [], [], []
    for seg in segments:
        mu = network.vae.encode(seg.states, seg.spec.modality)[0]
        process = diffusion.process(network, seg.spec.modality)
        if seg.target:
            noised = process.corrupt_at(network, seg.spec, seg.states, mu, level, generator)
            z, tau, seg_tau = noised.z, noised.tau, noised.segment_tau
        elif null_caption:
            noise = torch.randn(mu.shape, generator=torch.Generator().manual_seed(seed + 1))
            z, tau = process.null_condition(network, mu, noise)
            seg_tau = tau[:, 0]
        else:
            z, tau, seg_tau = mu, torch.zeros(mu.shape[:2]), torch.zeros(mu.shape[0])
        zs.append(z), taus.append(tau), seg_taus.append(seg_tau)
    out = diffusion.logits(network, torch.cat(zs, 1), torch.cat(taus, 1), torch.stack(seg_taus, 1), layout,
                           labels)[-1]
    f0 = slice(0, side * side)
    return scored(out[:, f0].float().log_softmax(-1), codes[:, f0])


def scored(logp: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """(mean score entropy over frame 0's codes, argmax accuracy over its ink codes): the background code,
    the commonest, is three quarters of a frame and right under any condition."""
    loss = -logp.gather(-1, target[..., None])[..., 0].mean()
    ink = target != target.flatten().mode().values
    return float(loss), float((logp.argmax(-1) == target)[ink].float().mean())


def swap_digit(caption: str, label: int, other: int) -> str:
    return caption.replace(digit_caption(label), digit_caption(other), 1)


def caption_latents(pipe: MDMPipeline, raw: MDMPipeline, n: int = 10) -> dict[str, float]:
    """Digit-word latent spread against the EMA-to-raw shift, over the ten 'the digit D moving up' captions."""
    captions = [f"{digit_caption(d)} moving up" for d in range(n)]
    ids = pipe.encode_text(captions, "caption")
    mu_ema = pipe.network.vae.encode(ids, Modality.TEXT)[0]
    mu_raw = raw.network.vae.encode(ids, Modality.TEXT)[0]
    differs = (ids != ids[:1]).any(0) | (ids != ids[1:2]).any(0)  # the positions that spell the digit
    digits = mu_ema[:, differs].flatten(1)
    spread = torch.cdist(digits, digits).sum() / (n * (n - 1))
    shift = (mu_ema[:, differs] - mu_raw[:, differs]).flatten(1).norm(dim=1).mean()
    return {"digit_spread": float(spread), "ema_raw_shift": float(shift),
            "latent_norm": float(digits.norm(dim=1).mean())}


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--levels", type=float, nargs="+", default=[0.5, 0.8, 0.95])
    parser.add_argument("--raw-weights", action="store_true", help="score the raw weights, not the EMA")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| run | level | caption: right / other digit / null (SE; accuracy of frame 0's ink codes) "
          "| class: right / other / null | caption latents: digit spread, EMA-raw shift, norm |")
    print("|---|---|---|---|---|")
    for run in args.runs:
        pipe, raw = MDMPipeline.from_pretrained(run), MDMPipeline.from_pretrained(run, use_ema=False)
        lat = caption_latents(pipe, raw)
        if args.raw_weights:
            pipe = raw
        pipe.diffusion = type(pipe.diffusion)(replace(pipe.config.diffusion, cond_dropout=0.0), pipe.config.vae)
        held = load_samples(pipe.config, "val")[:args.n]
        codes = pipe.encode_images(torch.stack([s.video for s in held]))
        labels = torch.tensor([s.label for s in held])
        others = (labels + 1 + torch.arange(len(held)) % 9) % 10  # every other digit, never the same
        captions = [s.text("caption") for s in held]
        swapped = [swap_digit(c, int(a), int(b)) for c, a, b in zip(captions, labels, others)]
        null_class = torch.full_like(labels, pipe.network.backbone.null_class)
        for level in args.levels:
            cap = [frame0_scores(pipe, codes, c, None, level) for c in (captions, swapped)]
            cap.append(frame0_scores(pipe, codes, captions, None, level, null_caption=True))
            cls = [frame0_scores(pipe, codes, None, lab, level) for lab in (labels, others, null_class)]
            fmt = lambda rows: " / ".join(f"{se:.2f}; {acc:.0%}" for se, acc in rows)  # noqa: E731
            print(f"| {run} | {level} | {fmt(cap)} | {fmt(cls)} | {lat['digit_spread']:.2f}, "
                  f"{lat['ema_raw_shift']:.2f}, {lat['latent_norm']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
