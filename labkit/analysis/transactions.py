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

Rows carry the cell's profile and N, and its security variant (``security``) when the run has more than one.
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


def _is_tx_action(df: pd.DataFrame) -> np.ndarray:
    """Rows whose action is a transaction message of their OCPP version (any version when it is unknown)."""
    if df.empty:
        return np.zeros(0, dtype=bool)
    any_version = frozenset().union(*RF.TX_ACTIONS.values())
    action = df["action"].astype(str).to_numpy()
    version = df["ocpp_version"].astype(str).to_numpy()
    out = np.zeros(len(df), dtype=bool)
    known = np.isin(version, list(RF.TX_ACTIONS))
    for v, actions in RF.TX_ACTIONS.items():
        out |= (version == v) & np.isin(action, list(actions))
    return out | (~known & np.isin(action, list(any_version)))


def tx_table(run: Run, by_station: bool = False) -> pd.DataFrame:
    """The accounting per cell (``by_station``: per cell and station), with profile and N; see the module
    docstring for the columns. Counts are nullable integers: empty where the accounting is not available.
    Computed once per loaded run (kept in ``run.cache``): the frames of a loaded run are not meant to change."""
    if "tx_table" not in run.cache:
        run.cache["tx_table"] = _tx_tables(run)
    return run.cache["tx_table"][1 if by_station else 0].copy()


def _codes(a: pd.Series, b: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer codes of the values of two columns, over both: (codes of a, codes of b, the values)."""
    both = np.concatenate([a.astype(object).to_numpy(), b.astype(object).to_numpy()])
    codes, values = pd.factorize(both)
    return codes[: len(a)].astype(np.int64), codes[len(a):].astype(np.int64), np.asarray(values, dtype=object)


def _tx_tables(run: Run) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per cell, per cell and station). A tx_key belongs to one station, so a cell's counts are the sums of
    its stations' (a cell without any row has zeros)."""
    cells = [c for c in (run.cells["cell"].astype(str) if len(run.cells) else [])
             if any((k, c) in run.columns for k in ("calls", "csms"))]
    fleet_ok = [c for c in cells if run.has_column("calls", c, "tx_key")]
    csms_ok = [c for c in fleet_ok if run.has_column("csms", c, "tx_key")]
    st = _per_station(run, fleet_ok, csms_ok)
    per_cell = st.groupby("cell", sort=False)[COUNTS].sum() if len(st) else pd.DataFrame(columns=COUNTS)
    cell = pd.DataFrame({"cell": cells}).join(per_cell, on="cell")
    cell[COUNTS] = cell[COUNTS].fillna(0)
    return _finish(run, cell, fleet_ok, csms_ok, False), _finish(run, st, fleet_ok, csms_ok, True)


def _finish(run: Run, frame: pd.DataFrame, fleet_ok: list[str], csms_ok: list[str], by_station: bool) -> pd.DataFrame:
    sec = ["security"] if run.security_split else []  # the cell's security variant, when the run has several
    head = ["cell", "profile", *sec, "stations"] + (["station_id"] if by_station else []) + ["accounting"]
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in head}
                            | {c: pd.Series(dtype="Int64") for c in COUNTS})
    frame = frame.copy()
    frame[COUNTS] = frame[COUNTS].astype("int64").astype("Int64")
    in_fleet = frame["cell"].isin(fleet_ok).to_numpy()
    in_csms = frame["cell"].isin(csms_ok).to_numpy()
    frame.loc[~in_fleet, COUNTS] = pd.NA
    frame.loc[in_fleet & ~in_csms, list(CSMS_COUNTS)] = pd.NA
    frame["accounting"] = np.where(in_csms, COMPLETE, np.where(in_fleet, FLEET_ONLY, NOT_AVAILABLE))
    meta = run.cells.assign(cell=run.cells["cell"].astype(str)).set_index("cell")[["profile", *sec, "stations"]]
    frame = frame.join(meta, on="cell")
    return frame[head + COUNTS].reset_index(drop=True)


def _per_station(run: Run, fleet_ok: list[str], csms_ok: list[str]) -> pd.DataFrame:
    """The counts per (cell, station) of the cells with transaction keys, cells in run order, stations by
    name; every station seen in either record has a row."""
    cols = ["cell", "station_id", "tx_key", "action", "ocpp_version", "outcome", "attempt"]
    calls, csms = run.calls, run.csms
    f = calls.loc[calls["cell"].isin(fleet_ok), cols] if len(calls) else calls.reindex(columns=cols)
    c = csms.loc[csms["cell"].isin(csms_ok), cols[:-1]] if len(csms) else csms.reindex(columns=cols[:-1])
    if f.empty and c.empty:
        return pd.DataFrame(columns=["cell", "station_id", *COUNTS])
    # every (cell, station, tx_key) as one integer: set operations on integers, not on strings
    cf, cc, cell_v = _codes(f["cell"], c["cell"])
    sf, sc, st_v = _codes(f["station_id"], c["station_id"])
    kf, kc, key_v = _codes(f["tx_key"], c["tx_key"])
    n_st, n_key = max(len(st_v), 1), max(len(key_v), 1)
    blank = np.flatnonzero(key_v == "")
    tag_f = kf != (blank[0] if len(blank) else -1)
    tag_c = kc != (blank[0] if len(blank) else -1)
    kk_f = (cf * n_st + sf) * n_key + kf
    kk_c = (cc * n_st + sc) * n_key + kc
    out_f = f["outcome"].astype(object).to_numpy()
    out_c = c["outcome"].astype(object).to_numpy()

    all_keys = np.unique(kk_f[tag_f])
    sent = np.unique(kk_f[tag_f & (out_f != "send_failed")])
    acked = np.unique(kk_f[tag_f & (out_f == "ok")])
    firsts, n_first = np.unique(kk_f[tag_f & (f["attempt"].to_numpy() == 1)], return_counts=True)
    shared = firsts[n_first > 1]
    ok_rows = kk_c[tag_c & (out_c == "ok")]
    handled = np.unique(ok_rows)
    refused = np.unique(np.concatenate([kk_f[tag_f & (out_f == "call_error")], kk_c[tag_c & (out_c == "call_error")]]))
    in_handled, in_acked, in_refused = (np.isin(sent, x) for x in (handled, acked, refused))
    rejected = sent[in_refused & ~in_handled & ~in_acked]
    lost = sent[~in_handled & ~in_acked & ~in_refused]
    acked_unrec = acked[~np.isin(acked, handled)]
    handled_unsent = handled[~np.isin(handled, sent)]
    never = all_keys[~np.isin(all_keys, sent)]
    untagged_f = ~tag_f
    untagged_f[untagged_f] = _is_tx_action(f.loc[untagged_f])
    untagged_c = ~tag_c
    untagged_c[untagged_c] = _is_tx_action(c.loc[untagged_c])

    g_f, g_c = cf * n_st + sf, cc * n_st + sc  # (cell, station) codes of the rows
    pairs = np.unique(np.concatenate([g_f, g_c]))
    order = {name: i for i, name in enumerate(fleet_ok)}
    rows = sorted(((str(cell_v[p // n_st]), str(st_v[p % n_st]), int(p)) for p in pairs),
                  key=lambda t: (order.get(t[0], len(order)), t[1]))
    groups = np.array([r[2] for r in rows], dtype=np.int64)
    n_groups = len(cell_v) * n_st
    frame = pd.DataFrame({"cell": [r[0] for r in rows], "station_id": [r[1] for r in rows]})

    def count(group_codes: np.ndarray) -> np.ndarray:
        return np.bincount(group_codes, minlength=n_groups)[groups]

    def count_keys(keys: np.ndarray) -> np.ndarray:
        return count(keys // n_key)

    frame["tx_messages"] = count_keys(all_keys)
    frame["sent"] = count_keys(sent)
    frame["acknowledged"] = count_keys(acked)
    frame["handled"] = count_keys(handled)
    frame["duplicates"] = count_keys(ok_rows) - frame["handled"]
    frame["lost"] = count_keys(lost)
    frame["rejected"] = count_keys(rejected)
    frame["acked_unrecorded"] = count_keys(acked_unrec)
    frame["handled_unsent"] = count_keys(handled_unsent)
    frame["never_sent"] = count_keys(never)
    frame["shared_keys"] = count_keys(shared)
    frame["untagged"] = count(np.concatenate([g_f[untagged_f], g_c[untagged_c]]))
    return frame


def totals(tbl: pd.DataFrame) -> dict[str, int | None]:
    """Sums over the cells whose counts are available (None when no cell has them)."""
    out: dict[str, int | None] = {}
    for c in COUNTS:
        v = tbl[c].dropna() if c in tbl else pd.Series(dtype="Int64")
        out[c] = int(v.sum()) if len(v) else None
    return out


#: count -> what a non-zero value means (the suspect lines of ``tx_findings``, in this order)
_FINDINGS = (
    ("lost", "{n} transaction message(s) LOST: sent, never handled by the CSMS nor acknowledged"),
    ("duplicates", "{n} DUPLICATE delivery(ies): the CSMS handled a transaction message more than once (a retry "
                   "after a lost answer: OCPP delivers at least once)"),
    ("rejected", "{n} transaction message(s) rejected: answered with a CallError, never handled"),
    ("acked_unrecorded", "{n} transaction message(s) acknowledged but absent from csms.csv: the records disagree "
                         "(csms.csv cut short, or tx_key computed differently on the two sides)"),
    ("handled_unsent", "{n} transaction message(s) handled by the CSMS but not recorded as sent by the fleet (a "
                       "calls file cut short?)"),
    ("never_sent", "{n} transaction message(s) never sent (every attempt send_failed)"),
    ("shared_keys", "{n} tx_key(s) shared by more than one message (several first attempts): their second "
                    "delivery counts as a duplicate"),
    ("untagged", "{n} row(s) of transaction actions without a tx_key: not in the transaction accounting"),
)


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
        for count, text in _FINDINGS:
            if n(getattr(r, count)):
                out.append(Problem(where, text.format(n=n(getattr(r, count))), "suspect"))
    return out


def tx_keys(run: Run) -> pd.DataFrame:
    """One row per transaction message (cell, station, ``tx_key``) of the cells with transaction keys, with the
    same counts as ``tx_table`` as 0/1 flags (``duplicates``: the extra deliveries of that message), and
    ``t_issued``: when the station first issued it (the earliest attempt's ``t_wall``, less ``queued_ms`` when
    it waited in the offline queue; for a message only the CSMS recorded, when the CSMS received it). Summed
    over a cell's rows, the flags are that cell's ``tx_table`` counts (``untagged`` aside: rows without a key
    are not messages; ``tx_untagged`` lists them). Computed once per loaded run."""
    if "tx_keys" not in run.cache:
        run.cache["tx_keys"] = _tx_keys(run)
    return run.cache["tx_keys"].copy()


def _ok_cells(run: Run) -> tuple[list[str], list[str]]:
    cells = [c for c in (run.cells["cell"].astype(str) if len(run.cells) else [])
             if any((k, c) in run.columns for k in ("calls", "csms"))]
    fleet_ok = [c for c in cells if run.has_column("calls", c, "tx_key")]
    return fleet_ok, [c for c in fleet_ok if run.has_column("csms", c, "tx_key")]


KEY_COLUMNS = ["cell", "station_id", "tx_key", "t_issued", *[c for c in COUNTS if c != "untagged"]]


def _tx_keys(run: Run) -> pd.DataFrame:
    fleet_ok, csms_ok = _ok_cells(run)
    idx = ["cell", "station_id", "tx_key"]
    calls, csms = run.calls, run.csms
    f = calls[calls["cell"].isin(fleet_ok) & (calls["tx_key"].astype(str) != "")] if len(calls) else calls
    c = csms[csms["cell"].isin(csms_ok) & (csms["tx_key"].astype(str) != "")] if len(csms) else csms
    if f.empty and c.empty:
        return pd.DataFrame({k: pd.Series(dtype="object" if k in idx else "float64") for k in KEY_COLUMNS})
    f = pd.DataFrame({k: f[k].astype(str) for k in idx} | {
        "sent": (f["outcome"].astype(str) != "send_failed").to_numpy(),
        "acknowledged": (f["outcome"].astype(str) == "ok").to_numpy(),
        "err_f": (f["outcome"].astype(str) == "call_error").to_numpy(),
        "first": (f["attempt"] == 1).to_numpy().astype(int),
        "t_f": (f["t_wall"] - f["queued_ms"].fillna(0) / 1000.0).to_numpy()})
    fk = f.groupby(idx, sort=False).agg(sent=("sent", "any"), acknowledged=("acknowledged", "any"),
                                        err_f=("err_f", "any"), firsts=("first", "sum"), t_f=("t_f", "min"))
    fk["in_fleet"] = True
    c = pd.DataFrame({k: c[k].astype(str) for k in idx} | {
        "ok": (c["outcome"].astype(str) == "ok").to_numpy().astype(int),
        "err_c": (c["outcome"].astype(str) == "call_error").to_numpy(), "t_c": c["t_wall"].to_numpy()})
    ck = c.groupby(idx, sort=False).agg(ok_rows=("ok", "sum"), err_c=("err_c", "any"), t_c=("t_c", "min"))
    k = fk.join(ck, how="outer").reset_index()
    in_fleet = k["in_fleet"].fillna(False).astype(bool).to_numpy()
    sent = k["sent"].fillna(False).astype(bool).to_numpy()
    acked = k["acknowledged"].fillna(False).astype(bool).to_numpy()
    ok_rows = k["ok_rows"].fillna(0).to_numpy().astype(int)
    handled = ok_rows > 0
    refused = k["err_f"].fillna(False).astype(bool).to_numpy() | k["err_c"].fillna(False).astype(bool).to_numpy()
    out = pd.DataFrame({"cell": k["cell"], "station_id": k["station_id"], "tx_key": k["tx_key"],
                        "t_issued": k["t_f"].fillna(k["t_c"])})
    flags = {
        "tx_messages": in_fleet, "sent": sent, "acknowledged": acked, "handled": handled,
        "lost": sent & ~handled & ~acked & ~refused, "rejected": sent & refused & ~handled & ~acked,
        "acked_unrecorded": acked & ~handled, "handled_unsent": handled & ~sent,
        "never_sent": in_fleet & ~sent, "shared_keys": k["firsts"].fillna(0).to_numpy() > 1}
    for name in COUNTS:
        if name == "duplicates":
            out[name] = np.maximum(ok_rows - 1, 0)
        elif name in flags:
            out[name] = flags[name].astype(int)
    return out[KEY_COLUMNS]


def tx_untagged(run: Run) -> pd.DataFrame:
    """The rows of transaction actions without a ``tx_key`` (``cell``, ``t_wall``) in the cells that have the
    column (the fleet's and, where it has the column, the CSMS's): ``tx_table``'s ``untagged``."""
    fleet_ok, csms_ok = _ok_cells(run)
    parts = []
    for frame, ok in ((run.calls, fleet_ok), (run.csms, csms_ok)):
        if len(frame):
            sub = frame[frame["cell"].isin(ok) & (frame["tx_key"].astype(str) == "")]
            sub = sub[_is_tx_action(sub)] if len(sub) else sub
            parts.append(pd.DataFrame({"cell": sub["cell"].astype(str), "t_wall": sub["t_wall"]}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["cell", "t_wall"])
