"""Train one run and keep EMAs of several powers beside the configured one; write a run folder per power.

The EMA never feeds back into training, so every window of one run averages the same raw weights: one
training scores several windows (the model is small, so the extra copies cost little). Each extra window's
folder is a copy of the run with its own ``checkpoint/ema.safetensors`` and ``train.ema_power`` in the
saved configs, for ``mdm eval --checkpoint RUN-power{p}``.

    python experiments/ema-window/train_windows.py --config moving-digits --out RUN --powers 2,4,16 \
        --threads 1 train.steps=3038 train.seed=0 train.compile=false

Not resumable: the extra windows live only in memory until the run ends.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

import mdm.training.loop as loop
from mdm.config import load_config, save_config
from mdm.training.ema import EMA
from mdm.training.run import train_run


def ema_with_windows(powers: list[float]) -> type[EMA]:
    """An EMA class that also keeps one EMA per extra power, each updated with the same weights and steps."""

    class EMAWindows(EMA):
        def __init__(self, model: torch.nn.Module, decay: float, power: float = 8.0) -> None:
            super().__init__(model, decay, power)
            self.windows = {p: EMA(model, decay, p) for p in powers}

        def update(self, model: torch.nn.Module, step: int) -> None:
            super().update(model, step)
            for window in self.windows.values():
                window.update(model, step)

    return EMAWindows


def write_window(run: Path, power: float, ema: EMA) -> Path:
    """Copy ``run`` to ``run-power{p}`` with ``ema``'s weights and ``train.ema_power`` set to ``power``."""
    out = run.parent / f"{run.name}-power{power:g}"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(run, out, ignore=shutil.ignore_patterns(".lock"))
    state = {k: v.detach().cpu().contiguous().clone() for k, v in ema.model.state_dict().items()}
    save_file(state, str(out / "checkpoint" / "ema.safetensors"))
    meta_path = out / "checkpoint" / "config.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["train"]["ema_power"] = power
    meta_path.write_text(json.dumps(meta, indent=2))
    config = load_config(str(out / "config.yaml"))
    config.train.ema_power = power
    save_config(config, out / "config.yaml")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--powers", required=True, type=lambda s: [float(p) for p in s.split(",")],
                        help="extra EMA powers to keep, comma-separated")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config, args.overrides)  # as `mdm train` reads it
    loop.EMA = ema_with_windows(args.powers)  # the trainer builds its EMA from this name
    result = train_run(config, args.out)
    if result.trainer.step < config.train.steps:
        raise SystemExit(f"the run stopped at step {result.trainer.step} of {config.train.steps}; no windows written")
    for power, ema in result.trainer.ema.windows.items():
        print(f"wrote {write_window(args.out, power, ema)}")


if __name__ == "__main__":
    main()
