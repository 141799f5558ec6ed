"""Probe: does a trained video model use the other frames of a clip?

    python experiments/video-coherence/video_context_probe.py RUN_FOLDER [--clips 16] [--frame 3] [--levels 200,500,800]

For training clips of the run's data, one frame is noised to level t and the model predicts it
twice: once with the other frames clean (tau = 0, as a condition) and once with every frame noised
to t. A model that has learned the clip's structure (the same digit, moved by a constant
velocity) predicts the frame far better from clean neighbours than from noised ones; a model that
reads each frame on its own scores the same both ways. The score is the share of the frame's VQ
codes predicted exactly (argmax), or for pixel-patch models (``layout.image_tokens = pixels``) the
mean squared pixel error of the decoded prediction, beside what predicting the mean would give.
Caveat for pixel-patch models: they are never trained with clean positions inside a target
segment (the per-position mixture is off for them), so "others clean" is an input they have not
seen; for them only the "all noised" column means what it says.
Used for experiments/video-coherence/record.md ("Why the clips are not coherent").
"""
import argparse

import torch

from mdm.diffusion.objective import clean_latent_from_noise
from mdm.pipeline import MDMPipeline
from mdm.tasks import Task, task_segments
from mdm.training.prepare import prepare_data


@torch.no_grad()
def probe(run: str, clips: int, frame: int, levels: list[int], seed: int = 0) -> list[dict]:
    pipe = MDMPipeline.from_pretrained(run)
    network, diffusion = pipe.network, pipe.diffusion
    config = pipe.config
    if config.layout.frames < 2:
        raise SystemExit(f"{run} is an image model (layout.frames = 1); the probe needs a video model")
    if not 0 <= frame < config.layout.frames:
        raise SystemExit(f"--frame must be in [0, {config.layout.frames}), got {frame}")
    data = prepare_data(config, run, progress=False, log=lambda _msg: None)
    batch = data.train.subset(torch.arange(min(clips, len(data.train))))
    segment = task_segments(Task.CLASS_TO_IMAGE, batch)[0]
    layout = network.make_layout([segment.spec])
    states, b = segment.states, segment.states.shape[0]
    per_frame = segment.spec.n_content // config.layout.frames
    noised = torch.zeros(states.shape[:2], dtype=torch.bool)
    noised[:, frame * per_frame:(frame + 1) * per_frame] = True
    mu = network.vae.encode(states, segment.spec.modality)[0]
    schedule = diffusion.process(network, segment.spec.modality).schedule
    rows = []
    for t in levels:
        noise = torch.randn(mu.shape, generator=torch.Generator().manual_seed(seed))
        level = torch.full(states.shape[:2], t)
        z_all = schedule.add_noise(mu, noise, level)
        row = {"t": t}
        for context, z, tau in (("others clean", torch.where(noised[..., None], z_all, mu),
                                 torch.where(noised, level + 1, 0).float()),
                                ("all noised", z_all, (level + 1).float())):
            out = diffusion.logits(network, z, tau, torch.full((b, 1), t + 1.0), layout, batch.labels)[0]
            if segment.continuous:
                x0 = clean_latent_from_noise(z, out, schedule.alpha_bar(level))
                pixels = network.vae.decode(x0, segment.spec.modality)
                row[context] = float((pixels - states)[noised].pow(2).mean())
            else:
                row[context] = float((out.argmax(-1) == states)[noised].float().mean())
        if segment.continuous:
            row["predicting the mean"] = float((states[noised] - states.mean()).pow(2).mean())
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--frame", type=int, default=3)
    parser.add_argument("--levels", default="200,500,800")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = probe(args.run, args.clips, args.frame, [int(t) for t in args.levels.split(",")])
    metric = "pixel MSE (lower is better)" if "predicting the mean" in rows[0] else "codes exactly right"
    print(f"{args.run}: frame {args.frame} of {args.clips} training clips, {metric}")
    keys = [k for k in rows[0] if k != "t"]
    print("| t | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    for row in rows:
        print(f"| {row['t']} | " + " | ".join(f"{row[k]:.3f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
