"""Plots of a run's rows (matplotlib PNG: renders in GitHub, nbviewer and offline HTML)."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from ucnb.kernel.record import Recorder

COLOURS = {"passed": "#2e7d32", "failed": "#c62828", "skipped": "#9e9e9e", "running": "#f9a825"}


def timeline(recorder: Recorder, title: str = "Timeline") -> Figure:
    """Steps and waits as bars (seconds since the run started), markers as ticks, faults shaded."""
    t0 = recorder.started
    steps = recorder.rows["steps"]
    markers = recorder.rows["markers"]
    now = max([s.end or s.start for s in steps] + [t0]) - t0
    # Pixels are never redacted afterwards: a step named after a secret is masked before drawing.
    labels = [recorder.redactor.text(f"{s.index}. {s.name}" + (f" [{s.node}]" if s.node else ""))
              for s in steps]
    fig, ax = plt.subplots(figsize=(10, max(2.5, 0.32 * (len(steps) + 2))))
    for y, s in enumerate(steps):
        start = s.start - t0
        width = max((s.end - t0 if s.end else now) - start, 0.05)
        ax.barh(y, width, left=start, color=COLOURS.get(s.outcome, "#555"),
                alpha=0.55 if s.kind == "wait" else 0.9)
    if markers:
        ax.scatter([m.first_seen - t0 for m in markers], [len(steps)] * len(markers), marker="|", s=200,
                   color="#1565c0")
        labels.append("serial markers")
    for f in recorder.rows["faults"]:
        ax.axvspan(f.start - t0, (f.end - t0) if f.end else now, color="#ef9a9a", alpha=0.25)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the run started")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def latency(recorder: Recorder, ops: list[tuple[float, float | None, str]],
            title: str = "Workload latency") -> Figure:
    """Each completed operation (time, latency, type) over the run, fault windows shaded."""
    t0 = recorder.started
    fig, ax = plt.subplots(figsize=(10, 3.2))
    for kind, colour in (("ok", "#2e7d32"), ("info", "#f9a825"), ("fail", "#c62828")):
        xs = [t - t0 for t, lat, k in ops if k == kind and lat is not None]
        ys = [lat for _, lat, k in ops if k == kind and lat is not None]
        if xs:
            ax.scatter(xs, ys, s=10, color=colour, label=f"{kind} ({len(xs)})")
    now = max([t for t, _, _ in ops] + [t0]) - t0
    for f in recorder.rows["faults"]:
        ax.axvspan(f.start - t0, (f.end - t0) if f.end else now, color="#ef9a9a", alpha=0.25)
        ax.text(f.start - t0, ax.get_ylim()[1] * 0.95, f.kind, fontsize=7, va="top")
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("latency (s)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
