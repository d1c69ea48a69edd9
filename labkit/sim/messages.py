"""What a simulated station says, in the terms of each OCPP version.

A ``Dialect`` builds the ocpp library's request dataclasses for one version. The scenarios speak in
neutral terms (boot, plug in, authorize, start, meter sample, stop, unplug) and the dialect maps them:

===================  ==============================  =========================================
neutral              OCPP 1.6J                       OCPP 2.0.1 / 2.1
===================  ==============================  =========================================
boot                 BootNotification                BootNotification (reason PowerUp)
status               StatusNotification (connector   StatusNotification (connectorStatus:
                     1: Available, Preparing,        Available, Occupied; only changes of the
                     Charging, Finishing)            connector are reported)
authorize            Authorize (idTag)               Authorize (idToken ISO14443)
tx start             StartTransaction                TransactionEvent Started
meter sample         MeterValues (transactionId)     TransactionEvent Updated (MeterValuePeriodic)
tx stop              StopTransaction                 TransactionEvent Ended
===================  ==============================  =========================================

Timestamps are taken when a message is created (a meter sample keeps the time it was measured even if
it waits in the offline queue). Transaction messages are built lazily (``build()`` at their first
attempt; retries resend that payload) because 1.6's transactionId comes from the StartTransaction reply.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from labkit import __version__
from labkit.sim.settings import version_module

TX_ACTIONS_16 = frozenset({"StartTransaction", "StopTransaction", "MeterValues"})


def utc_now() -> str:
    """OCPP timestamp (RFC 3339, UTC, milliseconds)."""
    now = _dt.datetime.now(_dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclass
class Sample:
    """One meter reading. ``energy_wh`` is the register; the others are optional measurands."""

    energy_wh: float
    power_w: float | None = None
    current_a: float | None = None
    voltage_v: float | None = None
    soc_pct: float | None = None


@dataclass
class TxState:
    """The station's current transaction."""

    local_id: int
    id_tag: str
    meter_start_wh: int
    tx_id_16: int | None = None  # from the CSMS (1.6)
    tx_id_201: str = ""  # chosen by the station (2.0.1)
    seq_no: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Dialect:
    """Requests of one OCPP version."""

    def __init__(self, version: str, station_id: str):
        self.version = version
        self.station_id = station_id
        self.mod = version_module(version)
        self.call = self.mod.call

    # -- neutral requests ------------------------------------------------------------------------
    def boot(self) -> tuple[str, Any]:
        raise NotImplementedError

    def heartbeat(self) -> tuple[str, Any]:
        return "Heartbeat", self.call.Heartbeat()

    def status(self, status: str) -> tuple[str, Any] | None:
        """``status`` in 1.6 terms; None when this version does not report that change."""
        raise NotImplementedError

    def authorize(self, id_tag: str) -> tuple[str, Any]:
        raise NotImplementedError

    def data_transfer(self, vendor_id: str, message_id: str, data: str) -> tuple[str, Any]:
        return "DataTransfer", self.call.DataTransfer(vendor_id=vendor_id, message_id=message_id, data=data)

    def tx_start(self, tx: TxState) -> tuple[str, Callable[[], Any]]:
        raise NotImplementedError

    def tx_meter(self, tx: TxState, sample: Sample) -> tuple[str, Callable[[], Any]]:
        raise NotImplementedError

    def tx_stop(self, tx: TxState, meter_stop_wh: int, reason: str) -> tuple[str, Callable[[], Any]]:
        raise NotImplementedError

    def on_tx_start_result(self, tx: TxState, result: Any) -> None:
        """Take what the CSMS assigned (1.6 transactionId)."""

    @staticmethod
    def authorize_status(result: Any) -> str:
        """The status of an Authorize reply ('' when it has none)."""
        info = getattr(result, "id_tag_info", None) or getattr(result, "id_token_info", None) or {}
        status = info.get("status") if isinstance(info, dict) else getattr(info, "status", None)
        return str(status or "")


_MEASURANDS = (
    ("energy_wh", "Energy.Active.Import.Register", "Wh", None),
    ("power_w", "Power.Active.Import", "W", None),
    ("current_a", "Current.Import", "A", None),
    ("voltage_v", "Voltage", "V", None),
    ("soc_pct", "SoC", "Percent", "EV"),
)


class Dialect16(Dialect):
    def boot(self) -> tuple[str, Any]:
        return "BootNotification", self.call.BootNotification(
            charge_point_vendor="labkit",
            charge_point_model="labkit-sim",
            charge_point_serial_number=self.station_id[:25],
            firmware_version=f"labkit-{__version__}"[:50],
        )

    def status(self, status: str) -> tuple[str, Any] | None:
        return "StatusNotification", self.call.StatusNotification(
            connector_id=1, error_code="NoError", status=status, timestamp=utc_now()
        )

    def authorize(self, id_tag: str) -> tuple[str, Any]:
        return "Authorize", self.call.Authorize(id_tag=id_tag)

    @staticmethod
    def _sampled(sample: Sample, one: bool) -> list[dict[str, Any]]:
        if one:  # the dissertation's charger: one value, no measurand (the default is the energy register)
            return [{"value": f"{sample.energy_wh:.0f}"}]
        out = []
        for attr, measurand, unit, location in _MEASURANDS:
            value = getattr(sample, attr)
            if value is None:
                continue
            sv = {"value": f"{value:.1f}", "context": "Sample.Periodic", "measurand": measurand, "unit": unit}
            if location:
                sv["location"] = location
            out.append(sv)
        return out

    def tx_start(self, tx: TxState) -> tuple[str, Callable[[], Any]]:
        ts = utc_now()
        return "StartTransaction", lambda: self.call.StartTransaction(
            connector_id=1, id_tag=tx.id_tag, meter_start=tx.meter_start_wh, timestamp=ts
        )

    def on_tx_start_result(self, tx: TxState, result: Any) -> None:
        tx_id = getattr(result, "transaction_id", None)
        if tx_id is not None:
            tx.tx_id_16 = int(tx_id)

    def tx_meter(self, tx: TxState, sample: Sample, one: bool = False) -> tuple[str, Callable[[], Any]]:
        ts = utc_now()
        values = self._sampled(sample, one)
        return "MeterValues", lambda: self.call.MeterValues(
            connector_id=1,
            transaction_id=tx.tx_id_16 if tx.tx_id_16 is not None else 0,
            meter_value=[{"timestamp": ts, "sampledValue": values}],
        )

    def tx_stop(self, tx: TxState, meter_stop_wh: int, reason: str) -> tuple[str, Callable[[], Any]]:
        ts = utc_now()
        return "StopTransaction", lambda: self.call.StopTransaction(
            meter_stop=meter_stop_wh,
            timestamp=ts,
            transaction_id=tx.tx_id_16 if tx.tx_id_16 is not None else 0,
            reason=reason,
            id_tag=tx.id_tag,
        )


#: 1.6 connector statuses -> 2.0.1 connector status (None: no change to report in 2.0.1)
_STATUS_201 = {
    "Available": "Available",
    "Preparing": "Occupied",
    "Charging": None,
    "SuspendedEV": None,
    "SuspendedEVSE": None,
    "Finishing": None,
    "Reserved": "Reserved",
    "Unavailable": "Unavailable",
    "Faulted": "Faulted",
}
_STOP_REASON_201 = {"Local": "Local", "EVDisconnected": "EVDisconnected", "Remote": "Remote"}


class Dialect201(Dialect):
    def boot(self) -> tuple[str, Any]:
        return "BootNotification", self.call.BootNotification(
            charging_station={
                "model": "labkit-sim",
                "vendorName": "labkit",
                "serialNumber": self.station_id[:25],
                "firmwareVersion": f"labkit-{__version__}"[:50],
            },
            reason="PowerUp",
        )

    def status(self, status: str) -> tuple[str, Any] | None:
        mapped = _STATUS_201.get(status, status)
        if mapped is None:
            return None
        return "StatusNotification", self.call.StatusNotification(
            timestamp=utc_now(), connector_status=mapped, evse_id=1, connector_id=1
        )

    def authorize(self, id_tag: str) -> tuple[str, Any]:
        return "Authorize", self.call.Authorize(id_token={"idToken": id_tag, "type": "ISO14443"})

    @staticmethod
    def _sampled(sample: Sample, one: bool) -> list[dict[str, Any]]:
        if one:
            return [{"value": round(sample.energy_wh, 1)}]
        out = []
        for attr, measurand, unit, location in _MEASURANDS:
            value = getattr(sample, attr)
            if value is None:
                continue
            sv = {
                "value": round(value, 1),
                "context": "Sample.Periodic",
                "measurand": measurand,
                "unitOfMeasure": {"unit": unit},
            }
            if location:
                sv["location"] = location
            out.append(sv)
        return out

    def _event(self, tx: TxState, event_type: str, trigger: str, ts: str, **extra: Any) -> Any:
        tx.seq_no += 1
        seq = tx.seq_no - 1
        info: dict[str, Any] = {"transactionId": tx.tx_id_201}
        if "stopped_reason" in extra:
            info["stoppedReason"] = extra.pop("stopped_reason")
        if event_type == "Started":
            info["chargingState"] = "Charging"
        return lambda: self.call.TransactionEvent(
            event_type=event_type,
            timestamp=ts,
            trigger_reason=trigger,
            seq_no=seq,
            transaction_info=info,
            **extra,
        )

    def tx_start(self, tx: TxState) -> tuple[str, Callable[[], Any]]:
        tx.tx_id_201 = f"{self.station_id[:24]}-{tx.local_id}"[-36:]
        ts = utc_now()
        return "TransactionEvent", self._event(
            tx,
            "Started",
            "Authorized",
            ts,
            id_token={"idToken": tx.id_tag, "type": "ISO14443"},
            evse={"id": 1, "connectorId": 1},
            meter_value=[
                {
                    "timestamp": ts,
                    "sampledValue": [
                        {
                            "value": tx.meter_start_wh,
                            "context": "Transaction.Begin",
                            "measurand": "Energy.Active.Import.Register",
                            "unitOfMeasure": {"unit": "Wh"},
                        }
                    ],
                }
            ],
        )

    def tx_meter(self, tx: TxState, sample: Sample, one: bool = False) -> tuple[str, Callable[[], Any]]:
        ts = utc_now()
        return "TransactionEvent", self._event(
            tx,
            "Updated",
            "MeterValuePeriodic",
            ts,
            meter_value=[{"timestamp": ts, "sampledValue": self._sampled(sample, one)}],
        )

    def tx_stop(self, tx: TxState, meter_stop_wh: int, reason: str) -> tuple[str, Callable[[], Any]]:
        ts = utc_now()
        return "TransactionEvent", self._event(
            tx,
            "Ended",
            "StopAuthorized" if reason == "Local" else "EVCommunicationLost",
            ts,
            stopped_reason=_STOP_REASON_201.get(reason, "Other"),
            meter_value=[
                {
                    "timestamp": ts,
                    "sampledValue": [
                        {
                            "value": meter_stop_wh,
                            "context": "Transaction.End",
                            "measurand": "Energy.Active.Import.Register",
                            "unitOfMeasure": {"unit": "Wh"},
                        }
                    ],
                }
            ],
        )


def dialect(version: str, station_id: str) -> Dialect:
    return Dialect16(version, station_id) if version == "1.6" else Dialect201(version, station_id)
