"""Helpers built on the public kastor API, mirroring ``ray.util``."""

from kastor.util.actor_pool import ActorPool
from kastor.util.check_serialize import inspect_serializability
from kastor.util.names import get_node_ip_address, list_named_actors
from kastor.util.placement_group import (
    PlacementGroup,
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)

__all__ = ["ActorPool", "PlacementGroup", "get_current_placement_group", "get_node_ip_address",
           "get_placement_group", "inspect_serializability", "list_named_actors", "placement_group",
           "placement_group_table", "remove_placement_group"]
