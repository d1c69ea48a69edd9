"""The CLI in-process: bad input is one line on stderr, exit status 2, and nothing is created."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import links, namespaces, needs_root, run_cli


@pytest.mark.parametrize("argv, fragment", [
    (["up", "--backend", "lxc"], "--backend: Input should be 'auto', 'netns', 'vagrant', 'docker' or 'hosts'"),
    (["up", "--evse", "0"], "--evse: must be from 1 to 1000 (got 0)"),
    (["up", "--evse", "-1"], "--evse: must be from 1 to 1000 (got -1)"),
    (["up", "--evse", "99999"], "--evse: must be from 1 to 1000 (got 99999)"),
    (["up", "--evse", "2.5"], "--evse: must be a whole number"),
    (["up", "--cpo-net", "192.168.20.0/25"], "--cpo-net: networks.cpo 192.168.20.0/25 overlaps networks.evse"),
    (["up", "--evse-net", "300.1.1.0/24"], "--evse-net: '300.1.1.0/24' is not an IPv4 network"),
    (["up", "--name", "Lab 1"], "--name: invalid lab name 'Lab 1'"),
    (["up", "--name", "-x"], "--name: invalid lab name"),
    (["up", "--lab", "../x"], "--name: invalid lab name '../x'"),  # --lab, as every other command says it
    (["up", "--backend", "hosts"], "--backend: the hosts backend needs an inventory (labkit up -i INVENTORY)"),
    (["up", "-i", "/nonexistent/inv.yml"], "/nonexistent/inv.yml: no such inventory file"),
    (["up", "--bogus"], "labkit up: No such option '--bogus'"),
    (["nosuchverb"], "No such command 'nosuchverb'"),
])
def test_bad_input_is_one_line_exit_2(home, capsys, argv, fragment):
    before_ns, before_links = namespaces(), links()
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("labkit: error: "), err
    assert fragment in err
    assert namespaces() == before_ns and links() == before_links
    assert not (home / "labs").exists() or not any((home / "labs").iterdir())


def test_malformed_lab_file(home, tmp_path, capsys):
    f = tmp_path / "lab.yaml"
    f.write_text("name: ok\nevse: 2\nnetworks:\n  evse: 192.168.20.0/24\n  cpo: [oops\n")
    assert run_cli("up", "-f", str(f)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"labkit: error: {f}:") and err.count("\n") == 1


def test_unknown_lab_is_a_clear_error(home, capsys):
    assert run_cli("status", "--lab", "nolab") == 1
    assert "lab 'nolab' is not up (labkit up first)" in capsys.readouterr().err
    assert run_cli("down", "--lab", "nolab") == 0
    assert "nothing to remove" in capsys.readouterr().out


@needs_root
def test_netns_without_root_is_refused():
    """Run the real CLI as an unprivileged user (nobody): exit 2, one line, nothing created."""
    import shutil
    import tempfile
    from pathlib import Path

    home = Path(tempfile.mkdtemp(prefix="labkit-nobody-", dir="/tmp"))
    os.chown(home, 65534, 65534)  # nobody's own LABKIT_HOME (a home others can write to is refused first)
    before_ns = namespaces()
    try:
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               sys.executable, "-m", "labkit", "up", "--backend", "netns"],
                              env=dict(os.environ, LABKIT_HOME=str(home), HOME=str(home)),
                              capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == ("labkit: error: backend: netns needs root to create network namespaces "
                                       "(run: sudo labkit up ...)")
        assert namespaces() == before_ns
        assert not (home / "labs").exists() or not any((home / "labs").iterdir())
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_help_lists_the_verbs(capsys):
    assert run_cli("--help") == 0
    out = capsys.readouterr().out
    for verb in ("up", "down", "status", "ssh"):
        assert f"  {verb} " in out


def test_version_fast_path_says_what_click_says(capsys):
    """`labkit --version` (what provisioning runs on every host) answers before the CLI is imported, with the
    same text as the CLI's own --version."""
    from labkit.cli import main as cli_main

    assert cli_main(["--version"]) == 0
    via_click = capsys.readouterr().out
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "labkit", "--version"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == via_click and via_click.startswith("labkit, version ")
    assert " click" not in proc.stderr and "labkit.cli" not in proc.stderr  # -X importtime lists every import
