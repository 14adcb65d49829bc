"""Prefect 3's run-level APIs: ``tether.concurrency`` blocks share tag limits with task runs."""

from __future__ import annotations

import threading

import pytest

import tether
from tether.concurrency.sync import concurrency, rate_limit


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("TETHER_HOME", str(tmp_path))
    monkeypatch.setenv("TETHER_STORE", "off")


def test_unlimited_name_just_runs():
    with concurrency("nobody-set-this", occupy=3):
        pass
    rate_limit("nobody-set-this")


def test_block_holds_a_tag_slot_a_second_block_waits():
    tether.limits.set("cc-test", 1)
    try:
        inside = threading.Event()
        release = threading.Event()
        order: list[str] = []

        def first():
            with concurrency("cc-test"):
                order.append("first in")
                inside.set()
                release.wait(10)
                order.append("first out")

        t = threading.Thread(target=first)
        t.start()
        assert inside.wait(10)
        with pytest.raises(TimeoutError, match="cc-test"):
            with concurrency("cc-test", timeout_seconds=0.05):
                pass
        release.set()
        with concurrency("cc-test", timeout_seconds=10):
            order.append("second in")
        t.join()
        assert order == ["first in", "first out", "second in"]
        assert tether.limits.ls()[0].held == 0
    finally:
        tether.limits.remove("cc-test")


def test_rate_limit_spaces_calls(clock):
    tether.limits.set("rl-test", 1, slot_decay_per_second=2)
    try:
        for _ in range(3):
            rate_limit("rl-test")  # each waits on the fake clock, which passes the wait at once
        assert clock.waits == [0.5, 0.5]  # two calls a second: each after the one before
    finally:
        tether.limits.remove("rl-test")


def test_async_concurrency():
    import asyncio

    from tether.concurrency.asyncio import concurrency as aconcurrency
    from tether.concurrency.asyncio import rate_limit as arate_limit

    async def main():
        async with aconcurrency("unset-async"):
            await arate_limit("unset-async")
        return "ok"

    assert asyncio.run(main()) == "ok"


def test_block_slot_is_held_in_the_run_store(monkeypatch):
    monkeypatch.delenv("TETHER_STORE")
    tether.limits.set("cc-store", 1)
    try:
        with concurrency("cc-store"):
            assert [(i.tag, i.held) for i in tether.limits.ls()] == [("cc-store", 1)]
            with pytest.raises(TimeoutError, match="cc-store"):
                with concurrency("cc-store", timeout_seconds=0.05):
                    pass
        assert [(i.tag, i.held) for i in tether.limits.ls()] == [("cc-store", 0)]
    finally:
        tether.limits.remove("cc-store")
