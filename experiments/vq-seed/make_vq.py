"""Train a run folder's stage-0 VQ-VAE from a chosen seed, measure it, and leave it for ``mdm train`` to load.

``mdm train --out RUN`` reuses ``RUN/vq`` when its recorded settings match the run's config, so a run trained
after this script diffuses the codes of a VQ-VAE of seed ``--vq-seed`` while every other setting (the data, the
text tokenizer, the diffusion seed) stays the preset's. Measured per VQ-VAE: its codes' use over the training
frames, and the digit judge of ``mdm eval --suite moving-digits`` on reconstructed held-out clips.

    python experiments/vq-seed/make_vq.py --config moving-digits --out RUN --vq-seed 1
    mdm train --config moving-digits --out RUN --threads 1 train.steps=3038 train.seed=2 train.compile=false
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from mdm.config import load_config
from mdm.evaluation.judges.digit_classifier import train_digit_classifier
from mdm.evaluation.video import score_clips
from mdm.nn.vq import codebook_usage, reconstructions
from mdm.training.prepare import load_samples, train_image_tokenizer


def code_use(codes: torch.Tensor, size: int) -> dict[str, float]:
    """Distinct codes used and the perplexity of their use, over all tokens and over the ink codes (all but the
    commonest, the empty background patch)."""
    counts = torch.bincount(codes.flatten(), minlength=size)
    background = counts.argmax()
    overall, ink = codebook_usage(codes, size), codebook_usage(codes[codes != background], size)
    return {"codes_used": int((counts > 0).sum()), "perplexity": round(overall["perplexity"], 2),
            "ink_perplexity": round(ink["perplexity"], 2),
            "background_share": round(float(counts[background] / counts.sum()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="moving-digits")
    parser.add_argument("--out", required=True, help="the run folder whose vq/ is written")
    parser.add_argument("--vq-seed", type=int, required=True)
    parser.add_argument("-n", type=int, default=100, help="held-out clips reconstructed and judged")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_config(args.config, args.overrides)
    out = Path(args.out)
    if (out / "vq").exists():
        raise SystemExit(f"{out / 'vq'} exists: choose another --out")
    samples = load_samples(config, "train")
    frames = torch.stack([f for s in samples for f in s.video])
    vq = train_image_tokenizer(frames, samples, config, out / "vq", progress=False, seed=args.vq_seed)
    with torch.no_grad():
        codes = torch.cat([vq.encode(frames[i:i + 1024]) for i in range(0, len(frames), 1024)])
        held_out = load_samples(config, "val")[:args.n]
        real = torch.stack([s.video for s in held_out])
        rec = reconstructions(vq, real.flatten(0, 1)).view_as(real).clamp(0, 1)
    classifier, _ = train_digit_classifier(8, seed=0)
    labels = [s.label for s in held_out]
    judged = score_clips(rec, labels, classifier, held_out[0].meta["digit_size"])
    record = {"vq_seed": args.vq_seed, **code_use(codes, config.data.codebook_size),
              "vq_frame_accuracy": round(judged.frame_accuracy, 4), "vq_consistency": round(judged.consistency, 4),
              **json.loads((out / "vq" / "fidelity.json").read_text())}
    (out / "vq-probe.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
