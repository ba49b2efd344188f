"""ByteTrack behaviour on synthetic, deterministic scenes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from fakes.fake_plugins import declared_problems
from videodag_service.plugins.bytetrack import PLUGIN
from videodag_service.plugins.bytetrack.matching import iou_matrix
from videodag_service.plugins.bytetrack.tracker import ByteTrackConfig, ByteTracker
from videodag_service.plugins.detections import Detections

WIDTH, HEIGHT = 40.0, 100.0


def _box(x1: float, y1: float, width: float = WIDTH, height: float = HEIGHT) -> list[float]:
    return [x1, y1, x1 + width, y1 + height]


def _frame(boxes: Sequence[Sequence[float]], scores: Sequence[float] | None = None,
           labels: Sequence[str] | None = None) -> Detections:
    scores = [0.9] * len(boxes) if scores is None else scores
    labels = ["person"] * len(boxes) if labels is None else labels
    return Detections.from_lists(boxes, scores, labels)


def _id_near(tracks: Detections, box: Sequence[float], min_iou: float = 0.5) -> int | None:
    """The id of the track output overlapping `box` best, if it overlaps enough."""
    if len(tracks) == 0:
        return None
    overlap = iou_matrix(tracks.xyxy, np.asarray([box]))[:, 0]
    best = int(np.argmax(overlap))
    return int(tracks.track_ids[best]) if overlap[best] >= min_iou else None


def test_ids_stay_stable_for_objects_moving_linearly() -> None:
    tracker = ByteTracker()
    starts = np.array([[0.0, 0.0], [300.0, 50.0], [600.0, 400.0]])
    velocities = np.array([[3.0, 1.0], [-2.0, 2.5], [0.0, -4.0]])
    ids_of_object: dict[int, set[int]] = {0: set(), 1: set(), 2: set()}
    for step in range(100):
        positions = starts + step * velocities
        tracks = tracker.update(_frame([_box(x, y) for x, y in positions]))
        assert len(tracks) == 3
        assert len(set(tracks.track_ids.tolist())) == 3
        for index, (x, y) in enumerate(positions):
            ids_of_object[index].add(_id_near(tracks, _box(x, y), min_iou=0.9))
    assert ids_of_object == {0: {1}, 1: {2}, 2: {3}}


def test_crossing_objects_keep_their_ids() -> None:
    tracker = ByteTracker()
    seen: dict[str, list[int | None]] = {"rightward": [], "leftward": []}
    for step in range(60):
        rightward = _box(100.0 + 6 * step, 200.0)
        leftward = _box(460.0 - 6 * step, 215.0)
        tracks = tracker.update(_frame([rightward, leftward]))
        seen["rightward"].append(_id_near(tracks, rightward, min_iou=0.8))
        seen["leftward"].append(_id_near(tracks, leftward, min_iou=0.8))
    # They overlap almost fully around step 30, and end on the other side with their ids.
    assert set(seen["rightward"]) == {1}
    assert set(seen["leftward"]) == {2}


def _occlusion_run(config: ByteTrackConfig, weak_frames: int) -> list[int | None]:
    """An object seen confidently, then weakly (score 0.3) while partly hidden, then confidently again."""
    tracker = ByteTracker(config)
    ids: list[int | None] = []
    for step in range(10 + weak_frames + 10):
        box = _box(50.0 + 2 * step, 80.0)
        weak = 10 <= step < 10 + weak_frames
        tracks = tracker.update(_frame([box], [0.3 if weak else 0.9]))
        ids.append(_id_near(tracks, box))
    return ids


def test_low_score_detections_keep_a_track_alive() -> None:
    config = ByteTrackConfig(track_buffer=5)
    ids = _occlusion_run(config, weak_frames=12)
    assert ids == [1] * len(ids)


def test_without_the_low_score_association_the_track_is_lost() -> None:
    # Same scene with the weak boxes below track_low_thresh: only high-score association is left.
    config = ByteTrackConfig(track_buffer=5, track_low_thresh=0.35)
    ids = _occlusion_run(config, weak_frames=12)
    assert ids[:10] == [1] * 10
    assert ids[10:22] == [None] * 12
    # Gone longer than the buffer: back with a new id (shown from its second frame).
    assert ids[22] is None
    assert ids[23:] == [2] * 9


@pytest.mark.parametrize(
    ("track_buffer", "frame_rate", "gap", "same_id"),
    [
        (10, 30, 1, True),
        (10, 30, 10, True),
        (10, 30, 11, False),
        (10, 30, 25, False),
        (10, 15, 5, True),  # the buffer is counted at 30 fps: 10 frames at 30 fps is 5 at 15 fps
        (10, 15, 6, False),
        (10, 60, 20, True),
        (10, 60, 21, False),
    ],
)
def test_lost_track_comes_back_with_its_id_only_within_the_buffer(track_buffer: int, frame_rate: int,
                                                                   gap: int, same_id: bool) -> None:
    tracker = ByteTracker(ByteTrackConfig(track_buffer=track_buffer, frame_rate=frame_rate))
    visible_before = 15
    ids: list[int | None] = []
    for step in range(visible_before + gap + 5):
        box = _box(30.0 + 3 * step, 60.0 + step)
        hidden = visible_before <= step < visible_before + gap
        tracks = tracker.update(_frame([] if hidden else [box]))
        if hidden:
            assert len(tracks) == 0
        else:
            ids.append(_id_near(tracks, box))
    assert ids[:visible_before] == [1] * visible_before
    after = ids[visible_before:]
    if same_id:
        assert after == [1] * 5
    else:
        # A new track: unconfirmed on its first frame, then a fresh id.
        assert after[0] is None
        assert after[1:] == [2] * 4


def _late_fast_entrant(config: ByteTrackConfig) -> list[int | None]:
    """A second object enters on the 5th frame and moves 24 px (60% of its width) per frame."""
    tracker = ByteTracker(config)
    ids: list[int | None] = []
    for step in range(30):
        boxes = [_box(600.0, 300.0)]  # a still object, there from the first frame
        entrant = _box(10.0 + 24 * (step - 4), 120.0)
        if step >= 4:
            boxes.append(entrant)
        tracks = tracker.update(_frame(boxes))
        if step >= 4:
            ids.append(_id_near(tracks, entrant))
    return ids


def test_a_new_object_moving_far_between_frames_is_confirmed_under_a_looser_confirm_threshold() -> None:
    # IoU 0.25 between its boxes: the reference's fixed confirmation (IoU 0.3) drops it every
    # frame and starts it again, so it is never reported.
    assert _late_fast_entrant(ByteTrackConfig(match_thresh=0.9, fuse_score=False)) == [None] * 26
    loose = _late_fast_entrant(ByteTrackConfig(match_thresh=0.9, confirm_match_thresh=0.9, fuse_score=False))
    assert loose == [None] + [2] * 25  # shown from its second frame, with one id


def test_new_tracks_need_new_track_thresh() -> None:
    tracker = ByteTracker()  # high 0.5, new 0.6
    for _ in range(20):
        tracks = tracker.update(_frame([_box(10.0, 10.0), _box(300.0, 10.0)], [0.55, 0.65]))
    assert tracks.track_ids.tolist() == [1]
    assert _id_near(tracks, _box(300.0, 10.0)) == 1

    lenient = ByteTracker(ByteTrackConfig(new_track_thresh=0.5))
    tracks = lenient.update(_frame([_box(10.0, 10.0), _box(300.0, 10.0)], [0.55, 0.65]))
    assert sorted(tracks.track_ids.tolist()) == [1, 2]


def test_tracks_born_after_the_first_frame_show_once_confirmed() -> None:
    tracker = ByteTracker()
    assert len(tracker.update(_frame([_box(0.0, 0.0)]))) == 1  # first frame: shown at once
    # A one-frame false positive is never shown, and its id is spent, as in the reference.
    tracks = tracker.update(_frame([_box(0.0, 0.0), _box(400.0, 0.0)]))
    assert tracks.track_ids.tolist() == [1]
    tracks = tracker.update(_frame([_box(0.0, 0.0)]))
    assert tracks.track_ids.tolist() == [1]
    # The unconfirmed track was dropped: a box at the same place later starts over, with a new id,
    # and appears from its second frame on.
    assert tracker.update(_frame([_box(0.0, 0.0), _box(400.0, 0.0)])).track_ids.tolist() == [1]
    assert tracker.update(_frame([_box(0.0, 0.0), _box(400.0, 0.0)])).track_ids.tolist() == [1, 3]


def test_low_score_detections_never_start_tracks() -> None:
    tracker = ByteTracker()
    for _ in range(10):
        assert len(tracker.update(_frame([_box(10.0, 10.0)], [0.4]))) == 0


def test_two_trackers_are_independent() -> None:
    def scene(step: int) -> Detections:
        return _frame([_box(10.0 + 4 * step, 20.0), _box(300.0, 20.0 + 3 * step)])

    alone = ByteTracker()
    expected = [alone.update(scene(step)) for step in range(30)]

    first, second = ByteTracker(), ByteTracker()
    for step in range(10):  # the first tracker runs ahead and spends ids on another scene
        first.update(_frame([_box(500.0 + 10 * step, 400.0)]))
    for step in range(30):
        first.update(_frame([]))
        tracks = second.update(scene(step))
        assert tracks.track_ids.tolist() == expected[step].track_ids.tolist()
        np.testing.assert_array_equal(tracks.xyxy, expected[step].xyxy)
    assert expected[0].track_ids.tolist() == [1, 2]


def test_output_boxes_are_the_filtered_states() -> None:
    rng = np.random.default_rng(7)
    tracker = ByteTracker()
    true_box = np.array(_box(200.0, 150.0))
    detected_errors, tracked_errors = [], []
    for step in range(80):
        noisy = true_box + rng.normal(0.0, 3.0, size=4)
        tracks = tracker.update(_frame([noisy.tolist()]))
        if step == 0:
            np.testing.assert_allclose(tracks.xyxy[0], noisy, atol=1e-3)  # nothing to filter yet
        elif step >= 20:
            detected_errors.append(np.abs(noisy - true_box).mean())
            tracked_errors.append(np.abs(tracks.xyxy[0] - true_box).mean())
    assert np.mean(tracked_errors) < 0.7 * np.mean(detected_errors)


def test_boxes_stay_within_the_frame_the_detections_were_found_in() -> None:
    """A walker leaving at the right edge: the detector's boxes stop at the edge, the filter's
    velocity carries its state past it; reported boxes stay pixel boxes of the frame."""
    frame_width, frame_height = 320, 240
    for frame_size, may_leave in ((None, True), ((frame_width, frame_height), False)):
        tracker = ByteTracker()
        right_edges = []
        for step in range(40):
            x1 = min(200.0 + 8 * step, frame_width - 12.0)
            box = [x1, 100.0, min(x1 + WIDTH, frame_width), 100.0 + HEIGHT]
            tracks = tracker.update(Detections.from_lists([box], [0.9], ["person"], frame_size=frame_size))
            assert tracks.frame_size == frame_size
            right_edges += tracks.xyxy[:, 2].tolist()
            assert np.all(tracks.xyxy >= 0.0)
        assert (max(right_edges) > frame_width) is may_leave


def test_scores_and_labels_come_from_the_matched_detection() -> None:
    tracker = ByteTracker()
    tracker.update(_frame([_box(0.0, 0.0)], [0.9], ["person"]))
    tracks = tracker.update(_frame([_box(1.0, 0.0)], [0.3], ["pedestrian"]))
    assert tracks.labels == ("pedestrian",)
    assert tracks.scores.tolist() == pytest.approx([0.3])


def test_labels_are_tracked_together_unless_per_label() -> None:
    def run(per_label: bool) -> list[list[int]]:
        tracker = ByteTracker(ByteTrackConfig(per_label=per_label))
        result = []
        for step in range(6):
            label = "person" if step < 3 else "cyclist"
            result.append(tracker.update(_frame([_box(10.0 + step, 10.0)], [0.9], [label])).track_ids.tolist())
        return result

    assert run(per_label=False) == [[1]] * 6
    # The person track cannot take the cyclist box: a new track starts (shown from its second frame).
    assert run(per_label=True) == [[1], [1], [1], [], [2], [2]]


def test_a_younger_duplicate_of_a_lost_track_is_dropped() -> None:
    # Object A walks right and vanishes; its lost track keeps drifting right. Object B stands
    # ahead of it. When A's prediction lands on B, the two tracks cover the same box and the
    # older one (A) is kept, as the reference does; B's detection then revives A.
    tracker = ByteTracker()
    for step in range(20):
        tracker.update(_frame([_box(5.0 * step, 100.0)]))
    standing = _box(180.0, 100.0)
    ids = [tracker.update(_frame([standing])).track_ids.tolist() for _ in range(25)]
    assert ids[0] == []  # B unconfirmed on its first frame
    switch = ids.index([1])
    assert switch > 1
    assert ids[1:switch] in ([[2]] * (switch - 1), [[2]] * (switch - 2) + [[]])
    assert ids[switch:] == [[1]] * (25 - switch)


def test_degenerate_boxes_are_ignored() -> None:
    tracker = ByteTracker()
    tracks = tracker.update(
        _frame([[10.0, 10.0, 10.0, 50.0], [0.0, 0.0, 20.0, 0.0], [np.nan, 0.0, 5.0, 5.0], _box(100.0, 100.0)])
    )
    assert tracks.track_ids.tolist() == [1]
    assert np.all(np.isfinite(tracks.xyxy))


def test_empty_frames() -> None:
    tracker = ByteTracker()
    tracks = tracker.update(Detections())
    assert len(tracks) == 0 and tracks.track_ids is not None and tracks.track_ids.dtype == np.int64


@pytest.mark.parametrize(
    "overrides",
    [
        {"track_high_thresh": 1.5},
        {"match_thresh": -0.1},
        {"confirm_match_thresh": 1.1},
        {"track_buffer": -1},
        {"frame_rate": 0},
    ],
)
def test_the_track_tool_declares_the_range_of_each_value(overrides: dict[str, float]) -> None:
    tool = PLUGIN.tool("track")
    assert tool is not None
    assert len(declared_problems(tool, **overrides)) == 1


def test_config_rejects_a_low_threshold_above_the_high_one() -> None:
    with pytest.raises(ValueError, match=r"track_low_thresh \(0.6\) must not exceed track_high_thresh \(0.5\)"):
        ByteTrackConfig(track_low_thresh=0.6, track_high_thresh=0.5)


@pytest.mark.parametrize("fused", [True, False])
def test_fused_scores_let_a_confident_box_win_a_contested_track(fused: bool) -> None:
    tracker = ByteTracker(ByteTrackConfig(fuse_score=fused))
    for _ in range(5):
        tracker.update(_frame([_box(100.0, 100.0)]))
    confident = _box(108.0, 100.0)  # IoU 0.67 with the track, score 0.95
    doubtful = _box(96.0, 100.0)  # IoU 0.82 with the track, score 0.6
    tracks = tracker.update(_frame([confident, doubtful], [0.95, 0.6]))
    followed = confident if fused else doubtful
    assert _id_near(tracks, followed, min_iou=0.85) == 1
    assert tracks.scores.tolist() == pytest.approx([0.95 if fused else 0.6])


def test_a_lost_track_keeps_its_last_size() -> None:
    # An object approaching the camera grows, then is hidden and stands still. The lost track's
    # prediction stops growing (the reference zeroes its height velocity), so it is found again.
    def centred(height: float) -> list[float]:
        return _box(300.0 - 0.2 * height, 300.0 - 0.5 * height, width=0.4 * height, height=height)

    tracker = ByteTracker(ByteTrackConfig(match_thresh=0.5))
    for step in range(20):
        last_seen = centred(100.0 + 10 * step)
        tracker.update(_frame([last_seen]))
    for _ in range(20):
        tracker.update(_frame([]))
    assert tracker.update(_frame([last_seen])).track_ids.tolist() == [1]
