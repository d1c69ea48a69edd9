"""``labkit csms`` and ``labkit fleet``: the OCPP simulators as standalone commands.

Both import only the standard library, click, ocpp and websockets (no pandas, matplotlib or fabric), so
they start fast on small lab hosts. Every parameter is a flag; units are in the flag help.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import click

from labkit.errors import ConfigError
from labkit.sim.settings import LOOPS, PASSWORD_ENV, VALIDATION_MODES, VERSIONS, WsSettings, parse_listen, read_password

TLS_VERSION_CHOICES = ("1.2", "1.3")


def _password_options(fn: Callable) -> Callable:
    """--password-file, and --password kept only to refuse it with a clear line (argv is public)."""
    fn = click.option(
        "--password-file",
        type=click.Path(dir_okay=False),
        default=None,
        help=f"HTTP Basic auth password (OCPP security profile 1), first line of this file; "
        f"else from the environment variable {PASSWORD_ENV}. Never on the command line.",
    )(fn)
    fn = click.option("--password", "argv_password", default=None, hidden=True)(fn)
    return fn


def _password(kw: dict[str, Any]) -> str | None:
    return read_password(kw.pop("password_file"), argv_password=kw.pop("argv_password"))


def _ws_options(fn: Callable) -> Callable:
    opts = [
        click.option(
            "--ping-interval",
            "ping_interval_s",
            type=float,
            default=20.0,
            show_default=True,
            help="WebSocket keepalive ping interval, seconds (0 = off).",
        ),
        click.option(
            "--ping-timeout",
            "ping_timeout_s",
            type=float,
            default=20.0,
            show_default=True,
            help="Close when a ping gets no pong within this many seconds (0 = never).",
        ),
        click.option(
            "--open-timeout",
            "open_timeout_s",
            type=float,
            default=10.0,
            show_default=True,
            help="TCP + WebSocket handshake timeout, seconds (0 = none).",
        ),
        click.option(
            "--close-timeout",
            "close_timeout_s",
            type=float,
            default=10.0,
            show_default=True,
            help="Closing handshake timeout, seconds.",
        ),
        click.option(
            "--compression/--no-compression",
            default=False,
            show_default=True,
            help="permessage-deflate (off: frame sizes are what the wire carries).",
        ),
        click.option(
            "--max-message-bytes",
            type=int,
            default=256 * 1024,
            show_default=True,
            help="Largest incoming WebSocket message, bytes (larger: close 1009).",
        ),
        click.option(
            "--validation",
            type=click.Choice(VALIDATION_MODES),
            default="fast",
            show_default=True,
            help="OCPP JSON-schema validation: fast (compiled schemas), sync/async (the ocpp library's, "
            "in the loop / in a thread), off.",
        ),
        click.option(
            "--loop",
            type=click.Choice(LOOPS),
            default="auto",
            show_default=True,
            help="Event loop: uvloop when installed (auto), or asyncio's own.",
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _ws(kw: dict[str, Any]) -> WsSettings:
    return WsSettings(
        ping_interval_s=kw.pop("ping_interval_s"),
        ping_timeout_s=kw.pop("ping_timeout_s"),
        open_timeout_s=kw.pop("open_timeout_s"),
        close_timeout_s=kw.pop("close_timeout_s"),
        compression=kw.pop("compression"),
        max_message_bytes=kw.pop("max_message_bytes"),
    )


CSMS_HELP = f"""Run the OCPP CSMS (central system) until SIGTERM/SIGINT.

\b
Exposure: by default it listens on every address of this host (0.0.0.0:9000) and
asks for no credentials (OCPP security profile 0): anyone who can reach the port
can connect as any station. Restrict it with --listen ADDRESS:PORT (e.g. the lab's
CPO address or 127.0.0.1) and require HTTP Basic auth (security profile 1, user
name = station identity) with --password-file FILE or {PASSWORD_ENV}.

\b
Security profiles (--security-profile; inferred from the options when not given):
  0  no authentication, ws://
  1  HTTP Basic auth (the password), ws://
  2  TLS (--tls-cert/--tls-key) + HTTP Basic auth, wss://
  3  TLS + a client certificate signed by --client-ca whose CN is the station
     identity in the URL (else HTTP 403), wss://
TLS 1.2 and 1.3 (--tls-min-version/--tls-max-version); TLS 1.2 suites: OCPP's
four (ECDHE-ECDSA and RSA with AES-GCM) and ECDHE-RSA with AES-GCM. Give an EC
and an RSA certificate (--tls-cert/--tls-key twice) for all of them.

\b
Rate limit: each connection may send --max-rate messages per second on average
with bursts of up to --burst (a token bucket). The message that exceeds it is
answered with CallError GenericError saying so (a CALL; anything else gets no
answer), then the connection is closed with 1008 (policy violation); everything
received before it has been answered.
"""


@click.command(help=CSMS_HELP)
@click.option(
    "--listen",
    default="0.0.0.0:9000",
    show_default=True,
    help="HOST:PORT to listen on (port 0: any). The default is every address of this host.",
)
@click.option(
    "--ocpp",
    "versions",
    multiple=True,
    type=click.Choice(VERSIONS),
    help="OCPP versions offered (repeatable; default: all).",
)
@click.option(
    "--heartbeat-interval",
    "heartbeat_interval_s",
    type=int,
    default=300,
    show_default=True,
    help="Heartbeat interval given in BootNotification replies, seconds.",
)
@_password_options
@click.option(
    "--security-profile",
    type=click.Choice(["0", "1", "2", "3"]),
    default=None,
    help="OCPP security profile (default: 3 with --client-ca, 2 with --tls-cert, 1 with a password, else 0).",
)
@click.option(
    "--tls-cert",
    "tls_cert",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="The CSMS's certificate, PEM (profiles 2, 3; repeatable: an EC and an RSA one, each with its --tls-key).",
)
@click.option(
    "--tls-key",
    "tls_key",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Its private key, PEM, unencrypted (repeatable, in the order of --tls-cert).",
)
@click.option(
    "--client-ca",
    type=click.Path(dir_okay=False),
    default=None,
    help="Profile 3: the CA file that signed the stations' certificates (a client certificate is required).",
)
@click.option("--tls-min-version", type=click.Choice(TLS_VERSION_CHOICES), default="1.2", show_default=True)
@click.option("--tls-max-version", type=click.Choice(TLS_VERSION_CHOICES), default="1.3", show_default=True)
@click.option(
    "--max-rate",
    "max_rate_per_s",
    type=float,
    default=100.0,
    show_default=True,
    help="Messages per second one connection may send on average; the message beyond the limit gets "
    "CallError GenericError, then the connection is closed (1008).",
)
@click.option(
    "--burst",
    type=int,
    default=200,
    show_default=True,
    help="Messages one connection may send back to back before --max-rate applies.",
)
@click.option(
    "--not-implemented",
    multiple=True,
    metavar="ACTION",
    help="Answer this action with CallError NotImplemented (repeatable; for tests).",
)
@click.option(
    "--no-answer",
    multiple=True,
    metavar="ACTION",
    help="Never answer this action (the charger times out; repeatable; for tests).",
)
@click.option(
    "--reject-id-tag",
    "reject_id_tags",
    multiple=True,
    metavar="TAG",
    help="Authorize this id tag as Invalid (repeatable).",
)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="csms.csv: handling time per message.")
@click.option(
    "--status", type=click.Path(dir_okay=False), default=None, help="JSON status file, rewritten about once a second."
)
@_ws_options
def csms(listen: str, versions: tuple[str, ...], **kw: Any) -> None:
    from labkit.sim.csms import CsmsConfig, run_csms

    password = _password(kw)
    host, port = parse_listen(listen)
    ws = _ws(kw)
    certs, keys = kw.pop("tls_cert"), kw.pop("tls_key")
    if len(certs) != len(keys):
        raise ConfigError.at(
            "--tls-key", f"{len(certs)} --tls-cert but {len(keys)} --tls-key; give one key per certificate"
        )
    profile = kw.pop("security_profile")
    cfg = CsmsConfig(
        host=host,
        port=port,
        versions=versions or VERSIONS,
        ws=ws,
        password=password,
        security_profile=None if profile is None else int(profile),
        tls_certs=tuple(zip(certs, keys, strict=True)),
        **kw,
    )
    rc = run_csms(cfg)
    if rc:
        raise click.exceptions.Exit(rc)


@click.command()
@click.option(
    "--url", required=True, help="CSMS URL, ws:// or wss://HOST:PORT/[path/]; the station id is appended."
)
@click.option("--stations", type=int, default=1, show_default=True, help="Stations in this process (M).")
@click.option("--scenario", type=click.Choice(["thesis-2021", "session"]), default="thesis-2021", show_default=True)
@click.option("--ocpp", "version", type=click.Choice(VERSIONS), default="1.6", show_default=True)
@click.option("--id-prefix", default="cs", show_default=True, help="Station ids are PREFIX001, PREFIX002, ...")
@click.option("--first-index", type=int, default=1, show_default=True, help="Number of the first station.")
@click.option("--host-label", default=None, help="The 'host' column (default: this host's name).")
@click.option("--run-id", default="", help="The 'run_id' column (default: time, host and pid).")
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed (per station: seed + index).")
@click.option(
    "--ramp",
    "ramp_per_s",
    type=float,
    default=50.0,
    show_default=True,
    help="Stations started per second (0: all at once).",
)
@click.option(
    "--jitter",
    type=float,
    default=0.2,
    show_default=True,
    help="Pauses and intervals vary by +- this fraction (seeded), so stations do not lock into step.",
)
@click.option("--duration", "duration_s", type=float, default=None, help="Stop the scenario after this many s.")
@click.option(
    "--heartbeat",
    "heartbeat_s",
    type=float,
    default=None,
    help="Heartbeat interval, s (thesis-2021: 2; session: the CSMS's BootNotification interval).",
)
@click.option("--meter-values", type=int, default=None, help="thesis-2021: meter values sent (default 1000).")
@click.option(
    "--meter-interval",
    "meter_interval_s",
    type=float,
    default=None,
    help="Meter value interval, s (thesis-2021: 0.1 after each reply; session: 30, fixed cadence).",
)
@click.option(
    "--step-interval",
    "step_interval_s",
    type=float,
    default=None,
    help="Pause between scenario steps, s (thesis-2021: 0.1).",
)
@click.option(
    "--sessions", type=int, default=None, help="session: charging sessions per station (0: until --duration)."
)
@click.option(
    "--think-time",
    "think_time_s",
    type=float,
    default=None,
    help="session: mean idle time before each session, s (exponential; default 60).",
)
@click.option(
    "--charge-time",
    "charge_time_s",
    type=float,
    default=None,
    help="session: longest charging time, s (default 3600; ends earlier when the EV is full).",
)
@click.option("--max-power", "max_power_w", type=float, default=None, help="session: station power limit, W (11000).")
@click.option("--id-tag", default=None, help="Id tag presented in Authorize (LABKIT01).")
@click.option(
    "--call-timeout", "call_timeout_s", type=float, default=30.0, show_default=True, help="Time to wait for a reply, s."
)
@click.option(
    "--backoff-min",
    "backoff_min_s",
    type=float,
    default=1.0,
    show_default=True,
    help="First reconnect delay, s (doubles, with jitter).",
)
@click.option(
    "--backoff-max", "backoff_max_s", type=float, default=30.0, show_default=True, help="Longest reconnect delay, s."
)
@click.option(
    "--tx-attempts",
    type=int,
    default=5,
    show_default=True,
    help="Tries of a transaction message that times out on a live connection.",
)
@click.option(
    "--tx-retry-interval",
    "tx_retry_interval_s",
    type=float,
    default=5.0,
    show_default=True,
    help="Pause before retrying a timed-out transaction message, s.",
)
@click.option(
    "--drain-timeout",
    "drain_timeout_s",
    type=float,
    default=60.0,
    show_default=True,
    help="At the end, how long to wait for queued transaction messages, s.",
)
@_password_options
@click.option(
    "--ca",
    type=click.Path(dir_okay=False),
    default=None,
    help="wss://: the CA file the CSMS's certificate must chain to (default: the system's trust store).",
)
@click.option(
    "--cert",
    type=click.Path(dir_okay=False),
    default=None,
    help="wss://: one client certificate (PEM) for every station (profile 3; with --key).",
)
@click.option("--key", type=click.Path(dir_okay=False), default=None, help="wss://: the key of --cert (PEM).")
@click.option(
    "--cert-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="wss://: one certificate and key per station, DIR/stations/<id>.pem and .key "
    "(python -m labkit.sim.tlsca makes them).",
)
@click.option(
    "--tls-version",
    type=click.Choice(TLS_VERSION_CHOICES),
    default=None,
    help="wss://: only this TLS version (default: 1.2 or 1.3, whichever the CSMS prefers).",
)
@click.option(
    "--tls-resumption/--no-tls-resumption",
    default=True,
    show_default=True,
    help="wss://: offer the previous connection's TLS session when a station reconnects.",
)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="calls CSV (one row per call).")
@click.option("--events", type=click.Path(dir_okay=False), default=None, help="events CSV (connections).")
@click.option(
    "--status", type=click.Path(dir_okay=False), default=None, help="JSON status file, rewritten about once a second."
)
@_ws_options
def fleet(**kw: Any) -> None:
    """Run M simulated charging stations through a scenario against a CSMS.

    Exits 0 when the scenario is done (or stopped by SIGTERM/SIGINT), 1 when no station ever connected
    (one line on stderr says why) or a station failed, 2 on bad input."""
    from labkit.sim.fleet import FleetConfig, run_fleet, scenario_params

    kw["password"] = _password(kw)
    ws = _ws(kw)
    params = scenario_params(
        kw["scenario"],
        **{
            k: kw.pop(k)
            for k in (
                "heartbeat_s",
                "meter_values",
                "meter_interval_s",
                "step_interval_s",
                "sessions",
                "think_time_s",
                "charge_time_s",
                "max_power_w",
                "id_tag",
            )
        },
    )
    if kw["host_label"] is None:
        kw["host_label"] = socket.gethostname()
    cfg = FleetConfig(ws=ws, params=params, **kw)
    rc = run_fleet(cfg)
    if rc:
        raise click.exceptions.Exit(rc)
