"""Helpers built on the public kastor API, mirroring ``ray.util``."""

from kastor.util.actor_pool import ActorPool
from kastor.util.check_serialize import inspect_serializability
from kastor.util.names import get_node_ip_address, list_named_actors

__all__ = ["ActorPool", "get_node_ip_address", "inspect_serializability", "list_named_actors"]
