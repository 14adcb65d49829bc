"""The ``tether`` group and what its commands share: the consoles, the errors, the store.

The command modules define the commands; the package adds them to `main`. This module defines none.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

from tether.store import Store, StoreError, StoreLocation, open_store, unusable

# Piped output is not cut to 80 columns: wide tables stay whole, messages stay on one line.
_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200
out = Console(highlight=False, width=_WIDTH)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class BadInput(click.ClickException):
    """Bad input on the command line: exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        err.print(Text.assemble(("Error: ", "red"), self.message))


class Failure(click.ClickException):
    """The command could not do what was asked (no such run, a store that cannot be used): exit code 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        err.print(Text.assemble(("Error: ", "red"), self.message))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tether")
def main() -> None:
    """tether: run flows, and see their runs and resources."""


@contextmanager
def store_or_exit() -> Iterator[Store]:
    """The run store, closed afterwards; a store that cannot be used ends the command with its reason."""
    try:
        location = StoreLocation.resolve()
        store = open_store(location.url)
    except StoreError as exc:
        raise Failure(str(exc)) from None
    try:
        yield store
    except SQLAlchemyError as exc:
        raise Failure(str(unusable(location, exc))) from None
    finally:
        store.close()


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))
