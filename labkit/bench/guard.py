"""The bench guard: a watchdog that cleans up after a ``labkit bench`` that died without doing so.

``labkit bench`` starts this module as a child in its own session, holding the write end of a pipe. When
bench ends normally it writes ``done`` first. If the pipe closes without it (bench was killed, even with
SIGKILL, or crashed), the guard marks the run incomplete, stops the lab processes bench started, removes
any outage rule and clears the link, so that what ``kill -9`` leaves is an unshaped lab and a results
directory that says it is incomplete.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path


class Guard:
    def __init__(self, lab: str, run_dir: Path):
        self.lab = lab
        self.run_dir = run_dir
        self.proc: subprocess.Popen | None = None

    def start(self) -> Guard:
        self.proc = subprocess.Popen([sys.executable, "-m", "labkit.bench.guard", self.lab, str(self.run_dir)],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=open(self.run_dir / "guard.log", "ab"), start_new_session=True)
        return self

    def release(self) -> None:
        """Bench finished its own clean-up: tell the guard to stand down."""
        if self.proc and self.proc.stdin:
            try:
                self.proc.stdin.write(b"done\n")
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


def _clean_up(lab: str, run_dir: Path) -> None:
    """Record the run as interrupted first, whatever happens to the lab; then clean up what can be cleaned.

    The manifest is marked before the lab is touched: the lab may be gone (``labkit down`` right after
    ``kill -9``), busy, or unreachable, and the run must never claim to be running for ever."""
    from labkit.bench.results import RunDir, iso
    from labkit.bench.summary import write_summary

    run = RunDir(run_dir)
    manifest = run.manifest()
    if manifest.get("status") != "running":
        return
    print(f"{iso()} guard: labkit bench (pid {manifest.get('pid')}) ended without cleaning up", file=sys.stderr)
    running = [c for c in manifest.get("cells", []) if c.get("status") == "running"]
    for cell in running:
        cell["status"] = "incomplete"
    manifest.update(status="incomplete", reason="labkit bench was killed or crashed", ended=iso(),
                    link_cleared=False, guard={"started": iso(), "cleaned": False})
    run.write_manifest(manifest)

    cleared, error = False, ""
    try:
        cleared = _clean_lab(lab)
    except Exception as exc:  # noqa: BLE001 - the lab may be gone; the run is recorded either way
        error = f"{type(exc).__name__}: {exc}"
        print(f"guard: could not clean up the lab: {error}", file=sys.stderr)
    for cell in running:
        _save_samples(lab, run_dir / cell.get("dir", f"cells/{cell['id']}"))
    manifest = run.manifest()
    reason = ("labkit bench was killed or crashed; the guard cleaned up" if cleared else
              f"labkit bench was killed or crashed; the guard could not clear the link ({error or 'see guard.log'})")
    manifest.update(reason=reason, link_cleared=cleared, guard={"ended": iso(), "cleaned": cleared, "error": error})
    run.write_manifest(manifest)
    try:
        write_summary(run_dir)
    except Exception as exc:  # noqa: BLE001
        print(f"guard: summary failed: {exc}", file=sys.stderr)
    print(f"{iso()} guard: done (link cleared: {cleared})", file=sys.stderr)


def _clean_lab(lab: str) -> bool:
    """Stop what bench started on the lab's hosts and clear the link; True when the link is clear."""
    from labkit.bench import link
    from labkit.lifecycle import open_lab

    handle = open_lab(lab)  # raises when the lab has been taken down meanwhile
    with handle.labdir.lock(wait=60), handle.remote() as remote:
        for h in handle.inventory.hosts:
            for name in ["fleet", "csms", "monitor", "iperf3"] + [f"pcap-{i}" for i in h.ifaces.values()]:
                try:
                    remote.stop(h, name, sudo=True, timeout=5)
                except Exception as exc:  # noqa: BLE001 - keep going, clean as much as possible
                    print(f"guard: {h.name}: stop {name}: {exc}", file=sys.stderr)
            try:  # a password or TLS keys bench had not yet removed (labkit.bench.ocpp: OcppPhase._push_secret,
                # _push_tls); the lab name is a name (labkit.names), safe unquoted beside the glob
                tmp = '"${TMPDIR:-/tmp}"'
                remote.run(h, f"rm -rf {tmp}/labkit-secret-{lab}.* {tmp}/labkit-tls-{lab}.*", sudo=True, check=False)
            except Exception as exc:  # noqa: BLE001
                print(f"guard: {h.name}: removing the password and key files: {exc}", file=sys.stderr)
        try:
            from labkit.bench.ocpp import OUTAGE_RULE

            remote.run(handle.inventory.gateway, f"while iptables -D FORWARD {OUTAGE_RULE} 2>/dev/null; do :; done",
                       sudo=True, check=False)
            link.clear(remote, handle.inventory, handle.labdir)
            return True
        except Exception as exc:  # noqa: BLE001
            print(f"guard: clearing the link failed: {exc}", file=sys.stderr)
            return False


def _save_samples(lab: str, cell_dir: Path) -> None:
    """Fetch the samples the cell's OCPP phase had written on the hosts, and mark the cell incomplete."""
    import json

    from labkit.bench.ocpp import collect
    from labkit.bench.results import iso, write_json
    from labkit.lifecycle import open_lab

    try:
        meta = json.loads((cell_dir / "cell.json").read_text())
    except (OSError, ValueError):
        return
    try:
        if "ocpp" in meta.get("phases", {}):
            handle = open_lab(lab)
            names = set(meta.get("evse_host_names", []))
            hosts = [h for h in handle.inventory.hosts if h.role != "evse" or h.name in names]
            with handle.remote() as remote:
                collect(remote, hosts, cell_dir)
    except Exception as exc:  # noqa: BLE001
        print(f"guard: collecting samples failed: {exc}", file=sys.stderr)
    for phase in meta.get("phases", {}).values():
        if phase.get("status") == "running":
            phase.update(status="interrupted", ended=time.time())
    meta.update(status="incomplete", ended=iso())
    write_json(cell_dir / "cell.json", meta)


def main() -> int:
    lab, run_dir = sys.argv[1], Path(sys.argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is bench's to handle; the guard outlives it
    data = sys.stdin.buffer.read()
    if data.strip() == b"done":
        return 0
    time.sleep(0.2)
    try:
        _clean_up(lab, run_dir)
    except Exception:  # noqa: BLE001 - the log is the guard's only voice
        import traceback

        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
