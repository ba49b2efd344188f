"""SSD anchor boxes, as the TF Object Detection API's `ssd_anchor_generator` lays them out.

The frozen graph computes its anchors with TensorFlow ops that OpenCV cannot run, so the
text graph stops at the box predictors and the anchors are rebuilt here. The settings are
those of the pedestrian model's training config; they were checked against the constants
of its `MultipleGridAnchorGenerator` nodes (scales 0.1/0.2/0.2 on the first layer, then
0.35 ... 0.95 with an interpolated extra scale, aspect ratios 1, 2, 1/2, 3, 1/3).

Anchors are (y_center, x_center, height, width) normalised to [0, 1] of the network input,
ordered like the predictors' outputs: row, then column, then anchor within a cell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class AnchorSettings:
    """The `ssd_anchor_generator` block of an SSD training config."""

    min_scale: float = 0.2
    max_scale: float = 0.95
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 0.3333)
    interpolated_scale_aspect_ratio: float = 1.0
    reduce_boxes_in_lowest_layer: bool = True
    # The lowest layer's extra small square box (TF hard-codes 0.1 when reducing).
    lowest_layer_box_scale: float = 0.1


def _layer_scales(settings: AnchorSettings, layer_count: int) -> list[float]:
    """Scales evenly spaced from min to max, plus 1.0 to interpolate the last layer's extra box."""
    if layer_count == 1:
        return [settings.min_scale, 1.0]
    step = (settings.max_scale - settings.min_scale) / (layer_count - 1)
    return [settings.min_scale + step * i for i in range(layer_count)] + [1.0]


def box_specs(settings: AnchorSettings, layer_count: int) -> list[list[tuple[float, float]]]:
    """(scale, aspect ratio) of each anchor in a cell, for each layer."""
    scales = _layer_scales(settings, layer_count)
    specs: list[list[tuple[float, float]]] = []
    for layer in range(layer_count):
        if layer == 0 and settings.reduce_boxes_in_lowest_layer:
            specs.append(
                [(settings.lowest_layer_box_scale, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
            )
            continue
        layer_specs = [(scales[layer], ratio) for ratio in settings.aspect_ratios]
        if settings.interpolated_scale_aspect_ratio > 0:
            interpolated = math.sqrt(scales[layer] * scales[layer + 1])
            layer_specs.append((interpolated, settings.interpolated_scale_aspect_ratio))
        specs.append(layer_specs)
    return specs


def generate_anchors(
    grid_sizes: Sequence[tuple[int, int]], settings: AnchorSettings | None = None
) -> npt.NDArray[np.float32]:
    """All anchors for feature maps of the given (rows, columns), as an (N, 4) array.

    Cell centres sit at (i + 0.5) / rows and (j + 0.5) / columns: TF's default anchor stride
    and offset for a square input.
    """
    settings = settings or AnchorSettings()
    per_layer: list[npt.NDArray[np.float64]] = []
    for (rows, columns), layer_specs in zip(grid_sizes, box_specs(settings, len(grid_sizes)), strict=True):
        scales = np.array([scale for scale, _ in layer_specs])
        ratio_roots = np.sqrt([ratio for _, ratio in layer_specs])
        heights = scales / ratio_roots
        widths = scales * ratio_roots
        y_centers, x_centers = np.meshgrid(
            (np.arange(rows) + 0.5) / rows, (np.arange(columns) + 0.5) / columns, indexing="ij"
        )
        layer_anchors = np.empty((rows, columns, len(layer_specs), 4))
        layer_anchors[..., 0] = y_centers[..., None]
        layer_anchors[..., 1] = x_centers[..., None]
        layer_anchors[..., 2] = heights
        layer_anchors[..., 3] = widths
        per_layer.append(layer_anchors.reshape(-1, 4))
    return np.concatenate(per_layer).astype(np.float32)
