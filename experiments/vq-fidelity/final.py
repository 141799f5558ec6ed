"""The stage-0 VQ-VAE as it ends: train it as stage 0 does (``train_vq``, the config's steps) and score its
reconstructions of 300 held-out scenes with the referee, for several seeds at one thread count.

    cd experiments/vq-fidelity && python final.py [data.vq_steps=N] --config quickstart --seeds 0 1 2 3 --threads 2
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from mdm.config import load_config
from mdm.nn.vq import VQConfig, VQVAE, train_vq
from mdm.training.prepare import load_samples, referee_kwargs

from probe import fidelity


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="quickstart")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    config = load_config(a.config, a.overrides)
    images = torch.stack([s.image for s in load_samples(config, "train")])
    test = load_samples(config, "test")[:300]
    for seed in a.seeds:
        torch.manual_seed(seed)
        vq = VQVAE(VQConfig(in_channels=config.layout.image_channels, downsample=config.layout.vq_factor,
                            codebook_size=config.data.codebook_size, local=config.data.vq_local))
        t0 = time.time()
        train_vq(vq, images, steps=config.data.vq_steps, seed=seed, progress=False)
        row = {"steps": config.data.vq_steps, "seed": seed, "threads": a.threads,
               "seconds": round(time.time() - t0, 1), **fidelity(vq.eval(), test, referee_kwargs(config))}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
