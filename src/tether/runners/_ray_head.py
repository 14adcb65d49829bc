"""The local Ray cluster a `RayRunner` starts for itself, outside the flow's process group.

``ray.init`` starts Ray's GCS server and raylet as children in the flow process's process
group, so a SIGTERM to the whole group (``kill -TERM -- -PGID``, systemd's default stop)
ends the raylet, and with it the actors that hold resource copies, before the flow can
clean them up with its scope's outcome (issue #13 item 12). `RayHead` runs
``ray start --head --block`` instead, in a session of its own, on 127.0.0.1 at a free port,
with no dashboard and no usage stats; the flow process then connects to it with
``ray.init(address=...)``. The flow process alone decides when the cluster ends:

- at `RayHead.stop`, by SIGTERM to ``ray start --block``, whose handler stops every Ray
  process it started (the raylet first, which ends its workers) and exits;
- when the flow process dies, even by SIGKILL, the kernel sends the head that same SIGTERM
  (``PR_SET_PDEATHSIG``). The kernel counts the *thread* that started a process as its
  parent, so a thread of `RayHead`'s own starts the head and lives exactly as long as it.
  A raylet stopped this way says so in its log, so its dashboard and runtime-env agents
  exit at once instead of first reporting its death to a GCS that is gone (60 s).

`ray_start_arguments` turns ``ray.init``'s keyword arguments into ``ray start`` flags (the
cluster's) and the ones ``ray.init(address=...)`` takes (the connection's), and refuses the
rest. This module does not import Ray (the head is a process of its own, started before
the flow process has imported Ray, so that both imports overlap) and does not connect to
the cluster; on a system without ``PR_SET_PDEATHSIG`` (`supported` is False) RayRunner lets
``ray.init`` start Ray as before.
"""

from __future__ import annotations

import collections
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

from tether._errors import UsageError

#: ray.init's arguments that shape the cluster, and the ``ray start`` flag for each.
CLUSTER_FLAGS = {
    "num_cpus": "--num-cpus",
    "num_gpus": "--num-gpus",
    "resources": "--resources",
    "labels": "--labels",
    "object_store_memory": "--object-store-memory",
    "include_dashboard": "--include-dashboard",
    "dashboard_host": "--dashboard-host",
    "dashboard_port": "--dashboard-port",
    "enable_resource_isolation": "--enable-resource-isolation",
    "cgroup_path": "--cgroup-path",
    "system_reserved_cpu": "--system-reserved-cpu",
    "system_reserved_memory": "--system-reserved-memory",
    "proxy_server_url": "--proxy-server-url",
    "_node_ip_address": "--node-ip-address",
    "_memory": "--memory",
    "_plasma_directory": "--plasma-directory",
    "_temp_dir": "--temp-dir",
    "_system_config": "--system-config",
    "_metrics_export_port": "--metrics-export-port",
    "_node_name": "--node-name",
    "_redis_password": "--redis-password",
    "_enable_object_reconstruction": "--enable-object-reconstruction",
}
#: ``ray start`` flags that take no value: given when the argument is true.
_SWITCHES = {"enable_resource_isolation", "_enable_object_reconstruction"}
#: ray.init's arguments that shape the flow process's connection: ray.init(address=...) takes them.
CONNECT_ARGUMENTS = {
    "job_config", "configure_logging", "logging_level", "logging_format", "logging_config", "log_to_driver",
    "namespace", "runtime_env", "ignore_reinit_error", "_skip_env_hook",
}
#: Cluster arguments the connection must be told too (where the node is, its files, its password).
_BOTH = {"_node_ip_address", "_temp_dir", "_redis_password"}
#: What a cluster of the runner's own is unless init_kwargs say otherwise.
_DEFAULTS = {"_node_ip_address": "127.0.0.1", "include_dashboard": False}

#: The head's command: Ray's CLI, after doing what ``ray.init`` does for a new local cluster
#: about token authentication (turn it on unless RAY_AUTH_MODE says, make the token if there
#: is none), so that the cluster is no more open than ray.init's (a Ray without token
#: authentication has no such module); and with the address file left alone: ``ray start``
#: writes its address to /tmp/ray/ray_current_cluster, where every ``ray.init()`` without an
#: address on this machine would then connect, to a cluster of one flow's own (and after it
#: ended, to a dead address), as ray.init's own cluster never is; and with no Ray Client
#: server, as ray.init's cluster has none (with ``ray[client]`` installed, ``ray start``
#: would start one on the fixed port 10001, where two flows' clusters would collide).
_HEAD_MAIN = """\
import sys
try:
    from ray._private.authentication.authentication_token_setup import (
        enable_token_auth_by_default, ensure_token_if_auth_enabled)
except ImportError:
    pass
else:
    enable_token_auth_by_default()
    ensure_token_if_auth_enabled(None, create_token_if_missing=True)
import ray._private.utils
ray._private.utils.write_ray_address = lambda *args, **kwargs: None
import ray.scripts.scripts as cli
cli.get_ray_client_dependency_error = lambda: ImportError("no Ray Client server, as with ray.init")
sys.argv[0] = "ray"
cli.main()
"""
#: The line ``ray start`` prints once the node runs (every process started, the GCS listening).
_STARTED = "Ray runtime started"
START_TIMEOUT_SECONDS = 120.0  # a busy two-core machine takes 10-40 s
STOP_TIMEOUT_SECONDS = 30.0  # the head gives each of its processes a second before SIGKILL
_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return prctl


_prctl = _load_prctl()


def supported() -> bool:
    """Whether the kernel can end the head with the flow process (Linux's PR_SET_PDEATHSIG)."""
    return _prctl is not None


def ray_start_arguments(init_kwargs: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The ``ray start`` flags and the ``ray.init(address=...)`` arguments for ``init_kwargs``
    (ray.init's keyword arguments); a `UsageError` names any that neither takes."""
    refused = sorted(set(init_kwargs) - set(CLUSTER_FLAGS) - CONNECT_ARGUMENTS)
    if refused:
        raise UsageError(
            f"RayRunner(init_kwargs={init_kwargs!r}) cannot start its local Ray: {', '.join(refused)} "
            f"{'is an argument' if len(refused) == 1 else 'are arguments'} that only ray.init's own cluster takes, and "
            f"RayRunner starts its cluster with `ray start --head` instead, in a session of its own, so that a signal "
            f"to the flow's process group cannot end it before the resource copies on it are cleaned up. Leave "
            f"{'it' if len(refused) == 1 else 'them'} out (it takes {', '.join(sorted(CLUSTER_FLAGS))} for the "
            f"cluster and {', '.join(sorted(CONNECT_ARGUMENTS))} for the connection), or start Ray yourself "
            f"(`ray start --head`, or ray.init before the flow runs) and pass RayRunner(address=...)."
        )
    cluster = {**_DEFAULTS, **{k: v for k, v in init_kwargs.items() if k in CLUSTER_FLAGS}}
    flags = []
    for key, value in cluster.items():
        if value is None:
            continue
        if key in _SWITCHES:
            flags += [CLUSTER_FLAGS[key]] if value else []
        else:
            flags.append(f"{CLUSTER_FLAGS[key]}={_flag_value(key, value)}")
    connect = {k: v for k, v in init_kwargs.items() if k in CONNECT_ARGUMENTS}
    connect.update({k: cluster[k] for k in _BOTH if cluster.get(k) is not None})
    return flags, connect


def _flag_value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if key == "labels" and isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


#: Ports Ray's processes take by default whatever the GCS port is (the dashboard, its agent's
#: HTTP server, the Ray Client server, the GCS's own default): a free port for the GCS must not
#: be one of them, or the head refuses to start.
_RAY_DEFAULT_PORTS = {8265, 52365, 10001, 6379}
#: How many times the head is started again at another port when its GCS port was taken
#: between finding it free and the GCS binding it (another process on the machine got it).
_PORT_ATTEMPTS = 3


def _free_port(host: str) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        if port not in _RAY_DEFAULT_PORTS:
            return port


class RayHead:
    """One ``ray start --head --block`` process, started by `start` and ended by `stop`."""

    def __init__(self, flags: list[str], host: str = "127.0.0.1") -> None:
        self.host = host
        self._flags = flags
        self._attempts = 0
        self.port = 0
        self.address = ""
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the head; returns once it is spawned, not once it runs (see `wait_started`)."""
        self._attempts += 1
        self.port = _free_port(self.host)
        self.address = f"{self.host}:{self.port}"
        self._command = [
            sys.executable, "-c", _HEAD_MAIN, "start", "--head", "--block", f"--port={self.port}",
            "--disable-usage-stats", "--log-style=record", "--log-color=false", *self._flags,
        ]
        self._process = None
        self._output: collections.deque[str] = collections.deque(maxlen=40)  # the end, for errors
        self._spawned = threading.Event()
        self._started = threading.Event()
        self._ended = threading.Event()
        self._spawn_error: BaseException | None = None
        threading.Thread(target=self._own, name="tether-ray-head", daemon=True).start()
        self._spawned.wait()
        if self._spawn_error is not None:
            raise self._spawn_error

    def _own(self) -> None:
        """The head's parent thread: it must outlive the head (see the module's docstring)."""
        env = dict(os.environ)
        env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        env.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keeps 127.0.0.1, not the interface's address
        # Draining waits for Ray Serve replicas to move; the runner's actors are done or abandoned by now.
        env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
        parent = os.getpid()

        # Run in the child between fork and exec, where only this thread exists: it takes no
        # lock another thread could have held at the fork (Ray starts its own processes so too).
        def die_with_parent() -> None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != parent:  # the flow process died before the line above
                os._exit(1)

        try:
            self._process = process = subprocess.Popen(
                self._command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent,  # noqa: PLW1509 - see above
            )
        except BaseException as exc:  # noqa: BLE001 - raised by start, on the caller's thread
            self._spawn_error = exc
            self._spawned.set()
            return
        self._spawned.set()
        try:
            assert process.stdout is not None
            for raw in process.stdout:
                line = raw.decode(errors="replace").rstrip()
                self._output.append(line)
                if _STARTED in line:
                    self._started.set()
        finally:
            process.wait()
            self._ended.set()
            self._started.set()  # wakes wait_started, which then sees the head ended

    def wait_started(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Wait until the head runs; a `RuntimeError` with its output if it ended or hung instead."""
        if not self._started.wait(timeout):
            self.stop()
            self._fail(f"did not say it had started within {timeout:g} s")
        if self._ended.is_set():
            if self._port_was_taken() and self._attempts < _PORT_ATTEMPTS:
                self.start()
                self.wait_started(timeout)
                return
            self._fail(f"exited with code {self._process.returncode if self._process else None}")

    def _port_was_taken(self) -> bool:
        said = "\n".join(self._output).lower()
        return str(self.port) in said and ("in use" in said or "used by" in said or "bind" in said)

    def _fail(self, what: str) -> None:
        output = "\n".join(f"    {line}" for line in self._output) or "    (nothing)"
        raise RuntimeError(
            f"RayRunner could not start its local Ray: `ray start --head` at {self.address} {what}. Its output "
            f"ends with:\n{output}\nRay's own logs are under its temp dir (/tmp/ray/session_latest/logs unless "
            f"init_kwargs set _temp_dir). To use a Ray started some other way, pass RayRunner(address=...)."
        )

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """End the cluster gracefully (SIGTERM to the head) and wait for the head to exit."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Ray's processes share the head's death (they are started with PR_SET_PDEATHSIG too).
            process.kill()
            process.wait()
