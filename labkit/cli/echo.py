"""``labkit echo``: labkit's own RTT probe (ICMP echo, kernel timestamps, microseconds); see labkit/echo.py.

Runs on lab hosts (the bench starts it over SSH on the EVSE and on the CPO at once): standard library and
click only. CSV rows on stdout (or ``--output``), one JSON summary line on stderr. Exit status 0 when a
reply came, 1 when none did (like ping), 2 for bad options.

``python -m labkit.cli.echo ...`` runs it with the same conventions (the tests and the benchmark use it).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from labkit import echo as probe
from labkit.errors import ConfigError


@click.command("echo")
@click.argument("destination")
@click.option("-c", "--count", type=int, default=10, show_default=True, help="Probes to send (like ping -c).")
@click.option("-i", "--interval", "interval_s", type=float, default=1.0, show_default=True,
              help=f"Seconds between probes, kept whatever the replies do (like ping -i; >= {probe.MIN_INTERVAL_S:g}).")
@click.option("-W", "--wait", "wait_s", type=float, default=5.0, show_default=True,
              help="Seconds to wait for each probe's reply before it counts as lost (like ping -W).")
@click.option("-s", "--size", type=int, default=probe.DEFAULT_SIZE, show_default=True,
              help="ICMP payload, bytes (like ping -s; 56 makes ping's 84-byte IP packet).")
@click.option("--direction", required=True, callback=lambda ctx, param, v: _direction(v),
              help="The direction column: up (run on an EVSE host toward the CPO) or down (CPO toward EVSE).")
@click.option("--src", "src_name", default="", help="The src column (a host name).  [default: this host's name]")
@click.option("--dst", "dst_name", default="", help="The dst column (a host name).  [default: DESTINATION]")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the CSV to this file instead of stdout.")
@click.option("--socket", "sock", type=click.Choice(probe.SOCKETS), default="auto", show_default=True,
              help="ICMP socket: datagram (unprivileged, net.ipv4.ping_group_range), raw (root), or the first "
                   "that opens.")
@click.option("--stamps", type=click.Choice(probe.STAMPS), default="kernel", show_default=True,
              help="kernel: the kernel's send and receive timestamps; user: this process's clock reads "
                   "(for comparison: benchmarks/probe_resolution.py).")
def echo(destination: str, count: int, interval_s: float, wait_s: float, size: int, direction: str,
         src_name: str, dst_name: str, output: str | None, sock: str, stamps: str) -> None:
    """Measure the RTT to DESTINATION (IPv4) with microsecond resolution: one CSV row per probe.

    \b
    Columns: src, dst, direction, seq, t_wall (when the probe was sent, s since the epoch), rtt_ms (3
    decimals, rounded up; empty when lost), lost (1 or 0). Lost probes are rows.
    """
    probe.validate(destination, count, interval_s, wait_s, size)  # before any output: exit 2, one line
    if output:
        parent = Path(output).parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise ConfigError(f"--output: cannot create {output!r} (no writable directory {str(parent)!r})")
    state: dict[str, Any] = {}  # the output and its writer, opened with the first row (not when the probe fails)

    def writer() -> csv.DictWriter:
        if "w" not in state:
            state["fh"] = open(output, "w", newline="") if output else sys.stdout  # noqa: SIM115
            state["w"] = csv.DictWriter(state["fh"], fieldnames=list(probe.COLUMNS), lineterminator="\n")
            state["w"].writeheader()
        return state["w"]

    def write_row(row: dict[str, Any]) -> None:
        writer().writerow(row)
        state["fh"].flush()

    try:
        summary = probe.run(destination, count=count, interval_s=interval_s, wait_s=wait_s, size=size,
                            src_name=src_name, dst_name=dst_name, direction=direction, sock=sock, stamps=stamps,
                            write_row=write_row)
        writer()  # the header, even when interrupted before the first probe
        state["fh"].flush()
    finally:
        if output and "fh" in state:
            state["fh"].close()
    click.echo("labkit echo: " + json.dumps(summary, separators=(",", ":")), err=True)
    if summary.get("interrupted"):
        raise click.exceptions.Exit(130)
    if not summary["packet_receive"]:
        raise click.exceptions.Exit(1)


def _direction(value: str) -> str:
    # not a click.Choice: its "missing option" message spans several lines
    if value not in ("up", "down"):
        raise click.BadParameter(f"{value!r} is not up or down")
    return value


def _main() -> int:
    from labkit.cli import cli, main

    cli.add_command(echo)
    return main(["echo", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(_main())
