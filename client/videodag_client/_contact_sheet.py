"""A contact sheet: thumbnails of frames spread over a video (or over its frames with results), tiled.

Apart from the renderer, which offers each frame it writes to a `FrameSampler` and tiles what
it kept at the end.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from videodag_client._drawing import draw_label
from videodag_client._render_error import RenderError


class FrameSampler:
    """Keeps `wanted` frames, as thumbnails, spread evenly over the frames the sheet should show.

    With `candidates` (the frames with results), the picks are made up front among them, evenly
    by rank with the first and the last included (all of them when there are fewer): spreading
    over the span of their indices instead would, with sparse results (`--stride 5`), mostly
    pick frames with nothing drawn. Without candidates any frame may be shown: with a known
    `last` frame the picks are made up front too; without it (the container does not say),
    every `stride`-th frame is kept, and when twice the wanted number are kept, every other one
    is dropped and the stride doubles, so memory stays bounded.
    """

    def __init__(
        self, wanted: int, thumbnail_width: int, candidates: Iterable[int] | None = None, last: int | None = None
    ) -> None:
        self.wanted = wanted
        self.thumbnail_width = thumbnail_width
        self.picks: set[int] | None = None
        if wanted > 0 and candidates is not None:
            self.picks = _spread(sorted(candidates), wanted)
        elif wanted > 0 and last is not None:
            self.picks = _spread(range(last + 1), wanted)
        self.stride = 1
        self.kept: list[tuple[int, np.ndarray]] = []

    def offer(self, frame_index: int, frame: np.ndarray) -> None:
        if self.wanted <= 0:
            return
        if self.picks is not None:
            if frame_index in self.picks:
                self.kept.append((frame_index, self._thumbnail(frame)))
            return
        if frame_index % self.stride:
            return
        self.kept.append((frame_index, self._thumbnail(frame)))
        if len(self.kept) >= 2 * self.wanted:
            self.kept = [entry for entry in self.kept if entry[0] % (2 * self.stride) == 0]
            self.stride *= 2

    def _thumbnail(self, frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        size = (self.thumbnail_width, max(1, round(height * self.thumbnail_width / width)))
        return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)

    def sample(self) -> list[tuple[int, np.ndarray]]:
        if len(self.kept) <= self.wanted:
            return list(self.kept)
        positions = np.linspace(0, len(self.kept) - 1, self.wanted).round().astype(int)
        return [self.kept[p] for p in positions]


def _spread(indices: Sequence[int], wanted: int) -> set[int]:
    """`wanted` of the sorted `indices`, evenly by position, the first and the last included; all if fewer."""
    if len(indices) <= wanted:
        return set(indices)
    return {indices[p] for p in np.linspace(0, len(indices) - 1, wanted).round().astype(int)}


def contact_sheet(thumbnails: list[tuple[int, np.ndarray]], columns: int = 4) -> np.ndarray:
    """Tile captioned thumbnails (all the same size) in rows, on a dark background."""
    if not thumbnails:
        raise RenderError("no frames to put on a contact sheet")
    tile_height, tile_width = thumbnails[0][1].shape[:2]
    columns = min(columns, len(thumbnails))
    rows = math.ceil(len(thumbnails) / columns)
    gap = 4
    sheet = np.full((rows * (tile_height + gap) + gap, columns * (tile_width + gap) + gap, 3), 32, np.uint8)
    for position, (frame_index, thumbnail) in enumerate(thumbnails):
        top = gap + (position // columns) * (tile_height + gap)
        left = gap + (position % columns) * (tile_width + gap)
        sheet[top:top + tile_height, left:left + tile_width] = thumbnail
        draw_label(sheet, f"frame {frame_index}", (left, top), (32, 32, 32), 0.45)
    return sheet


def sample_video(path: str, wanted: int, thumbnail_width: int, frames: int) -> list[tuple[int, np.ndarray]]:
    """`wanted` thumbnails spread over the first `frames` frames of the video at `path`: the sheet
    of a video none of whose results fell on a frame it has."""
    sampler = FrameSampler(wanted, thumbnail_width, last=frames - 1)
    capture = cv2.VideoCapture(path)
    try:
        for index in range(frames):
            ok, frame = capture.read()
            if not ok:
                break
            sampler.offer(index, frame)
    finally:
        capture.release()
    return sampler.sample()
