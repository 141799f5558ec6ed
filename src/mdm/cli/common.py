"""What several commands share: torch's thread count."""

from __future__ import annotations

import argparse


def set_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
