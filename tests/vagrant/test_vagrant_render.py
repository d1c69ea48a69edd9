"""The rendered Vagrantfile: what it holds for each provider, and `vagrant validate` on it (fast: no VM)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from labkit.errors import ConfigError
from labkit.model import LabSpec, build_lab
from labkit.vagrantfile import render, ruby
from tests.conftest import run_cli


def lab(**spec):
    return build_lab(LabSpec.model_validate({"name": "vg1", "evse": 2, **spec}))


def test_libvirt_vagrantfile_holds_the_lab():
    text = render(lab(vagrant={"box": "labkit/test-bookworm", "box_version": "1.0.7",
                               "memory": {"cpo": 768}, "cpus": {"evse": 2}, "libvirt": {"driver": "qemu"}}),
                  "libvirt")
    assert "ENV[\"VAGRANT_DEFAULT_PROVIDER\"] ||= 'libvirt'" in text
    assert "config.vm.box = 'labkit/test-bookworm'" in text and "config.vm.box_version = '1.0.7'" in text
    for host in ("cpo", "gw", "evse1", "evse2"):
        assert f"config.vm.define '{host}' do |m|" in text and f"m.vm.hostname = '{host}'" in text
    # static addresses on the two isolated data networks; the gateway on both
    for ip, net in [("192.168.10.10", "cpo"), ("192.168.10.1", "cpo"), ("192.168.20.1", "evse"),
                    ("192.168.20.11", "evse"), ("192.168.20.12", "evse")]:
        assert f"ip: '{ip}', netmask: '255.255.255.0',\n      virtualbox__intnet: 'lk-vg1-{net}'" in text
    assert text.count('libvirt__forward_mode: "veryisolated",\n      libvirt__dhcp_enabled: false') == 5
    # the management network is isolated and named for the lab; domains carry the lab's prefix
    assert 'lv.management_network_mode = "none"' in text
    assert "lv.management_network_name = 'lk-vg1-mgmt'" in text and "lv.default_prefix = 'lk-vg1-'" in text
    assert "lv.driver = 'qemu'" in text
    # memory and CPUs per role, defaults where the lab file is silent
    cpo = text.split("config.vm.define 'cpo'")[1].split("config.vm.define")[0]
    evse = text.split("config.vm.define 'evse1'")[1].split("config.vm.define")[0]
    assert "lv.memory = 768" in cpo and "vb.memory = 768" in cpo and "lv.cpus = 1" in cpo
    assert "lv.memory = 512" in evse and "lv.cpus = 2" in evse and "vb.cpus = 2" in evse
    # it places hosts only: no provisioner, no shell, no synced folder
    assert "provision" not in text
    assert 'synced_folder ".", "/vagrant", disabled: true' in text


def test_virtualbox_default_and_console_logs(tmp_path):
    text = render(lab(), "virtualbox", console_dir=tmp_path)
    assert "ENV[\"VAGRANT_DEFAULT_PROVIDER\"] ||= 'virtualbox'" in text
    assert "vb.name = 'lk-vg1-evse2'" in text and "vb.linked_clone = true" in text
    assert f":path => '{tmp_path}/console-gw.log'" in text


def test_ruby_literals_cannot_inject():
    assert ruby("it's #{`id`}\\") == "'it\\'s #{`id`}\\\\'"  # single quotes: no interpolation in Ruby
    assert ruby({"a": [1, True, None, 2.5]}) == "{'a' => [1, true, nil, 2.5]}"
    with pytest.raises(ConfigError):
        ruby(object())


@pytest.mark.parametrize("options, fragment", [
    ({"Bad-Key": 1}, "vagrant.libvirt.Bad-Key: not a vagrant-libvirt setting name"),
    ({"uri": "qemu:///session"}, "vagrant.libvirt.uri: labkit sets this itself"),
    ({"management_network_mode": "nat"}, "vagrant.libvirt.management_network_mode: labkit sets this itself"),
])
def test_libvirt_options_are_checked(options, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        render(lab(vagrant={"libvirt": options}), "libvirt")


def test_render_command(home, capsys, tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_text("name: vg1\nevse: 3\nvagrant:\n  box: generic/ubuntu2404\n")
    assert run_cli("render", "-f", str(f), "--provider", "virtualbox") == 0
    out = capsys.readouterr().out
    assert out.startswith("# -*- mode: ruby -*-") and "config.vm.define 'evse3'" in out
    assert "config.vm.box = 'generic/ubuntu2404'" in out and "||= 'virtualbox'" in out
    assert not (home / "labs" / "vg1").exists()  # rendering creates nothing
    assert run_cli("render", "--provider", "hyperv") == 2
    assert "--provider" in capsys.readouterr().err


# -- vagrant validate ---------------------------------------------------------------------------------

def _vagrant_or_skip(plugin: str | None = None) -> None:
    if shutil.which("vagrant") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have vagrant (bash .ci/vagrant.sh)")
        pytest.skip("vagrant is not installed")
    if plugin and plugin not in subprocess.run(["vagrant", "plugin", "list"], capture_output=True,
                                               text=True).stdout:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have {plugin}")
        pytest.skip(f"{plugin} is not installed")


def _validate(text: str, where: Path, path_prefix: str | None = None) -> subprocess.CompletedProcess:
    where.mkdir(parents=True, exist_ok=True)
    (where / "Vagrantfile").write_text(text)
    env = dict(os.environ, VAGRANT_CHECKPOINT_DISABLE="1")
    if path_prefix:
        env["PATH"] = f"{path_prefix}:{env['PATH']}"
    return subprocess.run(["vagrant", "validate"], cwd=where, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.vagrant
def test_vagrant_validates_the_libvirt_vagrantfile(tmp_path):
    _vagrant_or_skip("vagrant-libvirt")
    good = _validate(render(lab(vagrant={"libvirt": {"driver": "qemu", "cpu_mode": "host-model"}}), "libvirt"),
                     tmp_path / "good")
    assert good.returncode == 0, good.stderr
    assert "validated successfully" in good.stdout
    # and validation can fail: an unknown provider setting is caught
    bad = _validate(render(lab(vagrant={"libvirt": {"nosuchsetting": 1}}), "libvirt"), tmp_path / "bad")
    assert bad.returncode != 0 and "nosuchsetting" in bad.stderr + bad.stdout


@pytest.mark.vagrant
def test_vagrant_validates_the_virtualbox_vagrantfile(tmp_path):
    """VirtualBox is not installable here (not in Debian), so a stand-in VBoxManage answers Vagrant's
    version probe; everything else is Vagrant's own validation of the VirtualBox provider settings."""
    _vagrant_or_skip()
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "VBoxManage").write_text("#!/bin/sh\n[ \"$1\" = --version ] && { echo 7.0.14r161095; exit 0; }\nexit 1\n")
    (fake / "VBoxManage").chmod(0o755)
    prefix = None if shutil.which("VBoxManage") else str(fake)
    text = render(lab(), "virtualbox")
    good = _validate(text, tmp_path / "good", prefix)
    assert good.returncode == 0, good.stderr
    bad = _validate(text.replace("vb.linked_clone = true", "vb.linked_clone = true\n    vb.nosuch = 1"),
                    tmp_path / "bad", prefix)
    assert bad.returncode != 0 and "nosuch" in bad.stderr + bad.stdout
