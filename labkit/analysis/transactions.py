"""Transaction accounting: did every transaction message reach the CSMS, and how many times?

OCPP delivers transaction messages (labkit.resultsformat.TX_ACTIONS: StartTransaction, StopTransaction and
MeterValues in 1.6, TransactionEvent in 2.0.1 and 2.1) *at least once*: a station queues them while
offline and sends one again when its answer did not come (a timeout, a lost connection). A retry is a new
CALL with a new message id, so when only the *answer* was lost the CSMS handles the same message twice.
Format /2 gives every transaction message a ``tx_key``, the same for every attempt of it on the fleet
(ocpp/calls-<host>.csv) and on the CSMS (ocpp/csms.csv), so the two records can be matched.

Per cell (and per station), counted over distinct ``tx_key``s:

- ``sent``: with at least one attempt whose frame left the station, i.e. any outcome but ``send_failed``
  (the fleet records ``send_failed`` only when the frame was never handed to the WebSocket: offline, the
  connection already closed, or its own payload invalid);
- ``acknowledged``: with an attempt answered by a CallResult (outcome ``ok``);
- ``handled``: in csms.csv with outcome ``ok``;
- ``duplicates``: csms.csv rows with a ``tx_key`` and outcome ``ok`` beyond the first per key (deliveries
  the CSMS handled more than once);
- ``rejected``: sent, answered with a CallError (by the fleet's or the CSMS's record) and never handled:
  the CSMS refused it, which is not a loss on the way;
- ``lost``: sent, never handled by the CSMS, never acknowledged and not rejected (a message the CSMS
  received but deliberately did not answer, ``no_answer``, counts here: it was not handled);
- ``acked_unrecorded``: acknowledged (so the CSMS did answer) but not in csms.csv: the two records disagree
  (csms.csv cut short, or the two sides computed the key differently); not counted as lost;
- ``handled_unsent``: handled by the CSMS but not sent according to the fleet's records (a calls file cut
  short when a fleet was killed);
- ``never_sent``: every recorded attempt was ``send_failed``;
- ``shared_keys``: keys with more than one first attempt (``attempt`` 1) on the fleet: two messages with
  the same key, whose second delivery would be counted as a duplicate;
- ``untagged``: rows of a transaction action with no ``tx_key`` (fleet and CSMS): not counted above.

A cell whose calls files have no ``tx_key`` column (format /1) has no accounting: its counts are empty
(not zero) and ``accounting`` says why; without a csms.csv with the column, only ``sent`` and
``acknowledged`` are counted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from labkit import resultsformat as RF

if TYPE_CHECKING:
    from labkit.analysis.load import Problem, Run

COUNTS = ["tx_messages", "sent", "acknowledged", "handled", "duplicates", "lost", "rejected", "acked_unrecorded",
          "handled_unsent", "never_sent", "shared_keys", "untagged"]
CSMS_COUNTS = {"handled", "duplicates", "lost", "acked_unrecorded", "handled_unsent"}
#: ``accounting`` values
COMPLETE = "complete"
FLEET_ONLY = "fleet side only (no csms.csv with tx_key)"
NOT_AVAILABLE = "not available (no tx_key: format /1 files)"
_KEY = ["cell", "station_id", "tx_key"]


def _is_tx_action(df: pd.DataFrame) -> pd.Series:
    """Rows whose action is a transaction message of their OCPP version (any version when it is unknown)."""
    any_version = frozenset().union(*RF.TX_ACTIONS.values())
    action = df["action"].astype(str)
    version = df["ocpp_version"].astype(str)
    out = pd.Series(False, index=df.index)
    known = version.isin(list(RF.TX_ACTIONS))
    for v, actions in RF.TX_ACTIONS.items():
        sel = version == v
        if sel.any():
            out |= sel & action.isin(list(actions))
    return out | (~known & action.isin(list(any_version)))


def _keys(df: pd.DataFrame) -> pd.Series:
    """One string per (cell, station, tx_key), for set operations."""
    return df["cell"].astype(str) + "\x1f" + df["station_id"].astype(str) + "\x1f" + df["tx_key"].astype(str)


def _count(keys: pd.DataFrame, group: list[str], index: pd.Index) -> pd.Series:
    if keys.empty:
        return pd.Series(0, index=index, dtype="int64")
    c = keys.groupby(group, observed=True).size()
    if len(group) == 1:
        c.index = c.index.astype(str)
    else:
        c.index = pd.MultiIndex.from_arrays([c.index.get_level_values(i).astype(str) for i in range(len(group))],
                                            names=group)
    return c.reindex(index, fill_value=0).astype("int64")


def tx_table(run: Run, by_station: bool = False) -> pd.DataFrame:
    """The accounting per cell (``by_station``: per cell and station), with profile and N; see the module
    docstring for the columns. Counts are nullable integers: empty where the accounting is not available.
    Computed once per loaded run (kept in ``run.cache``): the frames of a loaded run are not meant to change."""
    key = ("tx_table", by_station)
    if key not in run.cache:
        run.cache[key] = _tx_table(run, by_station)
    return run.cache[key].copy()


def _tx_table(run: Run, by_station: bool) -> pd.DataFrame:
    group = ["cell", "station_id"] if by_station else ["cell"]
    head = ["cell", "profile", "stations"] + (["station_id"] if by_station else []) + ["accounting"]
    empty = pd.DataFrame({c: pd.Series(dtype="object") for c in head}
                         | {c: pd.Series(dtype="Int64") for c in COUNTS})
    call_cells = {c for (k, c) in run.columns if k == "calls"}
    csms_cells = {c for (k, c) in run.columns if k == "csms"}
    cells = [c for c in (run.cells["cell"].astype(str) if len(run.cells) else []) if c in call_cells | csms_cells]
    if not cells:
        return empty
    fleet_ok = {c for c in cells if run.has_column("calls", c, "tx_key")}
    csms_ok = {c for c in fleet_ok if run.has_column("csms", c, "tx_key")}

    calls, csms = run.calls, run.csms
    cols = ["cell", "station_id", "tx_key", "action", "ocpp_version", "outcome", "attempt"]
    fl = calls.loc[calls["cell"].isin(list(fleet_ok)), cols] if len(calls) else calls.reindex(columns=cols)
    fl = fl.astype({"cell": str, "station_id": str, "outcome": str})
    tagged = fl["tx_key"].astype(str) != ""
    tx = fl.loc[tagged]
    cs_cols = ["cell", "station_id", "tx_key", "action", "ocpp_version", "outcome"]
    cs = csms.loc[csms["cell"].isin(list(csms_ok)), cs_cols] if len(csms) else csms.reindex(columns=cs_cols)
    cs = cs.astype({"cell": str, "station_id": str, "outcome": str})
    cs_tagged = cs["tx_key"].astype(str) != ""

    # the rows of the result: every cell with OCPP files; per station, every station seen in either record
    if by_station:
        seen = pd.concat([fl[["cell", "station_id"]], cs[["cell", "station_id"]]]).drop_duplicates()
        seen = seen[seen["cell"].isin(cells)]
        order = {c: i for i, c in enumerate(cells)}
        seen = seen.assign(_o=seen["cell"].map(order)).sort_values(["_o", "station_id"]).drop(columns="_o")
        index = pd.MultiIndex.from_frame(seen, names=group)
        cell_of = pd.Series(seen["cell"].to_numpy(), index=index)
    else:
        index = pd.Index(cells, name="cell")
        cell_of = pd.Series(cells, index=index)
    if not len(index):
        return empty

    all_keys = tx[_KEY].drop_duplicates()
    sent = tx.loc[tx["outcome"] != "send_failed", _KEY].drop_duplicates()
    acked = tx.loc[tx["outcome"] == "ok", _KEY].drop_duplicates()
    firsts = tx.loc[tx["attempt"] == 1, _KEY]
    shared = firsts[firsts.duplicated(keep=False)].drop_duplicates()
    ok_rows = cs.loc[cs_tagged & (cs["outcome"] == "ok"), _KEY]
    handled = ok_rows.drop_duplicates()
    refused = pd.concat([tx.loc[tx["outcome"] == "call_error", _KEY],
                         cs.loc[cs_tagged & (cs["outcome"] == "call_error"), _KEY]])
    sent_k, acked_k, handled_k, refused_k = _keys(sent), _keys(acked), _keys(handled), _keys(refused)
    rejected = sent[sent_k.isin(refused_k) & ~sent_k.isin(handled_k) & ~sent_k.isin(acked_k)]
    lost = sent[~sent_k.isin(handled_k) & ~sent_k.isin(acked_k) & ~sent_k.isin(refused_k)]
    acked_unrec = acked[~acked_k.isin(handled_k)]
    handled_unsent = handled[~handled_k.isin(sent_k)]
    never = all_keys[~_keys(all_keys).isin(sent_k)]
    untagged = pd.concat([fl.loc[~tagged & _is_tx_action(fl), group],
                          cs.loc[~cs_tagged & _is_tx_action(cs), group]])

    out = pd.DataFrame(index=index)
    out["tx_messages"] = _count(all_keys, group, index)
    out["sent"] = _count(sent, group, index)
    out["acknowledged"] = _count(acked, group, index)
    out["handled"] = _count(handled, group, index)
    out["duplicates"] = _count(ok_rows, group, index) - out["handled"]
    out["lost"] = _count(lost, group, index)
    out["rejected"] = _count(rejected, group, index)
    out["acked_unrecorded"] = _count(acked_unrec, group, index)
    out["handled_unsent"] = _count(handled_unsent, group, index)
    out["never_sent"] = _count(never, group, index)
    out["shared_keys"] = _count(shared, group, index)
    out["untagged"] = _count(untagged, group, index)
    out = out.astype("Int64")
    c = cell_of.to_numpy()
    in_fleet = np.isin(c, list(fleet_ok))
    in_csms = np.isin(c, list(csms_ok))
    out.loc[~in_fleet, COUNTS] = pd.NA
    out.loc[in_fleet & ~in_csms, list(CSMS_COUNTS)] = pd.NA
    out["accounting"] = np.where(in_csms, COMPLETE, np.where(in_fleet, FLEET_ONLY, NOT_AVAILABLE))
    out = out.reset_index()
    meta = run.cells.assign(cell=run.cells["cell"].astype(str)).set_index("cell")[["profile", "stations"]]
    out = out.join(meta, on="cell")
    return out[head + COUNTS].reset_index(drop=True)


def totals(tbl: pd.DataFrame) -> dict[str, int | None]:
    """Sums over the cells whose counts are available (None when no cell has them)."""
    out: dict[str, int | None] = {}
    for c in COUNTS:
        v = tbl[c].dropna() if c in tbl else pd.Series(dtype="Int64")
        out[c] = int(v.sum()) if len(v) else None
    return out


def tx_findings(run: Run, tbl: pd.DataFrame | None = None) -> list[Problem]:
    """What the accounting finds suspect, per cell, as ``Problem``s (kind ``suspect``; ``note`` for what
    limits the accounting)."""
    from labkit.analysis.load import Problem

    tbl = tx_table(run) if tbl is None else tbl
    if tbl.empty:
        return []
    dirs = dict(zip(run.cells["cell"].astype(str), run.cells["dir"], strict=False)) if len(run.cells) else {}
    out: list[Problem] = []
    for r in tbl.itertuples(index=False):
        where = f"{dirs.get(r.cell, 'cells/' + r.cell)}/ocpp/"

        def n(v) -> int:
            return 0 if v is pd.NA or v is None or (isinstance(v, float) and np.isnan(v)) else int(v)

        if r.accounting == NOT_AVAILABLE:
            continue
        if r.accounting == FLEET_ONLY and n(r.sent):
            out.append(Problem(where, f"no csms.csv with tx_key: whether the {n(r.sent)} transaction message(s) "
                                      "sent reached the CSMS cannot be told (lost and duplicates not counted)",
                               "note"))
        if n(r.lost):
            out.append(Problem(where, f"{n(r.lost)} transaction message(s) LOST: sent, never handled by the CSMS "
                                      "nor acknowledged", "suspect"))
        if n(r.duplicates):
            out.append(Problem(where, f"{n(r.duplicates)} DUPLICATE delivery(ies): the CSMS handled a transaction "
                                      "message more than once (a retry after a lost answer: OCPP delivers at "
                                      "least once)", "suspect"))
        if n(r.rejected):
            out.append(Problem(where, f"{n(r.rejected)} transaction message(s) rejected: answered with a CallError, "
                                      "never handled", "suspect"))
        if n(r.acked_unrecorded):
            out.append(Problem(where, f"{n(r.acked_unrecorded)} transaction message(s) acknowledged but absent "
                                      "from csms.csv: the records disagree (csms.csv cut short, or tx_key "
                                      "computed differently on the two sides)", "suspect"))
        if n(r.handled_unsent):
            out.append(Problem(where, f"{n(r.handled_unsent)} transaction message(s) handled by the CSMS but not "
                                      "recorded as sent by the fleet (a calls file cut short?)", "suspect"))
        if n(r.never_sent):
            out.append(Problem(where, f"{n(r.never_sent)} transaction message(s) never sent (every attempt "
                                      "send_failed)", "suspect"))
        if n(r.shared_keys):
            out.append(Problem(where, f"{n(r.shared_keys)} tx_key(s) shared by more than one message (several "
                                      "first attempts): their second delivery counts as a duplicate", "suspect"))
        if n(r.untagged):
            out.append(Problem(where, f"{n(r.untagged)} row(s) of transaction actions without a tx_key: not in "
                                      "the transaction accounting", "suspect"))
    return out
