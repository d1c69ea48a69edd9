"""Load YAML files with line numbers and validate them with pydantic, reporting errors as ``file:line: field``.

Every configuration labkit reads (the lab file, profiles.yaml) goes through ``load_yaml`` and ``validate`` so a
mistake is reported on one line naming the file, the line, the field and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from labkit.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class FieldError(ValueError):
    """Raised by a model validator that checks several fields: ``loc`` names the field the error is about
    (relative to the model), so the error points at that field's line rather than at the model's."""

    def __init__(self, message: str, *loc: str | int):
        super().__init__(message)
        self.loc = tuple(loc)


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file, keeping line information; a syntax error becomes a ConfigError with its line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_yaml(decode_text(data, path), str(path))


def decode_text(data: bytes, path: str | Path) -> str:
    """``data`` read from ``path`` as UTF-8 text; anything else is a ConfigError naming the line and byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError.at("(file)", f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                             file=str(path), line=line) from None


def parse_yaml(text: str, filename: str, version: tuple[int, int] | None = None) -> Any:
    """Parse YAML text (1.2 unless ``version`` says otherwise: Ansible's inventories are YAML 1.1)."""
    yaml = YAML(typ="rt")
    if version:
        yaml.version = version
    try:
        return yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError.at("YAML", problem, file=filename, line=line) from None
    except YAMLError as exc:
        raise ConfigError(f"{filename}: YAML: {exc}") from None


def line_of(data: Any, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest node along ``loc`` that the YAML tree knows."""
    line = None
    node = data
    for key in loc:
        if isinstance(node, CommentedMap) and key in node:
            try:
                line = node.lc.key(key)[0] + 1
            except (KeyError, TypeError):
                pass
            node = node[key]
        elif isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
            try:
                line = node.lc.item(key)[0] + 1
            except (KeyError, TypeError):
                pass
            node = node[key]
        else:
            break
    if line is None and isinstance(data, (CommentedMap, CommentedSeq)):
        line = data.lc.line + 1
    return line


def plain(data: Any) -> Any:
    """ruamel's round-trip containers as plain dicts and lists."""
    if isinstance(data, dict):
        return {str(k): plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [plain(v) for v in data]
    return data


def field_name(loc: tuple[Any, ...]) -> str:
    parts = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def validate(model: type[M], data: Any, *, filename: str, prefix: tuple[Any, ...] = (), root: Any = None,
             context: dict | None = None) -> M:
    """Validate ``data`` as ``model``; the first error becomes ``ConfigError('file:line: field: message')``."""
    try:
        return model.model_validate(plain(data), context=context)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            loc = loc + cause.loc  # a check across fields names the field it is about
        full = prefix + loc
        line = line_of(root if root is not None else data, full if root is not None else loc)
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(model_fields_at(model, loc[:-1]))
            msg = f"unknown field (allowed: {allowed})" if allowed else "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        raise ConfigError.at(field_name(full), msg, file=filename, line=line) from None


def model_fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (sub)model found by walking ``loc``; empty when it cannot be followed."""
    current: Any = model
    for key in loc:
        if isinstance(key, int):
            continue
        fields = getattr(current, "model_fields", None)
        if fields is None:
            return []
        if key not in fields:
            return []
        current = fields[key].annotation
        args = getattr(current, "__args__", None)
        if args:
            current = next((a for a in args if hasattr(a, "model_fields")), current)
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []
