"""Secrets never on the command line or in any output; the fleet's exit status when nothing ever connected;
provenance (event loop, validation, versions) in both status files."""

from __future__ import annotations

import json
import socket
import subprocess
from importlib import metadata

import pytest

from labkit.cli import main
from tests.sim.conftest import PY, _env, run_fleet, stop

FAST = ["--step-interval", "0.01", "--meter-interval", "0.01", "--jitter", "0", "--meter-values", "3"]
SECRET = "pw-Zq81-never-printed"


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["csms", "--password", SECRET], "--password-file"),
        (["fleet", "--url", "ws://127.0.0.1:1/", "--password", SECRET], "--password-file"),
        (["fleet", "--url", f"ws://cs001:{SECRET}@127.0.0.1:1/"], "--url"),
        (["csms", "--password-file", "/nonexistent/pw"], "--password-file"),
        (["fleet", "--url", "ws://127.0.0.1:1/", "--password-file", "/nonexistent/pw"], "--password-file"),
    ],
)
def test_password_on_the_command_line_or_unreadable_is_one_line_and_exit_2(tmp_path, capsys, argv, needle):
    out = tmp_path / "out.csv"
    rc = main([*argv, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert SECRET not in err and not out.exists()


def test_empty_password_file_or_variable_is_refused(tmp_path, capsys):
    empty = tmp_path / "pw"
    empty.write_text("\n")
    assert main(["csms", "--password-file", str(empty)]) == 2
    assert "--password-file" in capsys.readouterr().err
    assert main(["csms"], env={"LABKIT_OCPP_PASSWORD": ""}) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "LABKIT_OCPP_PASSWORD" in err


def test_help_says_what_the_default_exposes():
    from click.testing import CliRunner

    from labkit.cli.sim import csms

    text = " ".join(CliRunner().invoke(csms, ["--help"]).output.split())
    assert "every address of this host (0.0.0.0:9000)" in text and "security profile 0" in text
    assert "--password-file" in text and "LABKIT_OCPP_PASSWORD" in text and "--listen ADDRESS:PORT" in text


def test_the_password_is_nowhere_in_argv_output_or_files(csms_factory, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text(SECRET + "\n")
    csms = csms_factory("--password-file", str(pw))
    cmdline = open(f"/proc/{csms.proc.pid}/cmdline", "rb").read()
    good = run_fleet(tmp_path / "good", csms.url, "--stations", "2", *FAST, env={"LABKIT_OCPP_PASSWORD": SECRET})
    assert good.rc == 0, good.stderr
    assert good.calls and all(r["outcome"] == "ok" for r in good.calls)
    bad = run_fleet(
        tmp_path / "bad",
        csms.url,
        "--stations",
        "1",
        "--duration",
        "1",
        "--drain-timeout",
        "0",
        *FAST,
        env={"LABKIT_OCPP_PASSWORD": SECRET + "x"},
    )
    assert bad.rc == 1
    assert stop(csms.proc) == 0
    outputs = [cmdline.decode(), csms.proc.stdout.read(), csms.proc.stderr.read()]
    outputs += [good.stdout, good.stderr, bad.stdout, bad.stderr]
    outputs += [p.read_text() for p in tmp_path.rglob("*") if p.is_file() and p != pw]
    assert len(outputs) > 10  # csv, events, status files of both fleets, the CSMS's csv and status
    assert not [o for o in outputs if SECRET in o]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fleet_exits_1_when_no_station_ever_connected(csms_factory, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("right\n")
    csms = csms_factory("--password-file", str(pw))
    args = ["--stations", "3", "--duration", "1.5", "--drain-timeout", "0", "--backoff-min", "0.2", *FAST]
    refused = run_fleet(tmp_path / "a", csms.url, *args)
    assert refused.rc == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        "labkit fleet: no station ever connected: 3 refused with HTTP 401 Unauthorized"
    )
    assert refused.status["stations_ever_connected"] == 0
    assert refused.status["connect_failures"] == {"refused with HTTP 401 Unauthorized": 3}
    nobody = run_fleet(tmp_path / "b", f"ws://127.0.0.1:{free_port()}/", *args)
    assert nobody.rc == 1
    assert nobody.stderr.strip().splitlines()[-1] == "labkit fleet: no station ever connected: 3 connection refused"
    # a station that never connects stops at the deadline like the others (it ran to --duration + 5 s before)
    assert nobody.status["elapsed_s"] < 1.5 + 2, nobody.status["elapsed_s"]
    other = csms_factory("--ocpp", "2.0.1")  # the fleet speaks 1.6: the handshake completes, then closes
    wrong = run_fleet(tmp_path / "d", other.url, *args)
    assert wrong.rc == 1
    assert wrong.stderr.strip().splitlines()[-1] == (
        "labkit fleet: no station ever connected: 3 got no subprotocol (asked for ocpp1.6)"
    )
    assert {(r["outcome"], r["error_code"]) for r in other.rows()} == {("refused", "NoSubprotocol")}
    # and with the password it connects and exits 0
    ok = run_fleet(tmp_path / "c", csms.url, *args, env={"LABKIT_OCPP_PASSWORD": "right"})
    assert ok.rc == 0 and "no station" not in ok.stderr


@pytest.mark.parametrize("loop", ["auto", "asyncio"])
def test_status_files_say_what_ran(csms_factory, tmp_path, loop):
    csms = csms_factory("--loop", loop, "--validation", "sync")
    run = run_fleet(tmp_path, csms.url, "--stations", "1", "--loop", loop, "--validation", "off", *FAST)
    assert run.rc == 0, run.stderr
    assert stop(csms.proc) == 0
    try:
        uvloop = metadata.version("uvloop")
    except metadata.PackageNotFoundError:
        uvloop = ""
    expect_loop = "uvloop" if (loop == "auto" and uvloop) else "asyncio"
    versions = {
        "python": subprocess.run(
            [PY, "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            env=_env({}),
        ).stdout.strip(),
        "labkit": __import__("labkit").__version__,
        "ocpp": metadata.version("ocpp"),
        "websockets": metadata.version("websockets"),
        "uvloop": uvloop,
    }
    for status, validation in ((run.status, "off"), (json.loads(csms.status.read_text()), "sync")):
        assert status["event_loop"] == expect_loop
        assert status["event_loop_version"] == (uvloop if expect_loop == "uvloop" else "")
        assert status["validation"] == validation
        assert status["versions"] == versions
