"""Checks on the frames plugins receive, shared so every detector refuses bad input alike."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def bgr_image(value: Any) -> npt.NDArray[np.uint8]:
    """`value` if it is an (H, W, 3) uint8 BGR frame; a TypeError naming what arrived otherwise."""
    if not isinstance(value, np.ndarray) or value.ndim != 3 or value.shape[2] != 3 or value.dtype != np.uint8:
        described = getattr(value, "shape", type(value).__name__)
        raise TypeError(f"input 'image' must be an (H, W, 3) uint8 BGR array, got {described}")
    return value
