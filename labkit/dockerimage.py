"""The Docker host image: the one image every container of the docker backend runs (cpo, gateway, evse1..N).

It holds a minbase Debian (bookworm) with what a lab host needs and a VM has (python3 without venv/pip,
iproute2, ping, iperf3, procps, psmisc, tcpdump, ethtool, iptables for the userspace shaping engine's NFQUEUE
rules, openssh-server) and nothing a container does not (no kernel, no init, no systemd, no sshd host keys:
the backend bind-mounts each host's key and sshd_config at ``/etc/labkit-ssh``; the image's CMD runs
``sshd -D -e -f /etc/labkit-ssh/sshd_config``). labkit itself is not in the image: provisioning installs it
over SSH from a wheelhouse, exactly as on a VM, so the image does not change with every labkit commit.

Why debootstrap + ``docker import`` and not ``FROM ubuntu:24.04``: this machine (and many classroom and CI
machines) can reach a Debian mirror but no image registry, so nothing is pulled.
``provisioning/dockerimage/build.sh`` debootstraps the root (through the .deb cache the Vagrant test box
already fills, so most packages are local) and tars it; ``ensure_image`` imports that tar with the engine's
API and sets CMD, ENV and the labels with ``changes``. Where a registry can be reached the same recipe still
works; it just does not need one.

The image is tagged ``labkit/host:<suite>-<key[:12]>`` where the key hashes the build script, the suite and
the import changes (``image_recipe``): changing any of them gives a new tag, and the same recipe is built once
per engine. What each image holds is kept beside it in ``/var/cache/labkit/docker/<suite>-<key12>/``
(packages.txt, recipe.json, build.log). Everything talks to the engine through the Docker SDK for Python
(``engine_client``), never the docker CLI.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit import machine
from labkit.backends.base import Progress, no_progress
from labkit.errors import BackendError, ConfigError
from labkit.resources import resource
from labkit.testbox import default_mirror

#: bump when the way an image is made changes outside build.sh (the import, the cache layout)
FORMAT = 1
REPOSITORY = "labkit/host"
BUILD_SCRIPT = "provisioning/dockerimage/build.sh"
CACHE_ROOT = Path(os.environ.get("LABKIT_BOX_CACHE", "/var/cache/labkit"))
#: the Docker images' own cache (packages.txt, recipe.json, build logs); the .debs are shared with the test box
DOCKER_CACHE = CACHE_ROOT / "docker"
DEB_CACHE = CACHE_ROOT / "debs"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
LABEL_RECIPE = "org.labkit.recipe"
LABEL_SUITE = "org.labkit.suite"
#: the container's main process: sshd in the foreground, logging to stderr, with the config labkit mounts
SSHD_CMD = ["/usr/sbin/sshd", "-D", "-e", "-f", "/etc/labkit-ssh/sshd_config"]
#: an imported image has no PATH of its own (the engine would add this one to each container anyway)
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _static_changes(suite: str) -> list[str]:
    """The Dockerfile instructions applied at import, except the recipe label (which is the key itself)."""
    return [f"CMD {json.dumps(SSHD_CMD, separators=(',', ':'))}", f"LABEL {LABEL_SUITE}={suite}",
            "ENV LANG=C.UTF-8", f"ENV PATH={PATH}"]


def image_recipe(suite: str) -> tuple[str, str]:
    """(recipe key, image tag): the key is a sha256 of the format version, build.sh, the suite and the import
    changes; the tag is ``labkit/host:<suite>-<key[:12]>``."""
    h = hashlib.sha256()
    h.update(f"labkit-docker-host/{FORMAT}\n".encode())
    h.update(resource(BUILD_SCRIPT).read_bytes())
    h.update(f"\nsuite={suite}\n".encode())
    h.update("\n".join(_static_changes(suite)).encode())
    key = h.hexdigest()
    return key, f"{REPOSITORY}:{suite}-{key[:12]}"


@dataclass
class HostImage:
    tag: str
    id: str  # the engine's image id, "sha256:..."
    suite: str
    key: str  # the recipe key (label org.labkit.recipe)
    built: bool  # False: the engine already had it
    seconds: dict[str, float] = field(default_factory=dict)
    packages: list[str] = field(default_factory=list)  # "name version", as dpkg-query lists them
    dir: Path | None = None  # where packages.txt and recipe.json are kept
    size: int = 0  # bytes, as the engine counts them

    @property
    def packages_file(self) -> Path | None:
        return self.dir / "packages.txt" if self.dir else None


# --------------------------------------------------------------------------------------------------
# the engine


def engine_url() -> str:
    """Where the SDK looks for the engine: $DOCKER_HOST, else the default socket."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET


def engine_client(timeout: float = 60) -> Any:
    """``docker.from_env()`` (which asks the engine for its API version), with an unreachable engine, a socket
    this user may not open or a malformed DOCKER_HOST reported on one line."""
    try:
        import docker
    except ImportError:
        raise BackendError("docker: the Docker SDK for Python is not installed (pip install 'docker>=7.1')") from None
    url = engine_url()
    try:
        return docker.from_env(timeout=int(timeout))
    except docker.errors.DockerException as exc:
        text = str(exc)
        if "Permission denied" in text or "PermissionError" in text:
            raise BackendError(f"docker: no permission to use the Docker engine at {url} "
                               "(run as root, or as a member of the docker group)") from None
        if "Error while fetching server API version" in text:
            raise BackendError(f"docker: cannot reach the Docker engine at {url} "
                               "(is dockerd running? install.sh --dev starts it)") from None
        if os.environ.get("DOCKER_HOST"):
            raise ConfigError(f"DOCKER_HOST: {url}: {text.splitlines()[0] if text else type(exc).__name__}") from None
        raise BackendError(f"docker: {text.splitlines()[0] if text else type(exc).__name__}") from None


def engine_facts(client: Any) -> dict[str, Any]:
    """What the engine says about itself, for the run's provenance and the backend's checks. Whether its kernel
    has sch_netem cannot be known from the API (the shaping code finds out on the gateway)."""
    info = client.info()
    ver = client.version()
    security = info.get("SecurityOptions") or []
    return {
        "server_version": ver.get("Version") or info.get("ServerVersion"),
        "api_version": ver.get("ApiVersion"),
        "min_api_version": ver.get("MinAPIVersion"),
        "client_api_version": client.api.api_version,
        "sdk_version": _sdk_version(),
        "kernel_version": info.get("KernelVersion"),
        "operating_system": info.get("OperatingSystem"),
        "os_type": info.get("OSType"),
        "architecture": info.get("Architecture"),
        "cgroup_driver": info.get("CgroupDriver"),
        "cgroup_version": info.get("CgroupVersion"),
        "storage_driver": info.get("Driver"),
        "rootless": any("rootless" in str(s) for s in security),
        "ncpu": info.get("NCPU"),
        "mem_total": info.get("MemTotal"),
        "url": engine_url(),
    }


def _sdk_version() -> str:
    import docker

    return getattr(docker, "__version__", "?")


# --------------------------------------------------------------------------------------------------
# the image


def _private_dir(path: Path) -> Path:
    """``path`` as a root-owned 0700 directory (made if missing); refuse one another user owns."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.geteuid():
        raise BackendError(f"{path} belongs to uid {st.st_uid}, not to this user; remove it or fix its owner")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def _read_packages(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return []


def _matches(img: Any, key: str, suite: str) -> bool:
    labels = (img.attrs.get("Config") or {}).get("Labels") or {}
    return labels.get(LABEL_RECIPE) == key and labels.get(LABEL_SUITE) == suite


def _find(client: Any, tag: str) -> Any | None:
    import docker.errors

    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None


def find_image(suite: str = "bookworm", client: Any = None) -> HostImage | None:
    """The image of the current recipe for ``suite`` if the engine has it (built=False), else None."""
    client = client or engine_client()
    key, tag = image_recipe(suite)
    img = _find(client, tag)
    if img is None or not _matches(img, key, suite):
        return None
    out = DOCKER_CACHE / f"{suite}-{key[:12]}"
    return HostImage(tag=tag, id=img.id, suite=suite, key=key, built=False, packages=_read_packages(
        out / "packages.txt"), dir=out, size=int(img.attrs.get("Size") or 0))


def ensure_image(suite: str = "bookworm", mirror: str | None = None, *, force: bool = False,
                 progress: Progress = no_progress, log: Callable[[str], None] | None = None) -> HostImage:
    """The host image of the current recipe: the engine's if it has one (and not ``force``), else built with
    build.sh (debootstrap, a minute or a few) and imported. ``progress`` and ``log`` get build.sh's lines."""
    t0 = time.monotonic()
    client = engine_client()
    key, tag = image_recipe(suite)
    name = f"{suite}-{key[:12]}"
    out = DOCKER_CACHE / name
    if not force:
        have = _cached(client, suite)
        if have is not None:
            have.seconds["lookup"] = round(time.monotonic() - t0, 1)
            return have
    if os.geteuid() != 0:
        raise BackendError("labkit image build needs root (debootstrap, chroot)")
    if not shutil.which("debootstrap"):
        raise BackendError("labkit image build needs debootstrap (Debian: apt install debootstrap)")
    mirror = mirror or default_mirror()
    # one build of a recipe at a time on this machine (two test sessions, CI and a user): a named machine lock
    with machine.machine_lock(wait=1800, what=f"building the image {name}", name=f"image-{name}"):
        if not force:  # built by someone else while this waited for the lock
            have = _cached(client, suite)
            if have is not None:
                have.seconds["lookup"] = round(time.monotonic() - t0, 1)
                return have
        old = _find(client, tag)
        seconds: dict[str, float] = {}
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=_private_dir(DOCKER_CACHE)))  # 0700
        try:
            build = tmp / "out"
            progress(f"building {tag} (debootstrap {suite}, a minute or a few)", 0, None)
            lines = _run_build(build, suite, mirror, progress, log, seconds, DOCKER_CACHE / f"{name}.failed.log")
            progress(f"importing {tag}", 0, None)
            t1 = time.monotonic()
            image_id = _import(client, build / "rootfs.tar", tag, key, suite)
            seconds["import"] = round(time.monotonic() - t1, 1)
            img = client.images.get(tag)
            if img.id != image_id or not _matches(img, key, suite) or \
                    (img.attrs.get("Config") or {}).get("Cmd") != SSHD_CMD:
                labels = (img.attrs.get("Config") or {}).get("Labels")
                raise BackendError(f"docker: the imported image {tag} ({img.id}) does not carry the recipe's labels "
                                   f"and command (labels: {labels})")
            _private_dir(out)
            for f in ("packages.txt", "debootstrap.log"):
                shutil.copy2(build / f, out / f)
            (out / "build.log").write_text("\n".join(lines) + "\n")
            (out / "recipe.json").write_text(json.dumps(
                {"tag": tag, "id": img.id, "key": key, "suite": suite, "format": FORMAT, "mirror": mirror,
                 "seconds": seconds, "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
                indent=2) + "\n")
        finally:
            _unmount_under(tmp)  # never remove through a /proc or /sys an interrupted debootstrap left mounted
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.id != img.id:
            _drop_untagged(client, old.id)
        seconds["total"] = round(time.monotonic() - t0, 1)
        return HostImage(tag=tag, id=img.id, suite=suite, key=key, built=True, seconds=seconds,
                         packages=_read_packages(out / "packages.txt"), dir=out, size=int(img.attrs.get("Size") or 0))


def _cached(client: Any, suite: str) -> HostImage | None:
    have = find_image(suite, client)
    if have is not None and not have.packages and have.dir is not None:
        # the engine has the image but this machine's cache lost its list (a wiped /var/cache): ask the image
        have.packages = _packages_from_image(client, have.tag)
        with contextlib.suppress(OSError, BackendError):
            _private_dir(have.dir)
            (have.dir / "packages.txt").write_text("".join(p + "\n" for p in have.packages))
    return have


def _packages_from_image(client: Any, tag: str) -> list[str]:
    out = client.containers.run(tag, ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n"], remove=True,
                                network_mode="none")
    return [line for line in out.decode().splitlines() if line.strip()]


def _unmount_under(path: Path) -> None:
    """Unmount (lazily, deepest first) whatever is mounted below ``path``."""
    prefix = str(path.resolve()) + "/"
    try:
        points = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    except OSError:
        return
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


_STEP = re.compile(r"^\[\d\d:\d\d:\d\d\] (\S+)")


def _run_build(out: Path, suite: str, mirror: str, progress: Progress, log: Callable[[str], None] | None,
               seconds: dict[str, float], failed_log: Path) -> list[str]:
    """Run build.sh into ``out``; its lines go to ``progress`` and ``log``, each step's duration to ``seconds``
    (and all of them to ``failed_log`` when it fails)."""
    cmd = ["bash", str(resource(BUILD_SCRIPT)), str(out), suite, mirror, str(DEB_CACHE)]
    # its own process group, so that an interrupted build stops debootstrap too (build.sh's trap unmounts)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "LC_ALL": "C"}, start_new_session=True)
    lines: list[str] = []
    step, t_step = None, time.monotonic()
    try:
        for raw in proc.stdout:  # type: ignore[union-attr]
            line = raw.rstrip()
            lines.append(line)
            m = _STEP.match(line)
            if m:
                now = time.monotonic()
                if step:
                    seconds[step] = round(now - t_step, 1)
                step, t_step = (None if m.group(1) == "done" else m.group(1)), now
            if log:
                log(line)
            progress(line, 0, None)
        rc = proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise
    if rc != 0:
        last = next((x.strip() for x in reversed(lines) if x.strip()), f"exit status {rc}")
        failed_log.write_text("\n".join(lines) + "\n")
        raise BackendError(f"building the Docker host image failed: {last} (log: {failed_log})")
    if step:
        seconds[step] = round(time.monotonic() - t_step, 1)
    return lines


def _import(client: Any, tar: Path, tag: str, key: str, suite: str) -> str:
    """Import ``tar`` as ``tag`` with the recipe's changes; returns the new image's id."""
    import docker.errors

    repo, _, version = tag.rpartition(":")
    changes = [*_static_changes(suite), f"LABEL {LABEL_RECIPE}={key}"]
    try:
        text = client.api.import_image(src=str(tar), repository=repo, tag=version, changes=changes)
    except docker.errors.APIError as exc:
        raise BackendError(f"docker: importing {tar} as {tag} failed: {exc.explanation or exc}") from None
    # the engine answers with JSON lines: {"status": "sha256:..."} or {"errorDetail": ..., "error": ...}
    image_id = ""
    for line in str(text).splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("error"):
            raise BackendError(f"docker: importing {tar} as {tag} failed: {msg['error']}")
        status = str(msg.get("status") or "")
        if status.startswith("sha256:"):
            image_id = status
    if not image_id:
        raise BackendError(f"docker: importing {tar} as {tag} gave no image id (the engine said: {str(text)[:200]})")
    return image_id


def _drop_untagged(client: Any, image_id: str) -> None:
    """Remove the image a forced rebuild replaced, if nothing uses or names it any more."""
    import docker.errors

    with contextlib.suppress(docker.errors.APIError):
        img = client.images.get(image_id)
        if not img.tags:
            client.images.remove(image_id, noprune=False)
