"""The results directory of one bench run: manifest.json, cells/<id>/, summary.csv (docs/results.md).

Writes are atomic (temp file + rename) so a crash never leaves a half-written manifest or cell.json.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from labkit.errors import ConfigError
from labkit.resultsformat import FORMAT  # noqa: F401 - the one definition (re-exported for the runner)


def iso(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t, tz=UTC).isoformat(timespec="seconds")


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


class RunDir:
    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def create(cls, root: Path, lab: str, label: str = "") -> RunDir:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        name = f"{stamp}-{lab}" + (f"-{label}" if label else "")
        path = root / name
        n = 1
        while path.exists():
            n += 1
            path = root / f"{name}-{n}"
        (path / "cells").mkdir(parents=True)
        return cls(path)

    @classmethod
    def open(cls, path: Path) -> RunDir:
        if not (path / "manifest.json").exists():
            raise ConfigError(f"--resume: {path} is not a labkit results directory (no manifest.json)")
        return cls(path)

    @property
    def run_id(self) -> str:
        return self.path.name

    # -- manifest -----------------------------------------------------------------------------------
    @property
    def manifest_file(self) -> Path:
        return self.path / "manifest.json"

    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_file.read_text())

    def write_manifest(self, data: dict[str, Any]) -> None:
        write_json(self.manifest_file, data)

    def update_manifest(self, **changes: Any) -> dict[str, Any]:
        data = self.manifest()
        data.update(changes)
        self.write_manifest(data)
        return data

    # -- cells --------------------------------------------------------------------------------------
    def cell_dir(self, cell_id: str) -> Path:
        return self.path / "cells" / cell_id

    def cell_meta(self, cell_id: str) -> dict[str, Any] | None:
        f = self.cell_dir(cell_id) / "cell.json"
        if not f.exists():
            return None
        try:
            return json.loads(f.read_text())
        except json.JSONDecodeError:
            return None

    def cell_complete(self, cell_id: str) -> bool:
        meta = self.cell_meta(cell_id)
        return bool(meta and meta.get("status") == "complete")

    def fresh_cell_dir(self, cell_id: str) -> Path:
        """A new, empty directory for a cell; an earlier partial attempt is kept aside as ``<id>.partial-N``."""
        d = self.cell_dir(cell_id)
        if d.exists():
            n = 1
            while (d.parent / f"{cell_id}.partial-{n}").exists():
                n += 1
            d.rename(d.parent / f"{cell_id}.partial-{n}")
        d.mkdir(parents=True)
        return d
