"""Bad frames sent to the CSMS get the CallError OCPP names (or a close), and other stations do not notice."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.sim.conftest import run_fleet

UID = "a1b2c3d4-0000-1111-2222-333344445555"

# (frame, expected error code in 1.6, in 2.0.1)
CASES = [
    ("this is not json", ("-1", "FormationViolation"), ("-1", "RpcFrameworkError")),
    ('{"not": "an array"}', ("-1", "FormationViolation"), ("-1", "RpcFrameworkError")),
    (f'[2,"{UID}"]', (UID, "FormationViolation"), (UID, "RpcFrameworkError")),
    (f'[2,"{UID}","Heartbeat",[]]', (UID, "FormationViolation"), (UID, "RpcFrameworkError")),
    (f'[9,"{UID}","Heartbeat",{{}}]', (UID, "FormationViolation"), (UID, "MessageTypeNotSupported")),
    (f'[2,"{UID}","NoSuchAction",{{}}]', (UID, "NotImplemented"), (UID, "NotImplemented")),
]
# a CSMS-to-station action sent the wrong way (the dissertation's RequestStartTransaction)
WRONG_WAY = {
    "1.6": f'[2,"{UID}","RemoteStartTransaction",{{"idTag":"X"}}]',
    "2.0.1": f'[2,"{UID}","RequestStartTransaction",{{"idToken":{{"idToken":"X","type":"ISO14443"}},'
    f'"remoteStartId":1}}]',
}
WRONG_TYPE = {
    "1.6": f'[2,"{UID}","BootNotification",{{"chargePointVendor":5,"chargePointModel":"m"}}]',
    "2.0.1": f'[2,"{UID}","BootNotification",{{"reason":"PowerUp","chargingStation":{{"model":7,"vendorName":"v"}}}}]',
}
MISSING = {
    "1.6": f'[2,"{UID}","BootNotification",{{"chargePointVendor":"v"}}]',
    "2.0.1": f'[2,"{UID}","BootNotification",{{"reason":"PowerUp"}}]',
}
EXTRA = {"1.6": f'[2,"{UID}","Heartbeat",{{"surprise":1}}]', "2.0.1": f'[2,"{UID}","Heartbeat",{{"surprise":1}}]'}


async def exchange(url: str, subprotocol: str, frames: list[str]) -> list:
    async with connect(url, subprotocols=[subprotocol], compression=None) as ws:
        out = []
        for frame in frames:
            await ws.send(frame)
            out.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
        return out


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_malformed_frames_get_the_specified_call_error(csms_factory, version):
    csms = csms_factory()
    frames = [c[0] for c in CASES] + [WRONG_WAY[version], WRONG_TYPE[version], MISSING[version], EXTRA[version]]
    expected = [c[1] if version == "1.6" else c[2] for c in CASES]
    violation = "FormationViolation" if version == "1.6" else "FormatViolation"
    expected += [(UID, "NotSupported"), (UID, "TypeConstraintViolation"), (UID, "ProtocolError"), (UID, violation)]
    replies = asyncio.run(exchange(csms.url + "bad1", f"ocpp{version}", frames))
    for frame, reply, (uid, code) in zip(frames, replies, expected, strict=True):
        assert reply[0] == 4 and reply[1] == uid and reply[2] == code, (frame, reply)
    # the connection survived all of that: a proper call still works
    ok = asyncio.run(exchange(csms.url + "bad1", f"ocpp{version}", [f'[2,"{UID}","Heartbeat",{{}}]']))
    assert ok[0][0] == 3 and "currentTime" in ok[0][2]
    rows = [r for r in csms.rows() if r["station_id"] == "bad1" and r["outcome"] == "call_error"]
    assert len(rows) == len(frames)


async def expect_close(url: str, frames: list) -> int:
    """Send ``frames`` while reading every answer, as a station does; the close code the CSMS sent (-1: the
    connection ended without one). Reading only after the last frame deadlocked now and then: with the
    client's receive queue full it stopped reading, the CSMS's answers and its close frame waited behind it,
    and the flood's frames stopped being read (a CI run timed out)."""
    async with connect(url, subprotocols=["ocpp1.6"], compression=None, max_size=None, max_queue=None) as ws:

        async def read() -> int:
            try:
                while True:
                    await ws.recv()
            except ConnectionClosed as exc:
                return exc.rcvd.code if exc.rcvd else -1

        reader = asyncio.create_task(read())
        try:
            for frame in frames:
                await ws.send(frame)
        except ConnectionClosed:
            pass  # closed by the CSMS mid-flood: the reader has its code
        return await asyncio.wait_for(reader, 30)


def test_transport_abuse_is_closed_and_other_stations_do_not_notice(csms_factory, tmp_path):
    csms = csms_factory("--max-message-bytes", "65536", "--max-rate", "50", "--burst", "100")
    result: dict = {}

    def fleet() -> None:
        result["run"] = run_fleet(
            tmp_path,
            csms.url,
            "--stations",
            "5",
            "--meter-values",
            "60",
            "--meter-interval",
            "0.05",
            "--step-interval",
            "0.05",
            "--call-timeout",
            "5",
        )

    t = threading.Thread(target=fleet)
    t.start()
    try:
        big = f'[2,"{UID}","DataTransfer",{{"vendorId":"labkit","data":"{"x" * 200_000}"}}]'
        assert asyncio.run(expect_close(csms.url + "big1", [big])) == 1009
        assert asyncio.run(expect_close(csms.url + "bin1", [b"\x00\x01binary"])) == 1003
        flood = [f'[2,"{i:08d}-0000-0000-0000-000000000000","Heartbeat",{{}}]' for i in range(5000)]
        assert asyncio.run(expect_close(csms.url + "flood1", flood)) == 1008
        junk = ["{{{"] * 50
        replies = asyncio.run(exchange(csms.url + "junk1", "ocpp1.6", junk))
        assert all(r[2] == "FormationViolation" for r in replies)
    finally:
        t.join()
    run = result["run"]
    assert run.rc == 0, run.stderr
    assert run.calls and all(r["outcome"] == "ok" for r in run.calls)
    assert not any(e["event"] in ("disconnected", "connect_failed") for e in run.events)
    outcomes = {(r["station_id"], r["error_code"]) for r in csms.rows() if r["outcome"] == "closed"}
    assert {("big1", "MessageTooBig"), ("bin1", "BinaryFrame"), ("flood1", "RateLimit")} <= outcomes
