"""Scan switches (mdm.nn.scan): per-block permutations of the MDM sequence."""

import itertools

import pytest
import torch

from mdm.nn.layout import Modality, SegmentSpec, SequenceLayout
from mdm.nn.scan import (ScanPattern, ScanSwitch, block_patterns, inverse_permutation, parse_pattern_set,
                         permute_positions, scan_order)

ALL_PATTERNS = [ScanPattern(o, r, t) for o, r, t in itertools.product(("row", "col"), (False, True), (False, True))]
P11 = ScanPattern("row", False, False)  # image 1, text 1
P22 = ScanPattern("row", True, True)  # image 2, text 2
P31 = ScanPattern("col", False, False)
P42 = ScanPattern("col", True, True)

SEGMENT_LISTS = {
    "image4x4-text8": [SegmentSpec.image(4, 4), SegmentSpec.text(8)],
    "text5-image3x2": [SegmentSpec.text(5), SegmentSpec.image(3, 2)],
}


def make_layout(name: str, row_pad: int) -> SequenceLayout:
    segments = SEGMENT_LISTS[name]
    needed = SequenceLayout(segments, row_pad=row_pad).length
    return SequenceLayout(segments, length=needed + 3, row_pad=row_pad)  # 3 global pads


@pytest.fixture(params=[(name, rp) for name in SEGMENT_LISTS for rp in (0, 2)],
                ids=lambda p: f"{p[0]}-row_pad{p[1]}")
def layout(request) -> SequenceLayout:
    return make_layout(*request.param)


def segment(layout: SequenceLayout, modality: Modality):
    return next(s for s in layout.segments if s.spec.modality is modality)


def grid_position(layout: SequenceLayout, r: int, c: int) -> int:
    """Canonical position of image content (r, c): the padded grid is stored row-major."""
    seg = segment(layout, Modality.IMAGE)
    return int(seg.body[r * seg.padded_grid[1] + c])


def restrict(order: torch.Tensor, positions) -> list[int]:
    """The positions of ``positions`` in the order ``order`` visits them."""
    keep = set(int(p) for p in positions)
    return [int(p) for p in order if int(p) in keep]


def image_content(layout):
    seg = segment(layout, Modality.IMAGE)
    return seg.body[~seg.body_is_pad]


def text_content(layout):
    return segment(layout, Modality.TEXT).body


# --------------------------------------------------------------------------- permutations

@pytest.mark.parametrize("pattern", ALL_PATTERNS, ids=lambda p: f"{p.image_order}-rev{p.reverse}-trev{p.text_reverse}")
def test_every_order_is_a_permutation_and_inverts(layout, pattern):
    order = scan_order(layout, pattern)
    L = layout.length
    assert order.dtype == torch.long
    assert torch.equal(order.sort().values, torch.arange(L))
    inv = inverse_permutation(order)
    x = torch.randn(2, L, 3)
    assert torch.equal(x[:, order][:, inv], x)
    assert torch.equal(x[:, inv][:, order], x)
    assert torch.equal(order[inv], torch.arange(L))


def test_inverse_permutation_of_a_known_permutation():
    order = torch.tensor([2, 0, 3, 1])
    assert inverse_permutation(order).tolist() == [1, 3, 0, 2]


# --------------------------------------------------------------------------- image patterns

def test_pattern_1_visits_image_rows(layout):
    rows, cols = segment(layout, Modality.IMAGE).spec.grid
    expected = [grid_position(layout, r, c) for r in range(rows) for c in range(cols)]
    assert restrict(scan_order(layout, P11), image_content(layout)) == expected


def test_pattern_3_visits_image_columns(layout):
    rows, cols = segment(layout, Modality.IMAGE).spec.grid
    expected = [grid_position(layout, r, c) for c in range(cols) for r in range(rows)]
    assert restrict(scan_order(layout, P31), image_content(layout)) == expected


def test_reversed_patterns_are_exact_reverses(layout):
    assert torch.equal(scan_order(layout, P22), scan_order(layout, P11).flip(0))
    assert torch.equal(scan_order(layout, P42), scan_order(layout, P31).flip(0))
    # The reversal covers the whole sequence: CLS is read last and the global pads first.
    order2 = scan_order(layout, P22)
    assert int(order2[-1]) == layout.cls_position
    assert order2[:3].tolist() == layout.global_pad_positions.flip(0).tolist()


def test_forward_patterns_start_with_cls_and_end_with_pads(layout):
    for pattern in (P11, P31):
        order = scan_order(layout, pattern)
        assert int(order[0]) == layout.cls_position
        assert order[-3:].tolist() == layout.global_pad_positions.tolist()


@pytest.mark.parametrize("pattern", [P11, P31], ids=["rows", "cols"])
def test_row_pads_separate_consecutive_lines(pattern):
    """With row_pad, exactly row_pad pad tokens lie between the end of one image line and the next."""
    for name in SEGMENT_LISTS:
        for row_pad in (0, 2):
            layout = make_layout(name, row_pad)
            seg = segment(layout, Modality.IMAGE)
            rows, cols = seg.spec.grid
            pads = set(seg.body[seg.body_is_pad].tolist())
            assert len(pads) == (rows + row_pad) * (cols + row_pad) - rows * cols
            order = scan_order(layout, pattern).tolist()
            where = {p: i for i, p in enumerate(order)}
            lines = range(rows) if pattern is P11 else range(cols)
            n_line = cols if pattern is P11 else rows
            for k in lines[:-1]:
                last = grid_position(layout, k, n_line - 1) if pattern is P11 else grid_position(layout, n_line - 1, k)
                first = grid_position(layout, k + 1, 0) if pattern is P11 else grid_position(layout, 0, k + 1)
                between = order[where[last] + 1: where[first]]
                assert len(between) == row_pad
                assert set(between) <= pads


# --------------------------------------------------------------------------- text patterns

def test_text_patterns(layout):
    text = text_content(layout).tolist()
    assert restrict(scan_order(layout, ScanPattern("row", False, False)), text) == text
    assert restrict(scan_order(layout, ScanPattern("row", False, True)), text) == text[::-1]
    assert restrict(scan_order(layout, ScanPattern("col", True, True)), text) == text[::-1]
    # In a reversed block with text pattern 1 the text still reads forward.
    assert restrict(scan_order(layout, ScanPattern("row", True, False)), text) == text


def test_ablation_12_1_reverses_segments_but_not_text(layout):
    patterns = block_patterns("12/1", 2)
    assert [p.name for p in patterns] == ["1/1", "2/1"]
    text, image = text_content(layout).tolist(), image_content(layout).tolist()
    forward, backward = scan_order(layout, patterns[0]).tolist(), scan_order(layout, patterns[1]).tolist()
    assert restrict(torch.tensor(backward), text) == text  # text content forward in the reversed block
    rows, cols = segment(layout, Modality.IMAGE).spec.grid
    raster = [grid_position(layout, r, c) for r in range(rows) for c in range(cols)]
    assert restrict(torch.tensor(backward), image) == raster[::-1]  # image raster reversed
    # Segment order is reversed: whichever segment came first now comes last.
    text_first_fwd = forward.index(text[0]) < forward.index(image[0])
    text_first_bwd = backward.index(text[0]) < backward.index(image[0])
    assert text_first_fwd != text_first_bwd


def test_each_segment_stays_contiguous(layout):
    """A segment's begin/time/body/end are read together, so modality tokens frame it in every pattern."""
    for pattern in ALL_PATTERNS:
        order = scan_order(layout, pattern).tolist()
        for seg in layout.segments:
            members = {seg.begin, seg.time, seg.end, *seg.body.tolist()}
            idx = sorted(order.index(p) for p in members)
            assert idx[-1] - idx[0] + 1 == len(members)
            ends = {order[idx[0]], order[idx[-1]]}
            assert seg.begin in ends and seg.end in ends


# --------------------------------------------------------------------------- switches and block cycles

@pytest.mark.parametrize("spec, n_layers, mirror", [("1234/12", 4, False), ("1234/12", 8, True),
                                                    ("12/1", 3, False), ("1/1", 2, False)])
def test_scan_switch_transitions_reproduce_orders(layout, spec, n_layers, mirror):
    patterns = block_patterns(spec, n_layers, mirror=mirror)
    switch = ScanSwitch(layout, patterns)
    assert len(switch.transitions) == n_layers
    current = torch.arange(layout.length)  # canonical
    for k, step in enumerate(switch.transitions):
        if step is not None:
            current = current[step]
        assert torch.equal(current, switch.orders[k]), k
        assert torch.equal(switch.orders[k], scan_order(layout, patterns[k]))
    if switch.to_canonical is not None:
        current = current[switch.to_canonical]
    assert torch.equal(current, torch.arange(layout.length))
    # Hidden states follow the same gathers: data ends in canonical order.
    x = torch.randn(1, layout.length, 2)
    y = x
    for step in switch.transitions:
        y = y if step is None else y[:, step]
    if switch.to_canonical is not None:
        y = y[:, switch.to_canonical]
    assert torch.equal(y, x)


def test_identity_orders_need_no_gather(layout):
    switch = ScanSwitch(layout, block_patterns("1/1", 3))
    assert switch.transitions == [None, None, None]  # 1/1 is the canonical order
    assert switch.to_canonical is None


def test_block_patterns_cycle():
    assert [p.name for p in block_patterns("1234/12", 8)] == ["1/1", "2/2", "3/1", "4/2"] * 2
    assert [p.name for p in block_patterns("12/1", 3)] == ["1/1", "2/1", "1/1"]
    assert [p.name for p in block_patterns("13/12", 4)] == ["1/1", "3/2", "1/1", "3/2"]


@pytest.mark.parametrize("n_layers", [1, 4, 5, 8])
def test_block_patterns_mirror(n_layers):
    plain = block_patterns("1234/12", n_layers)
    mirrored = block_patterns("1234/12", n_layers, mirror=True)
    for k in range(n_layers):
        assert mirrored[k] == mirrored[n_layers - 1 - k]
    half = (n_layers + 1) // 2
    assert mirrored[:half] == plain[:half]  # the first half follows the cycle


def test_parse_pattern_set_accepts_valid_sets():
    assert parse_pattern_set("1234/12") == ((1, 2, 3, 4), (1, 2))
    assert parse_pattern_set("12/1") == ((1, 2), (1,))
    assert parse_pattern_set("42/21") == ((4, 2), (2, 1))


@pytest.mark.parametrize("spec", ["5/1", "12", "1/3", "11/1", "", "ab/1", "1/1/1", "/1", "1/"])
def test_parse_pattern_set_rejects_with_the_valid_patterns(spec):
    listing = (r"1-4 \(1 rows, 2 rows reversed, 3 columns, 4 columns reversed\).*"
               r"1-2 \(1 forward, 2 reversed\)")
    with pytest.raises(ValueError, match=listing):
        parse_pattern_set(spec)
    with pytest.raises(ValueError, match="unknown scan pattern set"):
        block_patterns(spec, 4)


def test_permute_positions_matches_indexing_values_and_gradients():
    torch.manual_seed(0)
    perm = torch.randperm(11)
    x = torch.randn(3, 11, 5, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, 11, 5, dtype=torch.float64)
    (permute_positions(x, perm, inverse_permutation(perm)) * weights).sum().backward()
    fast = x.grad.clone()
    x.grad = None
    (x[:, perm] * weights).sum().backward()
    assert torch.equal(permute_positions(x, perm, inverse_permutation(perm)), x[:, perm])
    assert torch.equal(fast, x.grad)
    assert torch.autograd.gradcheck(lambda t: permute_positions(t, perm, inverse_permutation(perm)), (x,))


# --------------------------------------------------------------------------- video (DiM, DESIGN.md §5)

VIDEO = [SegmentSpec.text(3), SegmentSpec.video(3, 2, 4)]  # 3 frames of 2 x 4 codes after a caption


def video_position(layout: SequenceLayout, f: int, r: int, c: int) -> int:
    """Canonical position of code (frame f, row r, column c): frame after frame, each padded grid row-major."""
    seg = segment(layout, Modality.IMAGE)
    rows, cols = seg.padded_grid
    return int(seg.body[f * rows * cols + r * cols + c])


@pytest.mark.parametrize("row_pad", [0, 1])
@pytest.mark.parametrize("pattern", ALL_PATTERNS, ids=lambda p: f"{p.image_order}-rev{p.reverse}-trev{p.text_reverse}")
def test_video_orders_are_permutations_that_invert(row_pad, pattern):
    layout = SequenceLayout(VIDEO, length=SequenceLayout(VIDEO, row_pad=row_pad).length + 2, row_pad=row_pad)
    order = scan_order(layout, pattern)
    assert torch.equal(order.sort().values, torch.arange(layout.length))  # every position read exactly once
    assert torch.equal(order[inverse_permutation(order)], torch.arange(layout.length))


def test_video_pattern_1_is_frame_major_and_3_space_major():
    layout = SequenceLayout(VIDEO)
    T, (rows, cols) = 3, (2, 4)
    content = segment(layout, Modality.IMAGE).body
    frame_major = [video_position(layout, f, r, c) for f in range(T) for r in range(rows) for c in range(cols)]
    space_major = [video_position(layout, f, r, c) for r in range(rows) for c in range(cols) for f in range(T)]
    assert restrict(scan_order(layout, P11), content) == frame_major
    assert restrict(scan_order(layout, P31), content) == space_major
    # 2 and 4 are their exact reverses, over the whole sequence
    assert torch.equal(scan_order(layout, P22), scan_order(layout, P11).flip(0))
    assert torch.equal(scan_order(layout, P42), scan_order(layout, P31).flip(0))


def test_video_scan_switch_returns_to_canonical_order():
    layout = SequenceLayout(VIDEO, row_pad=1)
    switch = ScanSwitch(layout, block_patterns("1234/12", 4))
    x = torch.randn(1, layout.length, 2)
    y = x
    for step, inverse in zip(switch.transitions, switch.transition_inverses):
        if step is not None:
            y = permute_positions(y, step, inverse)
    assert torch.equal(y, x[:, switch.orders[-1]])
    assert torch.equal(permute_positions(y, switch.to_canonical, switch.orders[-1]), x)
