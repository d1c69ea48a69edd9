"""From ``vagrant ssh-config`` to the inventory: the parsed per-host settings (each VM's SSH host key is
``labkit.sshkeys.offered_host_key``)."""

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
