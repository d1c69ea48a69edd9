"""``labkit hosts check``: read an Ansible inventory of existing machines and check them, changing nothing
(library: labkit.backends.hosts)."""

from __future__ import annotations

import json

import click


@click.group()
def hosts() -> None:
    """Existing machines named by an Ansible inventory (the hosts backend, in progress)."""


@hosts.command()
@click.option("-i", "--inventory", "inventory", required=True, type=click.Path(dir_okay=False),
              help="Ansible inventory (YAML or INI) with the groups cpo, gateway and evse.")
@click.option("--cpo-net", help="CPO-side network [default: 192.168.10.0/24].")
@click.option("--evse-net", help="EVSE-side network [default: 192.168.20.0/24].")
@click.option("--no-path-check", is_flag=True, help="Skip the probes that traffic crosses the gateway.")
@click.option("--json", "as_json", is_flag=True, help="Print the hosts found as JSON.")
def check(inventory, cpo_net, evse_net, no_path_check, as_json):
    """Reach every host over SSH, check root or sudo, find each data interface and address, check the
    routes (and, unless --no-path-check, probe that EVSE<->CPO traffic crosses the gateway). Changes nothing."""
    from labkit.backends.hosts import discover
    from labkit.model import Networks
    from labkit.remote import Remote
    from labkit.yamlfile import validate

    nets = {k: v for k, v in {"cpo": cpo_net, "evse": evse_net}.items() if v is not None}
    networks = validate(Networks, nets, filename="command line")
    inv = discover(inventory, networks=networks)
    if not no_path_check:
        from labkit import pathcheck

        with Remote(inv) as remote:
            pathcheck.check(remote, inv)
    if as_json:
        click.echo(json.dumps(inv.to_dict()["hosts"], indent=2))
        return
    for h in inv.hosts:
        where = ", ".join(f"{net} {h.addresses[net]} on {h.ifaces[net]}" for net in h.addresses)
        click.echo(f"{h.name:<12} {h.role:<8} {h.user}@{h.ssh_host}:{h.ssh_port}{' (sudo)' if h.sudo else ''}  "
                   f"{where}")
    path = "" if no_path_check else "; EVSE<->CPO traffic crosses the gateway"
    click.echo(f"{len(inv.hosts)} hosts ready (cpo, gateway, {len(inv.evses)} evse){path}")
