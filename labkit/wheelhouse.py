"""Bring labkit and its host-side Python dependencies to a lab host over SSH; the host needs no internet.

On the controlling machine: a wheel of labkit itself, made from the installed package (so it works from a
source checkout, an editable install or a wheel install alike), and the wheels of what the host-side
commands import (``labkit csms``, ``labkit fleet``, ``labkit shaper``, the bench's monitor: click, ocpp,
websockets, psutil, fastjsonschema and their dependencies), fetched once for the host's Python and platform
with ``pip download`` at the versions installed here and cached under ``$LABKIT_HOME/wheelhouse/`` (or
``$LABKIT_WHEELHOUSE_CACHE``); from then on no index is needed. The wheel of pypa's ``installer`` travels
along: the host needs only ``python3`` (no python3-venv, no pip).

On the host: the wheels go over SFTP to ``/opt/labkit/wheels``, a fresh venv is made ``--without-pip`` at
``/opt/labkit/venv``, and ``provisioning/install-wheels.py`` unpacks the (already resolved) wheelhouse into it
with ``installer`` in one short process. A stamp records what was installed, so a second ``up`` skips it.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from labkit import __version__
from labkit.errors import BackendError
from labkit.labdir import labkit_home

#: what labkit's host-side commands import (their own dependencies follow). uvloop travels too: the simulators
#: run on it wherever it is installed (``--loop auto``), and a VM without it would time OCPP on another event
#: loop than a namespace host (measured: the bare WebSocket echo on asyncio is slower than on uvloop)
HOST_REQUIREMENTS = ("click", "ocpp", "websockets", "psutil", "fastjsonschema", "uvloop")
#: the modules the host-side commands run: imported once after the install, which proves the wheelhouse holds
#: everything they need and leaves their bytecode compiled (a first start under software emulation otherwise
#: spends seconds compiling)
HOST_MODULES = ("labkit.cli.sim", "labkit.cli.shape", "labkit.cli.bench", "labkit.sim.csms", "labkit.sim.fleet",
                "labkit.nfq.engine", "labkit.traces", "labkit.tracefollow", "labkit.monitor", "labkit.cli.echo",
                "labkit.echo", "uvloop")
#: the oldest Python labkit runs on
MIN_PYTHON = (3, 11)

PROBE = ("python3 -c 'import json, platform, sys; "
         "print(json.dumps({\"python\": \"%d.%d\" % sys.version_info[:2], \"machine\": platform.machine(), "
         "\"libc\": platform.libc_ver()}))'")


@dataclass(frozen=True)
class Target:
    """A host's Python: version, CPU architecture and glibc version (for manylinux wheels)."""

    python: str  # "3.11"
    machine: str  # "x86_64"
    glibc: str  # "2.36" ("" when not glibc)

    @property
    def tag(self) -> str:
        return f"cp{self.python.replace('.', '')}-{self.machine}-glibc{self.glibc or 'none'}"

    def platforms(self) -> list[str]:
        """manylinux platform tags this host accepts, newest first."""
        tags = []
        if self.glibc:
            major, minor = (int(x) for x in self.glibc.split(".")[:2])
            tags += [f"manylinux_{major}_{m}_{self.machine}" for m in range(minor, 4, -1)]
            if (major, minor) >= (2, 17):
                tags.append(f"manylinux2014_{self.machine}")
        tags.append(f"linux_{self.machine}")
        return tags


def probe_target(run: Callable[[str], str]) -> Target:
    """Ask a host (``run(command) -> stdout``) which Python it has; fail clearly when it is too old."""
    try:
        data = json.loads(run(PROBE).strip().splitlines()[-1])
    except Exception as exc:  # no python3, or unexpected output
        raise BackendError(f"cannot run python3 on the host: {exc}") from None
    libc = data.get("libc") or ["", ""]
    t = Target(python=data["python"], machine=data["machine"], glibc=libc[1] if libc[0] == "glibc" else "")
    if tuple(int(x) for x in t.python.split(".")) < MIN_PYTHON:
        raise BackendError(f"the host has Python {t.python}; labkit needs {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer "
                           "(use a newer box, e.g. Ubuntu 24.04 or Debian 12)")
    return t


def local_target() -> Target:
    import platform

    libc = platform.libc_ver()
    return Target(f"{sys.version_info[0]}.{sys.version_info[1]}", platform.machine(),
                  libc[1] if libc[0] == "glibc" else "")


# --------------------------------------------------------------------------------------------------
# labkit's own wheel, from the installed package


def _package_files() -> list[tuple[str, bytes]]:
    """(archive name, content) of every file of the labkit package, with the shipped top-level files
    (profiles.yaml, Vagrantfile.j2, provisioning/) under labkit/_data/ as in a built wheel."""
    import labkit
    from labkit.resources import resource

    pkg = Path(labkit.__file__).resolve().parent
    files = []
    for path in sorted(pkg.rglob("*")):
        if path.is_dir() or "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
            continue
        rel = path.relative_to(pkg.parent).as_posix()
        if rel.startswith("labkit/_data/"):
            continue  # taken from resource() below, whichever layout this is
        files.append((rel, path.read_bytes()))
    for name in ("profiles.yaml", "Vagrantfile.j2", "provisioning"):
        try:
            src = resource(name)
        except FileNotFoundError:
            continue
        if src.is_dir():
            for path in sorted(src.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    files.append((f"labkit/_data/{name}/{path.relative_to(src).as_posix()}", path.read_bytes()))
        else:
            files.append((f"labkit/_data/{name}", src.read_bytes()))
    return files


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_labkit_wheel(dest: Path) -> Path:
    """A pure-Python wheel of the running labkit (no dependencies declared: the host installs those
    explicitly). Its version carries a hash of the content, so a changed checkout reinstalls."""
    files = _package_files()
    h = hashlib.sha256()
    for name, data in files:
        h.update(name.encode() + b"\0" + data)
    version = f"{__version__}+h{h.hexdigest()[:12]}"
    dist = f"labkit-{version}.dist-info"
    meta = {
        f"{dist}/METADATA": (f"Metadata-Version: 2.1\nName: labkit\nVersion: {version}\n"
                             "Summary: labkit (host-side install, dependencies installed separately)\n").encode(),
        f"{dist}/WHEEL": (b"Wheel-Version: 1.0\nGenerator: labkit.wheelhouse\nRoot-Is-Purelib: true\n"
                          b"Tag: py3-none-any\n"),
        f"{dist}/entry_points.txt": b"[console_scripts]\nlabkit = labkit.__main__:main\n",
    }
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    path = dest / f"labkit-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files + list(meta.items()):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
            writer.writerow([name, _record_hash(data), len(data)])
        writer.writerow([f"{dist}/RECORD", "", ""])
        zf.writestr(zipfile.ZipInfo(f"{dist}/RECORD", date_time=(2020, 1, 1, 0, 0, 0)), record.getvalue())
    return path


# --------------------------------------------------------------------------------------------------
# the dependencies' wheels


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def pins(requirements: tuple[str, ...] = HOST_REQUIREMENTS) -> list[str]:
    """The requirements at the versions installed here (so hosts run what the controller tested)."""
    out = []
    for r in requirements:
        v = _installed(r)
        out.append(f"{r}=={v}" if v else r)
    return out


#: pypa's wheel installer, shipped to the host to unpack the wheelhouse (it is not needed here)
INSTALLER = "installer==1.1.0"


def _constraints() -> str:
    """Every distribution installed here as a constraint (pip applies only those it pulls in)."""
    seen = {}
    for d in metadata.distributions():
        name = (d.metadata.get("Name") or "").strip()
        if name and name.lower() != "labkit" and re.match(r"^[A-Za-z0-9._-]+$", name):
            seen[name.lower()] = f"{name}=={d.version}"
    return "\n".join(sorted(seen.values())) + "\n"


@dataclass
class Wheelhouse:
    dir: Path
    target: Target
    files: list[Path] = field(default_factory=list)
    requirements: list[str] = field(default_factory=list)

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for f in sorted(self.files, key=lambda p: p.name):
            h.update(f.name.encode())
            h.update(hashlib.sha256(f.read_bytes()).digest())
        return h.hexdigest()[:16]

    @property
    def labkit_wheel(self) -> Path:
        return next(f for f in self.files if f.name.startswith("labkit-"))

    @property
    def installer_wheel(self) -> Path:
        return next(f for f in self.files if re.match(r"installer-[\d.]+-py3-none-any\.whl$", f.name))

    @property
    def install_wheels(self) -> list[Path]:
        """Everything to install on the host (all but the installer itself)."""
        return [f for f in self.files if f != self.installer_wheel]


def cache_root() -> Path:
    """Where gathered wheels are kept: ``$LABKIT_WHEELHOUSE_CACHE``, else ``$LABKIT_HOME/wheelhouse``."""
    return Path(os.environ.get("LABKIT_WHEELHOUSE_CACHE") or labkit_home() / "wheelhouse")


def build(target: Target, requirements: tuple[str, ...] = HOST_REQUIREMENTS, *,
          progress: Callable[[str, int, Any], None] | None = None) -> Wheelhouse:
    """The wheelhouse for ``target``: dependencies from the cache (or ``pip download`` once), labkit fresh."""
    reqs = pins(requirements)
    key = hashlib.sha256(("\n".join(reqs + [INSTALLER]) + target.tag).encode()).hexdigest()[:12]
    deps = cache_root() / target.tag / key
    if not (deps / "complete").exists():
        deps.mkdir(parents=True, exist_ok=True)
        if progress:
            progress(f"pip download for {target.tag}: {' '.join(reqs)}", 0, None)
        _download(deps, target, reqs + [INSTALLER])
        (deps / "complete").write_text("\n".join(reqs) + "\n")
    out = Path(tempfile.mkdtemp(prefix="labkit-wheelhouse-"))
    for f in deps.glob("*.whl"):
        os.link(f, out / f.name) if _same_fs(f, out) else out.joinpath(f.name).write_bytes(f.read_bytes())
    build_labkit_wheel(out)
    return Wheelhouse(dir=out, target=target, files=sorted(out.glob("*.whl")), requirements=reqs)


def _same_fs(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_dev == b.stat().st_dev
    except OSError:
        return False


def _download(dest: Path, target: Target, reqs: list[str]) -> None:
    base = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
            "--dest", str(dest), "--python-version", target.python, "--implementation", "cp",
            "--abi", f"cp{target.python.replace('.', '')}", "--abi", "abi3", "--abi", "none"]
    for p in target.platforms():
        base += ["--platform", p]
    # other wheelhouses already here may hold what is needed (offline controller)
    links = []
    for d in sorted(cache_root().glob("*/*")):
        if d != dest and d.is_dir():
            links += ["--find-links", str(d)]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write(_constraints())
        constraints = fh.name
    attempts = [base + links + ["-c", constraints] + reqs, base + links + reqs]
    last = ""
    try:
        for cmd in attempts:
            cp = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if cp.returncode == 0:
                return
            last = (cp.stderr.strip() or cp.stdout.strip()).splitlines()[-1:] or [""]
            last = last[0]
    finally:
        os.unlink(constraints)
    raise BackendError(f"cannot gather the wheels for {target.tag} ({' '.join(reqs)}): {last} -- this machine "
                       f"needs the package index once (then {cache_root()} serves), or put the wheels there")


# --------------------------------------------------------------------------------------------------
# install on a host


def install(remote: Any, hosts: list[Any], *, progress: Callable[[str, int, Any], None] | None = None
            ) -> dict[str, float]:
    """Install labkit on ``hosts`` (in parallel), each in the venv its ``host.labkit`` lives in.

    ``remote`` is a ``labkit.remote.Remote``. Returns the seconds each host took."""
    import shutil
    import time
    from concurrent.futures import ThreadPoolExecutor

    hosts = list(hosts)
    probes = remote.run_many(hosts, PROBE)
    targets = {h.name: probe_target(lambda _cmd, h=h: probes[h.name].stdout) for h in hosts}
    houses = {t: build(t, progress=progress) for t in set(targets.values())}
    done: list[str] = []

    def one(h: Any) -> float:
        t0 = time.monotonic()
        install_host(remote, h, houses[targets[h.name]])
        done.append(h.name)
        if progress:
            progress(f"{h.name}: labkit installed", len(done), len(hosts))
        return time.monotonic() - t0

    try:
        with ThreadPoolExecutor(max_workers=min(16, max(len(hosts), 1))) as pool:
            return dict(zip([h.name for h in hosts], pool.map(one, hosts), strict=True))
    finally:
        for house in houses.values():
            shutil.rmtree(house.dir, ignore_errors=True)


def install_host(remote: Any, host: Any, house: Wheelhouse) -> str:
    """Push ``house`` to ``host`` and install it in the venv of ``host.labkit``; returns that path."""
    venv = str(Path(host.labkit).parent.parent)
    root = str(Path(venv).parent)
    wheels = f"{root}/wheels"
    stamp = f"{root}/installed.json"
    want = {"digest": house.digest, "requirements": house.requirements}
    q = shlex.quote
    r = remote.run(host, f"cat {q(stamp)} 2>/dev/null || true", check=False)
    try:
        if json.loads(r.stdout or "{}") == want and remote.run(host, f"test -x {q(venv + '/bin/labkit')}",
                                                               check=False).exited == 0:
            return f"{venv}/bin/labkit"
    except json.JSONDecodeError:
        pass
    owner = f"-o $(id -u {q(host.user)}) -g $(id -g {q(host.user)})"
    remote.run(host, f"install -d -m 0755 {owner} {q(root)} && rm -rf {q(wheels)} {q(venv)} && "
                     f"install -d -m 0755 {owner} {q(wheels)}", sudo=True)
    from labkit.resources import resource

    script = f"{wheels}/install-wheels.py"
    remote.put(host, str(resource("provisioning") / "install-wheels.py"), script)
    for f in house.files:
        remote.put(host, str(f), f"{wheels}/{f.name}")
    cmds = [
        f"python3 -m venv --without-pip {q(venv)}",
        shlex.join([f"{venv}/bin/python", script, f"{wheels}/{house.installer_wheel.name}",
                    *(f"{wheels}/{f.name}" for f in house.install_wheels)]),
        f"{q(venv + '/bin/labkit')} --version",
        f"{q(venv + '/bin/python')} -c " + q("import importlib; [importlib.import_module(m) for m in "
                                            f"{list(HOST_MODULES)!r}]"),
    ]
    for c in cmds:
        res = remote.run(host, c, check=False, timeout=900)
        if res.exited != 0:
            last = (res.stderr.strip() or res.stdout.strip()).splitlines()
            raise BackendError(f"{host.name}: installing labkit failed at `{c[:80]}`: "
                               f"{last[-1] if last else res.exited}")
    remote.run(host, f"printf '%s' {q(json.dumps(want))} > {q(stamp)}")
    return f"{venv}/bin/labkit"
