"""Probe: the associative recall of recall_probe.py, learned through MDM's diffusion as a text->text task.

    python experiments/copy-through-diffusion/diffusion_recall_probe.py [--steps 2000] [--every 500] [--pairs 4] [--scene-len 0] \
        [--train-size 50000] [--threads 1] [section.key=value ...]

The scene segment is ``k1 v1 k2 v2 ... eos`` (right-padded with pad to ``--scene-len`` when that is
longer), the question ``k eos``, the answer ``v eos``: the ids of recall_probe.py (keys 32, values
32) shifted past the tokenizer's four special ids. Training is the project's own: the shapesworld
preset (whose text SNR is divided by 64; ``diffusion.text_snr_shift=1`` undoes it) plus the
overrides, ``train.task_weights = {text_to_text: 1}``, :class:`Trainer` on ``--train-size`` fixed
sequences, the VAE, score entropy and per-segment noise levels as a run has them. Every
``--every`` steps it samples the answer of 256 held-out sequences (DPM-Solver++, 20 steps, EMA
and raw weights) and prints the share whose first answer id is the queried value
(chance 1 / 32), then the EMA model's cross-entropy for that id with the answer noised to a
quarter, half, ... of T: how far into the schedule the answer is still read from its own latent
rather than copied from the scene; and ``readable``, the share of training levels at which a
token's own noised latent already names it (no copy needed), from the VAE's candidates.

It separates what diffusion does to the copy from everything else ShapesWorld adds (a scene in
words, a tokenizer, five question kinds): recall_probe.py shows the Mamba stack learns this copy
with cross-entropy in 600-1000 steps; if it does here too, the ShapesWorld gap lies in the data,
and if it does not, in how the answer is noised and scored.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor

from mdm.config import load_config
from mdm.data.text_tokenizer import EOS_ID, PAD_ID
from mdm.diffusion.objective import gaussian_offset
from mdm.diffusion.multimodal import Segment
from mdm.diffusion.sampling import SamplerConfig, sample
from mdm.nn.layout import Modality, SegmentSpec
from mdm.tasks import TokenizedData
from mdm.training.loop import Trainer, build_model
from recall_probe import KEYS, VALUES, recall_batch  # beside this script

LEVELS = (0.25, 0.5, 0.75, 0.9, 1.0)  # answer noise levels, as fractions of T, for answer_loss_by_level
SPECIAL = 4  # pad, unk, bos, eos come first in the project's text vocabulary


def recall_texts(n: int, pairs: int, scene_len: int, generator: torch.Generator) -> dict[str, Tensor]:
    """``n`` recall sequences as the text ids of a text->text task (scene, question, answer)."""
    context, query, answer = recall_batch(n, pairs, generator)
    eos = torch.full((n, 1), EOS_ID)
    scene = torch.cat([context + SPECIAL, eos], dim=1)
    if scene_len > scene.shape[1]:
        scene = torch.cat([scene, torch.full((n, scene_len - scene.shape[1]), PAD_ID)], dim=1)
    return {"scene": scene, "question": torch.cat([query + SPECIAL, eos], dim=1),
            "answer": torch.cat([answer[:, None] + KEYS + SPECIAL, eos], dim=1)}


@torch.no_grad()
def recall_accuracy(network, diffusion, texts: dict[str, Tensor], seed: int = 0) -> float:
    """Share of sequences whose sampled first answer id is the queried value."""
    was_training = network.training
    network.eval()
    segments = [Segment(SegmentSpec.text(texts["scene"].shape[1]), texts["scene"], False),
                Segment(SegmentSpec.text(texts["question"].shape[1]), texts["question"], False),
                Segment(SegmentSpec.text(texts["answer"].shape[1]), None, True)]
    out = sample(network, diffusion, segments, None, SamplerConfig(steps=20), None,
                 torch.Generator().manual_seed(seed))
    network.train(was_training)
    return (out[2][:, 0] == texts["answer"][:, 0]).float().mean().item()


@torch.no_grad()
def answer_loss_by_level(network, diffusion, texts: dict[str, Tensor], fractions=LEVELS,
                         seed: int = 0) -> list[float]:
    """Cross-entropy of the queried value at the answer's first position, with the answer noised to each
    level ``fraction * T`` (scene and question clean): near 0 the answer's own latent gives it away; near
    T it must be copied from the scene (log 32 = 3.47 knows nothing, log 4 = 1.39 one of the scene's values)."""
    was_training = network.training
    network.eval()
    generator = torch.Generator().manual_seed(seed)
    specs = [SegmentSpec.text(texts[k].shape[1]) for k in ("scene", "question", "answer")]
    layout = network.make_layout(specs)
    latents = [network.vae(texts[k], Modality.TEXT, xi=torch.randn(*texts[k].shape, network.vae.d_latent,
                                                                   generator=generator))
               for k in ("scene", "question", "answer")]
    b, n = texts["answer"].shape
    losses = []
    for fraction in fractions:
        t = torch.full((b, n), min(diffusion.T - 1, int(fraction * diffusion.T)))
        noise = torch.randn(latents[2].z0.shape, generator=generator)
        z = torch.cat([latents[0].mu, latents[1].mu,
                       diffusion.process(network, Modality.TEXT).schedule.add_noise(latents[2].z0, noise, t)], dim=1)
        tau = torch.cat([torch.zeros(b, texts["scene"].shape[1] + texts["question"].shape[1]), (t + 1).float()], 1)
        segment_tau = torch.stack([torch.zeros(b), torch.zeros(b), (t[:, 0] + 1).float()], dim=1)
        logits = diffusion.logits(network, z.float(), tau, segment_tau, layout)[2]
        losses.append(torch.nn.functional.cross_entropy(logits[:, 0], texts["answer"][:, 0]).item())
    network.train(was_training)
    return losses


@torch.no_grad()
def readable_share(network, diffusion, samples: int = 1000, seed: int = 0) -> float:
    """Share of training levels at which a token needs no copy: the analytic Gaussian posterior (DESIGN.md
    §2.1) of its noised latent over the VAE's candidates names it, averaged over every tenth level and
    over all the vocabulary's ids. Nothing about the scene enters.

    It noises the candidate ``mu`` itself; training noises ``z0 = mu + sigma xi``, whose encoder noise
    this leaves out, so at low levels the share is an upper bound."""
    generator = torch.Generator().manual_seed(seed)
    candidates = network.vae.candidates(Modality.TEXT).float()
    schedule = diffusion.process(network, Modality.TEXT).schedule
    right = []
    for t in range(0, diffusion.T, 10):
        y = torch.randint(candidates.shape[0], (samples,), generator=generator)
        level = torch.full((samples,), t)
        noise = torch.randn(samples, candidates.shape[1], generator=generator)
        z = schedule.add_noise(candidates[y], noise, level).float()
        right.append((gaussian_offset(z, candidates, schedule.alpha_bar(level).float()).argmax(-1) == y)
                     .float().mean())
    return torch.stack(right).mean().item()


def main(args: argparse.Namespace) -> None:
    if not 1 <= args.pairs <= KEYS:
        raise SystemExit(f"--pairs must be in 1..{KEYS} (distinct keys), got {args.pairs}")
    if min(args.steps, args.every, args.train_size) < 1:
        raise SystemExit(f"--steps, --every and --train-size must be >= 1, got {args.steps}, {args.every}, "
                         f"{args.train_size}")
    torch.set_num_threads(args.threads)
    config = load_config("shapesworld", ["train.task_weights={text_to_text: 1.0}", *args.overrides])
    train = recall_texts(args.train_size, args.pairs, args.scene_len, torch.Generator().manual_seed(1))
    held_out = recall_texts(256, args.pairs, args.scene_len, torch.Generator().manual_seed(2))
    network, diffusion = build_model(config, {"text": SPECIAL + KEYS + VALUES})
    trainer = Trainer(network, diffusion, TokenizedData(texts=train), config.train)
    print(f"{config.backbone.kind.value} {args.overrides} pairs={args.pairs} scene={train['scene'].shape[1]} "
          f"train_size={args.train_size}", flush=True)
    start = time.time()
    while trainer.step < args.steps:
        trainer.run(steps=min(args.steps, trainer.step + args.every), progress=False)
        ema = recall_accuracy(trainer.ema.model, diffusion, held_out)
        raw = recall_accuracy(network, diffusion, held_out)
        by_level = " ".join(f"{f:g}T:{loss:.2f}" for f, loss in
                            zip(LEVELS, answer_loss_by_level(trainer.ema.model, diffusion, held_out)))
        print(f"step {trainer.step} t={time.time() - start:.0f}s se={trainer.history[-1]['se']:.3f} "
              f"ema={ema:.3f} raw={raw:.3f} answer CE by level (ema) {by_level} "
              f"readable={readable_share(trainer.ema.model, diffusion):.3f}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--scene-len", type=int, default=0, help="pad the scene segment to this many ids")
    parser.add_argument("--train-size", type=int, default=50000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. backbone.kind=transformer")
    main(parser.parse_args())
