"""SSDLite-MobileNetV2 pedestrian detection on OpenCV DNN, as the `ssdlite` plugin.

`PLUGIN` is what the registry loads (tool `ssdlite.detect_people`). `write_text_graph`
builds the OpenCV text graph from the frozen TF graph; `python -m videodag_service.fetch_models` calls it
after downloading the model. The model itself (`model.borrow_pedestrian_model`) is not
imported here, so importing the plugin loads no weights.
"""

from videodag_service.plugins.ssdlite.plugin import PLUGIN
from videodag_service.plugins.ssdlite.textgraph import write_text_graph

__all__ = ["PLUGIN", "write_text_graph"]
