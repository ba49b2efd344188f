"""The per-frame payload handed to the DAG service: a read-only mapping with a lazy encoded image.

Most pipelines only look at the BGR array; encoding every frame to JPEG would cost more
than decoding it. `image_bytes` is therefore computed the first time a node reads it, once
per frame even if several nodes read it at the same time from different threads.

Because it is computed on access, copying the payload (`dict(payload)`, `{**payload}`,
`payload.items()`) encodes the frame: read keys one by one instead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

import cv2
import numpy as np

FRAME_INDEX = "frame_index"
TIMESTAMP = "timestamp"
IMAGE = "image"
IMAGE_BYTES = "image_bytes"
PAYLOAD_KEYS: tuple[str, ...] = (FRAME_INDEX, TIMESTAMP, IMAGE, IMAGE_BYTES)

# 95 keeps text and small faces legible for OCR-like consumers; PNG would be lossless but
# several times slower to encode and larger.
JPEG_QUALITY = 95


def encode_image(image: np.ndarray) -> bytes:
    """Encode a BGR frame as JPEG (quality `JPEG_QUALITY`)."""
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a frame of shape {image.shape} as JPEG")
    return encoded.tobytes()


class FramePayload(Mapping[str, Any]):
    """One frame as the DAG sees it.

    Keys: "frame_index" (int, index in the source video before sampling), "timestamp"
    (float seconds from the start), "image" (BGR uint8 array, H x W x 3, a fresh array per
    frame, read only), "image_bytes" (the frame as JPEG bytes, encoded on first access).
    """

    __slots__ = ("_encode_lock", "_image_bytes", "frame_index", "image", "timestamp")

    def __init__(self, frame_index: int, timestamp: float, image: np.ndarray) -> None:
        self.frame_index = frame_index
        self.timestamp = timestamp
        # Every node of the frame reads this one array, and `image_bytes` is encoded from it when
        # first asked for: a node drawing on it in place would change what the others see. Read
        # only, such a node fails with numpy's "assignment destination is read-only" instead. A
        # view, so that the caller's own array stays writable.
        self.image = image.view()
        self.image.flags.writeable = False
        self._image_bytes: bytes | None = None
        self._encode_lock = threading.Lock()

    @property
    def image_bytes(self) -> bytes:
        with self._encode_lock:
            if self._image_bytes is None:
                self._image_bytes = encode_image(self.image)
            return self._image_bytes

    @property
    def image_bytes_computed(self) -> bool:
        """Whether a reader has asked for `image_bytes` yet (for tests and metrics)."""
        return self._image_bytes is not None

    def __getitem__(self, key: str) -> Any:
        if key == FRAME_INDEX:
            return self.frame_index
        if key == TIMESTAMP:
            return self.timestamp
        if key == IMAGE:
            return self.image
        if key == IMAGE_BYTES:
            return self.image_bytes
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return key in PAYLOAD_KEYS

    def __iter__(self) -> Iterator[str]:
        return iter(PAYLOAD_KEYS)

    def __len__(self) -> int:
        return len(PAYLOAD_KEYS)

    def __repr__(self) -> str:
        height, width = self.image.shape[:2]
        return (
            f"FramePayload(frame_index={self.frame_index}, timestamp={self.timestamp:.3f}, "
            f"image={width}x{height})"
        )
