"""Prefect's blocks (``prefect.blocks``): typed configuration saved by name in the run store.

``tether.blocks.system.Secret`` is Prefect's secret; ``tether.blocks.core.Block`` is the
base for blocks of your own. A saved block's data is encrypted in the store with the key
under ``$TETHER_HOME`` (see `tether.store.BlockTable`).
"""

from tether.blocks import core as core  # the submodules, reachable as attributes
from tether.blocks import system as system
from tether.blocks.core import Block

__all__ = ["Block"]
