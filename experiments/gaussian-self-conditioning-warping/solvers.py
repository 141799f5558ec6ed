"""Probe: one checkpoint's ShapesWorld task scored with DPM-Solver++ at few steps and DDPM at many.

    python experiments/gaussian-self-conditioning-warping/solvers.py RUN_FOLDER TASK [SOLVER:STEPS ...]
    python experiments/gaussian-self-conditioning-warping/solvers.py runs/both text_to_text dpmsolver++:20 ddpm:1000

Loads RUN_FOLDER/checkpoint (EMA weights), scores TASK on the 64 held-out scenes the one-task probe
uses, one thread, with each solver, and prints the score (and per question kind) and the time.
"""
import sys
import time

import torch

from mdm.diffusion.sampling import SamplerConfig
from mdm.evaluation.shapesworld import score_tasks
from mdm.pipeline import MDMPipeline
from mdm.training.prepare import load_samples, referee_kwargs


def main(run: str, task: str, solvers: list[str]) -> None:
    torch.set_num_threads(1)
    pipe = MDMPipeline.from_pretrained(run)
    held_out = load_samples(pipe.config, "val")[:64]
    for spec in solvers or ["dpmsolver++:20", "ddpm:1000"]:
        solver, steps = spec.split(":")
        start = time.time()
        result = score_tasks(pipe, held_out, SamplerConfig(steps=int(steps), solver=solver), tasks=(task,),
                             n_examples=len(held_out), referee_options=referee_kwargs(pipe.config))
        scores = {k: round(v, 3) for k, v in result.scores.items()}
        print(f"{solver} {steps} steps ({time.time() - start:.0f} s): {scores}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
