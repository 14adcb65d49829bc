"""`RayRunner` on a local Ray (2 CPUs, so 2 worker actors), kept on loopback."""

from __future__ import annotations

import importlib
import importlib.util
import ipaddress
import os
import sys
import threading

import pytest

pytest.register_assert_rewrite("_remote_cases", "_remote_value_cases")  # its asserts explain failures too

from _remote_cases import *  # noqa: F403 - every shared test runs here, on Ray
from _remote_value_cases import *  # noqa: F403 - resource values of every type, on this runner
from _remote_cases import StepLog, recorded, use
from tether import flow, task
from tether.runners import RayRunner, RayTaskRunner

psutil = pytest.importorskip("psutil")
if importlib.util.find_spec("ray") is None:
    pytest.skip("Ray is not installed (pip install -e \".[ray]\")", allow_module_level=True)

CPUS = 2
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


class ConnectionWatch:
    """Samples every socket of this process and its children, remembering any connection
    to an address outside 127.0.0.0/8 (a probe of a cloud metadata service, say)."""

    def __init__(self) -> None:
        self.outside: set[tuple[str, str, int]] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="connection-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        me = psutil.Process()
        for process in [me, *me.children(recursive=True)]:
            try:
                connections = process.net_connections(kind="inet")
                name = process.name()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            for connection in connections:
                if not connection.raddr:
                    continue
                address = ipaddress.ip_address(connection.raddr.ip)
                mapped = getattr(address, "ipv4_mapped", None) or address
                if mapped not in LOOPBACK and not (address.version == 6 and address.is_loopback):
                    self.outside.add((name, connection.raddr.ip, connection.raddr.port))
        self.samples += 1

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            self.sample()


@pytest.fixture(scope="module")
def ray_on_loopback(tmp_path_factory):
    """The one place Ray starts: on 127.0.0.1, no dashboard, no usage stats, and a HOME
    whose ray_bootstrap_config.yaml says the cluster is local (without it, Ray's dashboard
    process probes cloud metadata addresses)."""
    home = tmp_path_factory.mktemp("ray-home")
    (home / "ray_bootstrap_config.yaml").write_text("provider: {type: local}\n")
    patch = pytest.MonkeyPatch()
    patch.setenv("HOME", str(home))
    patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    # Without this, Ray replaces _node_ip_address="127.0.0.1" by the address of the machine's
    # network interface (services.resolve_ip_for_localhost), and its processes talk over
    # that. Ray reads it when imported, so Ray is imported here, after it is set.
    patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = importlib.import_module("ray")
    assert not ray._private.ray_constants.ENABLE_RAY_CLUSTER, "Ray was imported before this fixture set it up"
    watch = ConnectionWatch()
    watch.start()
    ray.init(
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        num_cpus=CPUS,
        logging_level="WARNING",
        log_to_driver=False,
    )
    try:
        yield ray, watch
    finally:
        watch.sample()
        ray.shutdown()
        watch.stop()
        patch.undo()
    assert watch.outside == set(), f"connections beyond loopback while Ray ran: {sorted(watch.outside)}"


@pytest.fixture
def make_runner(ray_on_loopback):
    return lambda: RayRunner()


@pytest.fixture
def worker_count():
    return CPUS


@pytest.fixture
def capacity():
    return CPUS  # one actor per CPU, one task at a time each


def test_prefect_name_is_an_alias():
    assert RayTaskRunner is RayRunner


def test_a_missing_ray_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[ray\]"'):
        RayRunner().start()


def test_a_runner_on_a_running_ray_uses_it_and_leaves_it_running(ray_on_loopback, make_runner):
    ray, _ = ray_on_loopback

    @task
    def where():
        return os.getpid()

    @flow(task_runner=make_runner())
    def pipeline():
        return where.submit().result()

    assert pipeline() != os.getpid()
    assert ray.is_initialized()


def test_nothing_connects_beyond_loopback_while_ray_runs(ray_on_loopback, make_runner, tmp_path):
    @flow(task_runner=make_runner())
    def pipeline():
        with recorded(StepLog(tmp_path / "steps.jsonl")) as handle:
            return [f.result() for f in use.map(handle, range(20))]

    _, watch = ray_on_loopback
    assert len(set(pipeline())) == CPUS
    watch.sample()
    assert watch.samples > 10  # the watch has been looking all along
    assert watch.outside == set(), sorted(watch.outside)
