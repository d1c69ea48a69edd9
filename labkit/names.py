"""Lab and host names: the rules, checked wherever a name becomes part of a path, a namespace or an interface.

A lab name is a name, never a path: ``labkit down --lab ../../x`` is refused here, before any path is made.
"""

from __future__ import annotations

import re

from labkit.errors import ConfigError

#: Lab names end up in namespace and interface names (15 characters at most on Linux).
NAME_RE = re.compile(r"^[a-z]([a-z0-9-]{0,10}[a-z0-9])?$")
NAME_RULE = "1-12 characters: lowercase letters, digits and '-', starting with a letter, not ending with '-'"


def is_lab_name(name: object) -> bool:
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None


def check_lab_name(name: object, field: str = "--lab") -> str:
    """``name`` if it is a valid lab name, else a ConfigError naming ``field`` (exit status 2)."""
    if not is_lab_name(name):
        raise ConfigError(f"{field}: invalid lab name {name!r}: {NAME_RULE}")
    return str(name)


#: Host names (an inventory's hosts) become file names in the lab directory and labels in results.
HOST_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62})$")
HOST_NAME_RULE = "1-63 characters: letters, digits, '.', '_' and '-', starting with a letter or digit"


def is_host_name(name: object) -> bool:
    return isinstance(name, str) and HOST_NAME_RE.fullmatch(name) is not None and ".." not in name
