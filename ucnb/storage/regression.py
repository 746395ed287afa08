"""Regression tracking against the previous run of the same fingerprint (Ceph CBT's model:
per-metric acceptable ranges around a baseline).

A storage figure depends on the accelerator, QEMU, the disk's bus and cache mode, fio and the
guest's memory (page cache): a baseline is only ever compared with a run of the same fingerprint.
The acceptable range of each metric is max(tolerance, the repetitions' relative spread of either
run): a noisy point (a TCG guest, a host that is itself a VM) does not cry wolf.
"""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import files
from ..errors import ParameterError
from .fio import KEYS, METRICS, summarise

Status = Literal["ok", "regression", "improvement", "no-baseline"]
HIGHER_IS_BETTER = {"iops": True, "bw_MiBps": True, "lat_p50_us": False, "lat_p99_us": False,
                    "lat_p99_9_us": False}
COMPARE_COLUMNS = [*KEYS, "metric", "direction", "baseline", "current", "change_pct", "baseline_spread_pct",
                   "current_spread_pct", "threshold_pct", "status", "reason"]


class Fingerprint(BaseModel):
    """What a storage figure depends on besides the code under test. Hashable, JSON-serialisable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    accelerator: str = Field(min_length=1)        # kvm | tcg
    qemu_version: str = Field(min_length=1)
    disk_bus: str = Field(min_length=1)           # virtio-blk, virtio-scsi, ...
    cache_mode: str = Field(min_length=1)         # none, writeback, ...
    # raw vs qcow2 alone moves TCG guest IOPS by ~30 % (LAB-NOTES), vCPUs move a CPU-bound guest
    disk_format: str = Field(min_length=1)        # raw, qcow2
    fio_version: str = Field(min_length=1)
    guest_memory_mib: int = Field(ge=1, strict=True)
    guest_vcpus: int = Field(ge=1, strict=True)

    def key(self) -> str:
        """Stable and readable: the baseline file's key."""
        return "|".join(f"{k}={v}" for k, v in self.model_dump().items())

    def differences(self, other: Fingerprint) -> dict[str, tuple[Any, Any]]:
        """field -> (this, other) for every field that differs."""
        mine, theirs = self.model_dump(), other.model_dump()
        return {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}


class Tolerances(BaseModel):
    """Acceptable change per metric, percent, before the repetitions' spread widens it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    iops: float = Field(default=15.0, gt=0, le=1000)
    bw_MiBps: float = Field(default=15.0, gt=0, le=1000)
    lat_p50_us: float = Field(default=20.0, gt=0, le=1000)
    lat_p99_us: float = Field(default=20.0, gt=0, le=1000)
    lat_p99_9_us: float = Field(default=20.0, gt=0, le=1000)


class MetricBaseline(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    side: str
    rw: str
    op: str
    bs: str
    iodepth: int
    metric: str
    n: int
    median: float
    min: float
    max: float
    spread_pct: float | None


class BaselineEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fingerprint: Fingerprint
    recorded_at: str
    run_id: str | None = None
    metrics: list[MetricBaseline]


class BaselineStore(BaseModel):
    """The baseline file: the last run per fingerprint."""

    model_config = ConfigDict(extra="forbid")
    version: Literal[1] = 1
    entries: dict[str, BaselineEntry] = Field(default_factory=dict)

    def get(self, fingerprint: Fingerprint) -> BaselineEntry | None:
        return self.entries.get(fingerprint.key())


def load_baseline(path: str | os.PathLike[str]) -> BaselineStore:
    """The baseline file, or an empty store when there is none yet."""
    p = Path(path)
    if not p.exists():
        return BaselineStore()
    try:
        return BaselineStore.model_validate_json(p.read_bytes())
    except ValidationError as exc:
        raise ParameterError(f"baseline file {p} is not a ucnb storage baseline: {exc}") from None


def _nan_to_none(value: Any) -> float | None:
    return None if value is None or math.isnan(float(value)) else float(value)


def update_baseline(path: str | os.PathLike[str], current: pd.DataFrame, fingerprint: Fingerprint,
                    run_id: str | None = None) -> BaselineStore:
    """Record this run as its fingerprint's baseline (other fingerprints' entries are kept).

    Written atomically (ucnb.files): a crash never leaves half a baseline behind.
    """
    p = Path(path)
    store = load_baseline(p)
    summary = summarise(current)
    metrics = [MetricBaseline.model_validate({**r, "spread_pct": _nan_to_none(r["spread_pct"])})
               for r in summary.to_dict("records")]
    store.entries[fingerprint.key()] = BaselineEntry(
        fingerprint=fingerprint, recorded_at=datetime.now(UTC).isoformat(timespec="seconds"),
        run_id=run_id, metrics=metrics)
    files.atomic_write_text(p, store.model_dump_json(indent=1) + "\n")
    return store


def _no_baseline_reason(store: BaselineStore, fingerprint: Fingerprint) -> str:
    if not store.entries:
        return "no baseline recorded yet"
    nearest = min((e.fingerprint for e in store.entries.values()),
                  key=lambda fp: len(fingerprint.differences(fp)))
    diff = ", ".join(f"{k} {theirs!r} → {mine!r}"
                     for k, (mine, theirs) in fingerprint.differences(nearest).items())
    return f"no baseline for this fingerprint; the nearest recorded one differs in {diff}"


def compare(current: pd.DataFrame, baseline: BaselineStore, fingerprint: Fingerprint,
            tolerances: Tolerances | None = None) -> pd.DataFrame:
    """Per benchmark point and metric (COMPARE_COLUMNS): baseline and current medians, change %,
    threshold % and status ok | regression | improvement | no-baseline, with a reason."""
    tol = (tolerances or Tolerances()).model_dump()
    summary = summarise(current, tuple(m for m in METRICS if m in tol))
    entry = baseline.get(fingerprint)
    base: dict[tuple[Any, ...], MetricBaseline] = {}
    missing = ""
    if entry is None:
        missing = _no_baseline_reason(baseline, fingerprint)
    else:
        base = {(m.side, m.rw, m.op, m.bs, m.iodepth, m.metric): m for m in entry.metrics}
    rows = []
    for r in summary.to_dict("records"):
        metric, median = str(r["metric"]), float(r["median"])
        spread = _nan_to_none(r["spread_pct"])
        higher = HIGHER_IS_BETTER[metric]
        row: dict[str, Any] = {k: r[k] for k in KEYS}
        row.update(metric=metric, direction="higher-is-better" if higher else "lower-is-better",
                   baseline=math.nan, current=median, change_pct=math.nan, baseline_spread_pct=math.nan,
                   current_spread_pct=spread, threshold_pct=math.nan)
        b = base.get((r["side"], r["rw"], r["op"], r["bs"], int(r["iodepth"]), metric))
        if b is None or not b.median > 0:
            reason = missing or ("point not in the baseline" if b is None else "baseline median is 0")
            rows.append({**row, "status": "no-baseline", "reason": reason})
            continue
        change = (median - b.median) / b.median * 100
        spreads = [s for s in (b.spread_pct, spread) if s is not None]
        threshold = max([tol[metric], *spreads])
        better = change if higher else -change
        status: Status = "ok"
        if better < -threshold:
            status = "regression"
        elif better > threshold:
            status = "improvement"
        reason = (f"{change:+.1f} % against ±{threshold:.1f} % (tolerance {tol[metric]:g} %, "
                  f"spread of repetitions up to {max(spreads, default=0.0):.1f} %)")
        rows.append({**row, "baseline": b.median, "change_pct": change, "baseline_spread_pct": b.spread_pct,
                     "threshold_pct": threshold, "status": status, "reason": reason})
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


# Percentiles beyond p99 from runs of a few seconds rest on a handful of samples: reported, never
# counted as a regression.
INFORMATIONAL_METRICS = ("lat_p99_9_us",)


class Verdict(BaseModel):
    """What a comparison amounts to: `no-baseline` (nothing comparable), `ok` or `regression`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    status: Literal["no-baseline", "ok", "regression"]
    compared: int                     # metric rows that had a baseline
    regressions: list[str]            # "rw bs qdN op metric: change" of each counted regression
    informational: list[str]          # flagged rows of INFORMATIONAL_METRICS (not counted)
    improvements: int
    reason: str                       # one sentence for the notebook and the check

    @property
    def regressed(self) -> bool:
        return self.status == "regression"


def _label(row: Any) -> str:
    op = f" {row.op}" if row.rw in ("rw", "randrw") else ""
    return (f"{row.side} {row.rw} {row.bs} qd{int(row.iodepth)}{op} {row.metric}: {row.change_pct:+.1f} % "
            f"(threshold ±{row.threshold_pct:.1f} %)")


def verdict(comparison: pd.DataFrame, informational: tuple[str, ...] = INFORMATIONAL_METRICS) -> Verdict:
    """Summarise `compare`'s rows: regressions of counted metrics, informational ones apart."""
    compared = comparison[comparison["status"] != "no-baseline"]
    if compared.empty:
        reasons = sorted(set(comparison["reason"])) if not comparison.empty else ["nothing measured"]
        return Verdict(status="no-baseline", compared=0, regressions=[], informational=[], improvements=0,
                       reason="; ".join(reasons))
    flagged = compared[compared["status"] == "regression"]
    counted = flagged[~flagged["metric"].isin(informational)]
    side_notes = flagged[flagged["metric"].isin(informational)]
    new_points = int((comparison["status"] == "no-baseline").sum())
    regressions = [_label(r) for r in counted.itertuples()]
    status: Literal["ok", "regression"] = "regression" if regressions else "ok"
    reason = (f"{len(regressions)} of {len(compared)} metrics regressed" if regressions
              else f"no regression in {len(compared)} metrics")
    if new_points:
        reason += f"; {new_points} metrics had no baseline point (new in this run)"
    if len(side_notes):
        reason += f"; {len(side_notes)} informational ({', '.join(informational)}) beyond threshold"
    return Verdict(status=status, compared=len(compared), regressions=regressions,
                   informational=[_label(r) for r in side_notes.itertuples()],
                   improvements=int((compared["status"] == "improvement").sum()), reason=reason)
