"""From ``vagrant ssh-config`` to the inventory: the parsed per-host settings, and each VM's SSH host key."""

from __future__ import annotations


def parse_ssh_config(text: str) -> dict[str, dict[str, str]]:
    """``vagrant ssh-config`` output -> host -> {hostname, port, user, identityfile}."""
    import paramiko

    cfg = paramiko.SSHConfig.from_text(text)
    out = {}
    for name in cfg.get_hostnames():
        if name == "*":
            continue
        d = cfg.lookup(name)
        ident = d.get("identityfile") or [""]
        out[name] = {"hostname": d.get("hostname", ""), "port": str(d.get("port", "22")),
                     "user": d.get("user", "vagrant"), "identityfile": ident[0]}
    return out


def fetch_host_key(host: str, port: int, timeout: float = 30):
    import paramiko

    sock = __import__("socket").create_connection((host, port), timeout=timeout)
    t = paramiko.Transport(sock)
    try:
        t.start_client(timeout=timeout)
        return t.get_remote_server_key()
    finally:
        t.close()
