"""The Docker host image (labkit.dockerimage, `labkit image`): built for real from debootstrap and imported
into the engine (no registry), at most once per session (module fixture; a second run is cached), with the
recipe's labels and command, the tools a lab host needs, and sshd serving as the container's main process
with a config mounted at /etc/labkit-ssh, as the docker backend runs it.

An engine that does not answer is a failure here, not a skip (.ci/docker.sh and install.sh --dev start one);
only a non-root run skips, as the rest of the suite does. The recipe and unreachable-engine tests need neither.
"""

from __future__ import annotations

import contextlib
import io
import re
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from labkit import dockerimage
from labkit.errors import BackendError
from tests.conftest import needs_root, run_cli

NOWHERE = "unix:///nonexistent/labkit-test-docker.sock"


def run_quiet(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = run_cli(*argv)
    return rc, out.getvalue(), err.getvalue()


# --------------------------------------------------------------------------------------------------
# no engine needed


def test_recipe_key_follows_build_script_and_suite(tmp_path, monkeypatch):
    key, tag = dockerimage.image_recipe("bookworm")
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert tag == f"labkit/host:bookworm-{key[:12]}"
    assert dockerimage.image_recipe("bookworm") == (key, tag)  # stable
    assert dockerimage.image_recipe("trixie")[0] != key

    real = dockerimage.resource(dockerimage.BUILD_SCRIPT)
    changed = tmp_path / "build.sh"
    changed.write_text(real.read_text() + "# one more line\n")
    monkeypatch.setattr(dockerimage, "resource",
                        lambda name: changed if name == dockerimage.BUILD_SCRIPT else real)
    key2, tag2 = dockerimage.image_recipe("bookworm")
    assert key2 != key and tag2 != tag and tag2 == f"labkit/host:bookworm-{key2[:12]}"


@pytest.mark.parametrize("argv", [["image", "show"], ["image", "build"]])
def test_unreachable_engine_is_one_line(argv, capsys, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", NOWHERE)
    assert run_cli(*argv) == 1
    err = capsys.readouterr().err
    assert err == (f"labkit: error: docker: cannot reach the Docker engine at {NOWHERE} "
                   "(is dockerd running? install.sh --dev starts it)\n")
    with pytest.raises(BackendError, match="cannot reach the Docker engine"):
        dockerimage.engine_client()


# --------------------------------------------------------------------------------------------------
# the real engine, the real build


@pytest.fixture(scope="module")
def engine():
    return dockerimage.engine_client()  # an engine that does not answer fails every test that uses it


@pytest.fixture(scope="module")
def first_build(engine):
    """`labkit image build` once for the session: a real build where the engine lacks this recipe's image."""
    t0 = time.monotonic()
    rc, out, err = run_quiet("image", "build")
    assert rc == 0, err
    return {"seconds": time.monotonic() - t0, "tag": out.strip(), "err": err}


def _id_in(err: str) -> str:
    m = re.search(r"\b(sha256:[0-9a-f]{64})\b", err)
    assert m, err
    return m.group(1)


@needs_root
def test_second_build_is_cached_and_fast(engine, first_build):
    key, tag = dockerimage.image_recipe("bookworm")
    assert first_build["tag"] == tag
    first_id = _id_in(first_build["err"])
    t0 = time.monotonic()
    rc, out, err = run_quiet("image", "build")
    seconds = time.monotonic() - t0
    assert rc == 0, err
    assert out.strip() == tag
    assert "cached in the engine" in err, err
    assert _id_in(err) == first_id == engine.images.get(tag).id
    assert seconds < 10, f"a cached image build took {seconds:.1f} s"

    img = dockerimage.ensure_image()
    assert (img.built, img.id, img.tag, img.key) == (False, first_id, tag, key)
    assert any(p.startswith("openssh-server ") for p in img.packages)
    assert img.packages_file is not None and img.packages_file.is_file()
    assert oct(img.dir.stat().st_mode & 0o777) == "0o700" and img.dir.stat().st_uid == 0

    rc, out, _ = run_quiet("image", "show")
    assert rc == 0 and first_id in out and f"packages: {len(img.packages)}" in out and "cached" in out


@needs_root
def test_image_carries_the_recipe(engine, first_build):
    key, tag = dockerimage.image_recipe("bookworm")
    cfg = engine.images.get(tag).attrs["Config"]
    assert cfg["Labels"] == {"org.labkit.recipe": key, "org.labkit.suite": "bookworm"}
    assert cfg["Cmd"] == ["/usr/sbin/sshd", "-D", "-e", "-f", "/etc/labkit-ssh/sshd_config"]
    assert "LANG=C.UTF-8" in cfg["Env"]
    packages = {line.split()[0] for line in dockerimage.find_image("bookworm", engine).packages}
    assert {"openssh-server", "python3", "iproute2", "iputils-ping", "iperf3", "iptables", "tcpdump",
            "ethtool", "procps", "psmisc", "ca-certificates"} <= packages
    assert not packages & {"systemd", "linux-image-amd64", "labkit", "python3-pip"}


@needs_root
def test_container_has_what_a_lab_host_needs(engine, first_build):
    script = ("set -e; python3 --version; ip -V; iperf3 --version; tc -V; iptables -V; ping -V; "
              "test -d /run/sshd && echo run-sshd; "
              "if ls /etc/ssh/ssh_host_* 2>/dev/null; then echo HOST-KEYS; fi; "
              "ssh-keygen -q -t ed25519 -N '' -f /tmp/k && /usr/sbin/sshd -t -f /dev/null -h /tmp/k && echo sshd-ok")
    out = engine.containers.run(first_build["tag"], ["/bin/sh", "-c", script], remove=True,
                                network_mode="none").decode()
    for expect in ("Python 3.11", "iproute2", "iperf 3", "tc utility", "iptables v1.8", "ping from iputils",
                   "run-sshd", "sshd-ok"):
        assert expect in out, (expect, out)
    assert "HOST-KEYS" not in out, out  # every container gets labkit's host key, never the image's


@needs_root
def test_sshd_serves_with_the_mounted_config(engine, first_build, tmp_path):
    """The image's own command, as the docker backend runs it: sshd with /etc/labkit-ssh mounted, accepting a
    key login as root (the check runs ssh inside the container, against 127.0.0.1)."""
    conf = tmp_path / "labkit-ssh"
    conf.mkdir(mode=0o700)
    for name in ("host", "client"):
        key = Ed25519PrivateKey.generate()
        (conf / f"{name}_key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
        (conf / f"{name}_key").chmod(0o600)
        pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        (conf / f"{name}_key.pub").write_bytes(pub + b"\n")
    (conf / "authorized_keys").write_bytes((conf / "client_key.pub").read_bytes())
    (conf / "sshd_config").write_text(
        "ListenAddress 127.0.0.1\nHostKey /etc/labkit-ssh/host_key\n"
        "AuthorizedKeysFile /etc/labkit-ssh/authorized_keys\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUseDNS no\n")
    c = engine.containers.run(first_build["tag"], detach=True, network_mode="none",
                              volumes={str(conf): {"bind": "/etc/labkit-ssh", "mode": "ro"}},
                              labels={"org.labkit.test": "test_docker_image"})
    try:
        for _ in range(50):
            c.reload()
            if c.status != "running" or b"Server listening" in c.logs():
                break
            time.sleep(0.1)
        assert c.status == "running", c.logs().decode()
        rc, out = c.exec_run(["ssh", "-i", "/etc/labkit-ssh/client_key", "-o", "BatchMode=yes",
                              "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                              "root@127.0.0.1", "cat /proc/1/cmdline | tr '\\0' ' '; echo; id -u"])
        assert rc == 0, out.decode() + c.logs().decode()
        assert "/usr/sbin/sshd -D -e -f /etc/labkit-ssh/sshd_config" in out.decode()
        assert out.decode().split()[-1] == "0"
    finally:
        c.remove(force=True)
