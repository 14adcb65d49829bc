"""The run store's errors.

TetherError
└── StoreError                 the store cannot be opened or used; the message names it and the fix
    └── StoreSchemaError       the store's schema is newer than this tether, or not tether's at all
"""

from __future__ import annotations

from tether._errors import TetherError


class StoreError(TetherError):
    """The run store cannot be opened or used. The message names the store and says how to fix it."""


class StoreSchemaError(StoreError):
    """The store's schema is one this version of tether cannot use."""
