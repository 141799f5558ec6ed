"""Moving digits: short clips of sklearn digits bouncing on a black canvas (DESIGN.md §6).

The video data for DiM (§5): Moving-MNIST-style clips built from the bundled
sklearn digits (:mod:`mdm.data.digits`), so nothing is downloaded. A digit,
upscaled bilinearly to ``digit_size`` (default 14 px), starts at a random
integer top-left position on a ``canvas_size`` canvas (default 32) with a random
integer velocity of at most ``max_speed`` px per frame per axis, moves at that
constant velocity and reflects off the walls (the position is mirrored at the
wall and that velocity component flips sign). Integer positions and velocities
keep every frame an exact paste of the digit, no resampling blur, and make the
ground-truth trajectory exact. Two digits are combined by a pixel-wise max.

``motion_step`` puts start positions and velocities on a grid of that many
pixels. With the VQ-VAE's patch size as the step, the digit moves by whole codes:
every frame shows it at the same phase of the code grid, so a frame's codes are
its neighbour's shifted (exactly so with local codes, ``data.vq_local``). With step 1 a
1 px move changes every code of the digit, and the denoiser has to learn each
digit at every phase and how the phases follow each other.

Clip ``i`` of a dataset depends only on ``(seed, split, i)``; the digit images
come from the matching :class:`~mdm.data.digits.DigitsDataset` split (its
default split seed), so a test clip never shows a training digit.

Positions are top-left ``(x, y)`` in pixels, x to the right, y down. The caption
names the first digit and its *initial* direction: ``"the digit three moving
down and to the right"``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mdm.data.digits import DigitsDataset, Split, digit_caption, resize_images
from mdm.data.sample import Role, Sample, TextSegment

_SPLIT_CODE = {Split.TRAIN: 0, Split.VAL: 1, Split.TEST: 2}


def bounce_trajectory(start: np.ndarray, velocity: np.ndarray, frames: int, limit: np.ndarray) -> np.ndarray:
    """Positions (frames, 2) of constant-velocity motion in [0, limit] with wall reflections.

    ``start``, ``velocity``, ``limit`` are (2,) integers; |velocity| <= limit so a
    step reflects at most once.
    """
    p, v = start.astype(np.int64).copy(), velocity.astype(np.int64).copy()
    out = np.empty((frames, 2), dtype=np.int64)
    for t in range(frames):
        out[t] = p
        p = p + v
        low, high = p < 0, p > limit
        p = np.where(low, -p, np.where(high, 2 * limit - p, p))  # mirror at the wall
        v = np.where(low | high, -v, v)
    return out


def direction_words(velocity: tuple[int, int]) -> str:
    """``(+1, +2) -> "down and to the right"``; y grows downwards."""
    vx, vy = int(velocity[0]), int(velocity[1])
    vertical = "down" if vy > 0 else "up" if vy < 0 else ""
    horizontal = "to the right" if vx > 0 else "to the left" if vx < 0 else ""
    if not (vertical or horizontal):
        raise ValueError("direction_words: velocity (0, 0) has no direction")
    return " and ".join(w for w in (vertical, horizontal) if w)


def _fold(u: np.ndarray, limit: float) -> np.ndarray:
    """Unfolded coordinate -> position in [0, limit] after reflections (period 2 * limit)."""
    r = np.mod(u, 2.0 * limit)
    return limit - np.abs(r - limit)


def trajectory_is_consistent(
    positions: Tensor | np.ndarray,
    canvas: int | tuple[int, int],
    size: int | tuple[int, int],
    tol: float = 0.5,
    unknown_offset: float = 0.0,
) -> bool:
    """Whether top-left positions (T, 2) = (x, y) fit constant velocity with wall reflections.

    ``unknown_offset`` > 0: the positions are the top-left plus an unknown constant
    in ``[0, unknown_offset]`` per axis (a generated digit's ink centroid, say, whose
    place inside the digit's box is not known); that constant is searched on a
    grid of step ``tol / 4`` too, which moves the acceptance bound from
    ``1.25 tol`` to ``1.375 tol`` (the nearest grid offset is within ``tol / 8``).

    How it works. Reflection off the walls of ``[0, L]`` (``L = canvas - size``
    per axis) is the same as free motion on an unfolded line followed by the
    fold ``f(u) = L - |(u mod 2L) - L|``. So an axis is consistent iff some
    start ``p0`` and velocity ``v`` give ``max_t |f(p0 + v t) - x_t| <= tol``.
    Speeds beyond ``L`` alias to speeds in ``[-L, L]`` (f has period 2L and
    ``f(-u) = f(u)``), so searching ``v`` in ``[-L, L]`` and ``p0`` within
    ``tol`` of the first position is complete. The two axes are independent.
    The search is a grid (``dp = tol / 4``, ``dv = tol / (4 (T - 1))``, which
    contains every exact integer solution); because ``f`` is 1-Lipschitz a true
    fit within ``tol`` is at most ``tol / 4`` worse on the grid, so the test
    accepts a grid error up to ``1.25 tol``: no false negatives, and a false
    positive needs a fit within ``1.25 tol``.

    Use it to score generated clips: estimate each frame's digit position
    (e.g. the ink bounding box's top-left, or centroid minus ``size / 2``) and
    pass a tolerance matching that estimate's error. Reversed clips are
    consistent (velocity negated); shuffled frames, jumps and stalls are not.
    """
    pos = torch.as_tensor(positions, dtype=torch.float64).numpy()
    if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] < 1:
        raise ValueError(f"trajectory_is_consistent expects positions of shape (T, 2) = (x, y), got {pos.shape}")
    if not tol > 0:
        raise ValueError(f"trajectory_is_consistent: tol must be > 0, got {tol}")
    if not unknown_offset >= 0:
        raise ValueError(f"trajectory_is_consistent: unknown_offset must be >= 0, got {unknown_offset}")
    canvas_hw = (canvas, canvas) if isinstance(canvas, int) else canvas
    size_hw = (size, size) if isinstance(size, int) else size
    limits = (canvas_hw[1] - size_hw[1], canvas_hw[0] - size_hw[0])  # x spans width, y height
    if min(limits) <= 0:
        raise ValueError(f"trajectory_is_consistent: size {size} does not fit in canvas {canvas}")
    offsets = np.arange(0.0, unknown_offset + tol / 8, tol / 4) if unknown_offset > 0 else np.zeros(1)
    bound = 1.25 * tol + (tol / 8 if unknown_offset > 0 else 0.0)
    for axis, L in enumerate(limits):
        if not any(_axis_fit_error(pos[:, axis] - c, L, tol) <= bound for c in offsets):
            return False
    return True


def _axis_fit_error(x: np.ndarray, L: float, tol: float) -> float:
    """The smallest max residual of a folded constant-velocity path to ``x`` (T,) on the search grid
    of :func:`trajectory_is_consistent` (inf when ``x`` leaves ``[-tol, L + tol]``)."""
    T = x.shape[0]
    if x.min() < -tol or x.max() > L + tol:
        return np.inf
    if T < 3:
        return 0.0  # two points always fit
    t = np.arange(T, dtype=np.float64)
    dp, dv = tol / 4.0, tol / (4.0 * (T - 1))
    p0 = x[0] + dp * np.arange(-4, 5)  # (P,)
    n_v = int(np.ceil(L / dv))
    v = dv * np.arange(-n_v, n_v + 1)  # (V,), contains every integer in [-L, L]
    best = np.inf
    for start in p0:  # (V, T) residuals for one start; P = 9 starts
        err = np.abs(_fold(start + v[:, None] * t[None, :], L) - x[None, :]).max(axis=1)
        best = min(best, float(err.min()))
    return best


class MovingDigitsDataset:
    """``length`` clips of ``frames`` frames, each a Sample with ``video`` (T, C, H, W) in [0, 1].

    ``label`` is the first digit's class; ``meta["trajectory"]`` its top-left
    positions (T, 2) as float (x, y), ``meta["velocity"]`` its initial (vx, vy),
    ``meta["digit_index"]`` its row in :attr:`digits`; with two digits
    ``meta["trajectories"]`` (D, T, 2), ``meta["velocities"]`` (D, 2),
    ``meta["labels"]`` and ``meta["digit_indices"]`` hold all of them.
    """

    def __init__(
        self,
        split: Split | str = Split.TRAIN,
        length: int = 1024,
        frames: int = 8,
        canvas_size: int = 32,
        digit_size: int = 14,
        num_digits: int = 1,
        channels: int = 1,
        max_speed: int = 3,
        seed: int = 0,
        motion_step: int = 1,
    ) -> None:
        if num_digits not in (1, 2):
            raise ValueError(f"MovingDigitsDataset: num_digits must be 1 or 2, got {num_digits}")
        if channels not in (1, 3):
            raise ValueError(f"MovingDigitsDataset: channels must be 1 or 3, got {channels}")
        if not 4 <= digit_size < canvas_size:
            raise ValueError(
                f"MovingDigitsDataset: need 4 <= digit_size < canvas_size; got {digit_size} and {canvas_size}"
            )
        if not 1 <= max_speed <= canvas_size - digit_size:
            raise ValueError(
                f"MovingDigitsDataset: max_speed must be in [1, {canvas_size - digit_size}], got {max_speed}"
            )
        if motion_step < 1 or (canvas_size - digit_size) % motion_step or max_speed % motion_step:
            raise ValueError(
                f"MovingDigitsDataset: motion_step must be >= 1 and divide both the free span canvas_size - "
                f"digit_size = {canvas_size - digit_size} and max_speed = {max_speed}; got {motion_step}"
            )
        if length < 1 or frames < 1:
            raise ValueError(f"MovingDigitsDataset: length and frames must be >= 1, got {length}, {frames}")
        self.split = Split(split)
        self.length, self.frames, self.canvas_size, self.digit_size = length, frames, canvas_size, digit_size
        self.num_digits, self.channels, self.max_speed, self.seed = num_digits, channels, max_speed, seed
        self.motion_step = motion_step
        # Resize from 8x8 to digit_size directly (DigitsDataset only offers 8/16/32).
        base = DigitsDataset(self.split, image_size=8, channels=1)
        self.digits: Tensor = resize_images(base.images, digit_size)[:, 0]  # (n, s, s)
        self.digit_labels: Tensor = base.labels

    def __len__(self) -> int:
        return self.length

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _SPLIT_CODE[self.split], index])

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.length:
            raise IndexError(f"MovingDigitsDataset has {self.length} clips, index {index}")
        rng, s = self._rng(index), self.digit_size
        limit, step = np.array([self.canvas_size - s] * 2), self.motion_step
        video = torch.zeros(self.frames, 1, self.canvas_size, self.canvas_size)
        labels, trajectories, velocities, picks = [], [], [], []
        for _ in range(self.num_digits):
            k = int(rng.integers(len(self.digits)))
            start = rng.integers(0, limit // step + 1) * step
            velocity = np.zeros(2, dtype=np.int64)
            while not velocity.any():
                velocity = rng.integers(-self.max_speed // step, self.max_speed // step + 1, size=2) * step
            path = bounce_trajectory(start, velocity, self.frames, limit)
            for t, (x, y) in enumerate(path):
                patch = video[t, 0, y:y + s, x:x + s]
                torch.maximum(patch, self.digits[k], out=patch)
            picks.append(k)
            labels.append(int(self.digit_labels[k]))
            trajectories.append(torch.from_numpy(path).double())
            velocities.append(torch.from_numpy(velocity))
        captions = [f"{digit_caption(lab)} moving {direction_words(tuple(v.tolist()))}"
                    for lab, v in zip(labels, velocities)]
        meta = {"trajectory": trajectories[0], "velocity": velocities[0], "digit_index": picks[0],
                "digit_size": s, "split": self.split.value}
        if self.num_digits > 1:
            meta |= {"trajectories": torch.stack(trajectories), "velocities": torch.stack(velocities),
                     "labels": labels, "digit_indices": picks}
        return Sample(
            video=video.expand(-1, self.channels, -1, -1).contiguous(),
            label=labels[0],
            texts=[TextSegment(Role.CAPTION, ", ".join(captions))],
            meta=meta,
        )
