"""The grid convolution (mdm.nn.grid_conv): a dense reference, order independence, zero start, reach, config."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from mdm.config import BackboneConfig, ConfigError, load_config
from mdm.nn.backbone import Backbone
from mdm.nn.grid_conv import GridConv
from mdm.nn.layout import SegmentSpec
from mdm.nn.scan import inverse_permutation

FRAMES, ROWS, COLS = 3, 4, 4
SEGMENTS = [SegmentSpec.video(FRAMES, ROWS, COLS), SegmentSpec.text(8)]


def tiny(**overrides) -> BackboneConfig:
    return dataclasses.replace(load_config("tiny").backbone, **overrides)


def randomised(conv: GridConv) -> GridConv:
    with torch.no_grad():
        conv.conv.weight.normal_()
        conv.conv.bias.normal_()
    return conv


def test_matches_a_dense_conv3d_on_the_grid_and_leaves_other_positions():
    torch.manual_seed(0)
    conv = randomised(GridConv(8, 3)).double()
    x = torch.randn(2, 5 + FRAMES * ROWS * COLS + 4, 8, dtype=torch.float64)
    positions = torch.arange(5, 5 + FRAMES * ROWS * COLS)
    out = conv(x, [(positions, (FRAMES, ROWS, COLS))])
    cells = F.rms_norm(x[:, positions], (8,), eps=1e-6).transpose(1, 2).reshape(2, 8, FRAMES, ROWS, COLS)
    expected = F.conv3d(cells, conv.conv.weight, conv.conv.bias, padding=1, groups=8)
    torch.testing.assert_close(out[:, positions] - x[:, positions], expected.reshape(2, 8, -1).transpose(1, 2))
    torch.testing.assert_close(out[:, :5], x[:, :5])
    torch.testing.assert_close(out[:, -4:], x[:, -4:])


def test_same_result_in_any_order_of_the_sequence():
    torch.manual_seed(1)
    conv = randomised(GridConv(8, 3))
    x = torch.randn(2, FRAMES * ROWS * COLS + 3, 8)
    canonical = torch.arange(FRAMES * ROWS * COLS)
    order = torch.randperm(x.shape[1])  # x_ordered = x[:, order]
    where = inverse_permutation(order)
    out = conv(x, [(canonical, (FRAMES, ROWS, COLS))])
    out_ordered = conv(x[:, order], [(where[canonical], (FRAMES, ROWS, COLS))])
    torch.testing.assert_close(out_ordered, out[:, order])


def test_a_new_backbone_with_grid_convs_computes_what_it_would_without():
    torch.manual_seed(0)
    plain = Backbone(tiny(kind="bimamba2", grid_pos_embed=True))
    gridded = Backbone(tiny(kind="bimamba2", grid_pos_embed=True, grid_conv=3))
    missing, unexpected = gridded.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("grid_convs.") for k in missing)
    layout = gridded.make_layout(SEGMENTS)
    n = layout.n_content
    inputs = (torch.randn(2, n, 32), torch.rand(2, n) * 999, torch.rand(2, layout.n_segments) * 999)
    with torch.no_grad():
        torch.testing.assert_close(gridded(*inputs, layout), plain(*inputs, layout))
        for conv in gridded.grid_convs:
            randomised(conv)
        assert not torch.allclose(gridded(*inputs, layout), plain(*inputs, layout))


@pytest.mark.parametrize("kind,long_skips", [("bimamba2", False), ("mamba2", True), ("transformer", False)])
def test_every_block_finds_each_grid_cell_in_the_order_it_reads(kind, long_skips):
    backbone = Backbone(tiny(kind=kind, scan_patterns="1234/12", long_skips=long_skips, row_pad=1, grid_conv=3))
    segments = [SegmentSpec.image(4, 4), SegmentSpec.video(FRAMES, ROWS, COLS), SegmentSpec.text(8)]
    layout = backbone.make_layout(segments, length=backbone.make_layout(segments).length + 3)
    switch = backbone.scan_switch(layout, torch.device("cpu"))
    grids = [seg for seg in layout.segments if seg.padded_grid is not None]
    assert len(grids) == 2
    for i in range(backbone.config.n_layers):
        cells = backbone.grid_cells(layout, i, torch.device("cpu"))
        assert [shape for _, shape in cells] == [(1, 5, 5), (FRAMES, ROWS + 1, COLS + 1)]
        for (positions, _), seg in zip(cells, grids):
            read = positions if switch is None else switch.orders[i][positions]  # canonical position of each
            assert torch.equal(read, seg.body)
    if switch is not None:
        assert any(not torch.equal(o, torch.arange(layout.length)) for o in switch.orders)  # non-vacuous


class _PassThrough(torch.nn.Module):
    """A block that returns its input: what is left of the backbone is its grid convolutions."""

    def forward(self, h, modulation, levels):
        return h


def test_the_grid_convs_compute_the_same_in_every_scan_order():
    torch.manual_seed(0)
    one_way = Backbone(tiny(scan_patterns="1/1", grid_conv=3))
    switching = Backbone(tiny(scan_patterns="1234/12", grid_conv=3))
    without = Backbone(tiny(scan_patterns="1/1"))
    for conv in one_way.grid_convs:
        randomised(conv)
    switching.load_state_dict(one_way.state_dict())
    without.load_state_dict(one_way.state_dict(), strict=False)
    for backbone in (one_way, switching, without):
        backbone.blocks = torch.nn.ModuleList(_PassThrough() for _ in backbone.blocks)
    layout = one_way.make_layout(SEGMENTS)
    n = layout.n_content
    inputs = (torch.randn(2, n, 32), torch.rand(2, n) * 999, torch.rand(2, layout.n_segments) * 999)
    with torch.no_grad():
        out = one_way(*inputs, layout)
        torch.testing.assert_close(switching(*inputs, layout), out)
        assert not torch.allclose(without(*inputs, layout), out)  # the convs are what computes it


@pytest.mark.parametrize("grid_conv", [0, 3])
def test_a_causal_scan_reaches_the_next_frame_only_through_the_grid_conv(grid_conv):
    """One forward-only block: the first clip token sees nothing after it, except its grid neighbours."""
    torch.manual_seed(0)
    backbone = Backbone(tiny(scan_patterns="1/1", n_layers=1, grid_conv=grid_conv))
    if grid_conv:
        randomised(backbone.grid_convs[0])
    layout = backbone.make_layout(SEGMENTS)
    n = layout.n_content
    content = torch.randn(1, n, 32, requires_grad=True)
    out = backbone(content, torch.rand(1, n) * 999, torch.rand(1, layout.n_segments) * 999, layout)
    (grad,) = torch.autograd.grad(out[0, 0].sum(), content)
    reached = grad[0].abs().amax(-1) > 0
    clip = reached[:FRAMES * ROWS * COLS].reshape(FRAMES, ROWS, COLS)
    neighbours = torch.zeros(FRAMES, ROWS, COLS, dtype=torch.bool)
    neighbours[:2, :2, :2] = True  # the 2 x 2 x 2 corner of the 3 x 3 x 3 kernel that lies inside the clip
    if grid_conv:
        assert torch.equal(clip, neighbours)
    else:
        assert clip.sum() == 1 and clip[0, 0, 0]
    assert not reached[FRAMES * ROWS * COLS:].any()  # the caption comes after the clip


@pytest.mark.parametrize("value", [-1, 2, 4])
def test_config_rejects_a_kernel_that_is_not_odd(value):
    with pytest.raises(ConfigError, match=r"backbone.grid_conv must be 0 \(off\) or an odd kernel size"):
        tiny(grid_conv=value)
