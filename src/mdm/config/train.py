"""The training section: the loop's optimizer, schedule, EMA, checkpoints and task mixture (Sec 5.1)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mdm.config.choices import DISTRIBUTED_STRATEGIES
from mdm.config.errors import ConfigError


LR_DECAYS = ("constant", "linear", "cosine")


@dataclass
class TrainConfig:
    """The training loop (Sec 5.1: AdamW lr 1e-4 without weight decay, EMA 0.9999)."""

    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    # "constant" (the paper gives no decay), or "linear" / "cosine" from lr down to lr * lr_final_fraction over the run
    # (train.steps, or the --minutes budget when it ends first), times the warm-up ramp
    lr_decay: str = "constant"
    lr_final_fraction: float = 0.0
    # the VAE's rate as a share of lr (same warm-up and decay; 0 freezes it). On moving-digits at lr 2e-3, 0.25 did
    # not bring back the caption path (experiments/video-seeds), so no preset sets it
    vae_lr_scale: float = 1.0
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    # the EMA's warm-up, a power average (weight on step k ~ k**ema_power, reaching back ~steps/(ema_power+2)) that
    # sets the window until ema_decay caps it (from step 8990 at 0.999 and 8; training/ema.py)
    ema_power: float = 8.0
    mixed_precision: str = "auto"  # auto = bf16 autocast on a CUDA device that supports it; "bf16"; "no"
    distributed: str = "ddp"  # under torchrun: "ddp" (whole model per process) or "fsdp" (sharded, large sizes)
    # torch.compile each backbone block in place (inductor; on a CPU it needs a C++ compiler; training/loop.py)
    compile: bool = False
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500  # steps between checkpoints (and one at the end); 0 = only at the end
    sample_every: int = 0  # steps between image+caption sample grids in the run folder; 0 = off
    # task mixture: relative weights of the tasks the data supports (DESIGN.md §4)
    task_weights: dict = field(default_factory=lambda: {"text_to_image": 1.0, "image_to_text": 1.0, "vqa": 1.0,
                                                        "text_to_text": 1.0, "joint": 1.0,
                                                        "class_to_image": 1.0})
    # a curriculum: the first curriculum_steps steps draw their tasks by curriculum_task_weights. On moving-digits
    # the class task beside text-to-image kept the caption's route from forming (experiments/video-seeds)
    curriculum_steps: int = 0
    curriculum_task_weights: dict = field(default_factory=dict)
    # the curriculum's diffusion.clean_frames_prob (None: the run's). A clip with clean frames shows its digit, so
    # only clips without any need the caption; with none, every seed read it by step 750 (moving-digits sets 0)
    curriculum_clean_frames_prob: float | None = None
    # the curriculum's diffusion.self_conditioning_prob (None: the run's); 0 trains the curriculum without the
    # previous estimate. On moving-digits seed 0 the caption was then read by step 750 (not by 1000 with it), on
    # seed 1 not by 2000, so the preset leaves it unset (experiments/video-seeds)
    curriculum_self_conditioning_prob: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"train.lr must be a finite number > 0, got {self.lr}")
        if self.steps < 1 or self.batch_size < 1 or self.log_every < 1:
            raise ConfigError("train: steps, batch_size and log_every must be >= 1")
        if self.checkpoint_every < 0 or self.sample_every < 0:
            raise ConfigError("train: checkpoint_every and sample_every must be >= 0")
        if self.lr_decay not in LR_DECAYS:
            raise ConfigError(f"train.lr_decay must be one of {', '.join(LR_DECAYS)}, got {self.lr_decay!r}")
        if not 0.0 <= self.lr_final_fraction <= 1.0:
            raise ConfigError(f"train.lr_final_fraction is a fraction of train.lr in [0, 1], "
                              f"got {self.lr_final_fraction}")
        if not (isinstance(self.vae_lr_scale, (int, float)) and 0.0 <= self.vae_lr_scale <= 1.0):
            raise ConfigError(f"train.vae_lr_scale is a share of train.lr in [0, 1] (0 freezes the VAE), "
                              f"got {self.vae_lr_scale!r}")
        if self.mixed_precision not in ("auto", "bf16", "no"):
            raise ConfigError(f"train.mixed_precision must be auto, bf16 or no, got {self.mixed_precision!r}")
        if self.distributed not in DISTRIBUTED_STRATEGIES:
            raise ConfigError(f"train.distributed must be {' or '.join(DISTRIBUTED_STRATEGIES)}, "
                              f"got {self.distributed!r}")
        if self.compile and self.distributed == "fsdp":
            raise ConfigError("train.compile is not supported with train.distributed=fsdp (sharded blocks are "
                              "untested compiled); set train.distributed=ddp or train.compile=false")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        if not (isinstance(self.ema_power, (int, float)) and 0.0 <= self.ema_power < math.inf):
            raise ConfigError(f"train.ema_power is the exponent of the EMA's power average, a number >= 0 "
                              f"(0 averages every step alike), got {self.ema_power!r}")
        # the task names are checked by mdm.tasks.check_task_weights, where the trainer draws its tasks
        for field_name in ("task_weights", "curriculum_task_weights"):
            for name, w in getattr(self, field_name).items():
                if not isinstance(w, (int, float)) or w < 0:
                    raise ConfigError(f"train.{field_name}.{name} must be a number >= 0, got {w!r}")
        if not isinstance(self.curriculum_steps, int) or self.curriculum_steps < 0:
            raise ConfigError(f"train.curriculum_steps must be an integer >= 0, got {self.curriculum_steps!r}")
        for name in ("clean_frames_prob", "self_conditioning_prob"):
            p = getattr(self, f"curriculum_{name}")
            if p is not None and not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
                raise ConfigError(f"train.curriculum_{name} is a probability in [0, 1] (or null: the run's "
                                  f"diffusion.{name}), got {p!r}")
        if self.curriculum_steps and not any(w > 0 for w in self.curriculum_task_weights.values()):
            raise ConfigError(f"train.curriculum_steps = {self.curriculum_steps} needs train.curriculum_task_weights "
                              f"with a weight > 0, e.g. {{text_to_image: 1.0}}; got {self.curriculum_task_weights}")

    def drawn_task_weights(self) -> dict[str, float]:
        """Every task a step may draw, curriculum included, with its largest weight (what the run trains)."""
        weights = dict(self.task_weights)
        if self.curriculum_steps:
            for name, w in self.curriculum_task_weights.items():
                weights[name] = max(w, weights.get(name, 0.0))
        return weights
