"""Shared fixtures: every test gets its own TETHER_HOME and must not leak threads."""

from __future__ import annotations

import threading

import pytest

from tether._cache import results


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("TETHER_HOME", str(tmp_path / "tether-home"))
    results.clear()
    yield


@pytest.fixture(autouse=True)
def _no_leaked_threads():
    """Fail a test that leaves tether worker or cleanup threads running."""
    yield
    leaked = []
    for thread in threading.enumerate():
        if thread.name.startswith(("tether-worker", "tether-cleanup")) and thread.is_alive():
            thread.join(timeout=5)
            if thread.is_alive():
                leaked.append(thread.name)
    assert not leaked, f"threads left running: {leaked}"
