"""Figures a user would rather look at than read: generated images with their generated captions."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402

from mdm.evaluation.judges.referee import score_caption  # noqa: E402

REFEREE_LEGEND = "green: the ShapesWorld referee finds every claim true, red: not"


def _show_image(ax, image: Tensor, **kwargs) -> None:
    """One (c, h, w) image in [0, 1] on ``ax``: RGB as is, one channel in grey."""
    img = image.detach().float().clamp(0, 1).cpu()
    ax.imshow(img.permute(1, 2, 0).numpy() if img.shape[0] == 3 else img[0].numpy(), cmap="gray",
              interpolation="nearest", **kwargs)


def _save(fig, path: str | Path, title: str) -> Path:
    """Title, lay out and write ``fig`` to ``path`` (its folder created), then close it."""
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def referee_applies(data_name: str) -> bool:
    """Whether the ShapesWorld referee can judge a model's captions: only for a model trained on ShapesWorld.

    On any other data its colour masks and shape rules would still return a verdict, a meaningless one.
    """
    return data_name == "shapesworld"


def judged_grid_title(title: str, data_name: str) -> tuple[str, bool]:
    """A caption grid's title and its ``referee`` flag for a model trained on ``data_name``.

    Where the referee judges the captions, the title gains the colour legend (:data:`REFEREE_LEGEND`).
    """
    referee = referee_applies(data_name)
    return (f"{title}\n({REFEREE_LEGEND})" if referee else title), referee


def image_caption_grid(images: Tensor, captions: list[str], path: str | Path, title: str = "",
                       columns: int = 4, *, referee: bool = False,
                       referee_options: Mapping[str, Any] | None = None) -> Path:
    """A grid of images titled by their captions; with ``referee`` a title is green when every claim is true.

    ``referee`` is for ShapesWorld models only (:func:`judged_grid_title` gives it with a fitting title);
    ``referee_options`` are the referee's keyword arguments for the model's level (its position grid,
    :func:`mdm.training.prepare.referee_kwargs`).
    """
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
        _show_image(ax, image)
        color = "black"
        if referee and image.shape[0] == 3:
            judged = score_caption(image.detach().float().clamp(0, 1).cpu(), caption, **(referee_options or {}))
            color = "green" if judged["all_true"] else "red"
        ax.set_title(textwrap.fill(caption or "(empty)", 28), fontsize=7, color=color)
    return _save(fig, path, title)


def video_strip(clips: Tensor, titles: list[str], path: str | Path, title: str = "") -> Path:
    """Clips (b, T, c, H, W) as a frame strip: one row per clip, its T frames left to right."""
    if clips.dim() != 5 or clips.shape[2] not in (1, 3):
        raise ValueError(f"video_strip: clips must be (batch, frames, 1 or 3 channels, height, width), got "
                         f"{tuple(clips.shape)}")
    b, T = clips.shape[:2]
    if b == 0 or len(titles) != b:
        raise ValueError(f"video_strip: {b} clips but {len(titles)} titles")
    fig, axes = plt.subplots(b, T, figsize=(0.9 * T + 1.6, 1.0 * b + 0.4), squeeze=False)
    for i in range(b):
        for t in range(T):
            ax = axes[i, t]
            _show_image(ax, clips[i, t], vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"t={t}", fontsize=7)
        axes[i, 0].set_ylabel(textwrap.fill(titles[i], 22), fontsize=6, rotation=0, ha="right", va="center")
    return _save(fig, path, title)


def _tiled_frames(clips: Tensor, scale: int, columns: int) -> "list":
    """Per time step one uint8 RGB array (H', W', 3) with the clips side by side, upscaled ``scale`` x."""
    import numpy as np
    import torch

    b, T, c, H, W = clips.shape
    rows = (b + columns - 1) // columns
    x = clips.detach().float().clamp(0, 1).cpu()
    x = x.expand(-1, -1, 3, -1, -1) if c == 1 else x
    x = torch.cat([x, x.new_zeros(rows * columns - b, *x.shape[1:])])  # blank cells
    gap = 1  # a one-pixel grey line between clips
    x = torch.nn.functional.pad(x, (0, gap, 0, gap), value=0.5)
    grid = x.view(rows, columns, T, 3, H + gap, W + gap).permute(2, 0, 4, 1, 5, 3)
    grid = grid.reshape(T, rows * (H + gap), columns * (W + gap), 3)
    grid = grid.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    return [np.ascontiguousarray((f * 255).round().byte().numpy()) for f in grid]


def write_animation(clips: Tensor, path: str | Path, fps: int = 4, scale: int = 4, columns: int = 8) -> Path:
    """Clips (b, T, c, H, W) in [0, 1] as one animation, the clips tiled: ``.gif`` (Pillow) or ``.mp4``.

    MP4 needs an ``ffmpeg`` executable: on PATH, or the one the ``imageio-ffmpeg``
    package ships (``pip install mdm[video]``); without either it is a clear error.
    """
    import shutil
    import subprocess

    from PIL import Image

    if clips.dim() != 5 or clips.shape[0] == 0 or clips.shape[2] not in (1, 3):
        raise ValueError(f"write_animation: clips must be (batch >= 1, frames, 1 or 3 channels, height, width), "
                         f"got {tuple(clips.shape)}")
    path = Path(path)
    if path.suffix.lower() not in (".gif", ".mp4"):
        raise ValueError(f"write_animation: {path} must end in .gif or .mp4")
    frames = _tiled_frames(clips, scale, min(columns, clips.shape[0]))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
        return path
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        try:
            import imageio_ffmpeg

            ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
        except ImportError:
            raise RuntimeError(f"writing {path} needs ffmpeg: put it on PATH or `pip install imageio-ffmpeg` "
                               f"(the mdm[video] extra); or write a .gif") from None
    h, w = frames[0].shape[:2]
    pad_h, pad_w = h % 2, w % 2  # yuv420p wants even sides
    command = [ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
               "-r", str(fps), "-i", "-", "-vf", f"pad={w + pad_w}:{h + pad_h}", "-pix_fmt", "yuv420p",
               "-vcodec", "libx264", str(path)]
    done = subprocess.run(command, input=b"".join(f.tobytes() for f in frames), capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg could not write {path}: {done.stderr.decode(errors='replace').strip()}")
    return path


def time_warp_figure(warps: Mapping[str, Any], path: str | Path, sampler_steps: int = 20,
                     num_train_timesteps: int = 1000) -> Path:
    """The fitted time warp of each modality (``{name: TimeWarp}``): the loss by noise level it was fitted
    from, and the level ``s = F^-1(u)`` with the sampler's steps marked on it."""
    fig, axes = plt.subplots(len(warps), 2, figsize=(8, 3 * len(warps)), squeeze=False)
    for (name, warp), (loss_ax, warp_ax) in zip(warps.items(), axes):
        centres = [(k + 0.5) / warp.bins for k in range(warp.bins)]
        seen = [c > 0 for c in warp.stats[1].tolist()]
        loss_ax.plot([c for c, ok in zip(centres, seen) if ok],
                     [m for m, ok in zip(warp.stats[0].tolist(), seen) if ok], ".", ms=3)
        loss_ax.set(xlabel="noise level s", ylabel="training loss", title=f"{name}: loss by level")
        u, s = warp.plot_points()
        warp_ax.plot(u, s, label="fitted" if warp.fitted else "identity (not fitted yet)")
        warp_ax.plot([0, 1], [0, 1], ":", color="grey", label="uniform")
        if warp.fitted:
            steps = [(t + 1) / num_train_timesteps for t in warp.sampler_timesteps(sampler_steps, num_train_timesteps)]
            warp_ax.plot([1 - i / sampler_steps for i in range(sampler_steps)], steps, "o", ms=3,
                         label=f"{sampler_steps} sampler steps")
        warp_ax.set(xlabel="u (uniform)", ylabel="level s = F^-1(u)", title=f"{name}: time warp")
        warp_ax.legend(fontsize=7)
    return _save(fig, path, "time warping (CDCD): levels drawn where the loss changes")
