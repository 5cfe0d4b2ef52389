"""The client side of the head's client port: every call goes to one address, tagged with
the cluster address it is meant for (see client_gateway).

The tag rides in the channel's user agent (`kastor-target/<address> ...`), set once per
channel, rather than in per-call metadata added by interceptors: grpc.aio interceptors cost
time on every call and do not support the read/write API of the Execute stream.
"""

from __future__ import annotations

import grpc
from kastor.runtime import tls
from kastor.runtime.config import TARGET_USER_AGENT_PREFIX


def channel(gateway: str, target: str, options: list) -> grpc.aio.Channel:
    """A channel to `target` in the cluster, carried through the gateway."""
    tagged = [*options, ("grpc.primary_user_agent", f"{TARGET_USER_AGENT_PREFIX}{target}")]
    return tls.aio_channel(gateway, tagged)
