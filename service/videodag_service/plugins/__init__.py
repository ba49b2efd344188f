"""The vision plugins that ship with videodag (`dag.registry.BUILTIN_PLUGIN_MODULES`).

Each defines one `Plugin` as `PLUGIN` (in `plugin.py` for the `ssdlite` and `bytetrack`
packages): `stats` (frame statistics), `motion` (background subtraction), `hog` and
`ssdlite` (people detectors), `yolo` (objects), `bytetrack` (tracking) and, in `ocr`,
`rapidocr` (text). The modules beside them (`detections`, `frames`, `models`, `tool_settings`,
`box_selection`) hold what those plugins share. Other packages add plugins through the `videodag.plugins` entry
point group.
"""
