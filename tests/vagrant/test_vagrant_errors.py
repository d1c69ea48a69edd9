"""What `labkit up --backend vagrant` says when it cannot work, before it creates anything: no Vagrant, no
provider, a missing box, a lab file Vagrant rejects. One line, exit status 1 (2 for bad input), no lab left."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from vmhelpers import leftovers, require_or_skip

from tests.conftest import run_cli


def _path_without(tmp_path: Path, *drop: str, keep: tuple[str, ...] = ()) -> str:
    """A PATH holding only symlinks to the usual tools minus ``drop`` (and plus ``keep``)."""
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    for tool in ("sh", "ip", "python3", "id", "ruby", *keep):
        real = shutil.which(tool)
        if real and tool not in drop:
            (d / tool).symlink_to(real)
    return str(d)


def _nothing_created(home: Path, lab: str) -> None:
    labdir = home / "labs" / lab
    assert not (labdir / "state.jsonl").exists() and not (labdir / "lab.json").exists()
    if shutil.which("virsh"):
        assert leftovers(lab) == {}


def _one_line(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("labkit: error: "), err
    return err


def test_no_vagrant(home, tmp_path, capsys):
    env = {"PATH": _path_without(tmp_path, "vagrant")}
    assert run_cli("up", "--backend", "vagrant", "--name", "vg2", env=env) == 1
    err = _one_line(capsys.readouterr().err)
    assert "vagrant is not installed" in err and "--backend netns" in err
    _nothing_created(home, "vg2")


def test_auto_without_vagrant_is_not_vagrant(tmp_path, monkeypatch):
    from labkit.backends.vagrant import VagrantBackend

    monkeypatch.setenv("PATH", _path_without(tmp_path, "vagrant"))
    ok, why = VagrantBackend().available()
    assert not ok and why == "vagrant is not installed"


@pytest.mark.vagrant
def test_no_provider(home, tmp_path, capsys):
    require_or_skip(None if shutil.which("vagrant") else "needs vagrant")
    # libvirt asked for, but no virsh/libvirt client on PATH
    env = {"PATH": _path_without(tmp_path, "virsh", "VBoxManage", keep=("vagrant",))}
    assert run_cli("up", "--backend", "vagrant", "--provider", "libvirt", "--name", "vg2", env=env) == 1
    err = _one_line(capsys.readouterr().err)
    assert "vagrant provider libvirt: virsh is not installed" in err
    # VirtualBox asked for, not installed
    assert run_cli("up", "--backend", "vagrant", "--provider", "virtualbox", "--name", "vg2", env=env) == 1
    err = _one_line(capsys.readouterr().err)
    assert "vagrant provider virtualbox: VirtualBox is not installed (VBoxManage not found)" in err
    # auto: neither
    assert run_cli("up", "--backend", "vagrant", "--name", "vg2", env=env) == 1
    err = _one_line(capsys.readouterr().err)
    assert "no usable Vagrant provider: libvirt: virsh is not installed" in err and "virtualbox:" in err
    _nothing_created(home, "vg2")


@pytest.mark.vagrant
def test_missing_box(home, vm_ready, capsys):
    assert run_cli("up", "--backend", "vagrant", "--provider", "libvirt", "--box", "labkit/no-such-box",
                   "--name", "vg2") == 1
    err = _one_line(capsys.readouterr().err)
    assert "box labkit/no-such-box for provider libvirt is not installed" in err
    assert "labkit box build" in err
    _nothing_created(home, "vg2")


@pytest.mark.vagrant
def test_vagrant_rejects_the_lab_file(home, vm_ready, test_box, tmp_path, capsys):
    from vmhelpers import lab_file

    f = lab_file(test_box["lab_yaml"], tmp_path / "bad.yaml", libvirt={"nosuchsetting": 1})
    assert run_cli("up", "-f", str(f), "--name", "vg2") == 2
    err = _one_line(capsys.readouterr().err)
    assert "does not validate" in err and "nosuchsetting" in err
    _nothing_created(home, "vg2")


def test_kvm_check_reads_the_cpu_flags():
    from labkit.backends.vagrant_cmd import kvm_usable

    ok, why = kvm_usable()
    flags = Path("/proc/cpuinfo").read_text()
    has_flag = " vmx" in flags or " svm" in flags
    if not os.path.exists("/dev/kvm"):
        assert not ok and "/dev/kvm" in why
    elif not has_flag:
        assert not ok and "vmx/svm" in why
