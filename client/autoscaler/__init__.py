"""Autoscaler hints from a program (Ray's `ray.autoscaler.sdk`): see `kastor.autoscaler.sdk`."""

from kastor.autoscaler.sdk import request_resources

__all__ = ["request_resources"]
