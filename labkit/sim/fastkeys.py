"""Cached payload key conversion (camelCase <-> snake_case) with the ocpp library's own rules.

The library converts every key of every payload with regular expressions and a chain of replacements
on every message; the result depends only on the key, so it is computed once per distinct key here by
calling the library's functions on that key alone.
"""

from __future__ import annotations

from typing import Any

from ocpp.charge_point import camel_to_snake_case, snake_to_camel_case

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


def install() -> None:
    """Make ``ChargePoint.call()`` (which looks these names up in ocpp.charge_point) use the cached versions."""
    import ocpp.charge_point as cp

    cp.camel_to_snake_case = to_snake
    cp.snake_to_camel_case = to_camel
