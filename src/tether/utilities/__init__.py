"""Prefect's ``prefect.utilities`` path: only `tether.utilities.annotations`, the argument
wrappers scripts import from there."""

__all__: list[str] = []
