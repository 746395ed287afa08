"""The one table helper: every table a notebook or a proof-root page shows goes through `html`.

Rules (a reviewer reads tables, not DataFrames): every row and every character (no truncation),
no index column, text left-aligned and numbers right-aligned, booleans as yes/no and missing
values as an em dash, units in the headers (`time_to_healthy_s` reads "time to healthy (s)").

The markup is plain HTML with inline styles and no <style> block or script: JupyterLab's
sanitiser (notebooks opened from disk are untrusted) strips <style> blocks and nbconvert's lab
template right-aligns every output cell with a fixed table layout, so per-cell inline styles are
the only thing that renders the same in both. pandas' own `to_html` cannot align cells and its
Styler needs a <style> block; neither is used. pandas is only imported for DataFrames handed in,
so the runner can render tables from plain rows without it.
"""

from __future__ import annotations

import html as html_mod
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

MISSING = "—"
# A trailing `_<unit>` in a column name is the column's unit.
UNITS = {"s": "s", "ms": "ms", "us": "µs", "ns": "ns", "kib": "KiB", "mib": "MiB", "gib": "GiB",
         "bytes": "bytes", "pct": "%", "iops": "IOPS"}
WORDS = {"utc": "UTC", "id": "id", "ok": "ok"}

TABLE_STYLE = ("border-collapse:collapse;table-layout:auto;margin:4px 0 12px 0;"
               "font-size:13px;line-height:1.35")
# No overflow-wrap: Chromium lets it shrink table columns below their words ("compone|nt").
CELL_STYLE = "border:1px solid #d0d7de;padding:3px 8px;vertical-align:top;white-space:pre-wrap;max-width:none"
HEAD_STYLE = CELL_STYLE + ";background:#f6f8fa;font-weight:600;text-align:left"
CAPTION_STYLE = "caption-side:top;text-align:left;color:#57606a;padding:2px 0 4px 0;font-size:13px"


def header(name: object) -> str:
    """A column name as a reader wants it: words, and the unit in parentheses."""
    text = str(name)
    if " " in text or not text:
        return text
    words = text.split("_")
    unit = UNITS.get(words[-1].lower()) if len(words) > 1 else None
    if unit:
        words = words[:-1]
    readable = " ".join(WORDS.get(w.lower(), w) for w in words if w)
    return f"{readable} ({unit})" if unit else readable


def is_missing(value: object) -> bool:
    if value is None:
        return True
    kind = type(value).__name__
    if isinstance(value, float) or kind.startswith("float"):
        return math.isnan(float(value))  # type: ignore[arg-type]
    return kind in ("NAType", "NaTType")  # pandas' NA and NaT, without importing pandas


def cell_text(value: object) -> str:
    """One value as text: yes/no, an em dash for missing, numbers without float noise."""
    if is_missing(value):
        return MISSING
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "yes" if value else "no"
    if isinstance(value, float) or type(value).__name__.startswith("float"):
        return number_text(float(value))  # type: ignore[arg-type]
    if isinstance(value, datetime):
        return utc_text(value.timestamp())
    if isinstance(value, Mapping):
        return json.dumps(value, default=str, ensure_ascii=False)
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(cell_text(v) for v in value) if value else MISSING
    return str(value)


def number_text(value: float) -> str:
    """3 decimals at most (trailing zeros dropped); small values keep 3 significant digits."""
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if value != 0 and abs(value) < 0.001:
        return f"{value:.3g}"
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def utc_text(epoch: float | None) -> str:
    """An epoch time as ISO 8601 UTC with milliseconds (the one absolute clock of every table)."""
    if epoch is None or is_missing(epoch):
        return MISSING
    return datetime.fromtimestamp(float(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _is_number(value: object) -> bool:
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return False
    return isinstance(value, (int, float)) or type(value).__name__.startswith(("int", "float", "uint"))


def _escape(text: str) -> str:
    # Newlines as character references: a table inside a markdown cell must not contain a blank
    # line (it would end the HTML block there); inside pre-wrap cells they still break lines.
    return html_mod.escape(text).replace("\n", "&#10;")


def html(columns: Sequence[object], rows: Iterable[Sequence[object]], caption: str = "",
         raw_columns: Iterable[int] = ()) -> str:
    """A table from column names and rows of values (values in `raw_columns` are trusted HTML)."""
    raw = set(raw_columns)
    rows = [list(r) for r in rows]
    numeric = [bool(rows) and all(_is_number(r[i]) or is_missing(r[i]) for r in rows)
               and any(_is_number(r[i]) for r in rows) for i in range(len(columns))]
    parts = [f'<table class="ucnb-table" style="{TABLE_STYLE}">']
    if caption:
        parts.append(f'<caption style="{CAPTION_STYLE}">{_escape(caption)}</caption>')
    parts.append("<thead><tr>" + "".join(
        f'<th style="{HEAD_STYLE}">{_escape(header(c))}</th>' for c in columns) + "</tr></thead><tbody>")
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            align = "right;font-variant-numeric:tabular-nums" if numeric[i] else "left"
            text = str(value) if i in raw else _escape(cell_text(value))
            cells.append(f'<td style="{CELL_STYLE};text-align:{align}">{text}</td>')
        parts.append("<tr>" + "".join(cells) + "</tr>")
    if not rows:
        parts.append(f'<tr><td style="{CELL_STYLE};text-align:left;color:#57606a" '
                     f'colspan="{max(1, len(columns))}">(no rows)</td></tr>')
    parts.append("</tbody></table>")
    return "".join(parts)


def records_html(records: Sequence[Mapping[str, object]], caption: str = "") -> str:
    """A table from dict rows (columns in first-seen order)."""
    columns: list[str] = []
    for record in records:
        columns += [k for k in record if k not in columns]
    return html(columns, ([r.get(c) for c in columns] for r in records), caption)


def frame_html(frame: Any) -> str:
    """A DataFrame: a default RangeIndex is dropped, a meaningful index becomes columns;
    `frame.attrs["caption"]` (if set) is shown above it."""
    import pandas as pd

    caption = str(frame.attrs.get("caption", "")) if hasattr(frame, "attrs") else ""
    if not isinstance(frame.index, pd.RangeIndex) or frame.index.name is not None:
        frame = frame.reset_index()
    columns = [" / ".join(str(p) for p in c if str(p)) if isinstance(c, tuple) else c for c in frame.columns]
    return html(columns, frame.itertuples(index=False, name=None), caption)


def install_formatter() -> bool:
    """Make `frame_html` how this IPython kernel shows every DataFrame (lanes' step tables
    included, without changes on their side). False outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    import pandas as pd

    shell.display_formatter.formatters["text/html"].for_type(pd.DataFrame, frame_html)
    return True
