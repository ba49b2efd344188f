"""The `rapidocr` tools on rendered text: detect finds the lines, recognise reads them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from typing import Any

import cv2
import numpy as np
import pytest

from fakes.fake_plugins import declared_problems
from videodag_service.dag.plugin import ToolInstance
from videodag_service.plugins import ocr
from videodag_service.plugins.detections import Detections
from videodag_service.plugins.ocr import PLUGIN

# (text, bottom-left origin, font, scale, thickness, BGR colour)
RENDERED_LINES: tuple[tuple[str, tuple[int, int], int, float, int, tuple[int, int, int]], ...] = (
    ("VIDEODAG 2026", (100, 200), cv2.FONT_HERSHEY_SIMPLEX, 3.0, 6, (0, 0, 0)),
    ("HELLO WORLD", (300, 500), cv2.FONT_HERSHEY_DUPLEX, 2.5, 5, (20, 20, 120)),
)


def _open(tool_name: str, **overrides: Any) -> ToolInstance:
    tool = PLUGIN.tool(tool_name)
    assert tool is not None
    params = {param.name: param.default for param in tool.params} | overrides
    return tool.open(params)


def _noisy_white_frame(seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(0, 60, (720, 1280, 3))
    return (255 - noise).astype(np.uint8)


def _ink_box(text: str, origin: tuple[int, int], font: int, scale: float, thickness: int) -> tuple[int, ...]:
    """The box around the pixels a line actually inks, found by rendering it alone."""
    canvas = np.zeros((720, 1280), dtype=np.uint8)
    cv2.putText(canvas, text, origin, font, scale, 255, thickness, cv2.LINE_AA)
    x, y, width, height = cv2.boundingRect(cv2.findNonZero(canvas))
    return (x, y, x + width, y + height)


def _covers(region: np.ndarray, box: tuple[int, ...], slack: float = 6.0) -> bool:
    return bool(
        region[0] <= box[0] + slack
        and region[1] <= box[1] + slack
        and region[2] >= box[2] - slack
        and region[3] >= box[3] - slack
    )


def _iou(box: np.ndarray, other: tuple[int, ...]) -> float:
    x1, y1 = max(box[0], other[0]), max(box[1], other[1])
    x2, y2 = min(box[2], other[2]), min(box[3], other[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = (box[2] - box[0]) * (box[3] - box[1]) + (other[2] - other[0]) * (other[3] - other[1])
    return float(inter / (area - inter))


@pytest.fixture(scope="module")
def text_frame() -> np.ndarray:
    frame = _noisy_white_frame(seed=0)
    for text, origin, font, scale, thickness, colour in RENDERED_LINES:
        cv2.putText(frame, text, origin, font, scale, colour, thickness, cv2.LINE_AA)
    frame.flags.writeable = False  # as the service hands frames to nodes
    return frame


@pytest.fixture(scope="module")
def expected_boxes() -> list[tuple[int, ...]]:
    return [
        _ink_box(text, origin, font, scale, thickness)
        for text, origin, font, scale, thickness, _ in RENDERED_LINES
    ]


@pytest.fixture(scope="module")
def detected(text_frame: np.ndarray) -> Detections:
    regions = _open("detect_text").process({"image": text_frame})["regions"]
    assert isinstance(regions, Detections)
    return regions


def test_detect_finds_each_line_in_reading_order(
    detected: Detections, expected_boxes: list[tuple[int, ...]]
) -> None:
    assert len(detected) == len(RENDERED_LINES)
    assert detected.labels == ("text",) * len(RENDERED_LINES)
    for region, box in zip(detected.xyxy, expected_boxes, strict=True):
        assert _covers(region, box), (region, box)
        assert _iou(region, box) > 0.6, (region, box)
    assert np.all((detected.scores > 0.5) & (detected.scores <= 1.0))


def test_recognize_reads_the_detected_lines(text_frame: np.ndarray, detected: Detections) -> None:
    texts = _open("recognize_text").process({"image": text_frame, "regions": detected})["texts"]

    assert texts.texts is not None
    assert [text.upper() for text in texts.texts] == [line[0] for line in RENDERED_LINES]
    assert np.array_equal(texts.xyxy, detected.xyxy)
    assert np.all(texts.scores > 0.9)


def test_recognize_reads_regions_from_another_node_and_keeps_track_ids(
    text_frame: np.ndarray, expected_boxes: list[tuple[int, ...]]
) -> None:
    regions = Detections.from_lists(expected_boxes[::-1], [1.0, 1.0], ["text", "text"], track_ids=[7, 3])

    texts = _open("recognize_text").process({"image": text_frame, "regions": regions})["texts"]

    assert texts.texts is not None
    assert [text.upper() for text in texts.texts] == ["HELLO WORLD", "VIDEODAG 2026"]
    assert texts.track_ids is not None and texts.track_ids.tolist() == [7, 3]


def _frame_without_text(kind: str) -> np.ndarray:
    rng = np.random.default_rng(1)
    if kind == "noisy_white":
        return _noisy_white_frame(seed=1)
    if kind == "gradient":
        gradient = np.tile(np.linspace(30, 220, 1280), (720, 1)).astype(np.uint8)
        return cv2.cvtColor(gradient, cv2.COLOR_GRAY2BGR)
    blurred = cv2.GaussianBlur(rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8), (0, 0), 12)
    low, high = float(blurred.min()), float(blurred.max())
    return ((blurred - low) * (255.0 / (high - low))).astype(np.uint8)  # soft colour blobs, full range


@pytest.mark.parametrize("kind", ["noisy_white", "gradient", "colour_blobs"])
def test_frame_without_text_has_no_regions_and_nothing_to_read(kind: str) -> None:
    frame = _frame_without_text(kind)

    regions = _open("detect_text").process({"image": frame})["regions"]
    texts = _open("recognize_text").process({"image": frame, "regions": regions})["texts"]

    assert len(regions) == 0
    assert len(texts) == 0 and texts.texts == ()


def test_region_with_nothing_legible_is_dropped(text_frame: np.ndarray) -> None:
    blank = Detections.from_lists([[900, 600, 1200, 680]], [1.0], ["text"])

    texts = _open("recognize_text").process({"image": text_frame, "regions": blank})["texts"]

    assert len(texts) == 0


def test_min_confidence_drops_readings_below_it(text_frame: np.ndarray, detected: Detections) -> None:
    texts = _open("recognize_text", min_confidence=1.0).process({"image": text_frame, "regions": detected})[
        "texts"
    ]

    assert len(texts) == 0


def test_min_score_and_max_regions_limit_detection(text_frame: np.ndarray, detected: Detections) -> None:
    strict = _open("detect_text", min_score=0.99).process({"image": text_frame})["regions"]
    best_only = _open("detect_text", max_regions=1).process({"image": text_frame})["regions"]

    assert len(strict) == 0
    assert len(best_only) == 1
    assert best_only.scores[0] == pytest.approx(float(detected.scores.max()))


def test_small_max_side_len_still_finds_large_text(
    text_frame: np.ndarray, expected_boxes: list[tuple[int, ...]]
) -> None:
    regions = _open("detect_text", max_side_len=640).process({"image": text_frame})["regions"]

    assert len(regions) == len(RENDERED_LINES)
    for region, box in zip(regions.xyxy, expected_boxes, strict=True):
        assert _iou(region, box) > 0.6


def test_instances_share_one_set_of_models_safely_across_threads(
    text_frame: np.ndarray, detected: Detections
) -> None:
    readers = [_open("recognize_text") for _ in range(2)]
    assert ocr.shared_models() is ocr.shared_models()
    expected = readers[0].process({"image": text_frame, "regions": detected})["texts"].texts
    results: list[tuple[str, ...] | None] = []
    errors: list[BaseException] = []

    def read(reader: ToolInstance) -> None:
        try:
            for _ in range(3):
                results.append(reader.process({"image": text_frame, "regions": detected})["texts"].texts)
        except BaseException as error:  # surfaced below; a thread cannot fail the test itself
            errors.append(error)

    threads = [threading.Thread(target=read, args=(reader,)) for reader in readers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    assert results == [expected] * 6


def test_recognize_rejects_regions_that_are_not_detections(text_frame: np.ndarray) -> None:
    with pytest.raises(TypeError, match="Detections"):
        _open("recognize_text").process({"image": text_frame, "regions": [[0, 0, 10, 10]]})


@pytest.mark.parametrize(
    ("tool_name", "overrides"),
    [
        ("detect_text", {"min_score": 1.5}),
        ("detect_text", {"max_side_len": 16}),
        ("detect_text", {"max_regions": 0}),
        ("recognize_text", {"min_confidence": -0.1}),
        ("recognize_text", {"padding": 3.0}),
    ],
)
def test_declares_the_range_of_each_parameter(tool_name: str, overrides: dict[str, Any]) -> None:
    tool = PLUGIN.tool(tool_name)
    assert tool is not None
    assert len(declared_problems(tool, **overrides)) == 1


def test_works_with_the_network_switched_off() -> None:
    """A fresh process whose sockets all fail loads the bundled models and reads text."""
    script = textwrap.dedent(
        """
        import socket

        def no_network(*args, **kwargs):
            raise OSError("network is switched off for this test")

        socket.socket.connect = no_network
        socket.create_connection = no_network
        socket.getaddrinfo = no_network

        import cv2
        import numpy as np
        from videodag_service.plugins.ocr import PLUGIN

        frame = np.full((360, 640, 3), 255, dtype=np.uint8)
        cv2.putText(frame, "OFFLINE", (60, 200), cv2.FONT_HERSHEY_SIMPLEX, 3.0, (0, 0, 0), 6)
        detect, recognize = PLUGIN.tool("detect_text"), PLUGIN.tool("recognize_text")
        detector = detect.open({p.name: p.default for p in detect.params})
        reader = recognize.open({p.name: p.default for p in recognize.params})
        regions = detector.process({"image": frame})["regions"]
        print(reader.process({"image": frame, "regions": regions})["texts"].texts)
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().upper() == "('OFFLINE',)"


def test_rapidocr_warnings_go_through_the_log_and_its_model_loads_are_not_said(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """rapidocr wrote on a coloured handler of its own, past the log and its JSON lines."""
    import logging

    ocr.shared_models()
    rapidocr_log = logging.getLogger("RapidOCR")
    assert rapidocr_log.handlers == [] and rapidocr_log.propagate
    capfd.readouterr()
    with caplog.at_level(logging.INFO):  # the root's: its own level stays WARNING
        rapidocr_log.info("model loaded")
        rapidocr_log.warning("a region it could not read")
    assert [(record.levelname, record.getMessage()) for record in caplog.records if record.name == "RapidOCR"] == [
        ("WARNING", "a region it could not read")]
    assert "a region it could not read" not in capfd.readouterr().err
