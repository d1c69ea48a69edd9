"""Channels kept open to the gateway while a link changes, so a change costs a message, not a new command.

A schedule switches the link at planned times. Sent as a new SSH command, each switch pays for a session
channel, ``sudo`` and one ``tc`` process per change: on a software-emulated VM that is 70 ms + 170 ms + about
50 ms per tc (measured on this project's qemu/TCG test box), several hundred milliseconds in all. Two channels
are opened before the first switch instead, over the lab's existing SSH connection, each as root:

- ``tc -force -batch -``: the change lines are written to it and run as they arrive (tc reads its input in
  order), followed by a marker that fails in tc itself, ``exec labkitdone now`` (an ``exec`` module tc does not
  have: no kernel call, no side effect), for which tc writes ``Command failed -:N`` on its error output.
  Completion and errors are both read from that one stream, in tc's own order: every error of a change before
  the marker (its message and its ``Command failed -:K`` line) precedes the marker's line. (Output and error
  output travel as separate SSH streams, so a marker on the output says nothing about what has reached us of
  the errors: a first version did that and now and then took a refusal's last line for the next batch's. A
  ``qdisc show`` of a device no host has was the marker next: the kernel then tries to load a module of that
  name, two ``modprobe`` runs, 80 ms a switch on that VM.) A change then costs the channel's round trip (about
  2 ms to that VM) and the netlink calls.
- a shell (``sh -s``): each command's error output goes to a private file (``mktemp``, removed when the shell
  ends) and is sent after its output, each part closed by a marker line, the last with the exit status and the
  gateway's clock: for what is not tc (the outage's iptables rule, the engine's SIGHUP and report, the
  gateway's clock, and the read-back after each switch through ``ViaShell``).

Where commands do not go over SSH (a remote that runs them on this machine) or the channels cannot open,
``open_channels`` returns None and labkit.shaping sends each change as a command, as before. iproute2's batch
mode does not take shell quoting, so a tc line with anything but plain words is sent as a command too.
"""

from __future__ import annotations

import re
import secrets
import shlex
import threading
import time
from typing import Any

from labkit.errors import LabkitError, RemoteError
from labkit.inventory import HostConn

#: a word tc's batch reader takes as it is (no quotes, no shell syntax)
_PLAIN = re.compile(r"^[A-Za-z0-9_.:/%+=-]+$")


#: the tc batch's end marker: a command tc refuses by itself (no such ``exec`` module), with no kernel call
_TC_MARKER = "exec labkitdone now"


class ChannelError(LabkitError):
    """A gateway channel failed or answered with an error."""


def batch_line(cmd: str) -> str | None:
    """``tc ...`` as a line for ``tc -batch`` (without the leading ``tc``), or None when it is not plain."""
    words = cmd.split()
    if len(words) < 2 or words[0] != "tc" or not all(_PLAIN.match(w) for w in words[1:]):
        return None
    return " ".join(words[1:])


class _Chan:
    def __init__(self, remote: Any, host: HostConn, command: str, timeout: float):
        self.host = host
        self.timeout = timeout
        conn = remote.connect(host)
        self.chan = conn.client.get_transport().open_session(timeout=timeout)
        self.chan.settimeout(timeout)
        full = f"sudo -n sh -c {shlex.quote(command)}" if host.sudo else command
        self.chan.exec_command(full)
        self.buf = b""
        self.errbuf = b""
        self.lock = threading.Lock()

    def readline(self) -> bytes:
        """The next line of the command's output."""
        while b"\n" not in self.buf:
            chunk = self.chan.recv(65536)
            if not chunk:
                raise ChannelError(f"{self.host.name}: the channel closed: {self.stderr() or 'no output'}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def readline_err(self) -> bytes:
        """The next line of the command's error output."""
        while b"\n" not in self.errbuf:
            chunk = self.chan.recv_stderr(65536)
            if not chunk:
                said = (self.errbuf.decode(errors="replace").strip() or "no error output")
                raise ChannelError(f"{self.host.name}: the channel closed: {said}")
            self.errbuf += chunk
        line, self.errbuf = self.errbuf.split(b"\n", 1)
        return line

    def drain(self) -> None:
        """Drop the output that has arrived (tc's batch prints none for changes)."""
        while self.chan.recv_ready():
            self.chan.recv(65536)

    def stderr(self) -> str:
        out = b""
        while self.chan.recv_stderr_ready():
            out += self.chan.recv_stderr(65536)
        return out.decode(errors="replace").strip()

    def close(self) -> None:
        try:
            self.chan.shutdown_write()
            self.chan.close()
        except Exception:  # noqa: BLE001 - closing a channel that may be gone
            pass


class GatewayChannels:
    """A tc batch channel and a shell channel to the gateway (root); use as a context manager."""

    def __init__(self, remote: Any, host: HostConn, *, timeout: float = 30.0):
        self.host = host
        self.tc = _Chan(remote, host, "exec tc -force -batch -", timeout)
        self.tc_lines = 0  # lines written to tc so far: its "Command failed -:N" counts them
        try:
            self.sh = _Chan(remote, host, "exec sh -s", timeout)
            self.marker = "__labkit_done_" + secrets.token_hex(6)
            # the shell's error-output file: private (mktemp), removed when the shell ends
            self.sh.chan.sendall(b"lkerr=$(mktemp) || exit 1; trap 'rm -f \"$lkerr\"' EXIT; "
                                 b"trap 'exit 1' HUP INT TERM\n")
            # both answer once before they count: the shell and tc have started
            self.shell("true")
            self.tc_batch([])
        except BaseException:
            self.close()
            raise

    def tc_batch(self, cmds: list[str]) -> dict[str, Any]:
        """Run tc commands (each ``tc ...``, plain words) in order; return when all are done."""
        lines = []
        for c in cmds:
            line = batch_line(c)
            if line is None:
                raise ValueError(f"not a plain tc command for batch mode: {c!r}")
            lines.append(line)
        with self.tc.lock:
            first = self.tc_lines + 1
            self.tc_lines += len(lines) + 1
            done = f"Command failed -:{self.tc_lines}".encode()
            sent = time.time()
            self.tc.chan.sendall("".join(f"{ln}\n" for ln in [*lines, _TC_MARKER]).encode())
            said: list[str] = []
            while (got := self.tc.readline_err()) != done:
                said.append(got.decode(errors="replace").strip())
            returned = time.time()
            self.tc.drain()
        ends = [i for i, ln in enumerate(said) if ln.startswith("Command failed -:")]
        said = said[:ends[-1] + 1] if ends else []  # what follows the last refusal is the marker's own message
        failed = [int(m.group(1)) for ln in said if (m := re.fullmatch(r"Command failed -:(\d+)", ln))]
        if said:
            why = "; ".join(ln for ln in said if ln and not ln.startswith("Command failed -:")) or said[-1]
            which = f"tc {lines[failed[0] - first]}" if failed and 0 <= failed[0] - first < len(lines) else "?"
            raise ChannelError(f"{self.host.name}: tc refused a change: {which}: {why}")
        return {"sent": sent, "returned": returned, "channel": "tc-batch"}

    def shell(self, command: str) -> dict[str, Any]:
        """Run one shell command; its output and error output, exit status and the gateway's clock when it
        ended. The error output goes to a file of the shell's own and is sent after the output, so the two
        cannot interleave and neither can hide the end marker."""
        with self.sh.lock:
            sent = time.time()
            # each marker on a line of its own, even after output without a final newline (a JSON file)
            tail = (f'rc=$?; printf "\\n%s\\n" {self.marker}-err; '
                    f'while IFS= read -r l || [ -n "$l" ]; do printf "%s\\n" "$l"; done < "$lkerr"; '
                    f'printf "\\n%s %s %s\\n" {self.marker} "$rc" "$(date +%s.%N)"')
            self.sh.chan.sendall(f'{{ {command}\n}} </dev/null 2>"$lkerr"; {tail}\n'.encode())
            out: list[str] = []
            err: list[str] = []
            into = out
            while True:
                line = self.sh.readline().decode(errors="replace")
                if line == f"{self.marker}-err":
                    into = err
                    continue
                if line.startswith(self.marker + " "):
                    _, status, clock = line.split()
                    break
                into.append(line)
            returned = time.time()
        for lines in (out, err):
            if lines and lines[-1] == "":
                lines.pop()  # the newline put before a marker
        return {"sent": sent, "returned": returned, "exited": int(status), "gateway_time": float(clock),
                "stdout": "\n".join(out), "stderr": "\n".join(err), "channel": "shell"}

    def close(self) -> None:
        for name in ("tc", "sh"):
            ch = getattr(self, name, None)
            if ch is not None:
                ch.close()

    def __enter__(self) -> GatewayChannels:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ViaShell:
    """A remote whose commands on the gateway go over its open shell (the rest as ``remote`` sends them):
    what reads the link back after each switch of a schedule, a dozen commands, each without its own SSH
    command and ``sudo``."""

    def __init__(self, remote: Any, chan: GatewayChannels):
        self.remote = remote
        self.chan = chan

    def __getattr__(self, name: str) -> Any:
        return getattr(self.remote, name)

    def run(self, host: Any, command: str, *, sudo: bool = False, check: bool = True,
            timeout: float | None = None) -> Any:
        from labkit.remote import RunResult

        h = self.remote.host(host)
        if h.name != self.chan.host.name:
            return self.remote.run(h, command, sudo=sudo, check=check, timeout=timeout)
        try:
            got = self.chan.shell(command)
        except (OSError, ChannelError) as exc:
            raise RemoteError(f"{h.name}: {command!r} over the open shell failed: {exc}") from None
        res = RunResult(h.name, command, got["stdout"] + ("\n" if got["stdout"] else ""), got["stderr"],
                        got["exited"], got["returned"] - got["sent"])
        if check and not res.ok:
            detail = (res.stderr.strip() or res.stdout.strip()).splitlines()
            raise RemoteError(f"{h.name}: {command!r} failed (exit {res.exited}): "
                              f"{detail[-1] if detail else 'no output'}")
        return res


def open_channels(remote: Any, host: HostConn) -> GatewayChannels | None:
    """The channels, or None where commands do not go over SSH or they cannot open (then each change is sent
    as a command)."""
    import paramiko

    if not hasattr(remote, "connect"):
        return None
    try:
        return GatewayChannels(remote, host)
    except (RemoteError, ChannelError, paramiko.SSHException, OSError, EOFError):
        return None  # each change is sent as a command
