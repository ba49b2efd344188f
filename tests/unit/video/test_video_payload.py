"""The per-frame payload: read-only, and the JPEG encoded only when someone reads it."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import pytest

from fakes.fake_dag import DEFAULT_PIPELINE, RecordingDagService
from videodag_service.video import VideoFilePipelineService
from videodag_service.video import payload as payload_module
from videodag_service.video.payload import FramePayload


@pytest.fixture
def encode_counter(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts real encodes: the real encoder still runs."""
    encoded: list[int] = []
    real_encode = payload_module.encode_image

    def counting_encode(image: np.ndarray) -> bytes:
        encoded.append(image.shape[0])
        return real_encode(image)

    monkeypatch.setattr(payload_module, "encode_image", counting_encode)
    return encoded


def _gradient_image() -> np.ndarray:
    ramp = np.linspace(0, 255, 64, dtype=np.uint8)
    return np.dstack([np.tile(ramp, (48, 1))] * 3)


def test_keys_and_values() -> None:
    image = _gradient_image()
    payload = FramePayload(7, 0.28, image)
    assert isinstance(payload, Mapping)
    assert list(payload) == ["frame_index", "timestamp", "image", "image_bytes"]
    assert payload["frame_index"] == 7 and payload["timestamp"] == 0.28
    assert payload["image"].base is image, "the very array, seen read only"
    assert "image_bytes" in payload and "label" not in payload
    with pytest.raises(KeyError):
        payload["label"]


def test_the_payload_is_read_only() -> None:
    payload = FramePayload(0, 0.0, _gradient_image())
    with pytest.raises(TypeError):
        payload["frame_index"] = 3  # type: ignore[index]


def test_image_bytes_is_a_jpeg_of_the_frame_encoded_once(encode_counter: list[int]) -> None:
    image = _gradient_image()
    payload = FramePayload(0, 0.0, image)
    assert not payload.image_bytes_computed and encode_counter == []
    first = payload["image_bytes"]
    assert payload["image_bytes"] is first
    assert encode_counter == [48]
    assert first[:3] == b"\xff\xd8\xff", "JPEG magic"
    decoded = cv2.imdecode(np.frombuffer(first, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.shape == image.shape
    assert np.abs(decoded.astype(int) - image).mean() < 2.0


def test_concurrent_readers_share_one_encode(encode_counter: list[int]) -> None:
    payload = FramePayload(0, 0.0, np.random.default_rng(1).integers(0, 255, (480, 640, 3), np.uint8))
    barrier = threading.Barrier(4)
    seen: list[bytes] = []

    def read() -> None:
        barrier.wait()
        seen.append(payload["image_bytes"])

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(encode_counter) == 1
    assert len({id(value) for value in seen}) == 1


def test_a_pipeline_that_ignores_image_bytes_never_encodes(
    sample_clip: Path, encode_counter: list[int]
) -> None:
    service = VideoFilePipelineService(RecordingDagService())
    results = service.run_on_file(DEFAULT_PIPELINE, sample_clip, {"max_frames": 20})
    assert len(results) == 20
    assert encode_counter == []


def test_a_pipeline_that_reads_image_bytes_encodes_each_frame_once(
    sample_clip: Path, encode_counter: list[int]
) -> None:
    dag = RecordingDagService(read_image_bytes=True)
    results = VideoFilePipelineService(dag, frame_stride=10).run_on_file(DEFAULT_PIPELINE, sample_clip)
    assert [item["frame_index"] for item in results] == list(range(0, 120, 10))
    assert encode_counter == [576] * 12
    assert all(item["result"]["image_bytes_length"] > 1000 for item in results)


def test_nodes_get_the_image_read_only_and_the_callers_array_stays_writable() -> None:
    image = np.zeros((4, 6, 3), np.uint8)
    payload = FramePayload(0, 0.0, image)
    with pytest.raises(ValueError, match="read-only"):
        payload["image"][0, 0] = 255
    image[0, 0] = 255  # the caller's own array
    assert payload["image"][0, 0].tolist() == [255, 255, 255], "a view of it, not a copy"
