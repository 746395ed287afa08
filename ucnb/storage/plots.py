"""Plots of fio tables against iodepth (PNG figures, the house style of ucnb.plots).

Figures are built with matplotlib's object API (no pyplot): nothing is registered globally, so a
lane making dozens of them neither leaks nor shows a figure twice; `savefig` renders through Agg.
Each series is one (rw, bs[, op]) workload, per side when guest and host are both given: the
median of the repetitions as the line, their min-max as a band and a bar at each point.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

COLOURS = ["#1565c0", "#c62828", "#2e7d32", "#f9a825", "#6a1b9a", "#00838f", "#ef6c00", "#5d4037"]
STYLES = {"guest": ("-", "o"), "host": ("--", "s")}


def _series(df: pd.DataFrame) -> Iterator[tuple[str, str, str, pd.DataFrame]]:
    """(label, colour, side, rows) per workload and side, in a stable order."""
    sides = sorted(str(s) for s in df["side"].unique())
    mixed = {str(rw) for rw in df.loc[df["rw"].isin(["rw", "randrw"]), "rw"]}
    workloads = sorted({(str(rw), str(bs), str(op)) for rw, bs, op in zip(df["rw"], df["bs"], df["op"],
                                                                           strict=True)})
    for i, (rw, bs, op) in enumerate(workloads):
        for side in sides:
            rows = df[(df["rw"] == rw) & (df["bs"] == bs) & (df["op"] == op) & (df["side"] == side)]
            if rows.empty:
                continue
            label = f"{rw} {bs}" + (f" ({op})" if rw in mixed else "")
            label += f", {side}" if len(sides) > 1 else ""
            yield label, COLOURS[i % len(COLOURS)], side, rows


def _select(df: pd.DataFrame, bs: str | list[str] | None) -> pd.DataFrame:
    """Only the given block size(s): 1M IOPS next to 4k IOPS are a flat line at the bottom."""
    if bs is None:
        return df
    return df[df["bs"].isin([bs] if isinstance(bs, str) else bs)]


def _legend(ax: Axes) -> None:
    """Outside the plot, on the right: inside it hides the low-iodepth points."""
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _draw(ax: Axes, df: pd.DataFrame, metric: str, positive_only: bool = False) -> None:
    depths: set[int] = set()
    for label, colour, side, rows in _series(df):
        if positive_only:
            rows = rows[rows[metric] > 0]
        stats = rows.groupby("iodepth")[metric].agg(["median", "min", "max"]).dropna().sort_index()
        if stats.empty:
            continue
        x = stats.index.to_numpy()
        depths.update(int(d) for d in x)
        line, marker = STYLES.get(side, ("-", "o"))
        ax.plot(x, stats["median"], linestyle=line, marker=marker, color=colour, label=label)
        ax.vlines(x, stats["min"], stats["max"], color=colour, alpha=0.6, linewidth=2)
        if len(x) > 1:
            ax.fill_between(x, stats["min"], stats["max"], color=colour, alpha=0.15, linewidth=0)
    ax.set_xscale("log", base=2)
    if depths:
        ax.xaxis.set_major_locator(FixedLocator(sorted(depths)))
        ax.xaxis.set_major_formatter(lambda v, _pos: f"{v:g}")
        ax.xaxis.set_minor_locator(NullLocator())
        lo, hi = min(depths), max(depths)
        ax.set_xlim(lo / 1.4, hi * 1.4)
    ax.set_xlabel("iodepth (queue depth, log2)")
    ax.grid(alpha=0.3)


def _title(df: pd.DataFrame, title: str) -> str:
    reps = df["rep"].nunique() if not df.empty else 0
    return f"{title} (median of {reps} repetition{'s' if reps != 1 else ''}, band: min-max)"


def _metric(df: pd.DataFrame, metric: str, ylabel: str, title: str, bs: str | list[str] | None) -> Figure:
    """One metric against iodepth, y from 0 (`bs`: only these block sizes)."""
    df = _select(df, bs)
    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    _draw(ax, df, metric)
    ax.set_ylim(bottom=0)
    ax.set_ylabel(ylabel)
    ax.set_title(_title(df, title))
    _legend(ax)
    fig.tight_layout()
    return fig


def iops(df: pd.DataFrame, title: str = "fio IOPS", bs: str | list[str] | None = None) -> Figure:
    """IOPS against iodepth, y from 0 (`bs`: only these block sizes)."""
    return _metric(df, "iops", "IOPS (operations/s)", title, bs)


def bandwidth(df: pd.DataFrame, title: str = "fio bandwidth", bs: str | list[str] | None = None) -> Figure:
    """Bandwidth against iodepth, MiB/s, y from 0 (`bs`: only these block sizes)."""
    return _metric(df, "bw_MiBps", "bandwidth (MiB/s)", title, bs)


def latency(df: pd.DataFrame, title: str = "fio latency percentiles",
            bs: str | list[str] | None = None) -> Figure:
    """p50, p99 and p99.9 latency against iodepth, one panel each, log y: a 4k QD1 and a 1M QD16
    latency differ by orders of magnitude, and a linear axis would flatten the small ones."""
    df = _select(df, bs)
    fig = Figure(figsize=(14, 4.2))
    axes = fig.subplots(1, 3, sharey=True)
    for ax, (metric, name) in zip(axes, (("lat_p50_us", "p50"), ("lat_p99_us", "p99"),
                                         ("lat_p99_9_us", "p99.9")), strict=True):
        _draw(ax, df, metric, positive_only=True)
        ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
    axes[0].set_ylabel("latency (µs, log)")
    _legend(axes[-1])
    fig.suptitle(_title(df, title))
    fig.tight_layout()
    return fig
