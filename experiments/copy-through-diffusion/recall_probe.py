"""Probe: can a backbone learn to copy, with no diffusion in the way? (associative recall)

    python experiments/copy-through-diffusion/recall_probe.py [--steps 600] [--pairs 4] [--latent 16] [--readout] [--threads 1] \
        [section.key=value ...]

Each sequence is two text segments: ``pairs`` key-value pairs ``k1 v1 k2 v2 ...`` (keys distinct,
drawn from 32 ids, values from 32 others), then one query key. A linear head reads the query's
hidden state and is trained with cross-entropy to name the value paired with that key: the copy a
text->text answer needs ("what colour is the square?" -> the word before "square" in the scene).

The backbones are the project's own (:class:`mdm.nn.backbone.Backbone`, with its layout, scan
switches and modulation; every position clean, noise level 0), built from the shapesworld preset
plus the overrides; a trained token embedding replaces the VAE. With ``--latent E`` each id is
instead a fixed random E-dimensional code, RMS-normalised, through a trained linear map to the
model width: what the backbone sees of a condition token in MDM, whose VAE latents are detached
from the diffusion loss (``vae.detach_latents``) and RMS-normalised. Prints held-out accuracy (1024
fresh sequences) every ``--every`` steps: chance is 1 / 32.

``--readout`` adds a third segment of one marker token after the query and reads the value there,
as a text->text answer is read in its own segment after the question: the readout position must
first find the key in the query segment, then the pair in the context (two hops, not one).
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor, nn

from mdm.config import load_config
from mdm.nn.backbone import Backbone
from mdm.nn.layout import SegmentSpec
from mdm.nn.vae import rms_normalize

KEYS, VALUES = 32, 32


def recall_batch(batch: int, pairs: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """(context (b, 2 * pairs), query (b, 1), answer (b,)): keys are ids 0..31, values 32..63, and the
    answer is the queried value's index 0..31 (its id minus 32)."""
    keys = torch.rand(batch, KEYS, generator=generator).argsort(dim=1)[:, :pairs]
    values = KEYS + torch.randint(VALUES, (batch, pairs), generator=generator)
    context = torch.stack([keys, values], dim=2).flatten(1)
    pick = torch.randint(pairs, (batch,), generator=generator)
    rows = torch.arange(batch)
    return context, keys[rows, pick][:, None], values[rows, pick] - KEYS


class RecallModel(nn.Module):
    """Token codes -> the project's :class:`Backbone` over a text layout -> a linear head at the last position."""

    def __init__(self, overrides: list[str], pairs: int, latent: int = 0, readout: bool = False) -> None:
        super().__init__()
        config = load_config("shapesworld", overrides).backbone
        self.backbone = Backbone(config)
        if latent:
            codes = rms_normalize(torch.randn(KEYS + VALUES + 1, latent))  # as the VAE's mu
            self.embed = nn.Sequential(nn.Embedding.from_pretrained(codes, freeze=True),
                                       nn.Linear(latent, config.d_model))
        else:
            self.embed = nn.Embedding(KEYS + VALUES + 1, config.d_model)  # the last id is the readout marker
        self.head = nn.Linear(config.d_model, VALUES)
        self.readout = readout
        segments = [SegmentSpec.text(2 * pairs), SegmentSpec.text(1)] + [SegmentSpec.text(1)] * readout
        self.layout = self.backbone.make_layout(segments)

    def forward(self, context: Tensor, query: Tensor) -> Tensor:
        parts = [context, query] + [torch.full_like(query, KEYS + VALUES)] * self.readout
        x = self.embed(torch.cat(parts, dim=1))
        b, n = x.shape[:2]
        h = self.backbone(x, torch.zeros(b, n), torch.zeros(b, len(parts)), self.layout)
        return self.head(h[:, -1])


def main(steps: int, every: int, pairs: int, batch: int, lr: float, latent: int, readout: bool,
         overrides: list[str]) -> None:
    """Train on fresh batches from one seed and print held-out accuracy every ``every`` steps."""
    if not 1 <= pairs <= KEYS:
        raise SystemExit(f"--pairs must be in 1..{KEYS} (distinct keys), got {pairs}")
    if every < 1 or steps < 1 or batch < 1:
        raise SystemExit(f"--steps, --every and --batch must be >= 1, got {steps}, {every}, {batch}")
    torch.manual_seed(0)
    model = RecallModel(overrides, pairs, latent, readout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    data, held_out = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    test = recall_batch(1024, pairs, held_out)
    start = time.time()
    print(f"{model.backbone.config.kind.value} {overrides} pairs={pairs} latent={latent or 'learned'} "
          f"readout={readout} parameters={sum(p.numel() for p in model.backbone.parameters())}", flush=True)
    for step in range(1, steps + 1):
        context, query, answer = recall_batch(batch, pairs, data)
        loss = nn.functional.cross_entropy(model(context, query), answer)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % every == 0:
            with torch.no_grad():
                accuracy = (model(*test[:2]).argmax(-1) == test[2]).float().mean().item()
            print(f"step {step} t={time.time() - start:.0f}s loss={loss.item():.3f} accuracy={accuracy:.3f}",
                  flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--latent", type=int, default=0, help="fixed random codes of this width (0: learned)")
    parser.add_argument("--readout", action="store_true", help="read the value in a segment after the query")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. backbone.kind=transformer")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    main(args.steps, args.every, args.pairs, args.batch, args.lr, args.latent, args.readout, args.overrides)
