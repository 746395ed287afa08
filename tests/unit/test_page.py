"""The sealed page: self-contained HTML, the banner first, run facts last, even for a notebook
that stopped early; every file world-readable; junit.xml per proof root."""

from __future__ import annotations

import html as html_mod
import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from ucnb.errors import LaneFailure
from ucnb.evidence import html, page
from ucnb.evidence import proof as evidence
from ucnb.evidence.redact import Redactor
from ucnb.kernel.record import Recorder

REMOTE = re.compile(r"https?://", re.I)

DIRTY = """<html><head><title>Notebook</title><script src=""></script>
<script src="https://cdn.example/require.min.js"></script>
<link rel="stylesheet" href="https://fonts.example/css">
<style type="text/css">
/* google-material-color https://github.com/danlevan/google-material-color */
@import url("https://fonts.example/font.css");
.a { background: url(https://img.example/x.png) no-repeat; }
.b { background-image: url("data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'%3E%3C/svg%3E"); }
</style></head><body>
<script type="text/x-mathjax-config">init_mathjax = function() {}</script>
<script type="module">const m = await import("https://cdnjs.cloudflare.com/mermaid.mjs");</script>
<img src="https://img.example/tracker.png" alt="t"><img src="data:image/png;base64,AAAA" alt="local">
<a href="https://example.com/docs">docs</a> <a href="logs/node01-commands.log">log</a>
<td>timeout 3 wget -q -O- http://127.0.0.1:2480/cgi-bin/health</td>
<svg xmlns="http://www.w3.org/2000/svg"><circle r="1"/></svg><SCRIPT>alert(1)</SCRIPT>
</body></html>"""


def test_cleaning_leaves_no_remote_reference_and_no_script() -> None:
    clean = html.self_contained(DIRTY)
    assert not REMOTE.search(clean), REMOTE.findall(clean)
    assert "<script" not in clean.lower() and "mermaid" not in clean and "mathjax" not in clean
    assert "<link" not in clean and "@import" not in clean and "google-material-color" not in clean
    assert 'src="data:image/png;base64,AAAA"' in clean and 'href="logs/node01-commands.log"' in clean
    assert ">docs</a>" in clean and "example.com" not in clean   # the link is gone, its text kept
    # a URL that is only text reads the same in the browser
    assert "wget -q -O- http://127.0.0.1:2480/cgi-bin/health" in html_mod.unescape(clean)
    # CSS does not decode character references: the data: URI keeps a working (percent-encoded) scheme
    assert "xmlns='http%3A//www.w3.org/2000/svg'" in clean


def _stopped_early(root: Path) -> Path:
    """A proof root whose notebook stopped in a middle cell: no verdict output, no timeline."""
    rec = Recorder(root / evidence.EVENTS)
    with rec.step("boot", "node01"):
        rec.marker("node01", "lab.boot.node01", rec.started + 1, 1.0)
    with pytest.raises(LaneFailure), rec.step("wait: flaredb healthy", "node01", kind="wait") as row:
        row.detail = "timeout after 6 tries; last: exit 1: Connection refused"
        raise LaneFailure("timed out")
    (root / "logs" / "node01-serial.log").write_text("ULTRACLOUD_MARKER lab.boot.node01\n")
    os.chmod(root / "logs" / "node01-serial.log", 0o600)   # as virtlogd writes it
    (root / "parameters.yaml").write_text("lane_name: lane\nstop_services: [flaredb]\n")
    (root / "environment.txt").write_text("vm_accelerator_mode=tcg\nvm_accelerator_reason=probe failed\n")
    nb = new_notebook(cells=[
        new_markdown_cell("# lane\n\nWhat it proves."),
        new_code_cell("lane.step(run, node)", outputs=[
            new_output("display_data", data={"text/html": "<p>http://10.77.1.11:2379 answered</p>",
                                             "text/plain": "x"}),
            new_output("error", ename="LaneFailure", evalue="timed out", traceback=["LaneFailure"])])])
    nbformat.write(nb, root / "lane.ipynb")
    return root / "lane.ipynb"


def test_a_notebook_that_stopped_early_still_gets_banner_timeline_facts_and_links(tmp_path: Path) -> None:
    root = tmp_path / "lane" / "20260101T000000Z-r1"
    for sub in ("logs", "plots"):
        (root / sub).mkdir(parents=True)
    notebook = _stopped_early(root)
    result = evidence.build_result(root, "lane", "lab", "r1", error={"type": "LaneFailure", "kind": "lane",
                                                                     "message": "timed out"})
    evidence.seal(root, notebook, Redactor(), result)

    assert (root / "plots" / "timeline.png").stat().st_size > 5_000   # drawn at seal time
    page_html = (root / "lane.html").read_text()
    assert not REMOTE.search(page_html) and "<script" not in page_html
    assert re.search(r"<title>lane · FAILED · \d{4}-\d\d-\d\d</title>", page_html)
    body = page_html[page_html.index("<body"):]
    banner_at = body.index('id="ucnb-verdict"')
    assert banner_at < body.index("What it proves") < body.index('id="run-facts"')
    text = html_mod.unescape(re.sub(r"<[^>]+>", " ", body))
    assert "failing step" in text and "wait: flaredb healthy [node01]" in text
    assert "timeout after 6 tries; last: exit 1: Connection refused" in text
    assert "The notebook stopped before its last cell" in text
    assert body.count("data:image/png;base64,") >= 1   # the seal's timeline, inlined
    for name in ("result.json", "junit.xml", "logs/node01-serial.log", "parameters.yaml", "lane.html"):
        assert f'href="{name}"' in body, name
    assert "stop_services" in text and "[flaredb]" in text and "vm_accelerator_reason" in text

    # the notebook file shows the same banner when opened (first cell), and a second seal replaces it
    nb = nbformat.read(notebook, as_version=4)
    assert "ucnb-verdict" in nb.cells[0].metadata["tags"] and "FAILED" in nb.cells[0].source
    evidence.seal(root, notebook, Redactor(), result)
    nb = nbformat.read(notebook, as_version=4)
    assert sum("ucnb-seal" in c.metadata.get("tags", []) for c in nb.cells) == 2
    nbformat.validate(nb)

    for path in root.rglob("*"):
        mode = path.stat().st_mode & 0o777
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))
    assert evidence.verify_checksums(root) == []


def test_each_proof_root_has_its_own_junit(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "logs").mkdir(parents=True)
    (root / "plots").mkdir()
    _stopped_early(root)
    evidence.build_result(root, "lane", "lab", "r1", error={"type": "LaneFailure", "kind": "lane",
                                                            "message": "timed out"})
    suites = ET.parse(root / "junit.xml").getroot()
    assert suites.get("failures") == "2" and suites.get("tests") == "3"
    lane_case = suites.find("testsuite/testcase")
    assert lane_case is not None and lane_case.get("name") == "lane"
    failure = lane_case.find("failure")
    assert failure is not None and "Connection refused" in failure.get("message", "")


def test_page_without_a_notebook_is_still_written(tmp_path: Path) -> None:
    """papermill never wrote the notebook (the kernel did not start): the page is the banner."""
    root = tmp_path / "root"
    (root / "logs").mkdir(parents=True)
    result = evidence.build_result(root, "lane", "lab", "r1", error={
        "type": "DeadKernelError", "kind": "kernel-died", "message": "Kernel died"}, exit_code=4)
    evidence.seal(root, root / "lane.ipynb", Redactor(), result)
    text = (root / "lane.html").read_text()
    assert "FAILED" in text and "Kernel died" in text and json.loads((root / "result.json").read_text())
    assert page.finished_in_notebook(nbformat.read(root / "lane.ipynb", as_version=4)) is False
