"""``labkit up``, ``down``, ``status`` and ``ssh``: the lab's lifecycle verbs (library: labkit.lifecycle)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import click

from labkit import lifecycle
from labkit.errors import ConfigError
from labkit.model import load_spec
from labkit.progress import Reporter

lab_option = click.option("--lab", "lab_name", default="lab", show_default=True, metavar="NAME",
                          help="Which lab (its name).")


@click.command()
@click.option("-f", "--file", "lab_file", type=click.Path(dir_okay=False), help="Lab file (YAML).")
@click.option("--name", "--lab", "name", help="Lab name [default: lab] (--lab, as the other commands say it).")
@click.option("--backend", help="auto, netns, docker, vagrant or hosts [default: auto; hosts with -i].")
@click.option("-i", "--inventory", type=click.Path(dir_okay=False),
              help="Existing machines: an Ansible inventory (YAML or INI) with the groups cpo, gateway and evse.")
@click.option("--routes", is_flag=True, default=None,
              help="hosts: add the routes through the gateway the endpoints lack (removed at down).")
@click.option("--accept-new-host-keys", is_flag=True, default=None,
              help="hosts: accept the keys of machines known_hosts does not know (a changed key never).")
@click.option("--evse", help="Number of EVSE hosts [default: 1].")
@click.option("--cpo-net", help="CPO-side network [default: 192.168.10.0/24].")
@click.option("--evse-net", help="EVSE-side network [default: 192.168.20.0/24].")
@click.option("--mgmt-net", help="Management network (netns) [default: a free /22 in 10.250.0.0/16].")
@click.option("--provider", help="Vagrant provider: auto, virtualbox or libvirt.")
@click.option("--box", help="Vagrant box.")
@click.option("--no-path-check", is_flag=True, help="Skip the check that traffic crosses the gateway.")
@click.pass_context
def up(ctx, lab_file, name, backend, inventory, routes, accept_new_host_keys, evse, cpo_net, evse_net, mgmt_net,
       provider, box, no_path_check):
    """Bring up a lab: a CPO, a gateway and N EVSE hosts, reachable over SSH (on existing machines with -i)."""
    import os

    spec = load_spec(lab_file, {"name": name, "backend": backend, "evse": evse, "networks.cpo": cpo_net,
                                "networks.evse": evse_net, "networks.mgmt": mgmt_net,
                                "vagrant.provider": provider, "vagrant.box": box,
                                "inventory": os.path.abspath(inventory) if inventory else None,
                                "routes": routes, "accept_new_host_keys": accept_new_host_keys})
    with Reporter("up", quiet=ctx.obj["quiet"]) as rep:
        handle = lifecycle.up(spec, progress=rep.update, check_path=not no_path_check)
    t = handle.timings
    click.echo(f"lab {handle.lab.name!r} is up on {handle.inventory.backend}: {len(handle.inventory.hosts)} hosts "
               f"(cpo, gw, {len(handle.inventory.evses)} evse) in {t.get('total', 0):.1f} s; "
               f"lab directory {handle.labdir.path}")


@click.command()
@lab_option
@click.option("--all", "all_labs", is_flag=True, help="Every lab on this machine.")
@click.pass_context
def down(ctx, lab_name, all_labs):
    """Remove everything a lab created (also after a crash of 'up')."""
    from labkit.labdir import list_labs

    names = list_labs() if all_labs else [lab_name]
    for n in names:
        with Reporter("down", quiet=ctx.obj["quiet"]) as rep:
            removed = lifecycle.down(n, progress=rep.update)
        click.echo(f"lab {n!r} removed" if removed else f"lab {n!r}: nothing to remove")


@click.command()
@lab_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(lab_name, as_json):
    """Hosts, addresses, reachability and the profile applied."""
    st = lifecycle.status(lab_name)
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    shaping = st.get("shaping") or {}
    prof = shaping.get("profile") or "none (unshaped)"
    console = Console()
    console.print(f"lab [bold]{st['lab']}[/] on {st['backend']}; profile: {prof}; directory {st['labdir']}")
    table = Table("host", "role", "data addresses", "ssh", "reachable", "state")
    for h in st["hosts"]:
        addrs = ", ".join(f"{a} ({h['ifaces'].get(n, '?')})" for n, a in h["addresses"].items())
        table.add_row(h["name"], h["role"], addrs, h["ssh"], h["reachable"] or "?", h["state"])
    console.print(table)
    bad = [h["name"] for h in st["hosts"] if h["reachable"] != "ok"]
    if bad:
        raise click.exceptions.Exit(1)


@click.command(context_settings={"ignore_unknown_options": True})
@lab_option
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh(lab_name, host, command):
    """Open a shell on HOST, or run COMMAND there (exit status passes through)."""
    handle = lifecycle.open_lab(lab_name)
    try:
        h = handle.inventory.host(host)
    except KeyError:
        raise ConfigError(f"host: unknown host {host!r} in lab {lab_name!r} "
                          f"(hosts: {', '.join(handle.lab.host_names)})") from None
    client = shutil.which("ssh")
    if client:
        argv = [client, "-q", "-i", h.key_file, "-p", str(h.ssh_port), "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes"]
        if h.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={h.known_hosts}", "-o", "StrictHostKeyChecking=yes"]
        else:
            argv += ["-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no"]
        if not command and sys.stdin.isatty():
            argv.append("-t")
        argv.append(f"{h.user}@{h.ssh_host}")
        argv += list(command)
        rc = subprocess.call(argv)
        if rc:
            raise click.exceptions.Exit(rc)
        return
    if not command:
        raise ConfigError("ssh: an interactive shell needs the OpenSSH client (apt install openssh-client)")
    with handle.remote() as remote:
        res = remote.run(h, " ".join(command), check=False)
    click.echo(res.stdout, nl=False)
    click.echo(res.stderr, nl=False, err=True)
    if res.exited:
        raise click.exceptions.Exit(res.exited)
