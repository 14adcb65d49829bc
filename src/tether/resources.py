"""Resources, as in ``tether.resources.remember(handle)`` inside a resource's setup."""

from tether._resources import Resource, ResourceScope, remember, resource, resource_manager

__all__ = ["Resource", "ResourceScope", "remember", "resource", "resource_manager"]
