"""Every TETHER_* variable is parsed in `tether._settings`, with one error style."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tether import _settings
from tether._errors import SettingError, UsageError


def test_unset_or_empty_variables_give_the_defaults(monkeypatch):
    for name in ("TETHER_HOME", "TETHER_DATABASE_URL", "TETHER_STORE", "TETHER_STORE_HELPER",
                 "TETHER_HEARTBEAT_SECONDS", "TETHER_INTERRUPT_GRACE_SECONDS", "TETHER_SLOT_RETRY_SECONDS",
                 "TETHER_SLOT_WAKEUPS", "TETHER_LOGGING_LEVEL"):
        monkeypatch.setenv(name, "  ")
    assert _settings.home() == Path.home() / ".tether"
    assert _settings.database_url() is None
    assert _settings.store_on() is True
    assert _settings.store_writer_process() == "auto"
    assert _settings.heartbeat_seconds() == 10.0
    assert _settings.interrupt_grace_seconds() == 10.0
    assert _settings.slot_retry_seconds() == 1.0
    assert _settings.slot_wakeups() == "datagram"
    assert _settings.logging_level() == logging.INFO


def test_set_variables_are_parsed(monkeypatch, tmp_path):
    monkeypatch.setenv("TETHER_HOME", str(tmp_path))
    monkeypatch.setenv("TETHER_STORE", "Off")
    monkeypatch.setenv("TETHER_STORE_HELPER", "NEVER")
    monkeypatch.setenv("TETHER_HEARTBEAT_SECONDS", "0.001")
    monkeypatch.setenv("TETHER_INTERRUPT_GRACE_SECONDS", "0.5")
    monkeypatch.setenv("TETHER_SLOT_WAKEUPS", "store")
    monkeypatch.setenv("TETHER_LOGGING_LEVEL", "warning")
    assert _settings.home() == tmp_path
    assert _settings.store_on() is False
    assert _settings.store_writer_process() == "never"
    assert _settings.heartbeat_seconds() == 0.05  # a floor: a heartbeat per task would cost the store
    assert _settings.Settings.from_env().interrupt_grace_seconds == 0.5
    assert _settings.slot_wakeups() == "store"
    assert _settings.logging_level() == logging.WARNING


@pytest.mark.parametrize(
    ("name", "value", "read", "accepted", "default"),
    [
        ("TETHER_INTERRUPT_GRACE_SECONDS", "ten", _settings.interrupt_grace_seconds, "a number of seconds of at least 0", "10"),
        ("TETHER_INTERRUPT_GRACE_SECONDS", "-1", _settings.interrupt_grace_seconds, "a number of seconds of at least 0", "10"),
        ("TETHER_HEARTBEAT_SECONDS", "nan", _settings.heartbeat_seconds, "a number of seconds", "10"),
        ("TETHER_SLOT_RETRY_SECONDS", "0", _settings.slot_retry_seconds, "a number of seconds of at least 0.001", "1"),
        ("TETHER_STORE", "maybe", _settings.store_on, "on or off", "on"),
        ("TETHER_STORE_HELPER", "sometimes", _settings.store_writer_process, "one of auto, always, never", "auto"),
        ("TETHER_SLOT_WAKEUPS", "udp", _settings.slot_wakeups, "one of datagram, store", "datagram"),
        ("TETHER_LOGGING_LEVEL", "LOUD", _settings.logging_level, "a logging level", "INFO"),
    ],
)
def test_a_bad_value_says_which_variable_what_it_accepts_and_the_default(monkeypatch, name, value, read, accepted, default):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingError) as caught:
        read()
    message = str(caught.value)
    assert f"{name}={value!r}" in message
    assert accepted in message
    assert f"or unset it for the default ({default})" in message
    assert isinstance(caught.value, UsageError) and isinstance(caught.value, ValueError)
