"""Does the stage-0 VQ-VAE keep what the referee judges? Train one as stage 0 does and score its
reconstructions of held-out scenes with the referee, every few hundred steps.

    python experiments/vq-fidelity/probe.py --config quickstart --steps 1500 --every 300 [key=value ...]
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import torch

from mdm.config import load_config
from mdm.evaluation.judges.referee import score_generation
from mdm.nn.vq import VQConfig, VQVAE, codebook_usage
from mdm.training.prepare import load_samples, referee_kwargs


def fidelity(vq: VQVAE, samples, kw) -> dict[str, float]:
    vq.eval()
    with torch.no_grad():
        images = torch.stack([s.image for s in samples])
        codes = vq.encode(images)
        rec = vq.decode(codes)
    vq.train()
    agg: dict[str, list[float]] = defaultdict(list)
    for s, r in zip(samples, rec):
        for k, v in score_generation(r, s.meta["objects"], **kw).items():
            agg[k].append(v)
    out = {k: round(100 * sum(v) / len(v), 1) for k, v in agg.items()}
    out["l2"] = float(((rec - images) ** 2).mean())
    out["codes_used"] = int(codes.unique().numel())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="quickstart")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--every", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=None, help="the VQ's seed (default: data.seed, as stage 0)")
    ap.add_argument("--n-eval", type=int, default=300)
    ap.add_argument("--out", default=None)
    ap.add_argument("--vq", nargs="*", default=[], help="VQConfig fields, key=value")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    config = load_config(a.config, a.overrides)
    train = load_samples(config, "train")
    test = load_samples(config, "test")[: a.n_eval]
    kw = referee_kwargs(config)
    extra = {k: type(getattr(VQConfig(), k))(v) if not isinstance(getattr(VQConfig(), k), bool) else v == "true"
             for k, v in (x.split("=") for x in a.vq)}
    seed = config.data.seed if a.seed is None else a.seed
    torch.manual_seed(seed)
    vq = VQVAE(VQConfig(in_channels=config.layout.image_channels, downsample=config.layout.vq_factor,
                        codebook_size=config.data.codebook_size, local=config.data.vq_local, **extra))
    images = torch.stack([s.image for s in train])
    opt = torch.optim.AdamW(vq.parameters(), lr=a.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    rows = []
    t0 = time.time()
    vq.train()
    for step in range(1, a.steps + 1):
        batch = images[torch.randint(len(images), (a.batch,), generator=g)]
        out = vq(batch)
        opt.zero_grad(set_to_none=True)
        out.losses["loss"].backward()
        opt.step()
        if step % a.every == 0 or step == a.steps:
            row = {"step": step, "seconds": round(time.time() - t0, 1), **fidelity(vq, test, kw),
                   "perplexity": round(codebook_usage(out.codes, config.data.codebook_size)["perplexity"], 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"args": vars(a), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
