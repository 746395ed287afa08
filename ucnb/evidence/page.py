"""What the seal adds to the executed notebook before it becomes the page: the verdict banner as
the first cell, and a closing "Run facts" cell (figures, skipped steps with their reasons,
parameters, environment.txt, the timeline when the notebook stopped before drawing it, and a
relative link to every file of the proof root).

Both are markdown cells tagged `ucnb-seal` (a second seal replaces them), written from
result.json and the proof root alone, so they are there however early the notebook stopped; the
notebook file opened in JupyterLab shows them too.
"""

from __future__ import annotations

import html as html_mod
from pathlib import Path
from typing import Any

import yaml

from ucnb.evidence import banner, tables
from ucnb.files import read_kv

SEAL_TAG = "ucnb-seal"
RESULT_MIME = "application/vnd.ucnb.result+json"


def finished_in_notebook(notebook: Any) -> bool:
    """Did the notebook reach `run.finish()` (its verdict output is there)?"""
    return any(RESULT_MIME in o.get("data", {}) for c in notebook.cells if c.cell_type == "code"
               for o in c.get("outputs", []))


def read_notebook(path: Path) -> Any:
    """The executed notebook, or an empty one when papermill never wrote it (or it is unreadable)."""
    import nbformat

    try:
        return nbformat.read(path, as_version=4)
    except (OSError, ValueError):
        return nbformat.v4.new_notebook()


def add_seal_cells(notebook: Any, root: Path, result: dict[str, Any], page_files: list[str]) -> Any:
    """Put the banner first and the run facts last (replacing those of an earlier seal)."""
    from nbformat.v4 import new_markdown_cell

    finished = finished_in_notebook(notebook)
    notebook.cells = [c for c in notebook.cells if SEAL_TAG not in c.get("metadata", {}).get("tags", [])]
    links = [("run facts", "#run-facts"), ("result.json", "result.json"), ("junit.xml", "junit.xml"),
             ("timeline.csv", "timeline.csv"), ("logs/", "logs/")]
    if (root / "plots" / "timeline.png").exists():
        links.insert(1, ("timeline plot", "plots/timeline.png"))
    notebook.cells.insert(0, new_markdown_cell(banner.html(result, links),
                                               metadata={"tags": [SEAL_TAG, "ucnb-verdict"]}))
    notebook.cells.append(new_markdown_cell(facts(root, result, page_files, finished),
                                            metadata={"tags": [SEAL_TAG, "ucnb-run-facts"]}))
    notebook.metadata["title"] = banner.title(result)
    return notebook


def _e(text: object) -> str:
    return html_mod.escape(str(text))


def facts(root: Path, result: dict[str, Any], page_files: list[str], finished: bool) -> str:
    """The closing cell: HTML blocks separated by blank lines (each one line: markdown-safe)."""
    blocks = ['<h2 id="run-facts">Run facts</h2>']
    if not finished:
        blocks.append("<p><b>The notebook stopped before its last cell</b>, so it drew no timeline and "
                      "showed no verdict of its own; the banner above and the timeline below were "
                      "written at seal time from the run's records (events.jsonl, result.json).</p>")
        if (root / "plots" / "timeline.png").exists():
            blocks.append("![timeline of the run, drawn at seal time](plots/timeline.png)")
    figures = result.get("figures") or {}
    if figures:
        blocks.append(tables.html(["figure", "value", "unit"],
                                  [[k, v.get("value"), v.get("unit") or ""] for k, v in figures.items()],
                                  "Headline figures (the figures of result.json)"))
    skipped = result.get("skipped") or []
    if skipped:
        blocks.append(tables.html(
            ["skipped step", "node", "why", "covered by the product instead"],
            [[s["name"], s.get("node") or "", s.get("reason") or "", bool(s.get("delegated"))]
             for s in skipped], "Skipped steps, with their reasons"))
    failed = result.get("failed_checks") or []
    if failed:
        blocks.append(tables.html(["check", "node", "expected", "observed"],
                                  [[c["name"], c.get("node") or "", c["expected"], c["observed"]]
                                   for c in failed], "Failed checks"))
    parameters = _parameters(root)
    if parameters:
        blocks.append(tables.html(["parameter", "value"], parameters.items(),
                                  "Parameters (parameters.yaml, redacted)"))
    environment = read_kv(root / "environment.txt")
    if environment:
        blocks.append(tables.html(["key", "value"], environment.items(), "Environment (environment.txt)"))
    blocks.append(tables.html(["file", "bytes"], _file_rows(root, page_files),
                              "Every file of the proof root (relative links)", raw_columns=[0]))
    return "\n\n".join(blocks)


def _parameters(root: Path) -> dict[str, str]:
    path = root / "parameters.yaml"
    try:
        data = yaml.safe_load(path.read_text()) if path.exists() else None
    except yaml.YAMLError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v if isinstance(v, str) else yaml.safe_dump(v, default_flow_style=True).strip()
            .removesuffix("...").strip() for k, v in data.items()}


def _file_rows(root: Path, page_files: list[str]) -> list[list[object]]:
    """Every file under root, plus the ones the seal writes after this cell (page, checksums)."""
    found: dict[str, int | None] = {p.relative_to(root).as_posix(): p.stat().st_size
                                    for p in root.rglob("*") if p.is_file() and not p.is_symlink()}
    for name in page_files:   # rewritten after this cell is made: their size is not known yet
        found[name] = None
    return [[f'<a href="{_e(name)}">{_e(name)}</a>', size] for name, size in sorted(found.items())]
