"""OCPP JSON-schema validation, four ways: ``fast`` (default), ``sync``, ``async``, ``off``.

``sync`` and ``async`` are the ocpp library's own validation (jsonschema's Draft4Validator, in the event
loop or in its thread executor). ``fast`` validates against the very same schema files shipped in the ocpp
package, compiled to Python code by ``fastjsonschema`` (about 3 us instead of 45 us for a 1.6 MeterValues),
and raises the same OCPP errors the library would (type -> TypeConstraintViolation, additionalProperties
-> FormatViolation, required -> ProtocolError, maxLength -> TypeConstraintViolation, anything else ->
FormatViolation). The three 1.6 messages whose decimals the library parses specially (SetChargingProfile,
RemoteStartTransaction, GetCompositeSchedule results) keep the library's validator.

``install(mode)`` sets the library's ``ASYNC_VALIDATION`` switch and, for ``fast``, replaces the
``validate_payload`` that ``ocpp.charge_point`` calls, so ``ChargePoint.call()`` uses it too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import ocpp.charge_point
import ocpp.messages
from ocpp.exceptions import (
    FormatViolationError,
    ProtocolError,
    TypeConstraintViolationError,
)
from ocpp.exceptions import (
    NotImplementedError as OcppNotImplementedError,
)
from ocpp.messages import Call, CallResult, MessageType

MODES = ("fast", "sync", "async", "off")

_LIBRARY_VALIDATE = ocpp.messages.validate_payload
_SCHEMAS = os.path.join(os.path.dirname(os.path.realpath(ocpp.messages.__file__)))
_DECIMAL_16 = {
    (MessageType.Call, "SetChargingProfile"),
    (MessageType.Call, "RemoteStartTransaction"),
    (MessageType.CallResult, "GetCompositeSchedule"),
}
_compiled: dict[tuple[int, str, str], Callable[[Any], Any]] = {}


def _schema_path(message_type_id: int, action: str, version: str) -> str:
    name = action
    if message_type_id == MessageType.CallResult:
        name += "Response"
    elif version in ("2.0", "2.0.1", "2.1"):
        name += "Request"
    if version == "2.0":
        name += "_v1p0"
    return os.path.join(_SCHEMAS, "v" + version.replace(".", ""), "schemas", name + ".json")


def compiled(message_type_id: int, action: str, version: str) -> Callable[[Any], Any]:
    import fastjsonschema

    key = (message_type_id, action, version)
    fn = _compiled.get(key)
    if fn is None:
        try:
            with open(_schema_path(message_type_id, action, version), encoding="utf-8-sig") as fh:
                schema = json.load(fh)
        except (OSError, ValueError):
            raise OcppNotImplementedError(details={"cause": f"Failed to validate action: {action}"}) from None
        fn = _compiled[key] = fastjsonschema.compile(schema)
    return fn


def validate_fast(message: Call | CallResult, ocpp_version: str) -> None:
    """Validate ``message.payload``; raise the OCPP error the library would raise."""
    import fastjsonschema

    if type(message) not in (Call, CallResult):
        raise ocpp.messages.ValidationError(f"Payload can't be validated: {type(message)}")
    if ocpp_version == "1.6" and (message.message_type_id, message.action) in _DECIMAL_16:
        ocpp.messages._validate_payload(message, ocpp_version)
        return
    fn = compiled(message.message_type_id, message.action, ocpp_version)
    try:
        fn(message.payload)
    except fastjsonschema.JsonSchemaValueException as e:
        details = {"cause": e.message, "ocpp_message": message}
        if e.rule in ("type", "maxLength"):
            raise TypeConstraintViolationError(details=details) from None
        if e.rule == "required":
            raise ProtocolError(details={"cause": e.message}) from None
        raise FormatViolationError(details=details) from None


async def validate_payload_fast(message: Call | CallResult, ocpp_version: str) -> None:
    validate_fast(message, ocpp_version)


def install(mode: str) -> None:
    """Make the ocpp library validate the ``mode`` way in this process."""
    if mode not in MODES:
        raise ValueError(mode)
    ocpp.messages.ASYNC_VALIDATION = mode == "async"
    ocpp.charge_point.validate_payload = validate_payload_fast if mode == "fast" else _LIBRARY_VALIDATE


async def validate_payload(message: Call | CallResult, ocpp_version: str) -> None:
    """Whatever ``install()`` chose (looked up at call time)."""
    await ocpp.charge_point.validate_payload(message, ocpp_version)
