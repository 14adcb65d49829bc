"""Bad runner constructor arguments fail where the runner is made, with a `UsageError` that
names the runner and the argument and shows the call that works (no Dask or Ray is started)."""

from __future__ import annotations

import pytest

from tether import UsageError
from tether.runners import DaskRunner, ProcessPoolRunner, RayRunner, ThreadPoolRunner


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: ThreadPoolRunner(max_workers=0), r"ThreadPoolRunner\(max_workers=0\).*number of threads.*ThreadPoolRunner\(max_workers=4\)"),
        (lambda: ThreadPoolRunner(max_workers=True), r"ThreadPoolRunner\(max_workers=True\).*whole number of at least 1"),
        (lambda: ProcessPoolRunner(max_workers=-2), r"ProcessPoolRunner\(max_workers=-2\).*leave it out for one per CPU"),
        (lambda: RayRunner(workers="2"), r"RayRunner\(workers='2'\).*number of Ray actors.*RayRunner\(workers=4\)"),
        (lambda: RayRunner(init_kwargs=["num_cpus"]), r"RayRunner\(init_kwargs=\['num_cpus'\]\).*keyword arguments for ray.init"),
        (lambda: RayRunner(address=6379), r"RayRunner\(address=6379\).*must be a string"),
        (lambda: DaskRunner(cluster_kwargs=[("n_workers", 2)]), r"DaskRunner\(cluster_kwargs=.*distributed.LocalCluster.*a dict"),
        (lambda: DaskRunner(client_kwargs="timeout=5"), r"DaskRunner\(client_kwargs='timeout=5'\).*distributed.Client"),
        (lambda: DaskRunner(address=8786), r"DaskRunner\(address=8786\).*the Dask scheduler to connect to"),
    ],
    ids=["threads-zero", "threads-bool", "processes-negative", "ray-str", "ray-init-list", "ray-address", "dask-cluster-list", "dask-client-str", "dask-address"],
)
def test_a_bad_constructor_argument_is_a_usage_error_naming_it(make, pattern):
    with pytest.raises(UsageError, match=pattern):
        make()


def test_good_arguments_make_runners_with_those_settings():
    assert ThreadPoolRunner(3).max_workers == 3
    assert ProcessPoolRunner(max_workers=2).max_workers == 2
    assert RayRunner(workers=2, init_kwargs={"num_cpus": 2}).init_kwargs == {"num_cpus": 2}
    dask = DaskRunner(cluster_kwargs={"n_workers": 1}, client_kwargs=None)
    assert (dask.cluster_kwargs, dask.client_kwargs) == ({"n_workers": 1}, {})
