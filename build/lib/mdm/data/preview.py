"""``mdm data preview NAME``: a PNG grid of a built-in dataset, with its texts, to look at before training.

ShapesWorld shows each image with its caption and its question/answer, at a
difficulty level (``data.level=easy`` on the command line; DESIGN.md §6); Digits
each image with its label; moving digits one frame strip per clip with its
caption. Built-in datasets only: a user's own data is previewed through the
same functions once loaded into :class:`mdm.data.sample.Sample` objects.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402

from mdm.data.registry import load_builtin  # noqa: E402
from mdm.data.sample import Role, Sample  # noqa: E402


def _show(ax, image: Tensor) -> None:
    img = image.detach().float().clamp(0, 1).cpu()
    if img.shape[0] == 1:
        ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _title(sample: Sample) -> str:
    parts = []
    for role, prefix in ((Role.CAPTION, ""), (Role.QUESTION, "Q: "), (Role.ANSWER, "A: ")):
        text = sample.text(role)
        if text:
            parts.append(textwrap.fill(prefix + text, 28))
    if not parts and sample.label is not None:
        parts.append(f"label {sample.label}")
    return "\n".join(parts)


def preview_grid(samples: list[Sample], path: str | Path, columns: int = 4, title: str = "") -> Path:
    """Images (or the first frame strip of videos) with their texts, saved as a PNG."""
    path = Path(path)
    if not samples:
        raise ValueError("preview_grid: no samples to show")
    if samples[0].video is not None:
        frames = samples[0].video.shape[0]
        fig, axes = plt.subplots(len(samples), frames, figsize=(1.2 * frames, 1.45 * len(samples)), squeeze=False)
        for row, sample in zip(axes, samples):
            for t, ax in enumerate(row):
                _show(ax, sample.video[t])
            row[0].set_ylabel(textwrap.fill(sample.text(Role.CAPTION) or "", 18), fontsize=6, rotation=0,
                              ha="right", va="center")
    else:
        rows = -(-len(samples) // columns)
        fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 3.0 * rows), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, sample in zip(axes.flat, samples):
            ax.axis("on")
            _show(ax, sample.image)
            ax.set_title(_title(sample), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def preview(name: str, path: str | Path, n: int = 12, split: str = "train", seed: int = 0, level: str = "hard",
            question_kinds: tuple[str, ...] = ()) -> Path:
    """Write a preview PNG of ``n`` samples of the built-in dataset ``name`` (ShapesWorld: of ``level``,
    with questions of ``question_kinds``, empty: the level's)."""
    dataset = load_builtin(name, split, size=max(n, 16), seed=seed, level=level, question_kinds=question_kinds)
    samples = [dataset[i] for i in range(n)]
    where = f"level {level}, " if name == "shapesworld" else ""
    return preview_grid(samples, path, title=f"{name} ({where}{split}, seed {seed})")
