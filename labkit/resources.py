"""Where labkit finds its shipped files (profiles.yaml, Vagrantfile.j2, provisioning/).

In a source checkout or an editable install they sit at the repository's top level; in an installed wheel
they travel inside the package as ``labkit/_data/``.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def resource(name: str) -> Path:
    """Path of a shipped top-level file or folder, such as ``"profiles.yaml"``."""
    for candidate in (_PKG.parent / name, _PKG / "_data" / name):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"labkit resource {name!r} not found (looked in {_PKG.parent} and {_PKG / '_data'})")
