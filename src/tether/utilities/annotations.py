"""Argument annotations, under Prefect's module path ``prefect.utilities.annotations``:
`allow_failure`, `quote` and `unmapped` (see `tether._annotations`)."""

from tether._annotations import allow_failure, quote
from tether._task import unmapped

__all__ = ["allow_failure", "quote", "unmapped"]
