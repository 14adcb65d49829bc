"""Prefect's ``prefect.client`` path: only the schema names scripts annotate with.

There is no server to be a client of; `tether.client.schemas.objects` holds the run
and state types that hooks and annotations name.
"""

from tether.client import schemas as schemas  # the submodule, reachable as an attribute

__all__: list[str] = []
