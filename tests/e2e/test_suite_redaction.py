"""Secrets reach no file of a suite root (its lanes' roots included) and no console output, in any
encoding: a lane whose failure message quotes the token (a required component named after it, so
the manifest check names it) runs in a suite; every file is read raw, JSON-decoded, CSV-parsed and
HTML-unescaped, and the console, wrapped at 40 columns, holds no 8-character piece of the token."""

from __future__ import annotations

import csv
import html
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from ..conftest import ROOT
from ..lab_fixtures import leftovers, runs_in

CANARIES = ['pä<ss"w\\rd&\'x', "tok4" + "9f3b1c7e5a2d4f6b8c0e1a3b5d7f9c2e4a6b"]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _decoded(path: Path) -> Iterator[str]:
    """The file's text as a reader would see it: raw, JSON-decoded, CSV cells, HTML-unescaped."""
    raw = path.read_bytes().decode("utf-8", "replace")
    yield raw
    yield html.unescape(raw)
    if path.suffix in (".json", ".ipynb"):
        data = json.loads(raw)
        yield from _strings(data)
        if path.suffix == ".ipynb":   # outputs hold JSON and HTML inside JSON
            for text in list(_strings(data)):
                yield html.unescape(text)
    if path.suffix == ".jsonl":
        for line in raw.splitlines():
            yield from _strings(json.loads(line))
    if path.suffix == ".csv":
        for row in csv.reader(io.StringIO(raw)):
            yield from row


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This checkout's notebooks and parameters, with the quickstart requiring a component named
    after the canary (the shared work root and its caches are kept)."""
    from ucnb import paths

    monkeypatch.setenv("ULTRACLOUD_WORK_ROOT", str(paths.work_root()))
    root = tmp_path / "project"
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    shutil.copytree(ROOT / "parameters", root / "parameters")
    monkeypatch.setenv("UCNB_PROJECT_ROOT", str(root))
    return root


@pytest.mark.parametrize("canary", [
    pytest.param(CANARIES[0], id="special-characters"),
    pytest.param(CANARIES[1], id="40-character-token")])
def test_no_canary_in_any_encoding_in_a_suite_root_or_its_console(project: Path, outputs: Path,
                                                                   lab_host: None, canary: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from ucnb.profiles import CANONICAL_PROFILES
    from ucnb.runner import suites

    parameters = project / "parameters" / "lab" / "single-node-quickstart.yaml"
    values = yaml.safe_load(parameters.read_text()) or {}
    values["required_components"] = [*CANONICAL_PROFILES["single-node dev"]["required"], canary]
    parameters.write_text(yaml.safe_dump(values, allow_unicode=True))
    monkeypatch.setenv("ULTRACLOUD_BOOTSTRAP_TOKEN", canary)
    spec = suites.SuiteSpec(description="redaction", steps=(suites.SuiteStep(lane="single-node-quickstart"),))
    stderr, stdout = io.StringIO(), io.StringIO()
    console = Console(file=stderr, width=40, force_terminal=False, soft_wrap=False)
    out = Console(file=stdout, width=40, force_terminal=False, soft_wrap=False)
    outcome = suites.run(suites.plan("redaction", suites={"redaction": spec}), console=console, out=out,
                         progress=True, junit_file=outputs / "ci" / "junit.xml")
    assert outcome.verdict == "failed"   # the manifest names the component: the message quotes it
    lane = next(e for e in outcome.entries if e.name == "single-node-quickstart")
    assert "manifest does not match" in lane.reason and "[REDACTED]" in lane.reason

    files = [p for p in outcome.root.rglob("*") if p.is_file()] + [outputs / "ci" / "junit.xml"]
    assert any(p.name == "junit.xml" for p in files) and any(p.suffix == ".ipynb" for p in files)
    for path in files:
        for text in _decoded(path):
            assert canary not in text, f"the canary is readable in {path}"
    console_text = stderr.getvalue() + stdout.getvalue()
    assert "REDAC" in console_text   # a folded table cell may cut the mask itself
    pieces = {canary[i:i + 8] for i in range(len(canary) - 7)}
    leaked = {p for p in pieces if p in console_text or p in console_text.replace("\n", "")}
    assert not leaked, f"pieces of the canary reached the console: {leaked}"
    assert leftovers(runs_in(outputs)) == []
