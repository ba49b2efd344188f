"""The one error of `videodag render`, which the command reports as a usage error.

Apart from the renderer so that reading the results, naming files for OpenCV and tiling a
contact sheet raise it without importing each other.
"""

from __future__ import annotations


class RenderError(ValueError):
    """The video cannot be read or written, or a results line is not a frame result."""
