"""``fast`` validation accepts and rejects exactly what the ocpp library's own validation does."""

from __future__ import annotations

import pytest
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, CallResult, _validate_payload

from labkit.sim.validation import validate_fast

CASES = [
    ("1.6", Call("1", "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"})),
    ("1.6", Call("1", "BootNotification", {"chargePointVendor": 5, "chargePointModel": "m"})),
    ("1.6", Call("1", "BootNotification", {"chargePointVendor": "v"})),
    ("1.6", Call("1", "BootNotification", {"chargePointVendor": "v" * 21, "chargePointModel": "m"})),
    ("1.6", Call("1", "Heartbeat", {"x": 1})),
    (
        "1.6",
        Call(
            "1",
            "MeterValues",
            {
                "connectorId": 1,
                "meterValue": [
                    {"timestamp": "2026-01-01T00:00:00Z", "sampledValue": [{"value": "1", "measurand": "Bogus"}]}
                ],
            },
        ),
    ),
    ("1.6", Call("1", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Charging"})),
    (
        "2.0.1",
        Call(
            "1",
            "TransactionEvent",
            {
                "eventType": "Updated",
                "timestamp": "2026-01-01T00:00:00Z",
                "triggerReason": "MeterValuePeriodic",
                "seqNo": 1,
                "transactionInfo": {"transactionId": "t"},
            },
        ),
    ),
    (
        "2.0.1",
        Call(
            "1",
            "TransactionEvent",
            {
                "eventType": "Sometimes",
                "timestamp": "2026-01-01T00:00:00Z",
                "triggerReason": "MeterValuePeriodic",
                "seqNo": 1,
                "transactionInfo": {"transactionId": "t"},
            },
        ),
    ),
    ("2.0.1", Call("1", "Authorize", {"idToken": {"idToken": "x", "type": "ISO14443"}})),
    ("2.0.1", Call("1", "Authorize", {"idToken": {"idToken": 3, "type": "ISO14443"}})),
]


def outcome(fn, version, msg):
    try:
        fn(msg, version)
        return None
    except OCPPError as exc:
        return exc.code


@pytest.mark.parametrize("version, msg", CASES, ids=lambda x: getattr(x, "action", x))
def test_fast_matches_the_library(version, msg):
    assert outcome(validate_fast, version, msg) == outcome(_validate_payload, version, msg)


def test_results_validate_too():
    res = CallResult(
        "1", {"currentTime": "2026-01-01T00:00:00Z", "interval": 5, "status": "Accepted"}, "BootNotification"
    )
    assert outcome(validate_fast, "1.6", res) is None
    res.payload["status"] = "Maybe"
    assert outcome(validate_fast, "1.6", res) == outcome(_validate_payload, "1.6", res) == "FormatViolation"
