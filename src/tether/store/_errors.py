"""The run store's errors, for the store's modules: the classes of `tether._errors`, where the tree is drawn.

One class per error, defined there (so ``except tether.errors.StoreError`` catches what the
store raises); the store's own modules import them from here, ``tether.store`` re-exports them.
This module defines no exception.
"""

from __future__ import annotations

from tether._errors import (
    DeploymentNameTaken,
    DeploymentNotFound,
    ReaperNotFound,
    RunNotFound,
    StoreError,
    StoreSchemaError,
)

__all__ = [
    "DeploymentNameTaken",
    "DeploymentNotFound",
    "ReaperNotFound",
    "RunNotFound",
    "StoreError",
    "StoreSchemaError",
]
