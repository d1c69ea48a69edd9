"""How far a host's wall clock is from this machine's, measured over the lab's SSH connection.

Each RTT labkit reports is timed on one clock (the sender's monotonic clock), so it needs no alignment. What
does need it is comparing *times* taken on different machines: when a phase of a schedule was planned (this
machine) against when the EVSE host's probes saw the link change (that host), or an outage window against
a station's events. On netns every host is this machine and the offset is zero; VMs (their clock starts from
an emulated RTC and runs on its own), containers on another engine, or existing machines need it measured.

The measurement: one SSH channel runs a tiny loop on the host that answers each line it reads with its
``time.time()``; this machine stamps each request's send and the answer's arrival on its own clock. For a
sample, the host's stamp was taken somewhere between the two, so ``offset = host - (sent + received) / 2``
is right within half the round trip. Of ``samples`` exchanges the one with the shortest round trip is kept
(the same reasoning as NTP's clock filter), and its half round trip is the stated uncertainty. The channel is
set up before the first sample, so SSH's own set-up is not in any round trip.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import asdict, dataclass
from typing import Any

from labkit.errors import RemoteError
from labkit.inventory import HostConn

#: the host's side: one line in, its wall clock out (unbuffered, no imports beyond sys/time)
_LOOP = "import sys, time\nfor _ in sys.stdin:\n    sys.stdout.write(repr(time.time()) + '\\n'); sys.stdout.flush()\n"


@dataclass
class ClockOffset:
    """A host's clock minus this machine's, in seconds, within +/- ``uncertainty_s``."""

    host: str
    offset_s: float
    uncertainty_s: float
    samples: int
    measured_at: float  # this machine's wall clock

    def to_host(self, t: float) -> float:
        """This machine's time ``t`` on the host's clock."""
        return t + self.offset_s

    def from_host(self, t: float) -> float:
        """The host's time ``t`` on this machine's clock."""
        return t - self.offset_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def best(host: str, exchanges: list[tuple[float, float, float]]) -> ClockOffset:
    """The offset from (sent, host stamp, received) triples: the one with the shortest round trip."""
    if not exchanges:
        raise ValueError("no exchanges")
    sent, stamp, received = min(exchanges, key=lambda e: e[2] - e[0])
    if received < sent:
        raise ValueError("an answer received before its request was sent")
    return ClockOffset(host=host, offset_s=stamp - (sent + received) / 2.0, uncertainty_s=(received - sent) / 2.0,
                       samples=len(exchanges), measured_at=sent)


def measure(remote: Any, host: str | HostConn, *, samples: int = 16, timeout: float = 30.0) -> ClockOffset:
    """Measure one host's offset over its SSH connection (``remote``: a ``labkit.remote.Remote``)."""
    h = remote.host(host)
    conn = remote.connect(h)
    chan = conn.client.get_transport().open_session(timeout=timeout)
    try:
        chan.settimeout(timeout)
        chan.exec_command(f"{shlex.quote(h.python)} -u -c {shlex.quote(_LOOP)}")
        buf = b""

        def answer() -> float:
            nonlocal buf
            while b"\n" not in buf:
                chunk = chan.recv(4096)
                if not chunk:
                    err = chan.recv_stderr(4096).decode(errors="replace").strip()
                    raise RemoteError(f"{h.name}: the clock probe ended: {err or 'no output'}")
                buf += chunk
            line, buf = buf.split(b"\n", 1)
            return float(line)

        chan.sendall(b"\n")  # the first answer waits for Python to start: not a sample
        answer()
        exchanges = []
        for _ in range(samples):
            sent = time.time()
            chan.sendall(b"\n")
            stamp = answer()
            exchanges.append((sent, stamp, time.time()))
        return best(h.name, exchanges)
    except (OSError, ValueError) as exc:
        raise RemoteError(f"{h.name}: could not measure its clock: {exc}") from None
    finally:
        chan.close()


def measure_all(remote: Any, hosts: list[str | HostConn], *, samples: int = 16) -> dict[str, ClockOffset]:
    """``measure`` for several hosts, one after the other (each exchange is short; in parallel they would
    share this machine's CPUs and widen each other's round trips)."""
    return {remote.host(h).name: measure(remote, h, samples=samples) for h in hosts}
