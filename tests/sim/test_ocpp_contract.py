"""The parts of the ``ocpp`` library (2.1.0) and of ``websockets`` (17) that labkit.sim relies on: names,
signatures and the few behaviours the CSMS and the fleet build on.

labkit replaces private methods of ``ocpp.ChargePoint`` (``_handle_call``, ``_send``, the receive loop),
swaps module attributes the library looks up at call time (``validate_payload``, ``ASYNC_VALIDATION``, the
key converters), and reads its private state (``route_map``, ``_response_queue``, ``_call_lock``,
``_call_result``, ``_ocpp_version``, ``_connection``). None of that is a stable API: a new release may rename
or reshape it and labkit would then misbehave quietly. Each check here names what it found missing or
changed, so an upgrade fails here, loudly, before it fails a measurement. Known to work: ocpp 2.1.0,
websockets 17.x (docs/simulators.md, "What labkit takes from the ocpp library").
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os

import ocpp.charge_point
import ocpp.messages
import pytest

# (module, attribute): what labkit imports or replaces
NAMES = [
    ("ocpp.charge_point", "ChargePoint"),
    ("ocpp.charge_point", "remove_nones"),
    ("ocpp.charge_point", "camel_to_snake_case"),  # replaced by labkit.sim.fastkeys.install()
    ("ocpp.charge_point", "snake_to_camel_case"),  # replaced
    ("ocpp.charge_point", "serialize_as_dict"),  # replaced
    ("ocpp.charge_point", "validate_payload"),  # replaced by labkit.sim.validation.install("fast")
    ("ocpp.messages", "ASYNC_VALIDATION"),  # set by labkit.sim.validation.install()
    ("ocpp.messages", "validate_payload"),
    ("ocpp.messages", "_validate_payload"),  # the library's synchronous validator, used directly
    ("ocpp.messages", "_DecimalEncoder"),  # the wire encoding of answers and of the fleet's tx keys
    ("ocpp.messages", "ValidationError"),
    ("ocpp.messages", "Call"),
    ("ocpp.messages", "CallResult"),
    ("ocpp.messages", "CallError"),
    ("ocpp.messages", "MessageType"),
    ("ocpp.messages", "unpack"),
    ("ocpp.routing", "on"),
    ("ocpp.routing", "create_route_map"),
    ("ocpp.exceptions", "OCPPError"),
    ("ocpp.exceptions", "UnknownCallErrorCodeError"),
    ("ocpp.exceptions", "FormatViolationError"),
    ("ocpp.exceptions", "ProtocolError"),
    ("ocpp.exceptions", "TypeConstraintViolationError"),
    ("ocpp.exceptions", "NotImplementedError"),
    ("ocpp.v16", "ChargePoint"),
    ("ocpp.v16", "call"),
    ("ocpp.v16", "call_result"),
    ("ocpp.v16.enums", "Action"),
    ("ocpp.v201", "ChargePoint"),
    ("ocpp.v201", "call"),
    ("ocpp.v201", "call_result"),
    ("ocpp.v201.enums", "Action"),
    ("ocpp.v21", "ChargePoint"),
    ("ocpp.v21", "call"),
    ("ocpp.v21", "call_result"),
    ("ocpp.v21.enums", "Action"),
]


@pytest.mark.parametrize("module, name", NAMES, ids=[f"{m}.{n}" for m, n in NAMES])
def test_names_labkit_uses_exist(module, name):
    mod = importlib.import_module(module)
    assert hasattr(mod, name), f"{module}.{name} is gone: labkit.sim imports or replaces it"


CP = ocpp.charge_point.ChargePoint
# (callable, its parameters in order): labkit overrides these or calls them with these arguments
SIGNATURES = [
    ("ChargePoint.__init__", CP.__init__, ["self", "id", "connection", "response_timeout", "logger"]),
    ("ChargePoint.start", CP.start, ["self"]),
    ("ChargePoint.route_message", CP.route_message, ["self", "raw_msg"]),
    ("ChargePoint._handle_call", CP._handle_call, ["self", "msg"]),
    ("ChargePoint._send", CP._send, ["self", "message"]),
    ("ChargePoint.call", CP.call, ["self", "payload", "suppress", "unique_id", "skip_schema_validation"]),
    ("ChargePoint._get_specific_response", CP._get_specific_response, ["self", "unique_id", "timeout"]),
    ("ocpp.messages.validate_payload", ocpp.messages.validate_payload, ["message", "ocpp_version"]),
    ("ocpp.messages._validate_payload", ocpp.messages._validate_payload, ["message", "ocpp_version"]),
    ("ocpp.messages.unpack", ocpp.messages.unpack, ["msg"]),
    ("Call.__init__", ocpp.messages.Call.__init__, ["self", "unique_id", "action", "payload"]),
    ("CallResult.__init__", ocpp.messages.CallResult.__init__, ["self", "unique_id", "payload", "action"]),
    (
        "CallError.__init__",
        ocpp.messages.CallError.__init__,
        ["self", "unique_id", "error_code", "error_description", "error_details"],
    ),
    ("Call.create_call_result", ocpp.messages.Call.create_call_result, ["self", "payload"]),
    ("Call.create_call_error", ocpp.messages.Call.create_call_error, ["self", "exception"]),
    ("ocpp.routing.on", __import__("ocpp.routing").routing.on, ["action", "skip_schema_validation"]),
    ("ocpp.routing.create_route_map", __import__("ocpp.routing").routing.create_route_map, ["obj"]),
]


@pytest.mark.parametrize("name, fn, params", SIGNATURES, ids=[s[0] for s in SIGNATURES])
def test_signatures_labkit_relies_on(name, fn, params):
    got = list(inspect.signature(fn).parameters)
    assert got == params, f"{name} now takes {got}, labkit.sim was written for {params}"


@pytest.mark.parametrize(
    "name, fn",
    [(n, getattr(CP, n)) for n in ("start", "route_message", "_handle_call", "_send", "call")],
)
def test_overridden_methods_are_still_coroutines(name, fn):
    assert inspect.iscoroutinefunction(fn), f"ChargePoint.{name} is no longer async: labkit's override is"


# names ChargePoint.call() must look up at call time (globals of ocpp.charge_point, attributes of self):
# labkit swaps the globals and hooks the attributes
CALL_NAMES = {
    "validate_payload": "labkit.sim.validation swaps it to choose the validation mode",
    "snake_to_camel_case": "labkit.sim.fastkeys swaps it",
    "serialize_as_dict": "labkit.sim.fastkeys swaps it",
    "camel_to_snake_case": "labkit.sim.fastkeys swaps it",
    "remove_nones": "the fleet's tx key of an unsent message repeats call()'s encoding",
    "_send": "the fleet stamps the send time in its _send, inside the call lock",
    "_call_lock": "the fleet's timing relies on one outstanding CALL per connection",
    "_get_specific_response": "the fleet wakes a call lost with its connection through the response queue",
    "_call_result": "call() builds the answer dataclass from the version's call_result module",
}


@pytest.mark.parametrize("name", sorted(CALL_NAMES))
def test_call_looks_up_what_labkit_replaces(name):
    code = CP.call.__code__
    assert name in code.co_names, f"ChargePoint.call no longer uses {name!r}: {CALL_NAMES[name]}"
    if name in ("validate_payload", "snake_to_camel_case", "serialize_as_dict", "remove_nones"):
        assert CP.call.__globals__ is vars(ocpp.charge_point), "ChargePoint.call moved out of ocpp.charge_point"


def test_the_response_queue_and_the_validation_switch_are_read_where_labkit_writes_them():
    names = CP._get_specific_response.__code__.co_names
    assert "_response_queue" in names, "ChargePoint._get_specific_response no longer reads _response_queue"
    names = ocpp.messages.validate_payload.__code__.co_names
    assert "ASYNC_VALIDATION" in names and "_validate_payload" in names, (
        "ocpp.messages.validate_payload no longer reads ASYNC_VALIDATION / calls _validate_payload"
    )


@pytest.mark.parametrize("version, module", [("1.6", "v16"), ("2.0.1", "v201"), ("2.1", "v21")])
def test_charge_point_state_labkit_reads(version, module):
    mod = importlib.import_module(f"ocpp.{module}")
    cls = mod.ChargePoint
    assert cls._ocpp_version == version, f"ocpp.{module}.ChargePoint._ocpp_version is {cls._ocpp_version!r}"
    assert cls._call_result is mod.call_result, f"ocpp.{module}.ChargePoint._call_result is not its call_result"

    from ocpp.routing import on

    class Probe(cls):
        @on("Heartbeat")
        def on_heartbeat(self, **kw):
            return None

    async def make():
        return Probe("cs001", object(), response_timeout=3, logger=None)

    cp = asyncio.run(make())
    for attr, kind in (("_response_queue", asyncio.Queue), ("_call_lock", asyncio.Lock), ("route_map", dict)):
        assert isinstance(getattr(cp, attr, None), kind), f"ChargePoint.{attr} is not a {kind.__name__} any more"
    assert cp._connection is not None and cp._response_timeout == 3, "ChargePoint._connection/_response_timeout"
    handlers = cp.route_map.get("Heartbeat")
    assert handlers is not None and set(handlers) >= {"_on_action", "_skip_schema_validation"}, (
        f"route_map['Heartbeat'] is {handlers!r}: labkit reads _on_action and sets _skip_schema_validation"
    )


def test_wire_encoding_labkit_repeats():
    """The CSMS encodes answers itself and the fleet cuts tx keys out of frames: both assume Call.to_json is
    ``[2,"<id>","<action>",<payload>]`` encoded compactly by _DecimalEncoder."""
    payload = {"connectorId": 1, "value": 1.5, "text": "é"}
    frame = ocpp.messages.Call("id-1", "MeterValues", payload).to_json()
    body = ocpp.messages._DecimalEncoder(separators=(",", ":")).encode(payload)
    assert frame == f'[2,"id-1","MeterValues",{body}]', f"Call.to_json writes {frame!r}"
    assert body == json.dumps(payload, separators=(",", ":")), "_DecimalEncoder no longer matches json.dumps"
    result = ocpp.messages.Call("id-1", "Heartbeat", {}).create_call_result({"a": 1})
    assert result.action == "Heartbeat" and result.to_json() == '[3,"id-1",{"a":1}]'


def test_unknown_call_error_code_raises_what_the_fleet_catches():
    """The fleet wakes a call lost with its connection by queueing a CallError with a code of its own; the
    library must turn that into UnknownCallErrorCodeError (labkit.sim.timing catches it)."""
    from ocpp.exceptions import UnknownCallErrorCodeError

    with pytest.raises(UnknownCallErrorCodeError):
        ocpp.messages.CallError("id", "__labkit_connection_lost__", "", {}).to_exception()


@pytest.mark.parametrize(
    "path",
    [
        "v16/schemas/MeterValues.json",
        "v16/schemas/MeterValuesResponse.json",
        "v201/schemas/TransactionEventRequest.json",
        "v201/schemas/TransactionEventResponse.json",
        "v21/schemas/TransactionEventRequest.json",
    ],
)
def test_schema_files_where_fast_validation_reads_them(path):
    base = os.path.dirname(os.path.realpath(ocpp.messages.__file__))
    assert os.path.isfile(os.path.join(base, path)), f"ocpp's schema {path} moved: labkit.sim.validation reads it"


# websockets (asyncio implementation): keyword arguments labkit passes, attributes it reads
WS_KWARGS = [
    (
        "websockets.asyncio.server",
        "serve",
        [
            "subprotocols",
            "select_subprotocol",
            "process_request",
            "server_header",
            "compression",
            "ping_interval",
            "ping_timeout",
            "open_timeout",
            "close_timeout",
            "max_size",
            "logger",
        ],
    ),  # fmt: skip
    (
        "websockets.asyncio.client",
        "connect",
        [
            "subprotocols",
            "additional_headers",
            "user_agent_header",
            "compression",
            "ping_interval",
            "ping_timeout",
            "open_timeout",
            "close_timeout",
            "max_size",
        ],
    ),  # fmt: skip
]


@pytest.mark.parametrize("module, name, kwargs", WS_KWARGS, ids=[w[1] for w in WS_KWARGS])
def test_websockets_keywords(module, name, kwargs):
    fn = getattr(importlib.import_module(module), name)
    params = inspect.signature(fn.__init__ if inspect.isclass(fn) else fn).parameters
    missing = [k for k in kwargs if k not in params]
    assert not missing, f"websockets {name}() no longer takes {missing}"


def test_websockets_names():
    from websockets.asyncio.server import ServerConnection
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    assert hasattr(ServerConnection, "respond"), "ServerConnection.respond (process_request's HTTP answers)"
    closed = ConnectionClosed(None, None)
    assert closed.rcvd is None and closed.sent is None, "ConnectionClosed.rcvd/.sent (close frames)"
    assert list(inspect.signature(ConnectionClosed.__init__).parameters)[1:3] == ["rcvd", "sent"], (
        "ConnectionClosed(rcvd, sent)"
    )
    assert "response" in inspect.signature(InvalidStatus.__init__).parameters, "InvalidStatus.response"
