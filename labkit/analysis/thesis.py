"""The built-in compare target ``thesis-2021``: the dissertation's tables 9 to 17, shipped as data.

labkit/data/thesis_2021.csv holds every number of those tables (Rosa Neto, 2021: ping RTT, iperf TCP
rate, OCPP RTT for 1 EVSE on VMs and containers and for 10, 25, 50 containers), the labkit profile each
of its profiles maps to (Reference -> ``none``, AMPS -> ``slow-amps``, ... VSAT -> ``slow-vsat``), and per row
a note (``differs``) on where its setup differs from labkit's: one-way shaping, kilobytes-per-second rates,
its shared timer, VMs or containers against netns. Rates are converted to bit/s here.

Targets: ``thesis-2021`` (its VM tables for a Vagrant run, its container tables otherwise; only containers
exist for N > 1), ``thesis-2021-vm`` and ``thesis-2021-containers``.

The dissertation's stations ran without OCPP security; from a run that swept several security variants its
OCPP tables are set against one variant (``sp0`` when the run has it, else the first of
``security_order``), and a note says which.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from labkit.analysis.load import Run
from labkit.analysis.order import security_order

DATA = Path(__file__).resolve().parent.parent / "data" / "thesis_2021.csv"
TARGETS = {"thesis-2021": "auto", "thesis-2021-vm": "vm", "thesis-2021-containers": "container"}
#: the dissertation's profiles, in its own column order, with labkit's faithful and realistic counterparts
PROFILES = {"Reference": (("none", "slow-reference"), None), "AMPS": (("slow-amps",), None),
            "GPRS": (("slow-gprs",), "gprs"), "3G": (("slow-3g",), "3g"), "4G": (("slow-4g",), "4g"),
            "VSAT": (("slow-vsat",), "vsat")}
#: short tags for the segments of the ``differs`` notes (prefix of the segment -> tag)
TAGS = [("Reference:", "Reference=none"), ("one-way shaping: slow.sh", "one-way"),
        ("one-way shaping: requests", "one-way (OCPP)"), ("one-way shaping: the EVSE->CPO data", "one-way (ACKs)"),
        ("kilobytes per second", "kB/s"), ("its timer", "timer"), ("minima below", "timer artefact"),
        ("load:", "load"), ("host CPU", "CPU 100 %"), ("ping -c", "ping 1 s"), ("iperf (version 2)", "iperf2 KB/s"),
        ("62 %", "VSAT 62 %"), ("VirtualBox", "VMs"), ("Docker", "containers"), ("compared with labkit's realistic",
                                                                                  "realistic profile")]
SEP = " | "
STAT_ORDER = ["configured_added_rtt", "mean_evse_to_cpo", "mean_cpo_to_evse", "configured_kilobytes_per_s",
              "measured_kilobytes_per_s", "mean", "std", "median", "min", "max"]
REALISTIC_NOTE = ("compared with labkit's realistic profile, not slow.sh's settings: a different link, "
                  "shown for orientation only")


def is_target(name: str) -> bool:
    return str(name).lower() in TARGETS


def load_thesis(path: Path = DATA) -> pd.DataFrame:
    """The shipped tables, long form, with ``value_si`` (ms, or bit/s for rates) and ``unit_si``."""
    df = pd.read_csv(path, dtype={"note": str, "differs": str}, keep_default_na=False)
    df["value"] = pd.to_numeric(df["value"])
    kb = df["unit"] == "kB/s"
    df["value_si"] = df["value"].where(~kb, df["value"] * 8000.0)
    df["unit_si"] = df["unit"].where(~kb, "bit/s")
    return df


def tag(segment: str) -> str:
    for prefix, short in TAGS:
        if segment.strip().startswith(prefix):
            return short
    return segment.strip()[:24]


def split_notes(differs: str) -> list[str]:
    return [s.strip() for s in str(differs).split(SEP) if s.strip()]


def resolve_setup(which: str, run: Run) -> str:
    """'vm' or 'container': the dissertation's virtualisation a run is compared with."""
    mode = TARGETS.get(which.lower(), "auto")
    if mode != "auto":
        return mode
    return "vm" if run.backend == "vagrant" else "container"


def _match_profile(thesis_profile: str, present: set[str]) -> tuple[str | None, bool]:
    faithful, realistic = PROFILES[thesis_profile]
    for name in faithful:
        if name in present:
            return name, False
    if realistic and realistic in present:
        return realistic, True
    return None, False


def compare_run(run: Run, which: str = "thesis-2021", seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """For each thesis row the run can answer: the dissertation's figure, ours and the difference.

    Returns (rows, notes) where notes say which parts of the dissertation the run does not cover."""
    from labkit.analysis import tables as T

    th = load_thesis()
    setup = resolve_setup(which, run)
    present = set(run.cells["profile"]) if len(run.cells) else set()
    ping = T.ping_table(run, seed).set_index(["profile", "direction"]) if len(run.ping) else None
    iperf = T.iperf_table(run)
    iperf = iperf[iperf["proto"] == "tcp"].set_index(["profile", "direction"]) if len(iperf) else None
    ocpp = T.ocpp_table(run, seed) if len(run.calls) else None
    notes = []
    if ocpp is not None and "security" in ocpp.columns:  # one security variant: the dissertation ran without
        variants = security_order(ocpp["security"].astype(str))
        chosen = "sp0" if "sp0" in variants else variants[0]
        ocpp = ocpp[ocpp["security"] == chosen].drop(columns="security")
        notes.append(f"OCPP RTT of the security variant {chosen} (the run swept {', '.join(variants)}).")
    ocpp = ocpp.set_index(["profile", "stations"]) if ocpp is not None else None
    ns = set(run.cells["stations"]) if len(run.cells) else set()
    rows, uncovered = [], set()
    for r in th.itertuples(index=False):
        per_n = r.measure == "ocpp_rtt"
        want = setup if not (per_n and r.evse_count > 1) else "container"
        if r.virtualization != want:
            continue
        ours_profile, realistic = _match_profile(r.profile, present)
        if ours_profile is None:
            uncovered.add(f"{r.profile} ({PROFILES[r.profile][0][0]})")
            continue
        ours = math.nan
        if r.measure == "ping_rtt" and ping is not None:
            if r.statistic == "configured_added_rtt":
                key = (ours_profile, "up") if (ours_profile, "up") in ping.index else (ours_profile, "down")
                ours = ping.at[key, "added_rtt_ms"] if key in ping.index else math.nan
            else:
                d = "up" if r.statistic == "mean_evse_to_cpo" else "down"
                ours = ping.at[(ours_profile, d), "mean"] if (ours_profile, d) in ping.index else math.nan
        elif r.measure == "iperf_tcp" and iperf is not None:
            key = (ours_profile, "up")  # the dissertation: EVSE client sends to the CPO server
            if key in iperf.index:
                ours = iperf.at[key, "configured_bps" if r.statistic.startswith("configured") else "bps"]
        elif per_n and ocpp is not None:
            if r.evse_count not in ns:
                uncovered.add(f"N = {r.evse_count}")
                continue
            key = (ours_profile, r.evse_count)
            if key in ocpp.index:
                ours = ocpp.at[key, r.statistic]
        segments = split_notes(r.differs)
        if realistic:
            segments = [REALISTIC_NOTE] + segments
        thesis_v = float(r.value_si)
        ours_v = float(ours) if ours is not None else math.nan
        rows.append({
            "measure": r.measure, "table": int(r.table), "setup": r.virtualization, "N": int(r.evse_count),
            "thesis_profile": r.profile, "profile": ours_profile, "statistic": r.statistic,
            "thesis": thesis_v, "ours": ours_v, "diff": ours_v - thesis_v,
            "diff_pct": 100.0 * (ours_v - thesis_v) / thesis_v if thesis_v else math.nan,
            "unit": r.unit_si, "realistic_match": realistic, "differs": SEP.join(segments),
            "source_note": r.note,
        })
    out = pd.DataFrame(rows)
    if len(out):
        prank = {p: i for i, p in enumerate(PROFILES)}
        srank = {s: i for i, s in enumerate(STAT_ORDER)}
        out = out.assign(_p=out["thesis_profile"].map(prank), _s=out["statistic"].map(lambda s: srank.get(s, 99)))
        out = out.sort_values(["table", "N", "_p", "_s"], kind="stable").drop(columns=["_p", "_s"])
        out = out.reset_index(drop=True)
    if uncovered:
        notes.append("Not in this run: " + ", ".join(sorted(uncovered)) + ".")
    return out, notes
