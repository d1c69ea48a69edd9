"""Payload conversion for the ocpp library, faster: cached camelCase <-> snake_case keys, one-pass dataclass dicts.

The library converts every key of every payload with regular expressions and a chain of replacements
on every message; the result depends only on the key, so it is computed once per distinct key here by
calling the library's functions on that key alone.
"""

from __future__ import annotations

from dataclasses import fields as _fields
from typing import Any

from ocpp.charge_point import camel_to_snake_case, serialize_as_dict, snake_to_camel_case

#: the library's own functions, kept before ``install()`` replaces them (for tests and comparison)
LIBRARY = {
    "camel_to_snake_case": camel_to_snake_case,
    "snake_to_camel_case": snake_to_camel_case,
    "serialize_as_dict": serialize_as_dict,
}

_SNAKE: dict[str, str] = {}
_CAMEL: dict[str, str] = {}


def _snake_key(key: str) -> str:
    out = _SNAKE.get(key)
    if out is None:
        out = _SNAKE[key] = next(iter(camel_to_snake_case({key: None})))
    return out


def _camel_key(key: str) -> str:
    out = _CAMEL.get(key)
    if out is None:
        out = _CAMEL[key] = next(iter(snake_to_camel_case({key: None})))
    return out


def to_snake(data: Any) -> Any:
    """``ocpp.charge_point.camel_to_snake_case``, cached per key."""
    if isinstance(data, dict):
        return {_snake_key(k): to_snake(v) for k, v in data.items()}
    if isinstance(data, list):
        return [to_snake(v) for v in data]
    return data


def to_camel(data: Any) -> Any:
    """``ocpp.charge_point.snake_to_camel_case``, cached per key."""
    if isinstance(data, dict):
        return {_camel_key(k): to_camel(v) for k, v in data.items()}
    if isinstance(data, list):
        return [to_camel(v) for v in data]
    return data


_SCALARS = frozenset({str, int, float, bool, type(None)})
_DC_FIELDS: dict[type, tuple[str, ...]] = {}


def _dc_fields(t: type) -> tuple[str, ...] | None:
    names = _DC_FIELDS.get(t)
    if names is None:
        if not hasattr(t, "__dataclass_fields__"):
            return None
        names = _DC_FIELDS[t] = tuple(f.name for f in _fields(t))
    return names


def serialize(obj: Any) -> Any:
    """``ocpp.charge_point.serialize_as_dict`` without ``dataclasses.asdict``'s deep copies.

    The same result (dataclasses become dicts, recursively, also inside lists and dicts), built in one
    pass; scalars are shared rather than copied, which is safe because the result is converted again
    (``to_camel``) before it is sent.
    """
    t = type(obj)
    if t in _SCALARS:
        return obj
    if t is dict:
        return {k: serialize(v) for k, v in obj.items()}
    if t is list:
        return [serialize(v) for v in obj]
    names = _dc_fields(t)
    if names is not None:
        return {name: serialize(getattr(obj, name)) for name in names}
    if isinstance(obj, dict):
        return {k: serialize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(serialize(v) for v in obj)
    return obj


def install() -> None:
    """Make ``ChargePoint.call()`` (which looks these names up in ocpp.charge_point) use the fast versions."""
    import ocpp.charge_point as cp

    cp.camel_to_snake_case = to_snake
    cp.snake_to_camel_case = to_camel
    cp.serialize_as_dict = serialize
