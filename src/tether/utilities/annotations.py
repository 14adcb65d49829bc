"""Argument annotations, under Prefect's module path ``prefect.utilities.annotations``:
`allow_failure`, `quote`, `opaque` and `unmapped` (see `tether._annotations`)."""

from tether._annotations import allow_failure, opaque, quote
from tether._task import unmapped

__all__ = ["allow_failure", "opaque", "quote", "unmapped"]
