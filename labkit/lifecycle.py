"""Lab lifecycle as library calls: ``up``, ``down``, ``status`` and ``open_lab`` (what the CLI verbs call).

``up`` validates everything and runs the backend's preflight before touching anything; if anything fails
afterwards (or the user presses Ctrl-C) it removes what was created, so a failed ``up`` leaves no half lab.
A crash or SIGKILL leaves the journal, from which ``down`` removes the rest.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from labkit import backends
from labkit.errors import ConfigError, LabkitError
from labkit.inventory import Inventory
from labkit.labdir import LabDir, list_labs
from labkit.model import Lab, LabSpec, build_lab, lab_of_hosts
from labkit.remote import Remote

ProgressFn = Callable[[str, int, "int | None"], None]


def _quiet(message: str, done: int = 0, total: int | None = None) -> None:
    return None


@dataclass
class LabHandle:
    """A lab that is up: its model, inventory and directory; ``remote()`` opens SSH connections."""

    lab: Lab
    inventory: Inventory
    labdir: LabDir
    timings: dict[str, float] = field(default_factory=dict)

    def remote(self) -> Remote:
        return Remote(self.inventory, log=self.labdir.logs / "commands.log")


def up(spec: LabSpec, *, progress: ProgressFn = _quiet, check_path: bool = True) -> LabHandle:
    """Bring up the lab ``spec`` describes; a one-line error and nothing left behind when it cannot.

    Everything from the check that no lab of that name exists to the end (or the rollback) runs under the
    lab's lock, so two ``up`` of one name at once give one lab and one clear refusal ("busy" or "already
    exists"), and a rollback removes only what this ``up`` journalled."""
    lab = build_lab(spec)
    labdir = LabDir(spec.name)
    backend = backends.resolve("hosts" if spec.inventory and spec.backend == "auto" else spec.backend)
    resolved = lab.spec.model_copy(update={"backend": backend.name})
    lab = build_lab(resolved)

    _refuse_existing(labdir)
    backend.preflight(lab, labdir)  # changes nothing: bad input is refused before any directory is made

    timings: dict[str, float] = {}
    t0 = time.monotonic()
    with labdir.lock(wait=0):
        _refuse_existing(labdir)  # again, under the lock: another `up` of this name may have won meanwhile
        labdir.create()
        labdir.write_json("lab.json", lab.to_dict())
        try:
            inventory = backend.up(lab, labdir, progress=progress)
            timings["place"] = time.monotonic() - t0
            if backend.name == "hosts":  # existing machines: the lab is what the inventory named
                lab = lab_of_hosts(lab.spec, inventory)
                labdir.write_json("lab.json", lab.to_dict())
            inventory.save(labdir.inventory_file)
            handle = LabHandle(lab, inventory, labdir, timings)
            with handle.remote() as remote:
                t1 = time.monotonic()
                remote.wait(inventory.hosts, timeout=_ssh_timeout(backend.name, len(inventory.hosts)),
                            progress=lambda d, t: progress("waiting for SSH", d, t))
                timings["ssh"] = time.monotonic() - t1
                from labkit import provision

                t1 = time.monotonic()
                versions = provision.provision(remote, inventory, progress=progress)
                labdir.write_json("provision.json", versions)
                timings["provision"] = time.monotonic() - t1
                if check_path:
                    from labkit import pathcheck

                    t1 = time.monotonic()
                    progress("checking the data path crosses the gateway", 0, None)
                    evidence = pathcheck.check(remote, inventory)
                    labdir.write_json("pathcheck.json", evidence)
                    timings["pathcheck"] = time.monotonic() - t1
        except BaseException:
            progress("failed: removing what was created", 0, None)
            try:
                backend.down(labdir)
                labdir.clear_runtime()
            except BaseException as exc:  # noqa: BLE001 - the original error matters more
                # the journal stays, so `labkit down` can finish the job
                progress(f"could not remove everything ({exc}); run: labkit down --lab {spec.name}", 0, None)
            raise
        timings["total"] = time.monotonic() - t0
        labdir.write_json("up.json", {"timings_s": timings, "time": time.time()})
    return handle


def _refuse_existing(labdir: LabDir) -> None:
    if labdir.journal() or labdir.lab_file.exists():
        raise ConfigError(f"name: a lab named {labdir.name!r} already exists at {labdir.path} "
                          f"(labkit status --lab {labdir.name}; labkit down --lab {labdir.name})")


def _ssh_timeout(backend: str, hosts: int) -> float:
    return 60.0 + 0.5 * hosts if backend in ("netns", "docker", "hosts") else 600.0


def open_lab(name: str) -> LabHandle:
    """A lab that ``up`` brought up (raises a one-line error when there is none)."""
    labdir = LabDir(name)
    if not labdir.inventory_file.exists() or not labdir.lab_file.exists():
        others = [n for n in list_labs() if n != name]
        hint = f" (labs here: {', '.join(others)})" if others else " (labkit up first)"
        raise LabkitError(f"lab {name!r} is not up{hint}")
    lab = Lab.from_dict(json.loads(labdir.lab_file.read_text()))
    return LabHandle(lab, Inventory.load(labdir.inventory_file), labdir)


def down(name: str, *, progress: ProgressFn = _quiet) -> bool:
    """Remove everything the lab created; False when there was nothing to remove."""
    labdir = LabDir(name)
    journal = labdir.journal()
    if not journal and not labdir.lab_file.exists():
        return False
    backend_name = next((e["name"] for e in journal if e["kind"] == "backend"), None)
    if backend_name is None and labdir.lab_file.exists():
        backend_name = json.loads(labdir.lab_file.read_text())["spec"]["backend"]
    with labdir.lock():
        if backend_name and backend_name != "auto":
            backends.get_backend(backend_name).down(labdir, progress=progress)
        labdir.clear_runtime()
    return True


def status(name: str) -> dict[str, Any]:
    """Hosts, addresses, whether each answers over SSH, and the profile applied."""
    handle = open_lab(name)
    backend = backends.get_backend(handle.inventory.backend)
    states = {s.name: s for s in backend.status(handle.lab, handle.labdir)}
    reach: dict[str, str] = {}
    with handle.remote() as remote:
        from concurrent.futures import ThreadPoolExecutor

        def probe(h):
            if not states.get(h.name) or not states[h.name].running:
                return h.name, "down"
            try:
                remote.connect(h)
                remote.run(h, "true", timeout=10)
                return h.name, "ok"
            except LabkitError as exc:
                return h.name, str(exc).split(": ", 1)[-1]

        with ThreadPoolExecutor(max_workers=min(32, len(handle.inventory.hosts))) as pool:
            reach = dict(pool.map(probe, handle.inventory.hosts))
    shaping = None
    shape_file = handle.labdir.path / "shaping.json"
    if shape_file.exists():
        try:
            shaping = json.loads(shape_file.read_text())
        except json.JSONDecodeError:
            shaping = {"error": "shaping.json is unreadable"}
    return {
        "lab": handle.lab.name,
        "backend": handle.inventory.backend,
        "labdir": str(handle.labdir.path),
        "details": handle.inventory.details,
        "hosts": [
            {"name": h.name, "role": h.role, "addresses": h.addresses, "ifaces": h.ifaces,
             "ssh": f"{h.user}@{h.ssh_host}:{h.ssh_port}", "state": states[h.name].detail if h.name in states else "?",
             "reachable": reach.get(h.name)}
            for h in handle.inventory.hosts
        ],
        "shaping": shaping,
    }
