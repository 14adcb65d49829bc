"""Flows, under Prefect's module path ``prefect.flows``.

`Flow` here is Prefect 3's: the object ``@flow`` makes (tether's `FlowFunction`). At the
top level, ``tether.Flow`` is Prefect 1's graph (``with Flow("etl") as flow:``), as
``prefect.Flow`` was in Prefect 1.
"""

from tether._flow import FlowFunction as Flow
from tether._flow import flow

__all__ = ["Flow", "flow"]
