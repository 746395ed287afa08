"""The evidence index: one JSON line per lane run and per suite run, in `outputs/index.jsonl`.

Every `ucnb run` and every lane of a `ucnb suite` appends its line when its proof root is sealed;
a suite appends one more line for itself. `ucnb report` reads the index, never the tree, so a
report lists exactly the runs that finished through ucnb (a run killed with -9 has no line).
"""

from __future__ import annotations

import fcntl
import json
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from ucnb import paths
from ucnb.errors import ParameterError

INDEX_NAME = "index.jsonl"


@dataclass(frozen=True)
class IndexEntry:
    """One finished run: a lane run (kind "lane") or a suite run (kind "suite")."""

    lane: str            # the lane name, or the suite name for kind "suite"
    profile: str
    run_id: str
    start: str           # UTC, ISO 8601 (`2026-11-26T00:12:38Z`)
    duration_s: float
    verdict: str         # passed | failed | incomplete
    accelerator: str | None
    proof_root: str      # relative to the outputs root
    kind: str = "lane"
    suite: str | None = None  # `<suite>/<stamp>-<id>` when the run belongs to a suite
    stages: dict[str, float] | None = None   # a lane run: the runner's seconds per stage

    def path(self, outputs: Path | None = None) -> Path:
        """The proof root on disk."""
        return (outputs or paths.outputs_root()) / self.proof_root


def index_path(outputs: Path | None = None) -> Path:
    return (outputs or paths.outputs_root()) / INDEX_NAME


def iso_utc(epoch: float) -> str:
    """An epoch time as the index writes it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def relative_to_outputs(root: Path, outputs: Path | None = None) -> str:
    """A proof root's path relative to the outputs root (absolute when it lives elsewhere)."""
    base = (outputs or paths.outputs_root()).resolve()
    try:
        return root.resolve().relative_to(base).as_posix()
    except ValueError:
        return str(root.resolve())


def suite_of(relative: str) -> str | None:
    """`<suite>/<stamp>-<id>` for a proof root inside a suite root (`suites/<suite>/<stamp>-<id>/…`)."""
    parts = relative.split("/")
    if len(parts) > 3 and parts[0] == "suites":
        return f"{parts[1]}/{parts[2]}"
    return None


def entry_for_result(result: dict[str, Any], root: Path, started: float, duration_s: float,
                     outputs: Path | None = None, stages: dict[str, float] | None = None) -> IndexEntry:
    """The index line of a sealed lane run, from its result.json contents."""
    relative = relative_to_outputs(root, outputs)
    return IndexEntry(lane=str(result["lane"]), profile=str(result["profile"]),
                      run_id=str(result["run_id"]), start=iso_utc(started),
                      duration_s=round(duration_s, 2), verdict=str(result["verdict"]),
                      accelerator=result.get("accelerator"), proof_root=relative,
                      suite=suite_of(relative), stages=stages)


def append(entry: IndexEntry, outputs: Path | None = None) -> Path:
    """Append one line under an exclusive lock (parallel runs share the index)."""
    path = index_path(outputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(asdict(entry), sort_keys=True) + "\n"
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(line)
    return path


def load(outputs: Path | None = None) -> list[IndexEntry]:
    """Every entry, oldest first; malformed lines (a write cut short) are skipped."""
    return _read(index_path(outputs))


def index_file(source: Path) -> Path:
    """The index of a source: an outputs folder (its index.jsonl) or an index file itself."""
    path = source / INDEX_NAME if source.is_dir() else source
    if not path.is_file():
        raise ParameterError(f"{source} is neither an outputs folder with {INDEX_NAME} nor an index file")
    return path


def load_sources(sources: list[Path]) -> list[IndexEntry]:
    """Every entry of several outputs folders or index files (e.g. CI jobs' downloaded outputs),
    oldest first, each proof root made absolute against its own folder; a run listed twice
    (the same folder given twice) counts once. A source that is neither is a parameter error."""
    files = [index_file(s) for s in sources]   # all refused before any is read
    seen: dict[tuple[str, str], IndexEntry] = {}
    for path in files:
        base = path.parent.resolve()
        for entry in _read(path):
            seen.setdefault((entry.kind, entry.run_id),
                            replace(entry, proof_root=str(base / entry.proof_root)))
    return sorted(seen.values(), key=lambda e: e.start)


def _read(path: Path) -> list[IndexEntry]:
    if not path.exists():
        return []
    known = {f.name for f in fields(IndexEntry)}
    entries = []
    for line in path.read_text().splitlines():
        try:
            data = json.loads(line)
            entries.append(IndexEntry(**{k: v for k, v in data.items() if k in known}))
        except (json.JSONDecodeError, TypeError):
            continue
    return sorted(entries, key=lambda e: e.start)
