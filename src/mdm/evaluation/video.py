"""Scores of generated moving-digit clips (DiM video, DESIGN.md §5, §7): digit kept, motion consistent.

A clip is judged frame by frame, without knowing where the generator put the digit:

1. **Where.** The digit's position in a frame is its ink centroid (the intensity-
   weighted mean pixel). A rigidly moving digit's centroid moves exactly with it.
2. **Which.** The ``digit_size`` window centred on the centroid is cropped (kept
   inside the canvas), resized to the 8 x 8 of the real digits with antialiasing,
   and classified by the digit CNN trained on the real digits
   (:mod:`mdm.evaluation.judges.digit_classifier`). *Frame accuracy* is the share of
   frames recognised as the requested class.
3. **How it moves.** A clip is *consistent* when its centroids fit constant
   velocity with reflections off the walls
   (:func:`mdm.data.moving_digits.trajectory_is_consistent`) within ``tol``
   pixels on each axis, and it moves (the centroid gets at least ``min_travel``
   pixels from where it started: every training clip moves, and a digit that
   stands still would fit velocity zero). Where the centroid sits inside the
   digit's box is not known for a generated digit, so that offset is fitted too
   (``unknown_offset``); the walls are then placed where the
   data's are, up to it. The offset is searched in the middle half of the box,
   ``[size / 4, 3 size / 4]``: the ink centroid of every training digit lies
   there (3.8 to 7.3 px in a 12 px box, 2.3 to 4.7 px in an 8 px one). The
   default ``tol`` is a sixteenth of the digit size (0.75 px for 12 px digits on
   a 24 px canvas, 0.5 px for 8 on 16): on 200 held-out clips it accepts every
   real clip and 3% of clips spliced from the halves of two real ones (at 1 px
   on the 16 px canvas: 28%).
4. **How real.** Frame-feature FID: the Fréchet distance between the digit CNN's
   features of the generated crops and of real clips' crops.

The same functions score real clips, which gives the ceiling each score can
reach with this judge (the suite reports them beside the generated ones).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mdm.data.moving_digits import trajectory_is_consistent


def ink_centroids(clips: Tensor) -> Tensor:
    """(b, T, c, H, W) clips in [0, 1] -> (b, T, 2) ink centroids (x, y) in pixels; a blank frame gets the centre."""
    if clips.dim() != 5:
        raise ValueError(f"ink_centroids expects clips (batch, frames, channels, height, width), got "
                         f"{tuple(clips.shape)}")
    ink = clips.float().mean(2).clamp(min=0)  # (b, T, H, W)
    h, w = ink.shape[-2:]
    mass = ink.sum((-2, -1))
    ys, xs = torch.arange(h, dtype=ink.dtype), torch.arange(w, dtype=ink.dtype)
    cx = (ink.sum(-2) * xs).sum(-1) / mass.clamp(min=1e-6)
    cy = (ink.sum(-1) * ys).sum(-1) / mass.clamp(min=1e-6)
    blank = mass < 1e-6
    cx, cy = torch.where(blank, (w - 1) / 2, cx), torch.where(blank, (h - 1) / 2, cy)
    return torch.stack([cx, cy], -1)


def digit_crops(clips: Tensor, centroids: Tensor, digit_size: int, out_size: int = 8) -> Tensor:
    """The ``digit_size`` window around each frame's centroid, inside the canvas, resized: (b * T, c, s, s)."""
    b, T, c, H, W = clips.shape
    frames = clips.float().reshape(b * T, c, H, W)
    centres = centroids.reshape(b * T, 2)
    # Window (top-left) of pixel centres whose middle is the centroid: centroid - (size - 1) / 2.
    x0 = (centres[:, 0] - (digit_size - 1) / 2).round().long().clamp(0, W - digit_size)
    y0 = (centres[:, 1] - (digit_size - 1) / 2).round().long().clamp(0, H - digit_size)
    crops = torch.stack([frames[i, :, y0[i]:y0[i] + digit_size, x0[i]:x0[i] + digit_size] for i in range(b * T)])
    if digit_size == out_size:
        return crops
    return F.interpolate(crops, size=(out_size, out_size), mode="bilinear", antialias=True,
                         align_corners=False).clamp(0, 1)


@dataclass
class ClipScores:
    """Per-clip judgements: ``frame_correct`` (b, T) bool, ``consistent`` (b,) bool, ``centroids`` (b, T, 2)."""

    frame_correct: Tensor
    consistent: Tensor
    centroids: Tensor
    features: Tensor  # (b * T, f) the judge's features of the crops (for the frame FID)
    labels: Tensor | None = None  # (b,) the requested digits
    predicted: Tensor | None = None  # (b, T) the digit the judge reads in each frame

    def confusion(self, n_classes: int = 10) -> Tensor:
        """Frame counts (n_classes, n_classes): row = the requested digit, column = the digit judged, so a
        row's off-diagonal says which digit the model draws instead."""
        if self.labels is None or self.predicted is None:
            raise ValueError("ClipScores.confusion needs the labels and the judged digits (made by score_clips)")
        requested = self.labels[:, None].expand_as(self.predicted)
        pairs = requested.flatten() * n_classes + self.predicted.flatten()
        return torch.bincount(pairs, minlength=n_classes * n_classes).view(n_classes, n_classes)

    @property
    def frame_accuracy(self) -> float:
        return float(self.frame_correct.float().mean())

    @property
    def first_frame_accuracy(self) -> float:
        """Frame 0 only. Drawn with frame passes, frame 0 comes from the condition alone, before any
        copying from frame to frame; in one solver run all frames are drawn together."""
        return float(self.frame_correct[:, 0].float().mean())

    @property
    def whole_clip_accuracy(self) -> float:
        """The share of clips with the requested digit in every frame."""
        return float(self.frame_correct.all(1).float().mean())

    @property
    def consistency(self) -> float:
        return float(self.consistent.float().mean())


@torch.no_grad()
def score_clips(clips: Tensor, labels: Tensor | list[int], classifier, digit_size: int,
                tol: float | None = None, min_travel: float = 1.0) -> ClipScores:
    """Judge clips (b, T, c, H, W) of requested ``labels`` (b,) with a :class:`DigitClassifier`.

    ``tol``: pixels a centroid may miss the fitted bouncing path by (on each axis;
    default ``digit_size / 16``);
    ``min_travel``: pixels the centroid must get from its start for the clip to count as moving.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    if clips.dim() != 5 or clips.shape[0] != labels.shape[0]:
        raise ValueError(f"score_clips: clips must be (batch, frames, channels, height, width) with one label "
                         f"each; got clips {tuple(clips.shape)} and {labels.shape[0]} labels")
    b, T, _, H, W = clips.shape
    if not 0 < digit_size <= min(H, W):
        raise ValueError(f"score_clips: digit_size {digit_size} does not fit a {H}x{W} frame")
    tol = digit_size / 16 if tol is None else tol
    centroids = ink_centroids(clips)
    crops = digit_crops(clips, centroids, digit_size, classifier.image_size)
    classifier.eval()
    predicted = classifier(crops).argmax(-1).view(b, T)
    features = classifier.embed(crops)
    moving = (centroids - centroids[:, :1]).abs().amax((1, 2)) >= min_travel
    # centroid = top-left + (the centroid's unknown place in the digit's box, in [size / 4, 3 size / 4])
    shifted = centroids - digit_size / 4
    consistent = torch.tensor([bool(moving[i]) and trajectory_is_consistent(shifted[i], (H, W), digit_size, tol=tol,
                                                                            unknown_offset=digit_size / 2)
                               for i in range(b)])
    return ClipScores(predicted == labels[:, None], consistent, centroids, features, labels, predicted)


def start_directions(centroids: Tensor, velocities: Tensor, still: float = 0.5) -> Tensor:
    """Whether each clip's first move goes the way its caption says: (b, T, 2) centroids, (b, 2) velocities
    (vx, vy) -> (b,) bool.

    On each axis the sign of the centroid's step from frame 0 to frame 1 must be that of
    the velocity; a zero velocity component ("moving up") must move less than ``still``
    pixels on that axis. A bounce in the very first step reads as the wrong way here,
    which the real-clip score of the suite shows the rate of.
    """
    if centroids.dim() != 3 or centroids.shape[1] < 2 or velocities.shape != (centroids.shape[0], 2):
        raise ValueError(f"start_directions: centroids must be (batch, frames >= 2, 2) and velocities (batch, 2); "
                         f"got {tuple(centroids.shape)} and {tuple(velocities.shape)}")
    step = centroids[:, 1] - centroids[:, 0]
    v = velocities.to(step.dtype)
    moving = v != 0
    agrees = torch.where(moving, torch.sign(step) == torch.sign(v), step.abs() < still)
    return agrees.all(-1)
