"""Resources, as in ``tether.resources.remember(handle)`` inside a resource's setup."""

from tether._resources import Resource, ResourceScope, remember, resource, resource_manager
from tether._stand_in import local

__all__ = ["Resource", "ResourceScope", "local", "remember", "resource", "resource_manager"]
