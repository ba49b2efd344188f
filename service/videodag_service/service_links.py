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


def service_link_warning(variable: str, value: str, port_used: int) -> str:
    """Why the service link in `variable` is ignored, and what the server does instead: for
    VIDEODAG_METRICS_PORT, whose own default is off, the image's 9464 is lost with the link, and
    a Service named videodag-metrics (one for a metrics scraper) turned the metrics off unsaid."""
    instead = (f"metrics are off; set {variable}=9464 (the image's) in the pod spec"
               if variable == "VIDEODAG_METRICS_PORT" and port_used == 0
               else f"it uses port {port_used}; set {variable} in the pod spec to use another")
    return (f"{variable}={value} is a Kubernetes service link (from a Service of this namespace), not a setting: "
            f"ignored, so {instead}, or enableServiceLinks: false")


# The other variables a Service's link gives: `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT[_<PORT NAME>]`,
# `<NAME>_PORT_<PORT>_<PROTOCOL>[_ADDR|_PORT|_PROTO]`.
_SERVICE_LINK_NAME = re.compile(
    r"[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT_\d+_(TCP|UDP|SCTP)(_(ADDR|PORT|PROTO))?)"
)


def is_service_link(variable: str, value: str) -> bool:
    """Whether Kubernetes may have set the variable for a Service (one named videodag-redis, say)."""
    return _SERVICE_LINK_NAME.fullmatch(variable) is not None or _SERVICE_LINK.fullmatch(value) is not None
