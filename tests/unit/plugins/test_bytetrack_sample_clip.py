"""ByteTrack on real footage: the sample clip, with OpenCV's HOG people detector as the detector.

HOG is a stand-in that ships with OpenCV, so this test needs no model download and does not
depend on the project's own detector plugins.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from videodag_service.plugins.bytetrack import PLUGIN
from videodag_service.plugins.bytetrack.matching import iou_matrix
from videodag_service.plugins.detections import Detections

SAMPLE_CLIP = Path("/work/shared/media/pedestrians_120.mp4")
FRAMES = 60


@pytest.fixture(scope="module")
def clip_detections() -> tuple[list[Detections], int]:
    """HOG detections for the first frames of the clip, and the clip's frame rate."""
    detector = cv2.HOGDescriptor()
    detector.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    capture = cv2.VideoCapture(str(SAMPLE_CLIP))
    assert capture.isOpened()
    try:
        frame_rate = round(capture.get(cv2.CAP_PROP_FPS))
        frames: list[Detections] = []
        for _ in range(FRAMES):
            ok, image = capture.read()
            assert ok
            rects, margins = detector.detectMultiScale(image, winStride=(8, 8), padding=(8, 8), scale=1.1)
            boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in rects], dtype=np.float32).reshape(-1, 4)
            # HOG gives SVM margins (>= 0 here); squash them monotonically into [0, 1) scores.
            scores = (1.0 - np.exp(-np.asarray(margins, dtype=np.float64).reshape(-1))).astype(np.float32)
            frames.append(Detections(xyxy=boxes, scores=scores, labels=("person",) * len(boxes)))
    finally:
        capture.release()
    assert sum(len(frame) for frame in frames) > FRAMES  # the clip does show people
    return frames, frame_rate


def _run(frames: list[Detections], frame_rate: int) -> list[Detections]:
    tool = PLUGIN.tool("track")
    assert tool is not None
    params = {param.name: param.default for param in tool.params} | {"frame_rate": frame_rate}
    instance = tool.open(params)
    try:
        return [instance.process({"detections": frame})["tracks"] for frame in frames]
    finally:
        instance.close()


def test_tracks_on_the_sample_clip_are_consistent(clip_detections: tuple[list[Detections], int]) -> None:
    frames, frame_rate = clip_detections
    tracks = _run(frames, frame_rate)

    shown = sum(len(frame) for frame in tracks)
    ids = {int(track_id) for frame in tracks for track_id in frame.track_ids}
    assert shown > 0
    # Tracking links detections over time: on average an id lives for several frames.
    assert shown >= 5 * len(ids)
    for detections, frame_tracks in zip(frames, tracks, strict=True):
        assert len(set(frame_tracks.track_ids.tolist())) == len(frame_tracks)
        if len(frame_tracks):
            # Every reported track was matched to a detection of this very frame.
            assert np.all(iou_matrix(frame_tracks.xyxy, detections.xyxy).max(axis=1) > 0.5)
    # An id that shows in two consecutive frames covers the same place in both: no teleporting ids.
    continued = 0
    for before, after in itertools.pairwise(tracks):
        same_id = before.track_ids[:, None] == after.track_ids[None, :]
        overlap = iou_matrix(before.xyxy, after.xyxy)
        assert np.all(overlap[same_id] > 0.3)
        continued += int(same_id.sum())
    assert continued > 0

    # A second run over the same detections gives the same ids: runs share no state.
    again = _run(frames, frame_rate)
    assert [frame.track_ids.tolist() for frame in again] == [frame.track_ids.tolist() for frame in tracks]
