"""How much of the digit do a VQ-VAE's ink codes name? H(class | ink code) over the training frames, per VQ-VAE.

A code shared by many digits leaves the model to get the digit from the code's neighbours; a VQ-VAE whose codes
name the digit more often could be the easier one to learn. The commonest code (the empty patch) is left out.

    python experiments/vq-seed/class_codes.py RUN_A/vq RUN_B/vq ...
"""
from __future__ import annotations

import argparse
import math

import torch

from mdm.config import load_config
from mdm.nn.vq import VQVAE
from mdm.training.prepare import load_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vq_folders", nargs="+")
    parser.add_argument("--config", default="moving-digits")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_config(args.config)
    samples = load_samples(config, "train")
    frames = torch.stack([f for s in samples for f in s.video])
    labels = torch.tensor([s.label for s in samples]).repeat_interleave(len(samples[0].video))
    size = config.data.codebook_size
    for folder in args.vq_folders:
        vq = VQVAE.load(folder).eval()
        with torch.no_grad():
            codes = torch.cat([vq.encode(frames[i:i + 2048]) for i in range(0, len(frames), 2048)]).flatten(1)
        background = torch.bincount(codes.flatten(), minlength=size).argmax()
        joint = torch.zeros(size, 10)
        for digit in range(10):
            ink = codes[labels == digit]
            joint[:, digit] = torch.bincount(ink[ink != background], minlength=size).float()
        p = joint / joint.sum()
        given_code = p / p.sum(1, keepdim=True).clamp_min(1e-12)
        entropy = float(-(p[p > 0] * given_code[p > 0].log()).sum())
        print(f"{folder}: H(class | ink code) {entropy:.3f} nats of {math.log(10):.3f}; ink codes per digit "
              f"{[int((joint[:, d] > 0).sum()) for d in range(10)]}")


if __name__ == "__main__":
    main()
