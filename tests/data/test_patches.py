"""Continuous image patches (mdm.data.patches): exact inverses, token order, clear errors."""

import pytest
import torch

from mdm.data.patches import patch_grid, patchify, patchify_video, unpatchify, unpatchify_video


@pytest.mark.parametrize("shape, p", [((2, 3, 8, 8), 2), ((1, 1, 12, 8), 4), ((3, 4, 6, 9), 3), ((1, 3, 5, 5), 1)])
def test_round_trip_is_exact(shape, p):
    images = torch.randn(*shape, dtype=torch.float64)
    b, c, H, W = shape
    tokens = patchify(images, p)
    assert tokens.shape == (b, (H // p) * (W // p), c * p * p)
    assert torch.equal(unpatchify(tokens, p, (H, W), c), images)
    assert torch.equal(patchify(unpatchify(tokens, p, (H, W), c), p), tokens)


def test_token_order_is_row_major_and_features_channel_major():
    images = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(1, 2, 4, 6)
    tokens = patchify(images, 2)  # grid 2 x 3
    # token 1 is grid row 0, column 1: pixels x = 2..3, y = 0..1; features ordered (c, py, px)
    expected = torch.stack([images[0, c, 0:2, 2:4].flatten() for c in range(2)]).flatten()
    assert torch.equal(tokens[0, 1], expected)
    assert torch.equal(tokens[0, 3, :4], images[0, 0, 2:4, 0:2].flatten())  # row 1, column 0


def test_linear_patch_embedding_equals_strided_conv():
    images, weight = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.randn(5, 3, 2, 2, dtype=torch.float64)
    conv = torch.nn.functional.conv2d(images, weight, stride=2).flatten(2).transpose(1, 2)
    torch.testing.assert_close(patchify(images, 2) @ weight.reshape(5, -1).T, conv)


def test_square_image_size_as_int():
    tokens = patchify(torch.rand(1, 3, 8, 8), 4)
    assert unpatchify(tokens, 4, 8, 3).shape == (1, 3, 8, 8)


def test_video_round_trip_is_exact_and_frame_major():
    videos = torch.randn(2, 3, 1, 8, 12, dtype=torch.float64)
    tokens = patchify_video(videos, 4)
    assert tokens.shape == (2, 3 * 6, 16)
    assert torch.equal(tokens[:, 6:12], patchify(videos[:, 1], 4))  # frame 1's patches follow frame 0's
    assert torch.equal(unpatchify_video(tokens, 4, (8, 12), 1, 3), videos)


def test_patch_grid():
    assert patch_grid(32, 4) == (8, 8) and patch_grid((8, 12), 2) == (4, 6)
    with pytest.raises(ValueError, match="not divisible"):
        patch_grid((8, 10), 4)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"image size 10x8 is not divisible by patch_size 4"):
        patchify(torch.rand(1, 3, 10, 8), 4)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        patchify(torch.rand(3, 8, 8), 2)
    with pytest.raises(ValueError, match="positive int"):
        patchify(torch.rand(1, 3, 8, 8), 0)
    with pytest.raises(ValueError, match=r"image size 9x9 is not divisible by patch_size 2"):
        unpatchify(torch.rand(1, 16, 12), 2, 9, 3)
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        patchify_video(torch.rand(1, 3, 8, 8), 2)
    with pytest.raises(ValueError, match=r"expects tokens of shape \(B, 32, 12\) for 2 frames of 3x8x8"):
        unpatchify_video(torch.rand(1, 16, 12), 2, 8, 3, 2)
    with pytest.raises(ValueError, match=r"expects tokens of shape \(B, 16, 12\)"):
        unpatchify(torch.rand(1, 16, 4), 2, 8, 3)  # channel count mismatch
    with pytest.raises(ValueError, match=r"expects tokens of shape \(B, 4, 48\) for a 3x8x8 image in 4x4"):
        unpatchify(torch.rand(1, 16, 12), 4, 8, 3)  # tokens made with patch size 2
