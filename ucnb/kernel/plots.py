"""Plots of a run's rows (matplotlib PNG: renders in GitHub, nbviewer and offline HTML).

Readable on their own: a legend, the time axis from 0 with the run's UTC start in its caption,
skipped steps drawn as skips (a cross, never a sliver of a bar), steps that never finished
hatched to the end of the run, and every serial marker tick labelled with its name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ucnb.kernel.record import Recorder

COLOURS = {"passed": "#2e7d32", "failed": "#c62828", "skipped": "#8c959f", "running": "#f9a825",
           "interrupted": "#ef6c00"}
MARKER_COLOUR = "#1565c0"
FAULT_COLOUR = "#ef9a9a"
DPI = 110


def utc_caption(t0: float, what: str = "seconds since the run started") -> str:
    return f"{what} (0 s = {datetime.fromtimestamp(t0, UTC):%Y-%m-%d %H:%M:%S} UTC)"


def _row_label(s: dict[str, Any]) -> str:
    label = f"{s['index']}. {s['name']}" + (f" [{s['node']}]" if s.get("node") else "")
    return label if len(label) <= 70 else label[:67] + "…"


def _label_levels(xs: Sequence[float], names: Sequence[str], data_per_char: float) -> list[int]:
    """Greedy rows for labels along x so that no two overlap: a label goes on the first level
    whose previous label ended before it starts."""
    ends: list[float] = []
    levels = []
    for x, name in zip(xs, names, strict=True):
        level = next((i for i, end in enumerate(ends) if end < x), len(ends))
        if level == len(ends):
            ends.append(0.0)
        ends[level] = x + (len(name) + 2) * data_per_char
        levels.append(level)
    return levels


def timeline_figure(steps: Sequence[dict[str, Any]], markers: Sequence[dict[str, Any]],
                    faults: Sequence[dict[str, Any]], t0: float, title: str = "Timeline") -> Figure:
    """Steps and waits as bars, skips as crosses, markers as labelled ticks (one row per node,
    labels stacked so none overlaps), fault windows shaded; x in seconds since `t0` (epoch)."""
    now = max([(s.get("end") or s["start"]) for s in steps] + [m["first_seen"] for m in markers]
              + [t0]) - t0
    xmax = max(now * 1.03, 1.0)
    width_in = 11.0
    data_per_char = xmax / ((width_in * 0.72) * 72 / (6 * 0.62))  # 6 pt labels, ~0.62 em per char
    nodes = list(dict.fromkeys(m["node"] for m in markers))
    per_node = {n: sorted((m for m in markers if m["node"] == n), key=lambda m: m["first_seen"])
                for n in nodes}
    levels = {n: _label_levels([m["first_seen"] - t0 for m in ms],
                               [str(m["marker"]).removesuffix(f".{n}") for m in ms], data_per_char)
              for n, ms in per_node.items()}
    label_step = 0.42   # y units per label level under a marker row
    rows_y: dict[str, float] = {}
    y = float(len(steps))
    for n in nodes:
        rows_y[n] = y
        y += 1 + label_step * (max(levels[n], default=0) + 1)
    bottom = y - 0.6
    labels = [_row_label(s) for s in steps] + [f"serial markers [{n}]" for n in nodes]
    fig, ax = plt.subplots(figsize=(width_in, 1.7 + 0.3 * (bottom + 1.5)))
    for i, s in enumerate(steps):
        start = s["start"] - t0
        if s["outcome"] == "skipped":
            ax.scatter([start], [i], marker="x", s=40, color=COLOURS["skipped"], zorder=3)
            why = "covered by the product" if s.get("kind") == "delegated" else "skipped"
            ax.annotate(why, (start, i), textcoords="offset points", xytext=(6, -3), fontsize=7,
                        color="#57606a")
            continue
        unfinished = s.get("end") is None
        width = max(((s["end"] - t0) if not unfinished else now) - start, now / 400 or 0.01)
        ax.barh(i, width, left=start, height=0.7, color=COLOURS.get(s["outcome"], "#555"),
                alpha=0.45 if s.get("kind") == "wait" else 0.9, hatch="//" if unfinished else None,
                edgecolor="#6e4b00" if unfinished else "none", linewidth=0.6)
    for n in nodes:
        row = rows_y[n]
        xs = [m["first_seen"] - t0 for m in per_node[n]]
        ax.scatter(xs, [row] * len(xs), marker="|", s=160, color=MARKER_COLOUR, zorder=3)
        for m, x, level in zip(per_node[n], xs, levels[n], strict=True):
            label_y = row + 0.45 + label_step * level
            ax.plot([x, x], [row, label_y], color=MARKER_COLOUR, linewidth=0.4, alpha=0.6)
            ax.text(x, label_y, " " + str(m["marker"]).removesuffix(f".{n}"), fontsize=6, va="center",
                    color=MARKER_COLOUR)
    for k, f in enumerate(faults):   # labels on two alternating lines, so neighbours do not overlap
        ax.axvspan(f["start"] - t0, (f["end"] - t0) if f.get("end") else now, color=FAULT_COLOUR,
                   alpha=0.3, zorder=0)
        ax.text(f["start"] - t0, -1.0 - 0.7 * (k % 2), f" {f['kind']} ({f['targets']})", fontsize=7,
                va="bottom", color="#8b1a1a")
    ax.set_yticks([*range(len(steps)), *rows_y.values()], labels, fontsize=8)
    ax.set_ylim(bottom, -2.0 if faults else -0.6)
    ax.set_xlim(0, xmax)
    ax.set_xlabel(utc_caption(t0))
    ax.set_title(title, pad=24)
    ax.grid(axis="x", alpha=0.3)
    handles = [Patch(color=COLOURS["passed"], label="step passed"),
               Patch(color=COLOURS["failed"], label="step failed"),
               Patch(facecolor=COLOURS["running"], hatch="//", edgecolor="#6e4b00",
                     label="did not finish"),
               Patch(color=COLOURS["passed"], alpha=0.45, label="wait (lighter)"),
               Line2D([], [], marker="x", linestyle="none", color=COLOURS["skipped"], label="skipped"),
               Line2D([], [], marker="|", linestyle="none", markersize=10, color=MARKER_COLOUR,
                      label="serial marker")]
    if any(s["outcome"] == "interrupted" for s in steps):
        handles.append(Patch(color=COLOURS["interrupted"], label="interrupted by the user"))
    if faults:
        handles.append(Patch(color=FAULT_COLOUR, alpha=0.5, label="fault window"))
    # Between the title and the plot: next to what it explains, however tall the figure is.
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(handles),
              fontsize=7, frameon=False, borderaxespad=0.2)
    fig.set_layout_engine("tight")   # laid out as it is drawn: saved with one draw (see `save`)
    return fig


def timeline(recorder: Recorder, title: str = "Timeline") -> Figure:
    """The run's timeline (see `timeline_figure`), from a live recorder."""
    # Pixels are never redacted afterwards: a step named after a secret is masked before drawing.
    steps = [{**asdict(s), "name": recorder.redactor.text(s.name)} for s in recorder.rows["steps"]]
    return timeline_figure(steps,
                           [asdict(m) for m in recorder.rows["markers"]],
                           [asdict(f) for f in recorder.rows["faults"]], recorder.started, title)


def save(fig: Figure, path: Path) -> Path:
    """Write a figure as PNG (its legend and labels included) and free it. A figure with a layout
    engine fits its artists itself; cropping it to them as well would draw it twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches=None if fig.get_layout_engine() else "tight")
    plt.close(fig)
    return path


def latency(recorder: Recorder, ops: list[tuple[float, float | None, str]],
            title: str = "Workload latency") -> Figure:
    """Each completed operation (time, latency, type) over the run, fault windows shaded."""
    t0 = recorder.started
    fig, ax = plt.subplots(figsize=(10, 3.4))
    for kind, colour, words in (("ok", "#2e7d32", "acknowledged"), ("info", "#f9a825", "indeterminate"),
                                ("fail", "#c62828", "failed")):
        xs = [t - t0 for t, lat, k in ops if k == kind and lat is not None]
        ys = [lat for _, lat, k in ops if k == kind and lat is not None]
        if xs:
            ax.scatter(xs, ys, s=10, color=colour, label=f"{words} ({kind}, {len(xs)})")
    now = max([t for t, _, _ in ops] + [t0]) - t0
    faults = recorder.rows["faults"]
    for f in faults:
        ax.axvspan(f.start - t0, (f.end - t0) if f.end else now, color=FAULT_COLOUR, alpha=0.3)
    ax.set_xlim(0, max(now * 1.03, 1.0))
    ax.set_ylim(bottom=0)
    for f in faults:
        ax.text(f.start - t0, ax.get_ylim()[1] * 0.95, f.kind, fontsize=7, va="top")
    if faults:
        ax.scatter([], [], marker="s", color=FAULT_COLOUR, alpha=0.6, label="fault window")
    ax.set_xlabel(utc_caption(t0))
    ax.set_ylabel("latency (s)")
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)  # off the data
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
