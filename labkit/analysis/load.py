"""Loading one results directory (docs/results.md) into pandas frames, robustly.

``load_run(path)`` never raises on bad content: an empty, partial (running, interrupted) or corrupt
directory (bad JSON, torn or malformed CSV lines, missing files) gives a ``Run`` whose ``problems`` list
says what is missing or skipped, file by file, and whose frames hold whatever could be read.
Only a path that is not a directory is an error (``ConfigError``).

The columns of every file come from labkit.resultsformat, the one definition of the results format, for
every format in ``READS``: a file of an older format lacks the columns added since, which are then empty
(``Run.has_column`` tells an absent column from empty values). The problems also list what the
transaction accounting finds suspect (labkit.analysis.transactions: a transaction message lost, or
handled twice by the CSMS).

Each cell's OCPP security variant (cell.json's or the manifest entry's ``security``, else the cell id's
``__<label>`` suffix) is the ``security`` column of ``cells`` (its label, e.g. ``sp3-tls13``; "" for a cell
that records none, as in runs made before security profiles could be swept) with ``security_profile`` (for
a cell without a variant: 1 when the plan used HTTP Basic auth, else 0), ``tls_version`` and
``tls_resumption``. ``Run.with_cells`` joins ``security`` onto per-cell rows, and ``Run.security_split``
says whether the run has more than one variant, which the tables then keep apart.

A cell whose OCPP phase ran a schedule (``labkit bench --schedule``; format /3) has its name in the
``schedule`` column of ``cells`` and one row per phase, in the order they ran, in ``Run.schedule``
(cells/<id>/schedule.json, read with the keys resultsformat.SCHEDULE_PHASE defines; ``seq`` numbers them from
1); ``Run.schedule_meta`` holds the rest of each cell's schedule.json (the schedule as written, how it ended).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labkit import resultsformat as RF
from labkit.analysis.order import parse_security_label
from labkit.errors import ConfigError

FORMAT = RF.FORMAT  # what this labkit writes; it reads every format in READS
READS = RF.READS
PARTIAL_RE = re.compile(r"\.partial-\d+$")  # a cell's earlier attempt, renamed by `labkit bench --resume`
#: ``<profile>__n<H>x<S>__r<R>``, with ``__<security label>`` when the cell ran a security variant
CELL_ID_RE = re.compile(r"^(?P<profile>.+)__n(?P<hosts>\d+)x(?P<sph>\d+)__r(?P<repeat>\d+)"
                        r"(?:__(?P<security>[A-Za-z0-9][A-Za-z0-9-]*))?$")

#: the CSV kinds a run has, from the one definition of the results format (labkit.resultsformat)
KINDS = ("ping", "echo", "calls", "events", "csms", "monitor")
#: string columns stored as pandas categories (few distinct values, many rows)
CATEGORIES = {"src", "dst", "direction", "host", "role", "process", "station_id", "ocpp_version", "action",
              "outcome", "error_code", "event", "run_id"}

CELL_COLUMNS = ["cell", "dir", "profile", "evse_hosts", "stations_per_host", "stations", "repeat", "status",
                "added_rtt_ms", "min_added_rtt_ms", "up_rate_bps", "down_rate_bps", "up_loss_pct", "down_loss_pct",
                "ocpp_t0", "ocpp_t1", "outage_t0", "outage_t1", "engine", "security", "security_profile",
                "tls_version", "tls_resumption", "schedule"]
#: Run.schedule: one row per phase of a cell's schedule as it ran (resultsformat.SCHEDULE_PHASE), ``seq`` from 1
SCHEDULE_COLUMNS = ["cell", "seq", *[k for k in RF.SCHEDULE_PHASE.keys if k != "problems"], "problems"]


@dataclass
class Problem:
    """Something missing, skipped or suspect in a results directory."""

    where: str  # path relative to the run directory ("." for the run itself)
    what: str
    kind: str = "missing"  # missing | corrupt | incomplete | note

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass
class Run:
    """One results directory, read. Frames carry a ``cell`` column; join ``cells`` for profile and N."""

    path: Path
    run_id: str
    manifest: dict[str, Any]
    cells: pd.DataFrame
    cell_meta: dict[str, dict[str, Any]]
    ping: pd.DataFrame
    echo: pd.DataFrame  # labkit's own RTT probe (echo.csv), microsecond resolution; empty in format /1
    iperf: pd.DataFrame  # one row per cell x proto x direction
    iperf_intervals: pd.DataFrame  # per-second goodput
    calls: pd.DataFrame
    events: pd.DataFrame
    csms: pd.DataFrame
    monitor: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    #: (kind, cell) -> the columns every readable file of that kind in that cell has in its header
    columns: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    #: results derived from the frames once (the transaction accounting), by the modules computing them
    cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)
    #: the phases of each cell's schedule as they ran (SCHEDULE_COLUMNS; empty when no cell ran one)
    schedule: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SCHEDULE_COLUMNS))
    #: cell -> its schedule.json without the phases (the schedule as written, engine, ended_by, holds)
    schedule_meta: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def format(self) -> str:
        return str(self.manifest.get("format") or "unknown")

    def has_column(self, kind: str, cell: str, column: str) -> bool:
        """Whether every file of ``kind`` in ``cell`` has ``column`` (False when the cell has no such file):
        a column new in a later format is empty in a file of an older one, which is not the same as empty
        values."""
        return column in self.columns.get((kind, cell), frozenset())

    @property
    def status(self) -> str:
        return str(self.manifest.get("status") or "unknown")

    @property
    def backend(self) -> str:
        b = self.manifest.get("backend")
        if isinstance(b, dict):
            b = b.get("name")
        return str(b or "unknown")

    @property
    def engine(self) -> str:
        e = self.manifest.get("engine")
        if not e and len(self.cells):
            e = ",".join(sorted({str(x) for x in self.cells["engine"].dropna() if x}))
        return str(e or "unknown")

    @property
    def ocpp_version(self) -> str:
        plan = self.manifest.get("plan") if isinstance(self.manifest.get("plan"), dict) else {}
        v = plan.get("ocpp") or plan.get("ocpp_version")
        if not v and len(self.calls) and "ocpp_version" in self.calls:
            v = ",".join(sorted({str(x) for x in self.calls["ocpp_version"].dropna().unique() if str(x)}))
        return str(v or "unknown")

    @property
    def security_split(self) -> bool:
        """Whether the cells ran more than one OCPP security variant (``cells["security"]``): the tables then
        keep the variants apart. A run without any variant recorded has one (""), so it is not split."""
        return bool(len(self.cells)) and self.cells["security"].nunique() > 1

    def with_cells(self, frame: pd.DataFrame, cols: tuple[str, ...] = ("profile", "stations")) -> pd.DataFrame:
        """``frame`` with the cell's profile, station count (N) and other cell columns joined on; the cell's
        security variant (``security``) is always joined too."""
        cols = (*cols, "security") if "security" not in cols else cols
        if frame.empty or self.cells.empty:
            out = frame.copy()
            for c in cols:
                out[c] = pd.Series(dtype="object")
            return out.iloc[0:0] if self.cells.empty else out
        meta = self.cells.set_index("cell")[list(cols)]
        return frame.join(meta, on="cell", how="inner")

    @property
    def has_data(self) -> bool:
        return any(len(f) for f in (self.ping, self.echo, self.iperf, self.calls))


# -- small readers ---------------------------------------------------------------------------------------
def _rel(run_dir: Path, p: Path) -> str:
    try:
        return str(p.relative_to(run_dir))
    except ValueError:
        return str(p)


def read_json(path: Path, run_dir: Path, problems: list[Problem], *, required: bool = True) -> dict | None:
    """A JSON object, or None (and a problem) when it is missing or not valid JSON."""
    where = _rel(run_dir, path)
    if not path.exists():
        if required:
            problems.append(Problem(where, "missing"))
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as exc:
        problems.append(Problem(where, f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                                       "ignored", "corrupt"))
        return None
    except OSError as exc:
        problems.append(Problem(where, f"unreadable ({exc.strerror}); ignored", "corrupt"))
        return None
    if not isinstance(data, dict):
        problems.append(Problem(where, f"expected a JSON object, found {type(data).__name__}; ignored", "corrupt"))
        return None
    return data


@dataclass
class _CsvPart:
    """One CSV file, checked and ready to be parsed together with others of its kind."""

    cell: str
    where: str
    header: tuple[str, ...]
    body: str  # the data lines, each ending with a newline
    lines: int  # data lines in body (blank lines excluded)


def _prepare_csv(path: Path, kind: str, cell: str, run_dir: Path, problems: list[Problem]) -> _CsvPart | None:
    """Read and check one file: torn last line cut off, header checked. None when nothing is usable."""
    required = RF.TABLES[kind].required
    where = _rel(run_dir, path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problems.append(Problem(where, f"unreadable ({exc.strerror})", "corrupt"))
        return None
    if not raw.strip():
        problems.append(Problem(where, "empty file (no header)", "corrupt"))
        return None
    torn = not raw.endswith(b"\n")
    if torn:
        cut = raw.rfind(b"\n")
        raw = raw[: cut + 1] if cut >= 0 else b""
    text = raw.decode("utf-8", errors="replace")
    head, _, body = text.partition("\n")
    header = tuple(h.strip() for h in head.strip().split(","))
    absent = [c for c in required if c not in header]
    if absent:
        problems.append(Problem(where, f"header lacks column(s) {', '.join(absent)} (found: {', '.join(header)}); "
                                       "file ignored", "corrupt"))
        return None
    if torn:
        problems.append(Problem(where, "last line torn (no newline at the end); skipped", "incomplete"))
    if "\n\n" in body or body.startswith("\n"):
        body = "".join(line + "\n" for line in body.split("\n") if line.strip())
    return _CsvPart(cell, where, header, body, body.count("\n"))


def parse_csvs(kind: str, parts: list[_CsvPart], problems: list[Problem]) -> pd.DataFrame:
    """Parse many checked files of one kind at once (one pandas call per distinct header); adds ``cell``.

    Malformed lines (wrong field count, a non-number in a numeric column, a required field empty) are
    skipped and counted per file. Columns a file does not have (those new in a later version of the
    format, in a file of an older one) are empty: NaN in numeric columns, "" in the others."""
    table = RF.TABLES[kind]
    columns, required = table.kinds(), table.required
    frames = []
    by_header: dict[tuple[str, ...], list[int]] = {}
    for i, part in enumerate(parts):
        if part.lines:
            by_header.setdefault(part.header, []).append(i)
    for header, idxs in by_header.items():
        chunks = []
        for i in idxs:
            prefix = f"{i},"
            chunks.append(prefix + parts[i].body[:-1].replace("\n", "\n" + prefix) + "\n")
        text = "_file," + ",".join(header) + "\n" + "".join(chunks)
        usecols = ["_file"] + [c for c in header if c in columns]
        try:
            df = _parse(text, usecols, {**columns, "_file": "num"})
        except Exception as exc:  # noqa: BLE001 - a parser error of any kind must not stop the report
            for i in idxs:
                problems.append(Problem(parts[i].where, f"unreadable as CSV ({type(exc).__name__}: {exc}); "
                                                        "file ignored", "corrupt"))
            continue
        df = df[df["_file"].notna()]
        bad = pd.Series(False, index=df.index)
        for col in required:
            if col in df:
                bad |= df[col].isna() if columns[col] == "num" else (df[col].isna() | (df[col] == ""))
        if kind in ("ping", "echo") and "lost" in df and "rtt_ms" in df:
            bad |= (df["lost"] == 0) & df["rtt_ms"].isna()
        good = df.loc[~bad]
        counts = good["_file"].astype("int64").value_counts()
        for i in idxs:
            skipped = parts[i].lines - int(counts.get(i, 0))
            if skipped:
                problems.append(Problem(parts[i].where, f"{skipped} malformed line(s) skipped", "corrupt"))
        frames.append(good)
    if not frames:
        return _empty_frame(kind, with_cell=True)
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    for col, k in columns.items():
        if col not in df:
            df[col] = np.nan if k == "num" else ""
    cells = np.array([p.cell for p in parts], dtype=object)
    out = df[list(columns)].copy()
    out.insert(0, "cell", cells[df["_file"].to_numpy(dtype="int64")])
    for c in out.columns:
        if c in CATEGORIES or c == "cell":
            out[c] = out[c].astype("category")
    return out


def read_csv(path: Path, kind: str, run_dir: Path, problems: list[Problem], cell: str = "") -> pd.DataFrame:
    """One results CSV of ``kind`` (a table of labkit.resultsformat), typed, with a ``cell`` column; see
    ``parse_csvs``."""
    part = _prepare_csv(path, kind, cell, run_dir, problems)
    return parse_csvs(kind, [part] if part else [], problems)


def _parse(text: str, usecols: list[str], columns: dict[str, str]) -> pd.DataFrame:
    # no ``usecols``: with it, pandas keeps lines that have too many fields instead of skipping them
    dtypes = {c: ("float64" if columns[c] == "num" else "str") for c in usecols}
    opts: dict[str, Any] = {"keep_default_na": False, "na_values": [""], "on_bad_lines": "skip", "engine": "c"}
    try:
        df = pd.read_csv(io.StringIO(text), dtype=dtypes, **opts)
    except ValueError:
        # a value that is not a number in a numeric column: read as text, coerce, drop what does not parse
        df = pd.read_csv(io.StringIO(text), dtype=str, **opts)
        garbage = pd.Series(False, index=df.index)
        for c in usecols:
            if columns[c] == "num":
                num = pd.to_numeric(df[c], errors="coerce")
                garbage |= num.isna() & df[c].notna()
                df[c] = num
        df = df.loc[~garbage].copy()
    df = df[[c for c in usecols if c in df.columns]]
    for c in usecols:
        if columns[c] == "str":
            df[c] = df[c].fillna("").astype(str)
    return df


def _empty_frame(kind: str, with_cell: bool = False) -> pd.DataFrame:
    columns = RF.TABLES[kind].kinds()
    out = pd.DataFrame({c: pd.Series(dtype="float64" if k == "num" else "object") for c, k in columns.items()})
    if with_cell:
        out.insert(0, "cell", pd.Series(dtype="object"))
    return out


def _epoch(value: Any) -> float:
    """ISO 8601 (or epoch seconds) -> seconds since the epoch; NaN when absent or unreadable."""
    if value is None or value == "":
        return float("nan")
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return datetime.fromisoformat(str(value)).timestamp()  # Python 3.11 reads a trailing Z
    except ValueError:
        return float("nan")


def _num(value: Any) -> float:
    try:
        return float(value) if value is not None and value != "" else float("nan")
    except (TypeError, ValueError):
        return float("nan")


# -- iperf -----------------------------------------------------------------------------------------------
def parse_iperf(data: dict) -> tuple[dict[str, float], list[tuple[float, float]]]:
    """``iperf3 -J`` output -> summary (receiver goodput bit/s, sender bit/s, retransmits, UDP loss and
    jitter) and per-interval (end time s, bit/s) samples. Raises KeyError/TypeError on a shapeless file."""
    end = data.get("end") or {}
    start = data.get("start") or {}
    udp = (start.get("test_start") or {}).get("protocol") == "UDP" or "sum" in end and "jitter_ms" in (
        end.get("sum") or {})
    summary: dict[str, float] = {}
    if udp:
        s = end.get("sum") or {}
        recv = end.get("sum_received") or s
        summary["bps"] = _num(recv.get("bits_per_second"))
        summary["sender_bps"] = _num((end.get("sum_sent") or {}).get("bits_per_second"))
        summary["lost_pct"] = _num(s.get("lost_percent"))
        summary["jitter_ms"] = _num(s.get("jitter_ms"))
        summary["packets"] = _num(s.get("packets"))
        summary["lost_packets"] = _num(s.get("lost_packets"))
    else:
        recv = end.get("sum_received") or {}
        sent = end.get("sum_sent") or {}
        summary["bps"] = _num(recv.get("bits_per_second"))
        summary["sender_bps"] = _num(sent.get("bits_per_second"))
        summary["retransmits"] = _num(sent.get("retransmits"))
    summary["seconds"] = _num((end.get("sum_received") or end.get("sum") or {}).get("seconds"))
    summary["target_bps"] = _num(start.get("target_bitrate"))
    intervals = []
    for iv in data.get("intervals") or []:
        s = iv.get("sum") or {}
        if s.get("omitted"):
            continue
        intervals.append((_num(s.get("end")), _num(s.get("bits_per_second"))))
    return summary, intervals


# -- the run ---------------------------------------------------------------------------------------------
def load_run(path: str | Path) -> Run:
    """Read a results directory; see the module docstring for what happens with bad content."""
    run_dir = Path(path)
    if not run_dir.is_dir():
        if run_dir.exists():
            raise ConfigError(f"{run_dir}: not a directory (a results directory from `labkit bench` is needed)")
        raise ConfigError(f"{run_dir}: no such results directory")
    problems: list[Problem] = []
    manifest = read_json(run_dir / "manifest.json", run_dir, problems) or {}
    if manifest:
        fmt = manifest.get("format")
        if fmt and fmt not in READS:
            reads = ", ".join(map(repr, READS))
            problems.append(Problem("manifest.json", f"format {fmt!r}, this labkit reads {reads}; reading it anyway",
                                    "note"))
        status = manifest.get("status")
        if status == "running":
            problems.append(Problem("manifest.json", "status is 'running': the run had not finished (or was "
                                                     "killed) when read; results are partial", "incomplete"))
        elif status == "incomplete":
            reason = manifest.get("reason") or "no reason given"
            problems.append(Problem("manifest.json", f"status is 'incomplete': {reason}",
                                    "incomplete"))
    run_id = str(manifest.get("run_id") or run_dir.resolve().name)

    listed: dict[str, dict] = {}
    for entry in manifest.get("cells") or []:
        if isinstance(entry, dict) and entry.get("id"):
            listed[str(entry["id"])] = entry
    cells_dir = run_dir / "cells"
    found = sorted(p.name for p in cells_dir.iterdir() if p.is_dir()) if cells_dir.is_dir() else []
    partial = [c for c in found if PARTIAL_RE.search(c)]
    if partial:
        problems.append(Problem("cells/", f"{len(partial)} earlier partial attempt(s) kept aside by --resume "
                                          f"({', '.join(partial[:3])}{', ...' if len(partial) > 3 else ''}); "
                                          "not used", "note"))
        found = [c for c in found if c not in partial]
    if not listed and not found:
        runs = sorted(p.name for p in run_dir.iterdir() if (p / "manifest.json").is_file())
        if runs and not manifest:
            problems.append(Problem(".", f"this is a directory of {len(runs)} run(s), not a run: give one of them, "
                                         f"e.g. {run_dir / runs[-1]}", "note"))
        problems.append(Problem("cells/", "no cells: nothing was measured (or the directory is not a labkit "
                                          "results directory)"))
    order = list(listed) + [c for c in found if c not in listed]

    rows, meta = [], {}
    sched_rows: list[dict] = []
    sched_meta: dict[str, dict] = {}
    frames: dict[str, list[_CsvPart]] = {k: [] for k in KINDS}
    iperf_rows: list[dict] = []
    iv_rows: list[tuple] = []
    for cid in order:
        entry = listed.get(cid, {})
        cdir = run_dir / str(entry.get("dir") or f"cells/{cid}")
        rel = _rel(run_dir, cdir)
        if not cdir.is_dir():
            problems.append(Problem(rel, f"cell listed in manifest.json (status {entry.get('status', '?')}) "
                                         "has no directory"))
            continue
        cj = read_json(cdir / "cell.json", run_dir, problems) or {}
        row = _cell_row(cid, rel, entry, cj, problems, auth=_plan_auth(manifest))
        if row is None:
            continue
        rows.append(row)
        meta[cid] = cj
        _load_cell_files(cid, cdir, run_dir, cj, frames, iperf_rows, iv_rows, problems,
                         echo_expected=_newer_than_1(manifest.get("format")))
        _load_schedule(cid, cdir, run_dir, cj, sched_rows, sched_meta, problems)

    cells = pd.DataFrame(rows, columns=CELL_COLUMNS)
    if len(cells):
        cells = cells.astype({"evse_hosts": "int64", "stations_per_host": "int64", "stations": "int64",
                              "repeat": "int64", "security_profile": "int64"})
    iperf = pd.DataFrame(iperf_rows, columns=["cell", "proto", "direction", "bps", "sender_bps", "retransmits",
                                              "lost_pct", "jitter_ms", "packets", "lost_packets", "seconds",
                                              "target_bps"])
    intervals = pd.DataFrame(iv_rows, columns=["cell", "proto", "direction", "t_s", "bps"])
    columns: dict[tuple[str, str], frozenset[str]] = {}
    for kind, parts in frames.items():
        for part in parts:
            key = (kind, part.cell)
            columns[key] = columns.get(key, frozenset(part.header)) & frozenset(part.header)
    run = Run(path=run_dir, run_id=run_id, manifest=manifest, cells=cells, cell_meta=meta,
              ping=parse_csvs("ping", frames["ping"], problems), echo=parse_csvs("echo", frames["echo"], problems),
              iperf=iperf, iperf_intervals=intervals,
              calls=parse_csvs("calls", frames["calls"], problems),
              events=parse_csvs("events", frames["events"], problems),
              csms=parse_csvs("csms", frames["csms"], problems),
              monitor=parse_csvs("monitor", frames["monitor"], problems),
              problems=problems, columns=columns,
              schedule=pd.DataFrame(sched_rows, columns=SCHEDULE_COLUMNS), schedule_meta=sched_meta)
    run.ping["lost"] = run.ping["lost"].fillna(0).astype(bool)
    run.echo["lost"] = run.echo["lost"].fillna(0).astype(bool)
    from labkit.analysis.transactions import tx_findings  # the accounting needs the loaded frames

    problems.extend(tx_findings(run))
    return run


def _newer_than_1(fmt: Any) -> bool:
    """Whether a manifest's format is one that has the echo probe and transaction keys (/2 and later)."""
    m = re.fullmatch(r"labkit-results/(\d+)", str(fmt or ""))
    return bool(m) and int(m.group(1)) >= 2


def _plan_auth(manifest: dict) -> str:
    plan = manifest.get("plan") if isinstance(manifest.get("plan"), dict) else {}
    return str(plan.get("auth") or "none")


def _security(cid_label: str | None, entry: dict, cj: dict, auth: str) -> dict[str, Any]:
    """The cell's security variant: cell.json's ``security``, else the manifest entry's, else the label in
    the cell id. Without one: label "", profile 1 when the plan used HTTP Basic auth (``plan.auth``), else 0."""
    sec = cj.get("security") if isinstance(cj.get("security"), dict) else entry.get("security")
    if not isinstance(sec, dict):
        sec = {}
    label = str(sec.get("label") or cid_label or "")
    parsed = parse_security_label(label) or {}
    profile = sec.get("profile", parsed.get("profile"))
    try:
        profile = int(profile)
    except (TypeError, ValueError):
        profile = None
    tls = sec.get("tls_version", parsed.get("tls_version"))
    resumption = sec.get("resumption", parsed.get("resumption"))
    if not label and profile is not None:  # a security object without its label: name it as the bench does
        label = f"sp{profile}" + (f"-tls{str(tls).replace('.', '')}" + ("" if resumption else "-nores")
                                  if profile >= 2 and tls else "")
    if profile is None:
        profile = 1 if auth == "basic" and not label else 0
    return {"security": label, "security_profile": profile, "tls_version": str(tls) if tls else "",
            "tls_resumption": bool(resumption) if resumption is not None else None}


def _cell_row(cid: str, rel: str, entry: dict, cj: dict, problems: list[Problem], auth: str = "none") -> dict | None:
    m = CELL_ID_RE.match(cid)
    profile = cj.get("profile") or entry.get("profile") or (m.group("profile") if m else None)
    hosts = cj.get("evse_hosts", entry.get("evse_hosts"))
    n_hosts = len(hosts) if isinstance(hosts, list) else (int(hosts) if isinstance(hosts, (int, float)) else None)
    if n_hosts is None and m:
        n_hosts = int(m.group("hosts"))
    sph = cj.get("stations_per_host", entry.get("stations_per_host"))
    if sph is None and m:
        sph = int(m.group("sph"))
    rep = cj.get("repeat", entry.get("repeat"))
    if rep is None:
        rep = int(m.group("repeat")) if m else 1
    if not profile or n_hosts is None or sph is None:
        problems.append(Problem(rel, "cannot tell the profile and fleet size (no usable cell.json, no manifest "
                                     "entry, cell id not of the form <profile>__n<H>x<S>__r<R>[__<security>]); "
                                     "cell skipped", "corrupt"))
        return None
    status = str(cj.get("status") or entry.get("status") or "unknown")
    if status not in ("complete",):
        failed = []
        for name, ph in (cj.get("phases") or {}).items():
            if isinstance(ph, dict) and ph.get("status") not in (None, "complete", "ok", "skipped"):
                failed.append(f"{name} {ph.get('status')}" + (f" ({ph.get('error')})" if ph.get("error") else ""))
        problems.append(Problem(rel, f"cell status {status!r}" + (": " + "; ".join(failed) if failed else ""),
                                "incomplete"))
    exp = cj.get("expected") or {}
    loss = exp.get("loss_pct")
    up_loss = loss.get("up") if isinstance(loss, dict) else loss
    down_loss = loss.get("down") if isinstance(loss, dict) else loss
    up_loss = exp.get("uplink_loss_pct", up_loss)
    down_loss = exp.get("downlink_loss_pct", down_loss)
    phases = cj.get("phases") or {}
    ocpp = phases.get("ocpp") if isinstance(phases.get("ocpp"), dict) else {}
    outage = cj.get("outage") if isinstance(cj.get("outage"), dict) else {}
    applied = cj.get("applied") if isinstance(cj.get("applied"), dict) else {}
    return {
        "cell": cid, "dir": rel, "profile": str(profile), "evse_hosts": int(n_hosts),
        "stations_per_host": int(sph), "stations": int(n_hosts) * int(sph), "repeat": int(rep), "status": status,
        "added_rtt_ms": _num(exp.get("added_rtt_ms")),
        "min_added_rtt_ms": _num(exp.get("min_added_rtt_ms", exp.get("added_rtt_ms"))),
        "up_rate_bps": _num(exp.get("uplink_rate_bps")),
        "down_rate_bps": _num(exp.get("downlink_rate_bps")), "up_loss_pct": _num(up_loss),
        "down_loss_pct": _num(down_loss), "ocpp_t0": _epoch(ocpp.get("started")),
        "ocpp_t1": _epoch(ocpp.get("ended")), "outage_t0": _num(outage.get("t_wall_start")),
        "outage_t1": _num(outage.get("t_wall_end")), "engine": applied.get("engine") or cj.get("engine"),
        **_security(m.group("security") if m else None, entry, cj, auth),
        "schedule": str((cj.get("schedule") or {}).get("name") or entry.get("schedule") or "")
        if isinstance(cj.get("schedule") or {}, dict) else "",
    }


def _load_schedule(cid: str, cdir: Path, run_dir: Path, cj: dict, rows: list[dict], metas: dict[str, dict],
                   problems: list[Problem]) -> None:
    """The phases of the cell's schedule.json (resultsformat.SCHEDULE_PHASE) as rows; an entry without a
    required key, or with a non-number where a number belongs, is skipped and counted."""
    rec = RF.SCHEDULE_PHASE
    path = cdir / RF.SCHEDULE_FILE
    rel = _rel(run_dir, path)
    if not path.exists():
        if isinstance(cj.get("schedule"), dict):
            problems.append(Problem(rel, "missing: cell.json says the OCPP phase ran a schedule, but its phases were "
                                         "not recorded (no per-phase tables for this cell)"))
        return
    data = read_json(path, run_dir, problems)
    if data is None:
        return
    phases = data.get("phases") if isinstance(data, dict) else None
    if not isinstance(phases, list):
        problems.append(Problem(rel, "no 'phases' list: not a schedule record; ignored", "corrupt"))
        return
    metas[cid] = {k: v for k, v in data.items() if k != "phases"}
    bad = 0
    for k, ph in enumerate(phases):
        if not isinstance(ph, dict):
            bad += 1
            continue
        row: dict[str, Any] = {"cell": cid, "seq": k + 1}
        for key in rec.keys:
            v = ph.get(key)
            if key in rec.numeric:
                v = _num(v)
            elif key == "problems":
                v = "; ".join(map(str, v)) if isinstance(v, list) else str(v or "")
            row[key] = v
        if any(row[r] is None or row[r] == "" or (r in rec.numeric and np.isnan(row[r])) for r in rec.required):
            bad += 1
            continue
        rows.append(row)
    if bad:
        problems.append(Problem(rel, f"{bad} phase(s) without a usable {', '.join(rec.required)} skipped",
                                "corrupt"))
    ended = str(data.get("ended_by") or "")
    if ended.startswith(("failed", "interrupted")):
        problems.append(Problem(rel, f"the schedule did not run to its end: {ended}", "incomplete"))


def _load_cell_files(cid: str, cdir: Path, run_dir: Path, cj: dict, frames: dict, iperf_rows: list,
                     iv_rows: list, problems: list[Problem], *, echo_expected: bool = False) -> None:
    phases = cj.get("phases") or {}

    def phase_note(name: str) -> str:
        ph = phases.get(name)
        if isinstance(ph, dict) and ph.get("status"):
            return f" (phase {name}: {ph.get('status')}" + (f", {ph['error']}" if ph.get("error") else "") + ")"
        return f" (phase {name} not recorded)" if cj else ""

    def skipped(name: str) -> bool:
        ph = phases.get(name)
        if isinstance(ph, dict):
            return ph.get("status") == "skipped"
        # baselines (ping, iperf3) run once per profile by default: a cell without them says so
        return name in ("ping", "iperf") and cj.get("baselines") is False

    def add(kind: str, path: Path) -> None:
        part = _prepare_csv(path, kind, cid, run_dir, problems)
        if part is not None:
            frames[kind].append(part)

    p = cdir / "ping.csv"
    if p.exists():
        add("ping", p)
    elif not skipped("ping"):
        problems.append(Problem(_rel(run_dir, p), "missing" + phase_note("ping")))
    e = cdir / "echo.csv"
    if e.exists():
        add("echo", e)
    elif echo_expected and p.exists():
        note = phase_note("echo") if isinstance(phases.get("echo"), dict) else ""
        problems.append(Problem(_rel(run_dir, e), f"missing while ping.csv is there{note}: no echo RTT here (the "
                                                  "OCPP overhead uses ping's for a profile without echo)", "note"))

    idir = cdir / "iperf"
    files = sorted(idir.glob("*.json")) if idir.is_dir() else []
    if not files and not skipped("iperf"):
        problems.append(Problem(_rel(run_dir, idir) + "/", "no iperf results" + phase_note("iperf")))
    for f in files:
        proto, _, direction = f.stem.partition("-")
        data = read_json(f, run_dir, problems)
        if data is None:
            continue
        if data.get("error"):
            problems.append(Problem(_rel(run_dir, f), f"iperf3 reported an error: {data['error']}", "incomplete"))
        try:
            summary, intervals = parse_iperf(data)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            problems.append(Problem(_rel(run_dir, f), f"not iperf3 -J output ({exc}); ignored", "corrupt"))
            continue
        if np.isnan(summary.get("bps", np.nan)):
            if not data.get("error"):
                problems.append(Problem(_rel(run_dir, f), "no end-of-test summary; ignored", "incomplete"))
            continue
        iperf_rows.append({"cell": cid, "proto": proto, "direction": direction, **summary})
        iv_rows.extend((cid, proto, direction, t, b) for t, b in intervals)

    odir = cdir / "ocpp"
    calls = sorted(odir.glob("calls-*.csv")) if odir.is_dir() else []
    if not calls and not skipped("ocpp"):
        problems.append(Problem(_rel(run_dir, odir) + "/", "no OCPP call samples (calls-*.csv)" + phase_note("ocpp")))
    for f in calls:
        add("calls", f)
    for f in sorted(odir.glob("events-*.csv")) if odir.is_dir() else []:
        add("events", f)
    if (odir / "csms.csv").exists():
        add("csms", odir / "csms.csv")
    m = cdir / "monitor.csv"
    if m.exists():
        add("monitor", m)
    elif calls:
        problems.append(Problem(_rel(run_dir, m), "missing: no CPU figures for this cell"))
