"""Figures a user would rather look at than read: generated images with their generated captions."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402

from mdm.data.referee import score_caption  # noqa: E402


def image_caption_grid(images: Tensor, captions: list[str], path: str | Path, title: str = "",
                       columns: int = 4, referee: bool = True) -> Path:
    """A grid of images titled by their captions; with ``referee`` a title is green when every claim is true."""
    n = len(captions)
    if n == 0:
        raise ValueError("image_caption_grid: no images to draw")
    if images.shape[0] != n:
        raise ValueError(f"image_caption_grid: {images.shape[0]} images but {n} captions")
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(2.5 * columns, 2.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        img = image.detach().float().clamp(0, 1).cpu()
        ax.imshow(img.permute(1, 2, 0).numpy() if img.shape[0] == 3 else img[0].numpy(), cmap="gray",
                  interpolation="nearest")
        color = "black"
        if referee and img.shape[0] == 3:
            color = "green" if score_caption(img, caption)["all_true"] else "red"
        ax.set_title(textwrap.fill(caption or "(empty)", 28), fontsize=7, color=color)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
