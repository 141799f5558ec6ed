"""A depthwise convolution over the (frame, row, column) grid of image and video tokens (DESIGN.md §5).

Why: a scan is local in its own order only. In the frame-major order of a 4 x 4-code clip, the code that
frame t + 1 takes over when the digit moves by one code in each axis lies 16 +- 4 +- 1 positions back, and
in the space-major order 8 x (4 +- 1) +- 1 positions away: too far for the mixer's 4-tap conv, so the SSM
state has to carry it. The motion probe (``experiments/video-coherence``) found that failure: the
moving-digits models copy frame t to frame t + 4 but do not move the digit one place from t to t + 1.
VMamba (Liu et al., arXiv 2401.10166) gives its 2-D scans a depthwise 2-D conv for the same reason,
locality in the grid rather than in the scan order; there the conv sits inside the mixer, here it is a
3-D conv placed as a residual before each block, so that any backbone kind can take it.

``backbone.grid_conv = k`` adds one before every block, as a pre-norm residual whose weights start at
zero, so that a new network computes what it would without it. Off (0) by default: it did not teach the move
(moving digits at 16 px, 27 min on 2 CPU threads: frame t + 1 is frame t moved in 15.0% of frames with k = 3,
24.6% without, by the motion probe of experiments/video-coherence).
"""

from __future__ import annotations

from torch import Tensor, nn

#: One grid segment as a block sees it: the positions of its cells in the block's order (frame-major,
#: with the row pads, the last ``row_pad`` columns and rows of each frame) and the grid's (frames, rows, cols).
GridCells = tuple[Tensor, tuple[int, int, int]]


class GridConv(nn.Module):
    """``x + conv3d(norm(x))`` on the grid positions of ``x``, every other position unchanged.

    Args:
        d_model: channels (one depthwise filter each).
        kernel_size: odd extent in frames, rows and columns (3 = the 3 x 3 neighbourhood one frame
            back, the same frame and one frame ahead).
    """

    def __init__(self, d_model: int, kernel_size: int) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"GridConv: kernel_size must be odd and >= 1, got {kernel_size}")
        self.norm = nn.RMSNorm(d_model, elementwise_affine=False, eps=1e-6)
        self.conv = nn.Conv3d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor, grids: list[GridCells]) -> Tensor:
        """(b, l, d) -> (b, l, d); ``grids`` as :meth:`mdm.nn.backbone.Backbone.grid_cells` gives them."""
        for positions, (frames, rows, cols) in grids:
            cells = self.norm(x.index_select(1, positions))  # (b, n, d), frame-major
            b, n, d = cells.shape
            volume = cells.transpose(1, 2).reshape(b, d, frames, rows, cols)
            delta = self.conv(volume).reshape(b, d, n).transpose(1, 2)
            x = x.index_add(1, positions, delta.to(x.dtype))
        return x
