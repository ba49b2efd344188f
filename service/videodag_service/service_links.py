"""Environment variables of ours that Kubernetes fills with a service link instead of a setting.

The kubelet gives every pod `<SERVICE>_PORT=tcp://IP:PORT` (and more) for each Service of its
namespace unless the pod says `enableServiceLinks: false`. A Service named `videodag` thus
sets VIDEODAG_PORT over the image's own `50051`, and a server reading it as its port would not
start (nor would the image's health check find it). Such a value is no port: it is ignored,
and the server says why. Kept apart from the settings so the health check can import it
without the video stack.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

PORT_VARIABLES = ("VIDEODAG_PORT", "VIDEODAG_METRICS_PORT")
"""Ours that a Service's link can take: `<NAME>_PORT` for Services named videodag and videodag-metrics."""
_SERVICE_LINK = re.compile(r"(tcp|udp|sctp)://[^/\s]+:\d+")


def kubernetes_service_links(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of ours (name: value) that hold a service link."""
    return {variable: environ[variable] for variable in PORT_VARIABLES
            if _SERVICE_LINK.fullmatch(environ.get(variable, ""))}
