"""Every message traceable: message ids, connection numbers and transaction keys on both sides, and a
duplicate delivery (a CSMS answer lost on purpose) counted from the columns alone."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter

import pytest
from websockets.asyncio.client import connect

from labkit import resultsformat
from labkit.sim.samples import CALL_COLUMNS, CSMS_COLUMNS, EVENT_COLUMNS
from tests.sim.conftest import run_fleet
from tests.sim.wsproxy import DropAnswer, WsProxy

FAST = ["--step-interval", "0.01", "--meter-interval", "0.01", "--jitter", "0"]
TX = {"1.6": {"StartTransaction", "MeterValues", "StopTransaction"}, "2.0.1": {"TransactionEvent"}}


def test_columns_come_from_resultsformat():
    assert CALL_COLUMNS == resultsformat.CALLS.columns
    assert EVENT_COLUMNS == resultsformat.EVENTS.columns
    assert CSMS_COLUMNS == resultsformat.CSMS.columns


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_fleet_and_csms_agree_on_ids_connections_and_keys(csms_factory, tmp_path, version):
    csms = csms_factory()
    run = run_fleet(tmp_path, csms.url, "--stations", "2", "--ocpp", version, "--meter-values", "10", *FAST)
    assert run.rc == 0, run.stderr
    assert list(run.calls[0]) == list(CALL_COLUMNS) and list(run.events[0]) == list(EVENT_COLUMNS)
    ids = [r["message_id"] for r in run.calls]
    assert len(set(ids)) == len(ids) and all(uuid.UUID(i) for i in ids)
    assert {r["connection"] for r in run.calls} == {"1"}
    assert {e["connection"] for e in run.events if e["event"] in ("connecting", "connected")} == {"1"}
    tx = [r for r in run.calls if r["action"] in TX[version]]
    assert len(tx) == 2 * 12 and all(len(r["tx_key"]) == 16 for r in tx)
    assert len({r["tx_key"] for r in tx}) == len(tx)  # every transaction message has its own key
    assert all(r["tx_key"] == "" for r in run.calls if r["action"] not in TX[version])
    # the CSMS computes the same key from the payload it received, and counts it once
    rows = {r["message_id"]: r for r in csms.rows()}
    assert list(next(iter(rows.values()))) == list(CSMS_COLUMNS)
    for r in run.calls:
        c = rows[r["message_id"]]
        assert (c["station_id"], c["action"], c["connection"]) == (r["station_id"], r["action"], "1")
        assert c["tx_key"] == r["tx_key"]
        assert c["attempt"] == ("1" if r["tx_key"] else "")


def test_csms_key_is_the_key_of_the_compact_payload_as_sent(csms_factory):
    """A client of our own (no ocpp library): the CSMS's key is resultsformat.tx_key over the compact JSON
    payload exactly as it went on the wire, non-ASCII text and floats included; a payload received again
    under a new id counts as attempt 2; 1.6 MeterValues without a transactionId are not transaction ones."""
    csms = csms_factory()
    mv = {
        "connectorId": 1,
        "transactionId": 7,
        "meterValue": [
            {
                "timestamp": "2026-01-01T00:00:00.000Z",
                "sampledValue": [{"value": "12.5", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}],
            }
        ],
    }
    plain = dict(mv)
    del plain["transactionId"]
    stop = {"meterStop": 125, "timestamp": "2026-01-01T00:01:00.000Z", "transactionId": 7, "reason": "Local",
            "idTag": "TAG-é"}  # fmt: skip
    frames = []
    for payload, action in (
        (mv, "MeterValues"),
        (mv, "MeterValues"),
        (plain, "MeterValues"),
        (stop, "StopTransaction"),
    ):
        body = json.dumps(payload, separators=(",", ":"))
        frames.append((str(uuid.uuid4()), action, body))

    async def go() -> None:
        async with connect(csms.url + "raw-1", subprotocols=["ocpp1.6"], compression=None) as ws:
            for uid, action, body in frames:
                await ws.send(f'[2,"{uid}","{action}",{body}]')
                reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert reply[0] == 3 and reply[1] == uid, reply

    asyncio.run(go())
    rows = {r["message_id"]: r for r in csms.rows()}
    key = resultsformat.tx_key("raw-1", "MeterValues", frames[0][2])
    assert [rows[f[0]]["tx_key"] for f in frames[:3]] == [key, key, ""]
    assert [rows[f[0]]["attempt"] for f in frames[:3]] == ["1", "2", ""]
    assert rows[frames[3][0]]["tx_key"] == resultsformat.tx_key("raw-1", "StopTransaction", frames[3][2])
    assert "\\u00e9" in frames[3][2]  # ensure_ascii on both sides: the key is over the escaped text


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_a_lost_answer_is_delivered_twice_and_the_columns_count_it(csms_factory, tmp_path, version):
    """The proxy swallows the CSMS's answer to the 5th meter value and aborts the station's connection: the
    CSMS handled it, the station never heard so. The station sends it again on its second connection
    (attempt 2, a new message id, the same tx_key), the CSMS handles it again (attempt 2). From the columns:
    sent = acknowledged = n + 2 transaction messages, handled n + 3, one duplicate, nothing lost."""
    n = 12
    action = "MeterValues" if version == "1.6" else "TransactionEvent"
    nth = 5 if version == "1.6" else 6  # 2.0.1: the Started event is a TransactionEvent too
    csms = csms_factory()
    with WsProxy(csms.url, DropAnswer(action, nth)) as proxy:
        run = run_fleet(
            tmp_path,
            proxy.url,
            "--stations",
            "1",
            "--ocpp",
            version,
            "--meter-values",
            str(n),
            "--backoff-min",
            "0.2",
            "--backoff-max",
            "0.5",
            "--call-timeout",
            "5",
            *FAST,
        )
        dropped = proxy.drop.dropped_id
    assert run.rc == 0, run.stderr
    assert dropped, "the proxy never dropped an answer"
    # the fleet's side: one message, two attempts on two connections, one key
    tx = [r for r in run.calls if r["action"] in TX[version]]
    first = next(r for r in tx if r["message_id"] == dropped)
    assert (first["outcome"], first["attempt"], first["connection"]) == ("connection_lost", "1", "1")
    again = [r for r in tx if r["tx_key"] == first["tx_key"]]
    assert [(r["attempt"], r["connection"], r["outcome"]) for r in again] == [
        ("1", "1", "connection_lost"),
        ("2", "2", "ok"),
    ]
    assert again[1]["message_id"] != dropped
    ev = [(e["event"], e["connection"]) for e in run.events if e["event"] in ("disconnected", "reconnected")]
    assert ev == [("disconnected", "1"), ("reconnected", "2")]
    # the CSMS's side: the same key twice, attempts 1 and 2, on its connections 1 and 2 from that station
    handled = [r for r in csms.rows() if r["outcome"] == "ok" and r["tx_key"]]
    dup = [r for r in handled if r["tx_key"] == first["tx_key"]]
    assert [(r["attempt"], r["connection"], r["message_id"]) for r in dup] == [
        ("1", "1", dropped),
        ("2", "2", again[1]["message_id"]),
    ]
    # the counts the report makes per cell, from the columns alone
    sent = {r["tx_key"] for r in tx}
    acknowledged = {r["tx_key"] for r in tx if r["outcome"] == "ok"}
    handled_keys = Counter(r["tx_key"] for r in handled)
    duplicates = sum(1 for r in handled if int(r["attempt"]) > 1)
    assert len(sent) == len(acknowledged) == n + 2
    assert len(handled) == n + 3 and len(handled_keys) == n + 2
    assert duplicates == 1 == sum(c - 1 for c in handled_keys.values())
    assert not sent - set(handled_keys)  # lost: sent and never handled


def test_duplicates_are_counted_per_station_over_a_bounded_window():
    from labkit.sim.csms import TX_WINDOW, Csms, CsmsConfig

    server = Csms(CsmsConfig().check())
    try:
        assert [server.count_tx("a", "k1"), server.count_tx("a", "k1"), server.count_tx("b", "k1")] == [1, 2, 1]
        for i in range(TX_WINDOW):  # k1 of station a falls out of its window
            server.count_tx("a", f"other{i}")
        assert server.count_tx("a", "k1") == 1 and server.count_tx("b", "k1") == 2
        assert max(len(seen) for seen in server.tx_seen.values()) == TX_WINDOW
    finally:
        server.health.close()
