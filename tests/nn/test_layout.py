"""The MDM sequence layout (mdm.nn.layout): index maps of [CLS] {[BEGIN][TIME] body [END]}* [PAD...]."""

import pytest
import torch

from mdm.nn.layout import Modality, SegmentSpec, SequenceLayout, Special


def layouts():
    segs_a = [SegmentSpec.image(4, 4), SegmentSpec.text(8)]
    segs_b = [SegmentSpec.text(5), SegmentSpec.image(3, 2), SegmentSpec.text(2)]
    for segs in (segs_a, segs_b):
        for row_pad in (0, 2):
            used = SequenceLayout(segs, row_pad=row_pad).length
            for extra in (0, 4):
                yield SequenceLayout(segs, length=used + extra, row_pad=row_pad)


LAYOUTS = list(layouts())


# --------------------------------------------------------------------------- SegmentSpec

@pytest.mark.parametrize("kwargs, pattern", [
    ({"modality": Modality.TEXT}, "text segment needs a length"),
    ({"modality": "text", "length": 0}, "text segment needs a length"),
    ({"modality": "text", "length": 3, "grid": (2, 2)}, "text segment needs a length >= 1 and no grid"),
    ({"modality": Modality.IMAGE}, "image segment needs a grid"),
    ({"modality": "image", "grid": (0, 3)}, "image segment needs a grid"),
    ({"modality": "image", "grid": (2, 2), "length": 4}, "image segment needs a grid .* and no length"),
    ({"modality": "image", "grid": (2, 2), "frames": 0}, "frames must be an int >= 1"),
    ({"modality": "text", "length": 3, "frames": 2}, "frames must be .* only for an image segment"),
])
def test_segment_spec_validation(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        SegmentSpec(**kwargs)


def test_segment_spec_unknown_modality():
    with pytest.raises(ValueError, match="audio"):
        SegmentSpec("audio", length=3)


def test_segment_spec_normalises():
    spec = SegmentSpec("image", grid=[3, 2])
    assert spec.modality is Modality.IMAGE and spec.grid == (3, 2) and spec.n_content == 6
    assert spec == SegmentSpec.image(3, 2)
    assert SegmentSpec.text(7).n_content == 7


def test_a_video_segment_is_frames_of_grids():
    spec = SegmentSpec.video(3, 2, 4)
    assert spec.modality is Modality.IMAGE and spec.is_video and spec.n_content == 24
    layout = SequenceLayout([spec], row_pad=1)
    seg = layout.segments[0]
    assert seg.padded_grid == (3, 5) and seg.body.numel() == 3 * 15 and int((~seg.body_is_pad).sum()) == 24
    assert layout.length == 1 + 3 + 45  # CLS, begin/time/end, 3 padded frames
    assert "video(3, 2, 4)" in repr(layout)


def test_grid_coords_name_frame_row_and_column():
    layout = SequenceLayout([SegmentSpec.video(2, 2, 3), SegmentSpec.text(4)], row_pad=1)
    seg = layout.segments[0]
    coords = layout.grid_coords[seg.body]  # the padded grid (3 x 4) of each frame, frame after frame
    assert coords.shape == (2 * 12, 3)
    assert coords[:, 0].tolist() == [0] * 12 + [1] * 12
    assert coords[:12, 1].tolist() == [0] * 4 + [1] * 4 + [2] * 4 and coords[:4, 2].tolist() == [0, 1, 2, 3]
    content = layout.grid_coords[layout.content_positions[:12]]  # content only: 2 x 3 per frame, pads skipped
    assert content[:6].tolist() == [[0, r, c] for r in range(2) for c in range(3)]
    outside = torch.ones(layout.length, dtype=torch.bool)
    outside[seg.body] = False
    assert (layout.grid_coords[outside] == -1).all()  # CLS, begin/time/end and the text


# --------------------------------------------------------------------------- SequenceLayout

def test_known_layout_positions():
    # [CLS] [BEGIN_I] [TIME] 3x3 padded grid [END_I] [BEGIN_T] [TIME] 3 text [END_T] [PAD] [PAD]
    layout = SequenceLayout([SegmentSpec.image(2, 2), SegmentSpec.text(3)], length=21, row_pad=1)
    image, text = layout.segments
    assert (image.begin, image.time, image.end) == (1, 2, 12)
    assert (text.begin, text.time, text.end) == (13, 14, 18)
    assert text.body.tolist() == [15, 16, 17]
    assert layout.content_positions.tolist() == [3, 4, 6, 7, 15, 16, 17]
    assert layout.time_positions.tolist() == [2, 14]
    assert layout.global_pad_positions.tolist() == [19, 20]
    specials = dict(zip(layout.special_positions.tolist(), layout.special_ids.tolist()))
    assert specials[1] == Special.BEGIN_IMAGE and specials[12] == Special.END_IMAGE
    assert specials[13] == Special.BEGIN_TEXT and specials[18] == Special.END_TEXT
    assert all(specials[p] == Special.ROW_PAD for p in (5, 8, 9, 10, 11))
    assert specials[19] == specials[20] == Special.PAD
    assert image.content == slice(0, 4) and text.content == slice(4, 7)


@pytest.mark.parametrize("layout", LAYOUTS, ids=repr)
def test_positions_partition_the_sequence(layout):
    content = layout.content_positions.tolist()
    special = layout.special_positions.tolist()
    time = layout.time_positions.tolist()
    assert len(content) == layout.n_content == sum(s.spec.n_content for s in layout.segments)
    assert not set(content) & set(special)
    everything = content + special + time + [layout.cls_position]
    assert sorted(everything) == list(range(layout.length))  # each position exactly once
    assert len(layout.special_ids) == len(special)
    assert layout.segment_of.shape == (layout.length,)
    assert layout.segment_of[layout.cls_position] == -1
    assert (layout.segment_of[layout.global_pad_positions] == -1).all()
    for k, seg in enumerate(layout.segments):
        assert (layout.segment_of[seg.begin: seg.end + 1] == k).all()
        # The content slice of each segment maps to its own body.
        assert set(layout.content_positions[seg.content].tolist()) == set(seg.body[~seg.body_is_pad].tolist())


@pytest.mark.parametrize("layout", LAYOUTS, ids=repr)
def test_position_times(layout):
    b = 3
    content_t = torch.rand(b, layout.n_content) * 1000 + 1  # never 0, so the checks below can tell
    segment_t = torch.rand(b, layout.n_segments) * 1000 + 1
    t = layout.position_times(content_t, segment_t)
    assert t.shape == (b, layout.length)
    assert torch.equal(t[:, layout.content_positions], content_t)
    for k, seg in enumerate(layout.segments):
        non_content = [seg.begin, seg.time, seg.end] + seg.body[seg.body_is_pad].tolist()
        assert (t[:, non_content] == segment_t[:, k: k + 1]).all()
    assert (t[:, layout.cls_position] == 0).all()
    assert (t[:, layout.global_pad_positions] == 0).all()


def test_length_shorter_than_needed_raises():
    segs = [SegmentSpec.image(4, 4), SegmentSpec.text(8)]
    used = SequenceLayout(segs).length
    assert used == 1 + (2 + 16 + 1) + (2 + 8 + 1)
    with pytest.raises(ValueError, match=f"need {used} positions .* layout length is {used - 1}"):
        SequenceLayout(segs, length=used - 1)


def test_layout_rejects_empty_and_negative_row_pad():
    with pytest.raises(ValueError, match="at least one segment"):
        SequenceLayout([])
    with pytest.raises(ValueError, match="row_pad must be >= 0"):
        SequenceLayout([SegmentSpec.text(3)], row_pad=-1)


def test_layout_key_identifies_index_maps():
    segs = [SegmentSpec.text(3), SegmentSpec.image(2, 2)]
    assert SequenceLayout(segs, length=20).key == SequenceLayout(list(segs), length=20).key
    assert SequenceLayout(segs, length=20).key != SequenceLayout(segs, length=21).key
    assert SequenceLayout(segs, length=20).key != SequenceLayout(segs, length=20, row_pad=1).key


def test_position_times_keeps_fractional_content_times_with_integer_segment_times():
    layout = SequenceLayout([SegmentSpec.text(3)])
    content_t = torch.tensor([[0.7, 1.5, 2.5]])
    t = layout.position_times(content_t, torch.tensor([[10]]))  # integer scheduler timesteps
    assert torch.equal(t[:, layout.content_positions], content_t)
