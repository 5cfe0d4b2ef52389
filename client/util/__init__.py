"""Helpers built on the public kastor API, mirroring ``ray.util``."""

from kastor.util.actor_pool import ActorPool

__all__ = ["ActorPool"]
