"""Plots of a run's rows (matplotlib PNG: renders in GitHub, nbviewer and offline HTML)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg") if not matplotlib.get_backend().lower().startswith(("module://", "inline")) else None
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .record import Recorder  # noqa: E402

COLOURS = {"passed": "#2e7d32", "failed": "#c62828", "skipped": "#9e9e9e", "running": "#f9a825"}


def timeline(recorder: Recorder, title: str = "Timeline") -> Figure:
    """Steps and waits as bars (seconds since the run started), markers as ticks, faults shaded."""
    steps = recorder.table("steps")
    markers = recorder.table("markers")
    faults = recorder.table("faults")
    labels = [f"{r.index}. {r.name}" + (f" [{r.node}]" if r.node else "") for r in steps.itertuples()]
    height = max(2.5, 0.32 * (len(steps) + 2))
    fig, ax = plt.subplots(figsize=(10, height))
    for y, r in enumerate(steps.itertuples()):
        end = r.end if r.end == r.end and r.end is not None else r.start  # NaN while running
        width = max(end - r.start, 0.05)
        ax.barh(y, width, left=r.start, color=COLOURS.get(r.outcome, "#555"),
                alpha=0.55 if r.kind == "wait" else 0.9)
    if len(markers):
        y = len(steps)
        ax.scatter(markers["first_seen"], [y] * len(markers), marker="|", s=200, color="#1565c0")
        labels.append("serial markers")
    for r in faults.itertuples():
        end = r.end if r.end == r.end and r.end is not None else steps["end"].max()
        ax.axvspan(r.start, end, color="#ef9a9a", alpha=0.25)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the run started")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
