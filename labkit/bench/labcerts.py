"""A lab's own TLS material for the bench's OCPP security profiles 2 and 3, and getting it onto the hosts.

The certificates are made with ``labkit.sim.tlsca`` in the lab directory (``<labdir>/tls``, 0700, under the
lab's lock): one CA per lab, made on first use and gone with the lab (``labkit down`` removes the lab
directory), so no two labs share a CA. The CSMS's two certificates (EC P-256, and RSA 2048 for the TLS_RSA
suites OCPP 2.0.1 lists) name the CPO host and its address on the CPO network, what the stations dial; they
are made again when that address changes or the CA is close to its end. Each station gets its own key and
certificate (CN = its id), made once and reused by later cells of the lab.

For a cell, each host gets what it needs as one tar archive written over SFTP into a private directory
(``mktemp -d``: 0700) and unpacked there; the directory is removed when the OCPP phase ends. Keys never
reach argv, logs or results: commands name files, the manifest records the CA's fingerprint only.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import shlex
import tarfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes

from labkit.inventory import HostConn
from labkit.remote import Remote
from labkit.sim import tlsca

#: a CA with less validity left than this is replaced (with everything it signed) before a run
MIN_VALIDITY = _dt.timedelta(days=2)


@dataclass
class LabTLS:
    dir: Path
    ca: tlsca.CA

    @property
    def fingerprint(self) -> str:
        return self.ca.cert.fingerprint(hashes.SHA256()).hex()

    def server_files(self) -> dict[str, Path]:
        return {n: self.dir / n for n in ("ca.pem", "server.pem", "server.key", "server-rsa.pem", "server-rsa.key")}

    def station_files(self, station_ids: list[str]) -> dict[str, Path]:
        """The CA certificate and each station's pair, by their names in the archive (tlsca's layout)."""
        out = {"ca.pem": self.dir / "ca.pem"}
        missing = [s for s in station_ids if not all(p.exists() for p in tlsca.station_files(self.dir, s))]
        if missing:
            tlsca.client_certs(self.ca, self.dir, missing)
        for sid in station_ids:
            cert, key = tlsca.station_files(self.dir, sid)
            out[f"{tlsca.STATIONS_DIR}/{sid}.pem"] = cert
            out[f"{tlsca.STATIONS_DIR}/{sid}.key"] = key
        return out

    def describe(self) -> dict[str, object]:
        """For the manifest: no keys, no paths of keys."""
        c = self.ca.cert
        return {"ca_sha256": self.fingerprint, "ca_subject": c.subject.rfc4514_string(),
                "ca_not_after": c.not_valid_after_utc.isoformat(), "key": "EC P-256 (server: also RSA 2048)"}


def ensure(lab_dir: Path, lab_name: str, cpo: HostConn) -> LabTLS:
    """The lab's CA and the CSMS's certificates, made or remade as needed (call under the lab's lock)."""
    d = lab_dir / "tls"
    now = _dt.datetime.now(_dt.UTC)
    ca = None
    if (d / "ca.pem").exists():
        ca = tlsca.load_ca(d)
        if ca.cert.not_valid_after_utc - now < MIN_VALIDITY:
            for p in sorted(d.rglob("*"), reverse=True):
                p.rmdir() if p.is_dir() else p.unlink()
            ca = None
    if ca is None:
        ca = tlsca.make_ca(d, f"labkit {lab_name}")
    names = {"names": [cpo.name], "addresses": [cpo.addresses["cpo"]]}
    record = d / "server.json"
    try:
        current = json.loads(record.read_text())
    except (OSError, ValueError):
        current = None
    if current != names or not all(p.exists() for p in LabTLS(d, ca).server_files().values()):
        for key_type in ("ec", "rsa"):
            tlsca.server_cert(ca, d, names["names"], names["addresses"], key_type=key_type)
        record.write_text(json.dumps(names))
    return LabTLS(d, ca)


def archive(files: dict[str, Path]) -> bytes:
    """A tar archive of ``files`` (name in the archive -> local file), modes kept, owner root."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, path in sorted(files.items()):
            info = tar.gettarinfo(str(path), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    return buf.getvalue()


def push(remote: Remote, host: HostConn, lab_name: str, files: dict[str, Path]) -> str:
    """Unpack ``files`` into a new private directory on ``host``; returns its path."""
    template = shlex.quote(f"labkit-tls-{lab_name}.XXXXXXXX")
    d = remote.run(host, f"mktemp -d -p \"${{TMPDIR:-/tmp}}\" {template}").stdout.strip()
    tar = f"{d}/files.tar"
    remote.write_secret(host, tar, archive(files))
    qd, qt = shlex.quote(d), shlex.quote(tar)
    remote.run(host, f"tar -x --no-same-owner -f {qt} -C {qd} && rm -f {qt}")
    return d
