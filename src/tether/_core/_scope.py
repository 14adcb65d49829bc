"""Scope bookkeeping for resources: when may a resource be cleaned up, and how did it go?

A `ScopeBook` counts the members of one resource scope: the `with` block itself,
every task run of the scope, and every nested scope. Cleanup is due exactly once,
when the block has been left and the last member has ended. The book also keeps
the scope's first error, which decides the outcome handed to cleanup.

Pure bookkeeping: no threads, no I/O. The caller serialises calls on one book
and runs the cleanup when a method returns ``True``.
"""

from __future__ import annotations


class ScopeClosed(RuntimeError):
    """A member tried to join a scope whose cleanup has already begun."""


class ScopeBook:
    __slots__ = ("block_open", "cleanup_due", "failed", "first_error", "members", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.block_open = True
        self.members = 0
        self.first_error: BaseException | None = None
        self.failed = False
        self.cleanup_due = False

    def join(self) -> None:
        """A task run or a nested scope becomes a member."""
        if self.cleanup_due:
            raise ScopeClosed(self.name)
        self.members += 1

    def leave(self, error: BaseException | None = None, failed: bool = False) -> bool:
        """A member ended (``failed`` or with ``error``); True when cleanup is now due."""
        self.members -= 1
        if self.members < 0:
            raise AssertionError(f"scope {self.name!r} lost count of its members")
        self._note(error, failed)
        return self._due()

    def exit_block(self, error: BaseException | None = None) -> bool:
        """The ``with`` block was left; True when cleanup is now due."""
        if not self.block_open:
            raise AssertionError(f"the block of scope {self.name!r} was left twice")
        self.block_open = False
        self._note(error, error is not None)
        return self._due()

    def fail(self, error: BaseException) -> None:
        """Mark the scope failed from outside (flow cancelled, flow timed out)."""
        self._note(error, True)

    def outcome_error(self) -> BaseException | None:
        """What cleanup is told: None if the scope succeeded, else its first error (or, when
        a member failed without one, an error that says so)."""
        if not self.failed:
            return None
        return self.first_error or RuntimeError(f"a run of resource {self.name!r}'s scope failed")

    def _note(self, error: BaseException | None, failed: bool) -> None:
        if failed and not self.failed:
            self.failed = True
            self.first_error = error
        elif failed and self.first_error is None:
            self.first_error = error

    def _due(self) -> bool:
        if self.cleanup_due or self.block_open or self.members:
            return False
        self.cleanup_due = True
        return True
