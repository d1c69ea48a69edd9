"""SSH material made for one lab: its client key pair, a host key per host, known_hosts and sshd configs.

Nothing is shared between labs or with the machine's own SSH setup: keys are generated fresh for every lab
(Ed25519) and live in the lab directory, so a lab's hosts accept only that lab's key and labkit accepts only
those hosts' keys. ``offered_host_key`` reads the key a host's sshd offers (VMs and existing machines).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from labkit.labdir import LabDir


@dataclass
class LabKeys:
    client_key: Path
    client_public: str
    known_hosts: Path
    host_public: dict[str, str]


def _new_key(path: Path, comment: str) -> str:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    pub = public.decode() + f" {comment}"
    path.with_name(path.name + ".pub").write_text(pub + "\n")
    return public.decode()


def lab_keys(labdir: LabDir, hosts: list[str]) -> LabKeys:
    """Generate the lab's client key and one host key per host (in ``keys/`` and ``hosts/<host>/``)."""
    labdir.keys.mkdir(parents=True, exist_ok=True)
    os.chmod(labdir.keys, 0o700)
    client = labdir.keys / "id_ed25519"
    client_pub = _new_key(client, f"labkit-{labdir.name}")
    (labdir.keys / "authorized_keys").write_text(client_pub + "\n")
    os.chmod(labdir.keys / "authorized_keys", 0o600)
    host_pub = {}
    for name in hosts:
        hd = labdir.host_dir(name)
        hd.mkdir(parents=True, exist_ok=True)
        host_pub[name] = _new_key(hd / "ssh_host_ed25519_key", f"{name}.{labdir.name}")
    return LabKeys(client, client_pub, labdir.keys / "known_hosts", host_pub)


def write_known_hosts(labdir: LabDir, entries: dict[str, str]) -> Path:
    """known_hosts lines ``address key`` for each host (address -> public key)."""
    path = labdir.keys / "known_hosts"
    path.write_text("".join(f"{addr} {key}\n" for addr, key in entries.items()))
    return path


#: where a host's sshd finds its files: inside the host's private mount namespace labkit mounts a tmpfs here
#: and copies the host key, the lab's authorized_keys and this config in, so sshd runs with StrictModes on
#: (every directory up to / root-owned and not writable by others) wherever the lab directory lives
SSHD_DIR = "/etc/ssh"


def write_sshd_config(labdir: LabDir, host: str, listen: str) -> Path:
    """The sshd_config of one host (kept in ``hosts/<host>/``; paths inside name ``SSHD_DIR``)."""
    hd = labdir.host_dir(host)
    cfg = hd / "sshd_config"
    cfg.write_text(f"""# sshd for lab {labdir.name}, host {host} (written by labkit; removed by labkit down)
ListenAddress {listen}
Port 22
HostKey {SSHD_DIR}/ssh_host_ed25519_key
PidFile none
AuthorizedKeysFile {SSHD_DIR}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
StrictModes yes
MaxStartups 200:30:400
MaxSessions 64
ClientAliveInterval 30
Subsystem sftp internal-sftp
""")
    return cfg


def offered_host_key(host: str, port: int, timeout: float = 30) -> Any:
    """The host key the sshd at ``host``:``port`` offers (a paramiko key): a key exchange only, no
    authentication and no command."""
    import socket

    import paramiko

    sock = socket.create_connection((host, port), timeout=timeout)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    finally:
        transport.close()
        sock.close()
