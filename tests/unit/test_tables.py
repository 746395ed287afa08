"""The one table helper: no truncation, no index, alignment, yes/no/—, units in headers."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from ucnb.evidence import tables


def _cells(html: str) -> list[str]:
    return re.findall(r"<td[^>]*>(.*?)</td>", html)


def _aligns(html: str) -> list[str]:
    return re.findall(r"<td[^>]*text-align:(left|right)", html)


@pytest.mark.parametrize(("name", "header"), [
    ("time_to_healthy_s", "time to healthy (s)"), ("duration_ms", "duration (ms)"),
    ("memory_mib", "memory (MiB)"), ("since_power_on_s", "since power on (s)"), ("utc", "UTC"),
    ("node_id", "node id"), ("stands_in", "stands in"), ("why not", "why not"), ("s", "s"),
    ("bytes", "bytes"), ("fs_kib", "fs (KiB)"),
])
def test_headers_are_words_with_their_unit(name: str, header: str) -> None:
    assert tables.header(name) == header


def test_long_text_is_never_cut_and_there_is_no_index_column() -> None:
    reason = "etcd 3.4 (Debian etcd-server), a Raft KV with learners and leader transfer " * 3
    frame = pd.DataFrame([{"component": "chainfire", "stands_in": reason}] * 70)  # > pandas' 60 rows
    html = tables.frame_html(frame)
    assert html.count(reason.strip()) == 70 and "..." not in html
    assert len(re.findall(r"<th\s", html)) == 2  # two columns, no index header
    assert ">0<" not in html and ">69<" not in html   # no index values


def test_booleans_missing_values_and_numbers() -> None:
    frame = pd.DataFrame({"ok": [True, False, np.bool_(True)], "t_s": [1.5, float("nan"), 0.1 + 0.2],
                          "n": [1, 2, 3], "what": ["a", None, ["x", "y"]]})
    cells = _cells(tables.frame_html(frame))
    assert cells[:4] == ["yes", "1.5", "1", "a"]
    assert cells[4:8] == ["no", "—", "2", "—"]
    assert cells[8:] == ["yes", "0.3", "3", "x, y"]


def test_text_left_numbers_right() -> None:
    html = tables.frame_html(pd.DataFrame({"name": ["a", "b"], "value_s": [1.0, None]}))
    assert _aligns(html) == ["left", "right", "left", "right"]
    assert 'text-align:left">name' in html.replace("</th>", "")  # headers left-aligned too


def test_escaping_newlines_and_empty_tables() -> None:
    html = tables.html(["detail"], [["<b>x</b>\nsecond line"]])
    assert "&lt;b&gt;x&lt;/b&gt;&#10;second line" in html and "\n" not in html
    assert "(no rows)" in tables.frame_html(pd.DataFrame(columns=["a", "b"]))


def test_meaningful_index_kept_as_columns_and_caption_shown() -> None:
    frame = pd.DataFrame({"iops": [100, 200]}, index=pd.Index(["qd1", "qd16"], name="job"))
    frame.attrs["caption"] = "fio 4k randread"
    html = tables.frame_html(frame)
    assert "<caption" in html and "fio 4k randread" in html
    assert _cells(html) == ["qd1", "100", "qd16", "200"]


def test_utc_text_and_small_numbers() -> None:
    assert tables.utc_text(0) == "1970-01-01T00:00:00.000Z"
    assert tables.utc_text(None) == "—"
    assert tables.number_text(0.000123) == "0.000123" and tables.number_text(2.0) == "2"
    assert tables.number_text(-0.0001) == "-0.0001" and tables.number_text(float("inf")) == "∞"


def test_the_kernel_shows_every_dataframe_through_the_helper() -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        assert tables.install_formatter()
        data, _ = shell.display_formatter.format(pd.DataFrame({"ok": [True]}))
        assert 'class="ucnb-table"' in data["text/html"] and ">yes<" in data["text/html"]
    finally:
        InteractiveShell.clear_instance()
