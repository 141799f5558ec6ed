"""The MDM token sequence (Fig. 2 d, e of arXiv 2510.13253; DESIGN.md §1.3).

One sequence holds every modality::

    [CLS c] { [BEGIN_g] [TIME t_k] segment_k [END_g] }* [PAD ...]

* ``CLS`` embeds the class label (a null class for guidance and for no class);
* each segment ``k`` of modality ``g`` is wrapped in that modality's learned
  begin/end tokens and preceded by a token embedding its own noise level ``t_k``;
* a video segment (DiM, DESIGN.md §5) is an image segment of ``frames`` such
  grids, frame after frame in canonical order (one BEGIN/TIME/END for the clip);
* an image segment is a grid of rows x cols content tokens, optionally padded
  with ``row_pad`` learned tokens after every row and every column (DiM's
  row-end pads: a raster sweep then never runs from one line straight into the
  next); the padded grid is stored row-major;
* global ``PAD`` tokens complete the sequence to a fixed length ("token completion").

A :class:`SequenceLayout` is computed once per segment structure and shared by a
batch; it holds index tensors only, no parameters. "Canonical order" below is the
order just described; scan switches (:mod:`mdm.nn.scan`) permute it per block.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum

import torch
from torch import Tensor


class Modality(str, Enum):
    IMAGE = "image"
    TEXT = "text"


class Special(IntEnum):
    """Rows of the learned special-token table (``CLS`` and ``TIME`` are embedded otherwise)."""

    PAD = 0
    BEGIN_IMAGE = 1
    END_IMAGE = 2
    BEGIN_TEXT = 3
    END_TEXT = 4
    ROW_PAD = 5


N_SPECIAL = len(Special)
_BEGIN = {Modality.IMAGE: Special.BEGIN_IMAGE, Modality.TEXT: Special.BEGIN_TEXT}
_END = {Modality.IMAGE: Special.END_IMAGE, Modality.TEXT: Special.END_TEXT}


@dataclass(frozen=True)
class SegmentSpec:
    """One segment: ``Modality.TEXT`` with a ``length``, or ``Modality.IMAGE`` with a ``grid`` (rows, cols)
    per frame and a number of ``frames`` (1 = an image, more = a video clip of that many grids)."""

    modality: Modality
    length: int | None = None
    grid: tuple[int, int] | None = None
    frames: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "modality", Modality(self.modality))
        if self.modality is Modality.TEXT:
            if self.length is None or self.length < 1 or self.grid is not None:
                raise ValueError(f"text segment needs a length >= 1 and no grid, got length={self.length}, "
                                 f"grid={self.grid}")
        else:
            if self.grid is None or len(self.grid) != 2 or min(self.grid) < 1 or self.length is not None:
                raise ValueError(f"image segment needs a grid (rows, cols) >= 1 and no length, got "
                                 f"grid={self.grid}, length={self.length}")
            object.__setattr__(self, "grid", (int(self.grid[0]), int(self.grid[1])))
        if not isinstance(self.frames, int) or self.frames < 1 or (self.frames > 1 and self.grid is None):
            raise ValueError(f"frames must be an int >= 1, and > 1 only for an image segment (a video); got "
                             f"frames={self.frames!r} for a {self.modality.value} segment")

    @property
    def n_content(self) -> int:
        return self.length if self.grid is None else self.frames * self.grid[0] * self.grid[1]

    @property
    def is_video(self) -> bool:
        return self.frames > 1

    @staticmethod
    def text(length: int) -> "SegmentSpec":
        return SegmentSpec(Modality.TEXT, length=length)

    @staticmethod
    def image(rows: int, cols: int) -> "SegmentSpec":
        return SegmentSpec(Modality.IMAGE, grid=(rows, cols))

    @staticmethod
    def video(frames: int, rows: int, cols: int) -> "SegmentSpec":
        return SegmentSpec(Modality.IMAGE, grid=(rows, cols), frames=frames)


@dataclass(frozen=True)
class SegmentPositions:
    """Where one segment lives in the canonical sequence."""

    spec: SegmentSpec
    begin: int  # position of BEGIN_g
    time: int  # position of its TIME token
    body: Tensor  # positions of the (padded) body, row-major for images, frame after frame for videos
    body_is_pad: Tensor  # bool, True at row pads
    end: int  # position of END_g
    content: slice  # this segment's slice of the content tensor
    padded_grid: tuple[int, int] | None  # (rows + row_pad, cols + row_pad) per frame for images


class SequenceLayout:
    """Index maps of the canonical sequence for a list of segments.

    Args:
        segments: the segments in order.
        length: total length after token completion; ``None`` = no global pads.
        row_pad: learned pad tokens after every image row and column (0 = off).

    Attributes:
        length: L.  n_content: number of content positions (all segments, in order).
        content_positions: (n_content,) their positions.
        special_positions, special_ids: positions filled from the special table and its rows.
        cls_position: 0.  time_positions: (n_segments,).
        segment_of: (L,) the segment a position belongs to, -1 for CLS and global pads.
        grid_coords: (L, 3) (frame, row, col) of each image/video body position, -1 elsewhere.
    """

    def __init__(self, segments: list[SegmentSpec] | tuple[SegmentSpec, ...], length: int | None = None,
                 row_pad: int = 0) -> None:
        if not segments:
            raise ValueError("SequenceLayout needs at least one segment")
        if row_pad < 0:
            raise ValueError(f"row_pad must be >= 0, got {row_pad}")
        self.segments_spec = tuple(segments)
        self.row_pad = row_pad
        pos = 1  # 0 is CLS
        content_pos: list[Tensor] = []
        special_pos: list[int] = []
        special_ids: list[int] = []
        segment_of: list[int] = [-1]
        self.segments: list[SegmentPositions] = []
        n_content = 0
        for k, spec in enumerate(self.segments_spec):
            begin, time = pos, pos + 1
            pos += 2
            padded_grid = None
            if spec.grid is None:
                body_is_pad = torch.zeros(spec.length, dtype=torch.bool)
            else:
                rows, cols = spec.grid
                padded_grid = (rows + row_pad, cols + row_pad)
                grid = torch.ones(padded_grid, dtype=torch.bool)
                grid[:rows, :cols] = False
                body_is_pad = grid.flatten().repeat(spec.frames)
            body = torch.arange(pos, pos + body_is_pad.numel())
            pos += body_is_pad.numel()
            end = pos
            pos += 1
            content_pos.append(body[~body_is_pad])
            special_pos += [begin, end] + body[body_is_pad].tolist()
            special_ids += [_BEGIN[spec.modality], _END[spec.modality]] + [Special.ROW_PAD] * int(body_is_pad.sum())
            segment_of += [k] * (end - begin + 1)
            self.segments.append(SegmentPositions(spec, begin, time, body, body_is_pad, end,
                                                  slice(n_content, n_content + spec.n_content), padded_grid))
            n_content += spec.n_content
        used = pos
        if length is None:
            length = used
        if length < used:
            raise ValueError(f"the segments need {used} positions (with CLS, begin/time/end and row pads) "
                             f"but the layout length is {length}")
        special_pos += list(range(used, length))
        special_ids += [Special.PAD] * (length - used)
        segment_of += [-1] * (length - used)
        self.length = length
        self.n_content = n_content
        self.content_positions = torch.cat(content_pos)
        self.special_positions = torch.tensor(special_pos, dtype=torch.long)
        self.special_ids = torch.tensor(special_ids, dtype=torch.long)
        self.cls_position = 0
        self.time_positions = torch.tensor([s.time for s in self.segments], dtype=torch.long)
        self.segment_of = torch.tensor(segment_of, dtype=torch.long)
        self.global_pad_positions = torch.arange(used, length)
        # (frame, row, col) of every image/video body position in its padded grid; -1 elsewhere.
        self.grid_coords = torch.full((length, 3), -1, dtype=torch.long)
        for seg in self.segments:
            if seg.padded_grid is not None:
                rows, cols = seg.padded_grid
                f, r, c = torch.meshgrid(torch.arange(seg.spec.frames), torch.arange(rows), torch.arange(cols),
                                         indexing="ij")
                self.grid_coords[seg.body] = torch.stack([f, r, c], dim=-1).reshape(-1, 3)

    @property
    def key(self) -> tuple:
        """Hashable identity: two layouts with the same key have the same index maps."""
        return self.segments_spec, self.length, self.row_pad

    @property
    def n_segments(self) -> int:
        return len(self.segments)

    def position_times(self, content_t: Tensor, segment_t: Tensor) -> Tensor:
        """Noise level of every position (b, L): content positions their own, the rest of a
        segment its segment's, CLS and global pads 0."""
        b = content_t.shape[0]
        dtype = torch.promote_types(torch.promote_types(content_t.dtype, segment_t.dtype), torch.float32)
        t = torch.zeros(b, self.length, dtype=dtype, device=content_t.device)
        inside = self.segment_of >= 0
        t[:, inside] = segment_t[:, self.segment_of[inside]].to(dtype)
        t[:, self.content_positions] = content_t.to(t.dtype)
        return t

    def __repr__(self) -> str:
        segs = ", ".join(f"video{(s.frames, *s.grid)}" if s.is_video else f"{s.modality.value}{s.grid or s.length}"
                         for s in self.segments_spec)
        return f"SequenceLayout([{segs}], length={self.length}, row_pad={self.row_pad})"
