"""What several commands share: torch's thread count, and the output file checked before any work."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


def set_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def output_file(out: str | Path, default_name: str, suffixes: tuple[str, ...] = FIGURE_SUFFIXES,
                option: str = "--out") -> Path:
    """The file ``out`` names, checked before a model samples for minutes: ``out`` may be an existing folder
    (the file goes in it as ``default_name``), otherwise it must end in one of ``suffixes`` (matplotlib
    would add ``.png`` to a bare name and write a file the command never names), and its folder must be
    creatable and writable."""
    path = Path(out)
    if path.is_dir():
        path = path / default_name
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{option} {out} must end in {' or '.join(suffixes)} (or name an existing folder)")
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{option} {out}: cannot create the folder {folder}: {e.strerror}") from None
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"{option} {out}: {path if path.exists() else folder} is not writable")
    return path
