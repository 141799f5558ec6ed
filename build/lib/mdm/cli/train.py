"""``mdm quickstart`` and ``mdm train``: a model trained in a run folder."""

from __future__ import annotations

import argparse
import os
import sys

from mdm.cli.common import set_threads
from mdm.config import MDMConfig, load_config


def cmd_quickstart(args: argparse.Namespace) -> int:
    from mdm.quickstart import quickstart

    set_threads(args)
    result = quickstart(args.out, minutes=args.minutes, n_eval=args.n_eval, overrides=args.overrides,
                        progress=not args.no_progress)
    return 130 if result.figure is None else 0


def cmd_train(args: argparse.Namespace) -> int:
    from mdm.training.loop import NonFiniteLossError
    from mdm.training.run import resume_config, train_run

    set_threads(args)
    if args.resume and args.config is None:
        config = resume_config(args.out, args.overrides)
    else:
        config = load_config(args.config or "shapesworld", args.overrides)
    is_main = os.environ.get("RANK", "0") == "0"  # under torchrun, one process speaks
    try:
        result = train_run(config, args.out, resume=args.resume, progress=not args.no_progress,
                           time_budget_s=None if args.minutes is None else 60 * args.minutes, device=args.device,
                           log=print if is_main else (lambda _msg: None))
    except NonFiniteLossError as e:
        if is_main:
            print(f"mdm: training stopped: {e}", file=sys.stderr)
        return 1
    trainer = result.trainer
    if not is_main:
        return 130 if trainer.interrupted else 0
    return _report_train_end(config, args.out, trainer.step, trainer.interrupted, trainer.history)


def _report_train_end(config: MDMConfig, out: str, step: int, interrupted: bool, history: list[dict]) -> int:
    if interrupted:
        print(f"interrupted at step {step}; checkpoint saved in {out}/checkpoint "
              f"(continue with: mdm train --out {out} --resume)")
        return 130
    if not history:
        print(f"{out} is already at step {step} of train.steps={config.train.steps}; raise train.steps "
              f"to train more")
        return 0
    print(f"step {step}: loss {history[-1]['loss']:.4f}; checkpoint in {out}/checkpoint, "
          f"log in {out}/log.jsonl")
    return 0
