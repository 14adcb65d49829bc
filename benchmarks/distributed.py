"""Distributed runners' overhead (issue 6's figure), against the engines' own APIs in the same run.

    python benchmarks/distributed.py [--tasks 2000] [--rounds 3] [--only dask|ray] [--store]

1. N submitted no-op tasks through `DaskRunner`, then all results, against raw
   ``client.submit`` + ``client.gather`` on the same `LocalCluster` (2 workers):
   ratio (goal <= 1.5x).
2. The same through `RayRunner` against raw ``ray.remote`` tasks on the same local
   Ray (2 CPUs): ratio (goal <= 1.5x).

Each side is timed end to end (a tether flow includes its runner's start and stop:
connecting a client, starting the actors), best of ``--rounds``, sides alternating.
As in `overhead.py`, the ratio is the engine's, with the run store off; ``--store``
also times tether with the store recording (its own figure, store on/off).
Everything stays on 127.0.0.1 (see `start_ray` for what Ray needs for that).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

# This file is named like Dask's `distributed` package: keep its folder off the import path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

from tether import flow, task
from tether.runners import DaskRunner, RayRunner
from tether.runners._dask import QUIET_SCHEDULER


def noop(x: Any = None) -> Any:
    return x


noop_task = task(noop)


def through_tether(runner: Any, n: int, store: bool = False) -> float:
    @flow(task_runner=runner)
    def submitted() -> int:
        futures = [noop_task.submit(i) for i in range(n)]
        return len([f.result() for f in futures])

    os.environ["TETHER_STORE"] = "on" if store else "off"
    start = time.perf_counter()
    assert submitted() == n
    return time.perf_counter() - start


def compare(name: str, n: int, rounds: int, baseline: str, raw: Callable[[], float], runner: Callable[[], Any], store: bool) -> None:
    raws, tethers, stored = [], [], []
    for _ in range(rounds):
        raws.append(raw())
        tethers.append(through_tether(runner(), n))
        if store:
            stored.append(through_tether(runner(), n, store=True))
    best_raw, ours = min(raws), min(tethers)
    print(f"{name}: {n} no-op tasks: {baseline} {best_raw:.2f} s, tether {ours:.2f} s, ratio {ours / best_raw:.2f}x (goal <= 1.5x)")
    if store:
        print(f"  with the run store recording: tether {min(stored):.2f} s, store on/off {min(stored) / ours:.2f}x")


# -- Dask --------------------------------------------------------------------------------


def bench_dask(n: int, rounds: int, store: bool) -> None:
    import dask
    import distributed

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None, processes=True,
            scheduler_kwargs=QUIET_SCHEDULER,
        )
    client = distributed.Client(cluster, set_as_default=False)
    try:

        def raw() -> float:
            start = time.perf_counter()
            futures = [client.submit(noop, i, pure=False) for i in range(n)]
            assert len(client.gather(futures)) == n
            return time.perf_counter() - start

        raw()  # warm the workers up, for both sides
        compare("Dask", n, rounds, "client.submit", raw, lambda: DaskRunner(address=cluster.scheduler_address), store)
    finally:
        client.close()
        cluster.close()


# -- Ray ---------------------------------------------------------------------------------


def start_ray() -> Any:
    """Ray on loopback only: no usage stats, no dashboard, no cloud probes, 127.0.0.1 kept."""
    home = tempfile.mkdtemp(prefix="tether-ray-home-")
    with open(os.path.join(home, "ray_bootstrap_config.yaml"), "w") as f:
        f.write("provider: {type: local}\n")  # else Ray's dashboard probes cloud metadata addresses
    os.environ["HOME"] = home
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # else 127.0.0.1 is swapped for the NIC's address
    import ray

    ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=2, logging_level="WARNING", log_to_driver=False)
    return ray


def bench_ray(n: int, rounds: int, store: bool) -> None:
    ray = start_ray()
    try:
        remote_noop = ray.remote(noop)

        def raw() -> float:
            start = time.perf_counter()
            assert len(ray.get([remote_noop.remote(i) for i in range(n)])) == n
            return time.perf_counter() - start

        raw()
        compare("Ray", n, rounds, "ray.remote", raw, RayRunner, store)
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["dask", "ray"])
    parser.add_argument("--store", action="store_true", help="also time tether with the run store recording")
    args = parser.parse_args()
    os.environ.setdefault("TETHER_HOME", tempfile.mkdtemp(prefix="tether-bench-"))  # not the user's store
    if args.only in (None, "dask"):
        bench_dask(args.tasks, args.rounds, args.store)
    if args.only in (None, "ray"):
        bench_ray(args.tasks, args.rounds, args.store)


if __name__ == "__main__":
    main()
