"""Shared fixtures: an isolated LABKIT_HOME per test, lab names that cannot collide, root checks.

Tests that need namespaces, tc and sshd are marked ``root`` and run for real; they are skipped (with the
reason) only where the process is not root.
"""

from __future__ import annotations

import os
import secrets
import subprocess

import pytest

from labkit.cli import main

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root: creates network namespaces, veths and sshd")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private LABKIT_HOME, so tests never see (or break) a user's labs."""
    h = tmp_path / "labkit-home"
    monkeypatch.setenv("LABKIT_HOME", str(h))
    return h


@pytest.fixture
def lab_name():
    return "t" + secrets.token_hex(3)


def run_cli(*argv: str, env: dict[str, str] | None = None) -> int:
    return main(list(argv), env=env)


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


@pytest.fixture
def lab(home, lab_name):
    """Bring down whatever lab the test brought up, whatever happened."""
    yield lab_name
    main(["down", "--lab", lab_name])
