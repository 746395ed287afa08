"""Work-root budget: how much disk the local proof path uses, and what is safe to reclaim.

Seed: "Work Root Budget" (`work-root-budget.sh status | enforce | cleanup-advice |
prune-proof-logs N`). Areas live under the work root (`ULTRACLOUD_WORK_ROOT`, default `./work`);
dated proof roots live under `outputs/<lane>/` (ucnb's evidence) and `work/<lane>/` (the
product's own wrappers, e.g. `work/hardware-smoke/<run-id>`), each lane with a `latest` link.
Budgets are soft: `status` reports, `enforce` turns an overrun into a non-zero exit.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from ucnb import paths
from ucnb.errors import ParameterError

KiB = 1024
GiB = KiB**3
_UNITS = {"": 1, "K": KiB, "M": KiB**2, "G": GiB, "T": KiB**4}


@dataclass(frozen=True)
class Area:
    """A budgeted part of the work root. `clean` is a command template with `{path}`."""

    name: str
    description: str
    paths: tuple[str, ...]  # relative to the work root; "" is the root itself
    budget: int
    disposable: bool
    clean: str
    note: str


PROOF_ROOTS = "proof-roots"

# The areas and their default soft budgets (override: UCNB_BUDGET_<AREA> or --budget AREA=SIZE).
AREAS: tuple[Area, ...] = (
    Area("work", "the whole work root", ("",), 200 * GiB, False, "",
         "sum of everything below; reclaim through the other areas"),
    Area("cache", "image and package caches", ("cache",), 40 * GiB, False, "rm -rf {path}",
         "rebuilt on the next run, which then pays the image build again"),
    Area("labs", "runtime state of labs (overlays, serial logs, state.json)", ("labs",), 80 * GiB,
         False, "rm -rf {path}", "only once no lab is running: stop and clean the labs first"),
    Area("state", "VM-cluster runtime state", ("test-cluster/state",), 40 * GiB, False,
         "nix run ./nix/test-cluster#cluster -- clean", "only when the cluster is stopped"),
    Area("tmp", "disposable runtime directories", ("tmp", "publishable-kvm-runtime"), 20 * GiB,
         True, "rm -rf {path}", "disposable: nothing reads it after a run"),
    Area(PROOF_ROOTS, "dated proof roots (outputs/<lane>/, work/<lane>/)", (), 20 * GiB, True,
         "ucnb budget prune-proof-logs {keep} --delete",
         "keeps the {keep} newest per lane; run without --delete first to review"),
)
AREAS_BY_NAME = {a.name: a for a in AREAS}

# `YYYYmmddTHHMMSS` plus an optional zone (`Z`, `+0900`, `+09:00`: the seed has all three) and
# an optional `-<run id>`. Anything else (`latest`, uuids) is never a dated proof root.
_DATED = re.compile(r"^(?P<stamp>\d{8}T\d{6})(?P<tz>Z|[+-]\d{2}:?\d{2})?(?:-(?P<run>.+))?$")
LATEST = "latest"


# --- sizes ---------------------------------------------------------------------------------------

def parse_size(text: str) -> int:
    """`10G`, `512M`, `1.5GiB`, `4096` -> bytes (binary units). ParameterError when unparsable."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise ParameterError(f"bad size {text!r}: expected a number with an optional K/M/G/T unit")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def format_size(size: int) -> str:
    """Bytes -> `1.5 GiB` (`812 B` below one KiB)."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    # Every 10 bits is one binary unit up.
    exponent = min(len(units) - 1, max(0, size.bit_length() - 1) // 10)
    return f"{size} B" if exponent == 0 else f"{size / KiB**exponent:.1f} {units[exponent]}"


def disk_usage(path: Path) -> int:
    """Allocated bytes below `path`, like `du`: sparse VM disks count what they really use."""
    try:
        st = path.lstat()
    except OSError:
        return 0
    total = st.st_blocks * 512
    if stat.S_ISDIR(st.st_mode):
        try:
            with os.scandir(path) as entries:
                total += sum(disk_usage(Path(e.path)) for e in entries)
        except OSError:
            pass  # unreadable directory: report what we could see, like `du` does
    return total


# --- budgets -------------------------------------------------------------------------------------

def budget_env_var(area: str) -> str:
    """The environment variable overriding an area's budget, e.g. `UCNB_BUDGET_PROOF_ROOTS`."""
    return "UCNB_BUDGET_" + area.upper().replace("-", "_")


def parse_budget_options(options: Sequence[str]) -> dict[str, str]:
    """`["cache=10G", "tmp=1G"]` (the `--budget` option) -> `{"cache": "10G", "tmp": "1G"}`."""
    parsed: dict[str, str] = {}
    for option in options:
        area, sep, size = option.partition("=")
        if not sep:
            raise ParameterError(f"bad --budget {option!r}: expected AREA=SIZE")
        parsed[area.strip()] = size
    return parsed


def resolve_budgets(overrides: Mapping[str, str] | None = None) -> dict[str, int]:
    """Budget per area: `overrides` (the CLI) win over `UCNB_BUDGET_<AREA>`, over the defaults."""
    unknown = sorted(set(overrides or {}) - set(AREAS_BY_NAME))
    if unknown:
        raise ParameterError(f"unknown budget area(s) {', '.join(unknown)}; "
                             f"known: {', '.join(AREAS_BY_NAME)}")
    budgets: dict[str, int] = {}
    for area in AREAS:
        given = (overrides or {}).get(area.name) or os.environ.get(budget_env_var(area.name))
        budgets[area.name] = parse_size(given) if given else area.budget
    return budgets


# --- proof roots ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProofRoot:
    """One dated proof root of a lane, e.g. `outputs/fresh-smoke/20260410T120618Z-ab12cd`."""

    lane: str
    path: Path
    when: datetime

    @property
    def size(self) -> int:
        """Allocated bytes (computed on demand: pruning needs order, not sizes)."""
        return disk_usage(self.path)


def dated(name: str) -> datetime | None:
    """The stamp a dated proof-root name starts with (timezone-aware), or None."""
    match = _DATED.match(name)
    if not match:
        return None
    when = datetime.strptime(match["stamp"], "%Y%m%dT%H%M%S")
    tz = (match["tz"] or "Z").replace(":", "")
    if tz == "Z":
        return when.replace(tzinfo=UTC)
    offset = timedelta(hours=int(tz[1:3]), minutes=int(tz[3:5]))
    return when.replace(tzinfo=timezone(offset if tz[0] == "+" else -offset))


SUITES_DIR = "suites"  # suite roots live one level deeper: outputs/suites/<suite>/<dated>


def _lane_dirs(work: Path, outputs: Path) -> Iterator[tuple[str, Path]]:
    """(label, directory) of every lane directory that may hold dated proof roots."""
    # Top-level work dirs that belong to another area are never lanes.
    claimed = {p.split("/")[0] for a in AREAS for p in a.paths if p}
    for label, root, skip in (("outputs", outputs, set()), ("work", work, claimed)):
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            if not child.is_dir() or child.is_symlink() or child.name in skip:
                continue
            if label == "outputs" and child.name == SUITES_DIR:  # outputs/suites/<suite>/<dated>
                for suite in sorted(c for c in child.iterdir() if c.is_dir() and not c.is_symlink()):
                    yield f"{label}/{child.name}/{suite.name}", suite
            else:
                yield f"{label}/{child.name}", child


def proof_roots(work: Path | None = None, outputs: Path | None = None) -> dict[str, list[ProofRoot]]:
    """Dated proof roots per lane directory, newest first. `latest` and other links never count."""
    lanes: dict[str, list[ProofRoot]] = {}
    for lane, lane_dir in _lane_dirs(work or paths.work_root(), outputs or paths.outputs_root()):
        roots = [ProofRoot(lane, child, when) for child in lane_dir.iterdir()
                 if not child.is_symlink() and child.is_dir() and (when := dated(child.name))]
        if roots:
            lanes[lane] = sorted(roots, key=lambda r: (r.when, r.path.name), reverse=True)
    return lanes


def _latest_target(lane_dir: Path) -> str | None:
    link = lane_dir / LATEST
    return os.readlink(link) if link.is_symlink() else None


# --- status and enforce --------------------------------------------------------------------------

@dataclass(frozen=True)
class AreaUsage:
    """An area's size against its budget."""

    area: Area
    paths: tuple[Path, ...]
    size: int
    budget: int

    @property
    def over(self) -> bool:
        """True when the area is over its soft budget."""
        return self.size > self.budget


@dataclass(frozen=True)
class LaneUsage:
    """A lane's dated proof roots."""

    lane: str
    count: int
    size: int
    newest: str
    latest: str | None


@dataclass(frozen=True)
class BudgetStatus:
    """Everything `status` reports."""

    work_root: Path
    outputs_root: Path
    areas: tuple[AreaUsage, ...]
    lanes: tuple[LaneUsage, ...]

    @property
    def overruns(self) -> tuple[AreaUsage, ...]:
        """Areas over budget."""
        return tuple(a for a in self.areas if a.over)

    @property
    def exit_code(self) -> int:
        """What `enforce` exits with: 1 on any overrun, else 0."""
        return 1 if self.overruns else 0


def status(budgets: Mapping[str, str] | None = None, work: Path | None = None,
           outputs: Path | None = None) -> BudgetStatus:
    """Sizes per area against budget (`budgets`: AREA -> SIZE overrides) and proof roots per lane."""
    work, outputs = work or paths.work_root(), outputs or paths.outputs_root()
    limits = resolve_budgets(budgets)
    lanes = proof_roots(work, outputs)
    lane_usage = tuple(
        LaneUsage(lane, len(roots), sum(r.size for r in roots), roots[0].path.name,
                  _latest_target(roots[0].path.parent))
        for lane, roots in lanes.items()
    )
    areas: list[AreaUsage] = []
    for area in AREAS:
        if area.name == PROOF_ROOTS:
            where = tuple(sorted({r.path.parent for roots in lanes.values() for r in roots}))
            size = sum(u.size for u in lane_usage)
        else:
            where = tuple(work / p if p else work for p in area.paths)
            size = sum(disk_usage(p) for p in where)
        areas.append(AreaUsage(area, where, size, limits[area.name]))
    return BudgetStatus(work, outputs, tuple(areas), lane_usage)


def enforce(budgets: Mapping[str, str] | None = None, work: Path | None = None,
            outputs: Path | None = None) -> int:
    """1 when any area is over its budget, else 0 (the seed's local gate)."""
    return status(budgets, work, outputs).exit_code


# --- pruning -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LinkChange:
    """A `latest` link that would dangle: repointed to `new`, or removed when `new` is None."""

    link: Path
    old: str
    new: str | None


@dataclass(frozen=True)
class PruneResult:
    """What `prune_proof_logs` deleted (applied) or would delete (dry run)."""

    keep: int
    applied: bool
    doomed: tuple[ProofRoot, ...]
    kept: tuple[ProofRoot, ...]
    links: tuple[LinkChange, ...]
    freed: int  # bytes the doomed roots take (measured before deleting)


def _latest_change(lane_dir: Path, kept: list[ProofRoot], doomed: list[ProofRoot]) -> LinkChange | None:
    """How `latest` must change so it never points at a deleted (or missing) proof root."""
    old = _latest_target(lane_dir)
    if old is None:
        return None
    target = (lane_dir / old).resolve()
    if target.exists() and target not in {r.path.resolve() for r in doomed}:
        return None
    return LinkChange(lane_dir / LATEST, old, kept[0].path.name if kept else None)


def _apply_link(change: LinkChange) -> None:
    if change.new is None:
        change.link.unlink()
        return
    # Build the new link beside the old one and rename over it: `latest` is never absent.
    tmp = change.link.with_name(f".{LATEST}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(change.new)
    os.replace(tmp, change.link)


def prune_proof_logs(keep: int, delete: bool = False, work: Path | None = None,
                     outputs: Path | None = None) -> PruneResult:
    """Keep the `keep` newest dated proof roots per lane; delete the rest only when `delete`.

    A `latest` link is never deleted or counted; one that would dangle is repointed to the newest
    kept root first (before anything is deleted, so an interrupted prune leaves no dangling link).
    """
    if keep < 1:
        raise ParameterError(f"prune-proof-logs keeps at least 1 proof root per lane, got {keep}")
    doomed: list[ProofRoot] = []
    kept: list[ProofRoot] = []
    links: list[LinkChange] = []
    for roots in proof_roots(work, outputs).values():
        lane_kept, lane_doomed = roots[:keep], roots[keep:]
        change = _latest_change(roots[0].path.parent, lane_kept, lane_doomed)
        kept += lane_kept
        doomed += lane_doomed
        links += [change] if change else []
    freed = sum(r.size for r in doomed)
    if delete:
        for change in links:
            _apply_link(change)
        for root in doomed:
            shutil.rmtree(root.path)
    return PruneResult(keep, delete, tuple(doomed), tuple(kept), tuple(links), freed)


# --- cleanup advice ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Advice:
    """Something that can be reclaimed and the command that reclaims it."""

    area: str
    path: Path
    size: int
    disposable: bool
    command: str
    note: str


def cleanup_advice(keep: int = 2, work: Path | None = None, outputs: Path | None = None) -> list[Advice]:
    """What can be reclaimed, largest first: disposable dirs, caches, state, old proof roots."""
    current = status(None, work, outputs)
    advice: list[Advice] = []
    for usage in current.areas:
        area = usage.area
        if area.name == PROOF_ROOTS or not area.clean:
            continue
        for path in usage.paths:
            size = disk_usage(path)
            if size:
                advice.append(Advice(area.name, path, size, area.disposable,
                                     area.clean.format(path=path), area.note))
    plan = prune_proof_logs(keep, delete=False, work=current.work_root, outputs=current.outputs_root)
    proof_area = AREAS_BY_NAME[PROOF_ROOTS]
    for lane_dir in sorted({r.path.parent for r in plan.doomed}):
        old = [r for r in plan.doomed if r.path.parent == lane_dir]
        advice.append(Advice(proof_area.name, lane_dir, sum(r.size for r in old), True,
                             proof_area.clean.format(keep=keep),
                             f"{len(old)} old proof root(s); " + proof_area.note.format(keep=keep)))
    return sorted(advice, key=lambda a: a.size, reverse=True)
