"""A spy around `cv2.VideoCapture` that counts grabs, retrieves, seeks and releases."""

from __future__ import annotations

from typing import Any

import cv2
import pytest

_RealVideoCapture = cv2.VideoCapture


class CaptureSpy:
    """Delegates to a real capture and counts the calls the video layer makes."""

    def __init__(self, *args: Any) -> None:
        self._capture = _RealVideoCapture(*args)
        self.grabs = 0
        self.retrieves = 0
        self.seeks = 0
        self.released = False

    def grab(self) -> bool:
        self.grabs += 1
        return self._capture.grab()

    def retrieve(self, *args: Any) -> Any:
        self.retrieves += 1
        return self._capture.retrieve(*args)

    def read(self, *args: Any) -> Any:
        raise AssertionError("the video layer grabs and retrieves; read() would decode skipped frames")

    def set(self, prop: int, value: float) -> bool:
        if prop in (cv2.CAP_PROP_POS_FRAMES, cv2.CAP_PROP_POS_MSEC):
            self.seeks += 1
        return self._capture.set(prop, value)

    def release(self) -> None:
        self.released = True
        self._capture.release()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._capture, name)


def spy_on_captures(monkeypatch: pytest.MonkeyPatch) -> list[CaptureSpy]:
    """Replace cv2.VideoCapture for the test; returns the list every new capture is added to."""
    spies: list[CaptureSpy] = []

    def create(*args: Any) -> CaptureSpy:
        spy = CaptureSpy(*args)
        spies.append(spy)
        return spy

    monkeypatch.setattr(cv2, "VideoCapture", create)
    return spies
