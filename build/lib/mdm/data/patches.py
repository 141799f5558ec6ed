"""The continuous-patch path for images (DESIGN.md §1.1, §2.3).

Besides VQ code ids (:mod:`mdm.nn.vq`), an image can enter MDM as raw pixel
patches (or patches of a user-supplied VAE's latents), embedded by a linear
layer and trained with an MSE objective; it is the comparison baseline of §1.1.
Fig. 2 of the paper uses a 2x2 patch, which at scale applies to the code or
latent grid.

:func:`patchify` and :func:`unpatchify` are exact inverses (pure reshapes and
permutes, no arithmetic). Token order is row-major over the patch grid (the
order a raster scan reads); a token's features are ordered ``(c, py, px)``,
i.e. channel-major like a flattened conv kernel, so a linear patch embedding is
equivalent to a stride-``p`` convolution with the same weights.

Videos (DiM, §1.3) are patchified frame by frame and laid out frame-major
(all patches of frame 0, then frame 1, ...); other scan orders (space-major,
reversed) are permutations the backbone's scan switches apply, not a second
token format.

Shape letters: ``b`` batch, ``t`` frames, ``c`` channels, ``H W`` image, ``p``
patch size, ``N = (H / p) * (W / p)`` tokens per image.
"""

from __future__ import annotations

from torch import Tensor


def _size_pair(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    if len(image_size) != 2:
        raise ValueError(f"image_size must be an int or (H, W), got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


def patch_grid(image_size: int | tuple[int, int], patch_size: int) -> tuple[int, int]:
    """The (rows, columns) of the patch grid; an error if the size is not divisible."""
    _check_patch_size(patch_size)
    H, W = _size_pair(image_size)
    if H % patch_size or W % patch_size:
        raise ValueError(
            f"image size {H}x{W} is not divisible by patch_size {patch_size}; "
            f"crop or pad to a multiple of {patch_size} first"
        )
    return H // patch_size, W // patch_size


def _check_patch_size(patch_size: int) -> None:
    if not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """Images (b, c, H, W) -> tokens (b, N, c * p * p), N = (H / p) * (W / p), row-major."""
    _check_patch_size(patch_size)
    if images.dim() != 4:
        raise ValueError(f"patchify expects images of shape (B, C, H, W), got {tuple(images.shape)}")
    b, c, H, W = images.shape
    p = patch_size
    gh, gw = patch_grid((H, W), p)
    x = images.reshape(b, c, gh, p, gw, p)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (b, H/p, W/p, c, py, px)
    return x.reshape(b, gh * gw, c * p * p)


def unpatchify(
    tokens: Tensor, patch_size: int, image_size: int | tuple[int, int], channels: int
) -> Tensor:
    """Tokens (b, N, c * p * p) -> images (b, c, H, W); the exact inverse of :func:`patchify`."""
    H, W = _size_pair(image_size)
    p, c = patch_size, channels
    gh, gw = patch_grid((H, W), p)
    n_expected = gh * gw
    if tokens.dim() != 3 or tokens.shape[1] != n_expected or tokens.shape[2] != c * p * p:
        raise ValueError(
            f"unpatchify expects tokens of shape (B, {n_expected}, {c * p * p}) for a "
            f"{c}x{H}x{W} image in {p}x{p} patches, got {tuple(tokens.shape)}"
        )
    b = tokens.shape[0]
    x = tokens.reshape(b, gh, gw, c, p, p)
    x = x.permute(0, 3, 1, 4, 2, 5)  # (b, c, H/p, py, W/p, px)
    return x.reshape(b, c, H, W)


def patchify_video(videos: Tensor, patch_size: int) -> Tensor:
    """Videos (b, t, c, H, W) -> tokens (b, t * N, c * p * p), frame-major."""
    if videos.dim() != 5:
        raise ValueError(f"patchify_video expects videos of shape (B, T, C, H, W), got {tuple(videos.shape)}")
    b, t = videos.shape[:2]
    tokens = patchify(videos.reshape(b * t, *videos.shape[2:]), patch_size)  # (b t, N, c p p)
    return tokens.reshape(b, t * tokens.shape[1], tokens.shape[2])


def unpatchify_video(
    tokens: Tensor, patch_size: int, image_size: int | tuple[int, int], channels: int, frames: int
) -> Tensor:
    """Tokens (b, t * N, c * p * p) -> videos (b, t, c, H, W); the inverse of :func:`patchify_video`."""
    gh, gw = patch_grid(image_size, patch_size)
    n_expected, d_expected = frames * gh * gw, channels * patch_size**2
    if tokens.dim() != 3 or tokens.shape[1] != n_expected or tokens.shape[2] != d_expected:
        raise ValueError(
            f"unpatchify_video expects tokens of shape (B, {n_expected}, {d_expected}) for {frames} frames of "
            f"{channels}x{gh * patch_size}x{gw * patch_size} in {patch_size}x{patch_size} patches, "
            f"got {tuple(tokens.shape)}"
        )
    b = tokens.shape[0]
    images = unpatchify(tokens.reshape(b * frames, gh * gw, d_expected), patch_size, image_size, channels)
    return images.reshape(b, frames, *images.shape[1:])
