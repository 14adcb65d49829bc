"""`RayRunner` on a local Ray (2 CPUs, so 2 worker actors), kept on loopback; and the local
Ray a RayRunner starts itself: outside the flow's process group, ended with the flow process."""

from __future__ import annotations

import importlib
import importlib.util
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

pytest.register_assert_rewrite("_remote_cases", "_remote_value_cases")  # its asserts explain failures too

from _remote_cases import *  # noqa: F403 - every shared test runs here, on Ray
from _remote_value_cases import *  # noqa: F403 - resource values of every type, on this runner
from _remote_cases import StepLog, recorded, use
from tether import UsageError, flow, task
from tether.runners import RayRunner, RayTaskRunner
from tether.runners._ray_head import ray_start_arguments

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


# -- the local Ray a RayRunner starts itself ---------------------------------------------

OWN_CLUSTER_FLOW = Path(__file__).parent / "scripts" / "ray_own_cluster_flow.py"
#: How long Ray's processes may outlive a SIGKILLed flow process: the kernel tells the head
#: at once, which stops the raylet gracefully, whose agents then exit within seconds (not
#: after the 60 s they wait when the raylet died unannounced).
RAY_GONE_SECONDS = 30.0


def test_init_kwargs_become_ray_start_flags_and_connection_arguments():
    flags, connect = ray_start_arguments({
        "num_cpus": 2, "resources": {"db": 1}, "labels": {"zone": "a"}, "object_store_memory": 10**8,
        "namespace": "etl", "log_to_driver": False, "_temp_dir": "/tmp/tr", "_enable_object_reconstruction": True,
    })
    assert flags == [
        "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--num-cpus=2", '--resources={"db": 1}',
        "--labels=zone=a", "--object-store-memory=100000000", "--temp-dir=/tmp/tr", "--enable-object-reconstruction",
    ]
    assert connect == {"namespace": "etl", "log_to_driver": False, "_node_ip_address": "127.0.0.1", "_temp_dir": "/tmp/tr"}
    flags, _ = ray_start_arguments({"include_dashboard": True, "_node_ip_address": "127.0.0.2"})
    assert flags == ["--node-ip-address=127.0.0.2", "--include-dashboard=true"]


def test_an_init_kwarg_that_only_ray_init_s_own_cluster_takes_is_refused_with_the_way_out():
    with pytest.raises(UsageError) as caught:
        ray_start_arguments({"num_cpus": 2, "local_mode": True})
    message = str(caught.value)
    assert "RayRunner(init_kwargs={'num_cpus': 2, 'local_mode': True}) cannot start its local Ray: local_mode" in message
    assert "process group" in message and "num_cpus" in message and "RayRunner(address=...)" in message


def marked(mark: bytes) -> list[int]:
    """The live processes whose environment holds ``mark`` (the test's flow process and everything it started)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if mark in f.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue  # gone, or a zombie
    return found


def record_of(path: Path) -> dict[str, tuple[int, int, int]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return {kind: (int(pid), int(pgid), int(sid)) for kind, pid, pgid, sid in (line.split() for line in lines)}


@pytest.mark.timeout(240)
def test_the_ray_a_runner_starts_is_outside_the_flow_s_group_and_dies_with_the_flow_process(tmp_path):
    """A signal to the flow's process group must not reach Ray's processes (they hold the
    copies the flow still has to clean up), yet a SIGKILLed flow process takes them along."""
    record = tmp_path / "record.log"
    temp_dir = Path("/tmp") / f"tether-ray-{uuid.uuid4().hex[:8]}"  # short: Ray's socket paths live under it
    home = tmp_path / "home"
    home.mkdir()
    (home / "ray_bootstrap_config.yaml").write_text("provider: {type: local}\n")
    mark = f"TETHER_RAY_OWN_CLUSTER_TEST={uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0", TETHER_LOGGING_LEVEL="WARNING")
    env[mark.split("=")[0]] = mark.split("=")[1]
    proc = subprocess.Popen(
        [sys.executable, str(OWN_CLUSTER_FLOW), str(record), str(temp_dir)],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 150
        while "task" not in record_of(record):
            assert proc.poll() is None, f"the flow process ended (exit {proc.returncode}) before its task ran:\n{proc.stdout.read().decode()}"
            assert time.monotonic() < deadline, "the task did not start within 150 s"
            time.sleep(0.05)
        seen = record_of(record)
        flow_pid, flow_group, flow_session = seen["flow"]
        task_pid, task_group, task_session = seen["task"]
        assert flow_pid == proc.pid and task_pid != flow_pid
        assert task_group != flow_group and task_session != flow_session, seen
        ray_processes = [pid for pid in marked(mark.encode()) if pid != proc.pid]
        assert task_pid in ray_processes
        in_flow_group = [pid for pid in ray_processes if os.getpgid(pid) == flow_group]
        assert in_flow_group == [], f"Ray processes in the flow's process group: {in_flow_group}"
        # The head's address is not left where every ray.init() without an address looks.
        assert not (temp_dir / "ray_current_cluster").exists()

        proc.send_signal(signal.SIGKILL)
        proc.wait()
        gone_by = time.monotonic() + RAY_GONE_SECONDS
        while (left := marked(mark.encode())) and time.monotonic() < gone_by:
            time.sleep(0.1)
        assert left == [], f"Ray processes outlived the SIGKILLed flow process by {RAY_GONE_SECONDS:g} s: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in marked(mark.encode()):
            os.kill(pid, signal.SIGKILL)
        proc.stdout.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
