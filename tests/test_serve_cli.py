"""tether serve's bad input (exit 2, nothing written), from the shell and from a script (serve(),
flow.serve()), and tether deployments ls|pause|resume|run|runs, in this process through click's runner,
on a store under the test's own TETHER_HOME."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tether._cli_serve import load_flow
from tether._deployment import Deployment
from tether._serve import serve, serve_flow
from tether.cli import main
from tether.schedules import Cron
from tether.store import DeploymentTable, open_store

FLOWS = """
from tether import flow

@flow
def etl(n: int = 1, table: str = "sales"):
    return n

@flow
def other():
    return 0
"""


@pytest.fixture
def flows(tmp_path, monkeypatch):
    monkeypatch.delenv("TETHER_STORE", raising=False)
    path = tmp_path / "flows.py"
    path.write_text(FLOWS)
    return path


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def deployments_in_store(tmp_path) -> list[str]:
    if not (tmp_path / "tether-home" / "tether.db").exists():
        return []
    store = open_store()
    try:
        return [d.name for d in DeploymentTable(store.engine).deployments()]
    finally:
        store.close()


@pytest.mark.parametrize(
    ("args", "named", "example"),
    [
        (["--cron", "61 * * * *"], "cron='61 * * * *'", "cron='30 1 * * *'"),
        (["--rrule", "FREQ=DALY"], "rrule='FREQ=DALY'", "FREQ=WEEKLY"),
        (["--cron", "0 2 * * *", "--timezone", "Europe/Berln"], "timezone='Europe/Berln'", "timezone='Europe/Berlin'"),
        (["--interval", "0"], "interval=0.0", "interval=3600"),
        (["--interval", "-3"], "interval=-3.0", "interval=3600"),
        (["--interval", "1e300"], "interval=1e+300 is longer than 100 years", "cron='0 0 1 1 *'"),
        (["--name", "a/b", "--interval", "60"], "name='a/b' is not a deployment name", "name='nightly'"),
        (["--interval", "60", "-p", "m=2"], "unexpected keyword argument 'm'", "parameters"),
        (["--interval", "60", "-p", "n=abc"], "n: Input should be a valid integer", "parameters"),
        (["--interval", "60", "--cron", "0 2 * * *"], "cron and interval were both given", "cron='0 2 * * *'"),
        (["--timezone", "Europe/Berlin"], "there is no schedule to apply it to", "timezone='Europe/Berlin'"),
    ],
)
def test_bad_input_exits_2_names_the_value_and_writes_nothing(flows, tmp_path, args, named, example):
    done = invoke("serve", f"{flows}:etl", "--name", "nightly", *args)
    assert done.exit_code == 2, done.output
    assert named in done.output and example in done.output
    assert deployments_in_store(tmp_path) == []


def register(flows, name: str, flow: str = "etl", **options):
    store = open_store()
    try:
        DeploymentTable(store.engine).register(Deployment(load_flow(f"{flows}:{flow}"), name, **options).spec())
    finally:
        store.close()


def test_a_deployment_name_used_by_another_flow_exits_2_and_changes_nothing(flows, tmp_path):
    register(flows, "nightly", cron="0 2 * * *")
    done = invoke("serve", f"{flows}:other", "--name", "nightly", "--interval", "60")
    assert done.exit_code == 2, done.output
    assert "'nightly' is already used by flow 'etl'" in done.output and "another name" in done.output
    listed = json.loads(invoke("deployments", "ls", "--json").output)
    assert [(d["name"], d["flow_name"], d["schedule"]) for d in listed] == [("nightly", "etl", "cron 0 2 * * * (UTC)")]


def test_deployments_ls_pause_resume_and_run(flows, tmp_path):
    register(flows, "nightly", cron="0 2 * * *", timezone="Europe/Berlin", parameters={"n": 5})
    register(flows, "adhoc")
    listed = {d["name"]: d for d in json.loads(invoke("deployments", "ls", "--json").output)}
    assert listed["nightly"]["paused"] is False and listed["nightly"]["next_time"] is not None
    assert listed["nightly"]["parameters"] == {"n": 5} and listed["adhoc"]["next_time"] is None
    assert "nightly" in invoke("deployments", "ls").output

    assert invoke("deployments", "pause", "nightly").exit_code == 0
    assert json.loads(invoke("deployments", "ls", "--json").output)[1]["paused"] is True
    assert invoke("deployments", "resume", "nightly").exit_code == 0
    assert json.loads(invoke("deployments", "ls", "--json").output)[1]["paused"] is False

    done = invoke("deployments", "run", "nightly", "-p", "table=orders")
    assert done.exit_code == 0, done.output
    runs = json.loads(invoke("deployments", "runs", "nightly", "--json").output)
    assert [(r["trigger"], r["status"], r["parameters"]) for r in runs] == [
        ("manual", "scheduled", {"table": "orders"})
    ]

    bad = invoke("deployments", "run", "nightly", "-p", "n=abc")
    assert bad.exit_code == 2 and "n: Input should be a valid integer" in bad.output
    missing = invoke("deployments", "pause", "nighty")
    assert (
        missing.exit_code == 2
        and "No deployment named 'nighty'" in missing.output
        and "adhoc, nightly" in missing.output
    )
    assert invoke("runs", "ls", "--deployment", "nightly").exit_code == 0


# -- serve() and flow.serve() from a script: the same bad input exits 2 the same way ------------------


def serving(flows, flow: str = "etl"):
    return load_flow(f"{flows}:{flow}")


SCRIPT_BAD_INPUT = [
    (lambda f: serve("nightly"), "serve() takes deployments, got 'nightly'", "to_deployment(name='nightly'"),
    (lambda f: serve(), "serve() got no deployments", "to_deployment(name='nightly'"),
    (
        lambda f: serve(serving(f).to_deployment("nightly", interval=60), serving(f).to_deployment("nightly")),
        "two deployments named 'nightly'",
        "name='nightly-2'",
    ),
    (
        lambda f: serve(serving(f).to_deployment("nightly", interval=60), grace=5),
        "unknown setting 'grace'",
        "grace_seconds=60",
    ),
    (lambda f: serve(serving(f).to_deployment("nightly", interval=60), limit=0), "limit=0", "limit=4"),
    (lambda f: serve_flow(serving(f), "nightly", cron="61 * * * *"), "cron='61 * * * *'", "cron='30 1 * * *'"),
    (
        lambda f: serve_flow(serving(f), "nightly", schedule=Cron("0 2 * * *"), timezone="Europe/Berlin"),
        "timezone='Europe/Berlin' is for cron=, interval= or rrule=, and each schedule object carries its own",
        "schedule=Cron('0 2 * * *', timezone='Europe/Berlin')",
    ),
    (
        lambda f: serve_flow(serving(f), "nightly", cron_string="0 2 * * *"),
        "unknown option cron_string='0 2 * * *'",
        "cron='0 2 * * *'",
    ),
    (
        lambda f: serve_flow(serving(f), "nightly", interval=60, parameters={"n": "abc"}),
        "n: Input should be a valid integer",
        "parameters",
    ),
    pytest.param(
        lambda f: serving(f).serve("nightly", cron="61 * * * *"),
        "cron='61 * * * *'",
        "cron='30 1 * * *'",
        id="flow.serve",
    ),
]


@pytest.mark.parametrize(("call", "named", "example"), SCRIPT_BAD_INPUT)
def test_serve_from_a_script_given_bad_input_exits_2_names_the_value_and_writes_nothing(
    flows, tmp_path, capsys, call, named, example
):
    with pytest.raises(SystemExit) as exited:
        call(flows)
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    assert err.startswith("Error: ") and named in err and example in err
    assert deployments_in_store(tmp_path) == []


def test_serve_from_a_script_with_a_bad_setting_in_the_environment_exits_2(flows, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TETHER_SERVE_GRACE_SECONDS", "soon")
    with pytest.raises(SystemExit) as exited:
        serve(serving(flows).to_deployment("nightly", interval=60))
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert "TETHER_SERVE_GRACE_SECONDS='soon' is not a number of seconds" in err
    assert "unset it for the default (30)" in err
    assert deployments_in_store(tmp_path) == []


def test_serve_from_a_script_under_a_name_another_flow_has_exits_2_and_changes_nothing(flows, capsys):
    register(flows, "nightly", cron="0 2 * * *")
    with pytest.raises(SystemExit) as exited:
        serve(serving(flows, "other").to_deployment("nightly", interval=60))
    assert exited.value.code == 2
    assert "'nightly' is already used by flow 'etl'" in capsys.readouterr().err
    listed = json.loads(invoke("deployments", "ls", "--json").output)
    assert [(d["name"], d["flow_name"], d["schedule"]) for d in listed] == [("nightly", "etl", "cron 0 2 * * * (UTC)")]


def test_a_script_whose_serve_call_is_bad_exits_2_with_the_message_and_no_traceback(flows, tmp_path):
    script = tmp_path / "serve_twice.py"
    script.write_text(
        "from flows import etl\nfrom tether import serve\n"
        "serve(etl.to_deployment(name='nightly', interval=60), etl.to_deployment(name='nightly', cron='0 2 * * *'))\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], check=False, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "Error: serve() got two deployments named 'nightly'" in done.stderr
    assert "Traceback" not in done.stderr
    assert deployments_in_store(tmp_path) == []
