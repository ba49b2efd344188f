"""ByteTrack multi-object tracking as a videodag plugin.

`PLUGIN` is what the registry loads (tool `bytetrack.track`). For direct use, without the
engine, `videodag_service.plugins.bytetrack.tracker.ByteTracker` takes `Detections` frame by
frame; it is not re-exported here so that importing the plugin does not import scipy.
"""

from videodag_service.plugins.bytetrack.plugin import PLUGIN

__all__ = ["PLUGIN"]
