"""The fast payload conversions give exactly what the ocpp library's own give."""

from __future__ import annotations

import ocpp.charge_point as cp
import pytest
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201
from ocpp.v201 import datatypes

from labkit.sim import fastkeys
from labkit.sim.messages import Dialect16, Dialect201, Sample, TxState


def payloads():
    d16, d201 = Dialect16("1.6", "cs001"), Dialect201("2.0.1", "cs001")
    tx = TxState(1, "TAG", 10, tx_id_16=5)
    sample = Sample(1234.5, 7400.0, 10.7, 230.1, 55.5)
    yield d16.boot()[1]
    yield d16.tx_meter(tx, sample)[1]()
    yield d16.tx_stop(tx, 99, "Local")[1]()
    yield d201.boot()[1]
    yield d201.tx_start(tx)[1]()
    yield d201.tx_meter(tx, sample)[1]()
    yield call201.Authorize(id_token=datatypes.IdTokenType(id_token="x", type="ISO14443"))
    yield call16.DataTransfer(vendor_id="v", message_id="m", data="d")


@pytest.mark.parametrize("payload", list(payloads()), ids=lambda p: type(p).__name__)
def test_same_as_the_library(payload):
    lib = fastkeys.LIBRARY
    expected = lib["snake_to_camel_case"](cp.remove_nones(lib["serialize_as_dict"](payload)))
    assert fastkeys.to_camel(cp.remove_nones(fastkeys.serialize(payload))) == expected
    assert fastkeys.to_snake(expected) == lib["camel_to_snake_case"](expected)
