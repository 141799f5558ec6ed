"""What does a config override cost a training step? The preset and the preset with the override, built in one
process, their steps (``Trainer.train_step``: forward, loss, backward, clipping, AdamW, EMA) interleaved so that
a load on the shared machine slows both alike; the median of each.

    python experiments/video-seeds/step_cost.py --config moving-digits --task text_to_image \
        backbone.chunk_size=48

(The pooled caption was measured with ``backbone.text_modulation=true backbone.text_pooling=attention``
before the preset took them.) Each model's step is ``mdm bench train-step``'s.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from mdm.bench.train_step import TrainStep, synthetic_data
from mdm.config import MDMConfig, load_config
from mdm.nn.layout import Modality
from mdm.tasks import Task, TokenizedData


def step_for(config: MDMConfig, task: Task, data: TokenizedData, vocab: dict[Modality, int]) -> TrainStep:
    """One model's training step, its weights from seed 0 (both models start from the same draws)."""
    torch.manual_seed(0)
    return TrainStep(config, task, data, vocab, compile_blocks=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="moving-digits")
    parser.add_argument("--task", default="text_to_image")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("overrides", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)
    configs = {"preset": load_config(args.config), "override": load_config(args.config, args.overrides)}
    data, vocab = synthetic_data(configs["preset"], 64)
    trainers = {name: step_for(c, Task(args.task), data, vocab) for name, c in configs.items()}
    for t in trainers.values():
        for _ in range(args.warmup):
            t.step()
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(args.repeats):
        for name, t in trainers.items():
            t0 = time.perf_counter()
            t.step()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["preset"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name}: median {med:.3f} s a step over {len(ts)} steps ({med / base:.3f}x the preset's)")


if __name__ == "__main__":
    main()
