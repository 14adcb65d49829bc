"""Resources, as in ``tether.resources.remember(handle)`` inside a resource's setup."""

from tether._resources import Resource, ResourceScope, local, remember, resource, resource_manager

__all__ = ["Resource", "ResourceScope", "local", "remember", "resource", "resource_manager"]
