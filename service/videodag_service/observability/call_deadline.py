"""Whether a call that ended was ended by its deadline: gRPC tells the server only that it ended."""

from __future__ import annotations

import grpc

# The client's clock runs its deadline from the call's start, the server's from the moment the
# call reached it: the client's deadline passes first, by the network's latency and more, and
# the server sees the client cancel the call just before its own deadline.
DEADLINE_SKEW_SECONDS = 0.5


def ended_by_its_deadline(context: grpc.ServicerContext) -> bool:
    """Whether a call that has ended was ended by its deadline rather than its client's cancel
    (gRPC tells the server neither): its deadline has passed, or was about to on the server's clock."""
    remaining = context.time_remaining()
    return remaining is not None and remaining <= DEADLINE_SKEW_SECONDS
