"""What the product wrote: `<work root>/<lane>/latest`, copied into ucnb's proof root and judged.

The copy never follows a symlink out of the product's folder (links inside it are copied as the
file they name; links out, sockets and the like are listed as skipped). Every copied file gets
its sha256; `result.json` (`success`, a bool, required), `environment.txt` and `status.env`
(key=value lines) are parsed, and markers are read from the text files (serial logs). The
verdict is the product's: the exit status and `result.json` must agree, and either one missing
or the two contradicting is a failure that says which.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ucnb import markers as markers_mod
from ucnb.errors import LaneFailure
from ucnb.markers import Marker
from ucnb.product.commands import Command, CommandResult

KEY_VALUE_FILES = ("environment.txt", "status.env")
MARKER_SUFFIXES = (".log", ".txt")
MAX_COPY_BYTES = 1 << 30        # larger files are listed with their checksum, not copied
MAX_MARKER_SCAN_BYTES = 64 << 20


@dataclass
class FileRow:
    file: str           # path relative to the product's folder
    bytes: int
    sha256: str
    copied: bool = True


@dataclass
class KeyValueRow:
    file: str
    key: str
    value: str


@dataclass
class FileMarker:
    file: str
    marker: Marker


@dataclass
class Ingested:
    """The product's proof root as ucnb saw it, and the verdict held against the exit status."""

    lane: str
    expected: Path                      # <work root>/<folder>/latest
    source: Path | None                 # what latest resolved to (None: absent)
    destination: Path
    exit_status: int | None
    files: list[FileRow] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (file, why)
    result: dict[str, Any] | None = None
    success: bool | None = None
    key_values: list[KeyValueRow] = field(default_factory=list)
    markers: list[FileMarker] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)              # why the verdict is failed

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def verdict(self) -> str:
        return "passed" if self.passed else "failed"

    @property
    def environment(self) -> dict[str, str]:
        """environment.txt's keys (the top-level one wins over nested ones)."""
        values: dict[str, str] = {}
        for row in sorted(self.key_values, key=lambda r: -r.file.count("/")):
            if row.file.endswith("environment.txt"):
                values[row.key] = row.value
        return values

    def file_rows(self) -> list[dict[str, Any]]:
        return [{"file": r.file, "bytes": r.bytes, "sha256": r.sha256, "copied": r.copied}
                for r in self.files]

    def key_value_rows(self) -> list[dict[str, str]]:
        """result.json's top-level keys (values as JSON), then environment.txt's and status.env's."""
        rows = [{"file": "result.json", "key": str(k), "value": v if isinstance(v, str) else json.dumps(v)}
                for k, v in (self.result or {}).items()]
        return rows + [{"file": r.file, "key": r.key, "value": r.value} for r in self.key_values]

    def marker_rows(self) -> list[dict[str, object]]:
        return [{"file": m.file, "marker": m.marker.name, "failed": m.marker.failed} for m in self.markers]

    def raise_for_verdict(self) -> None:
        if self.problems:
            raise LaneFailure(f"{self.lane}: " + "; ".join(self.problems))


def parse_key_values(text: str) -> list[tuple[str, str]]:
    """key=value lines (blank lines and # comments skipped; a value may hold '=')."""
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        pairs.append((key.strip(), value.strip().strip('"')))
    return pairs


def ingest(folder: str, destination: Path, *, work_root: Path, exit_status: int | None,
           result_json: bool = True, expected_files: Sequence[str] = (), lane: str = "",
           since: float | None = None, max_copy_bytes: int = MAX_COPY_BYTES) -> Ingested:
    """Copy `<work_root>/<folder>/latest` into `destination` and judge it.

    `exit_status`: the product command's (None: it did not finish). `result_json`: the contract
    says the folder holds one. `since`: the command's start; a `latest` older than that was not
    refreshed by this run.
    """
    expected = work_root / folder / "latest"
    found = Ingested(lane or folder, expected, None, destination, exit_status)
    try:
        source = expected.resolve(strict=True)
    except (OSError, RuntimeError):
        source = None
    if source is None or not source.is_dir():
        found.problems.append(_exit_phrase(exit_status) + f" and wrote no {expected}"
                              + (" (dangling link)" if expected.is_symlink() else ""))
        return found
    found.source = source
    destination.mkdir(parents=True, exist_ok=True)
    newest = _copy_tree(source, destination, found, max_copy_bytes)
    if since is not None and newest < since - 1:
        found.problems.append(f"{expected} points at {source.name}, where nothing is newer than this run "
                              f"(the product did not refresh latest)")
    _read_result(found, source, result_json)
    _read_key_values(found, destination)
    _read_markers(found, destination)
    present = {row.file for row in found.files}
    for name in expected_files:
        if name not in present:
            found.problems.append(f"{name} is missing from {source} (the contract names it)")
    return found


def ingest_result(result: CommandResult, destination: Path, lane: str = "") -> Ingested:
    """Ingest what `result.command` writes (its `proof_folder` under its work root)."""
    command: Command = result.command
    if command.proof_folder is None or command.work_root is None:
        raise ValueError(f"{command.name or command.argv}: the contract says it writes no proof root")
    return ingest(command.proof_folder, destination, work_root=command.work_root,
                  exit_status=result.exit_status, result_json=command.result_json,
                  expected_files=command.expected_files, lane=lane or command.name, since=result.started)


def _exit_phrase(exit_status: int | None) -> str:
    return "the product did not finish" if exit_status is None else f"the product exited {exit_status}"


def _copy_tree(source: Path, destination: Path, found: Ingested, max_copy_bytes: int) -> float:
    """Copy the tree; returns the newest modification time in it."""
    newest = source.stat().st_mtime
    for directory, dirnames, filenames in os.walk(source, followlinks=False):
        here = Path(directory)
        for name in sorted(dirnames):
            if (here / name).is_symlink():
                found.skipped.append((str((here / name).relative_to(source)), "a link to a directory"))
        dirnames[:] = sorted(d for d in dirnames if not (here / d).is_symlink())
        for name in sorted(filenames):
            path = here / name
            relative = str(path.relative_to(source))
            real = path
            if path.is_symlink():
                try:
                    real = path.resolve(strict=True)
                except (OSError, RuntimeError):
                    found.skipped.append((relative, "a dangling link"))
                    continue
                if not real.is_relative_to(source):
                    found.skipped.append((relative, f"a link out of the proof root ({os.readlink(path)})"))
                    continue
            info = real.lstat()
            newest = max(newest, info.st_mtime)
            if not stat.S_ISREG(info.st_mode):
                found.skipped.append((relative, "not a regular file"))
                continue
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            copy = info.st_size <= max_copy_bytes
            digest = _copy_and_hash(real, target if copy else None)
            found.files.append(FileRow(relative, info.st_size, digest, copy))
            if not copy:
                found.skipped.append((relative, f"{info.st_size} bytes: checksummed, not copied"))
    return newest


def _copy_and_hash(path: Path, target: Path | None) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as src:
        out = target.open("wb") if target is not None else None
        try:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                digest.update(chunk)
                if out is not None:
                    out.write(chunk)
        finally:
            if out is not None:
                out.close()
    return digest.hexdigest()


def _read_result(found: Ingested, source: Path, required: bool) -> None:
    path = found.destination / "result.json"
    exited = _exit_phrase(found.exit_status)
    if not any(row.file == "result.json" and row.copied for row in found.files):
        if required:
            found.problems.append(f"{exited} but wrote no result.json in {source}")
        elif found.exit_status != 0:
            found.problems.append(exited)
        return
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        found.problems.append(f"{exited} but result.json in {source} is not valid JSON ({exc})")
        return
    if not isinstance(data, dict) or not isinstance(data.get("success"), bool):
        found.problems.append(f"{exited} but result.json in {source} has no boolean `success`")
        found.result = data if isinstance(data, dict) else None
        return
    found.result, found.success = data, data["success"]
    said = f"result.json says success: {str(found.success).lower()}"
    if found.exit_status == 0 and not found.success:
        found.problems.append(f"the product exited 0 but {said}")
    elif found.exit_status != 0 and found.success:
        found.problems.append(f"{exited} but {said}")
    elif found.exit_status != 0:
        found.problems.append(f"{exited} and {said}")


def _read_key_values(found: Ingested, destination: Path) -> None:
    for row in found.files:
        if row.copied and Path(row.file).name in KEY_VALUE_FILES:
            text = (destination / row.file).read_text(errors="replace")
            found.key_values += [KeyValueRow(row.file, k, v) for k, v in parse_key_values(text)]


def _read_markers(found: Ingested, destination: Path) -> None:
    for row in found.files:
        if row.copied and row.file.endswith(MARKER_SUFFIXES) and row.bytes <= MAX_MARKER_SCAN_BYTES:
            data = (destination / row.file).read_bytes()
            parsed, used = markers_mod.parse(data)
            if used < len(data):  # a last line without a newline
                parsed += markers_mod.parse(data[used:] + b"\n", used)[0]
            found.markers += [FileMarker(row.file, m) for m in parsed]
