"""Work-root budget: soft budgets, enforce, cleanup advice and proof-log pruning."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ucnb.errors import ParameterError
from ucnb.evidence import budget
from ucnb.evidence.budget import (
    cleanup_advice,
    dated,
    enforce,
    format_size,
    parse_size,
    proof_roots,
    prune_proof_logs,
    resolve_budgets,
    status,
)

from ..conftest import Cli

FRESH_SMOKE = [  # oldest first
    "20260401T080000Z-aaaa01",
    "20260402T080000Z-aaaa02",
    "20260403T080000Z-aaaa03",
    "20260404T080000Z-aaaa04",
]
HARDWARE_SMOKE = ["20260301T000000Z-h1", "20260302T000000Z-h2", "20260303T000000Z-h3"]


def _fill(path: Path, size: int) -> None:
    """A file of incompressible bytes, so allocated size really is `size`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))


def _lane(root: Path, names: list[str], latest: str | None = None) -> Path:
    for name in names:
        _fill(root / name / "result.json", 100)
    if latest is not None:
        (root / "latest").symlink_to(latest)
    return root


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Empty work and outputs roots, wired through the environment so the CLI sees them."""
    work, outputs = tmp_path / "work", tmp_path / "outputs"
    work.mkdir()
    outputs.mkdir()
    monkeypatch.setenv("ULTRACLOUD_WORK_ROOT", str(work))
    monkeypatch.setenv("UCNB_OUTPUTS", str(outputs))
    for area in budget.AREAS:
        monkeypatch.delenv(budget.budget_env_var(area.name), raising=False)
    return work, outputs


@pytest.fixture
def lanes(roots: tuple[Path, Path]) -> tuple[Path, Path]:
    """outputs/fresh-smoke with 4 dated roots and work/hardware-smoke with 3, each with `latest`."""
    work, outputs = roots
    _lane(outputs / "fresh-smoke", FRESH_SMOKE, latest=FRESH_SMOKE[-1])
    _lane(work / "hardware-smoke", HARDWARE_SMOKE, latest=HARDWARE_SMOKE[-1])
    (work / "hardware-smoke" / "0de75570-not-dated").mkdir()  # never a proof root
    return outputs / "fresh-smoke", work / "hardware-smoke"


def _names(lane_dir: Path) -> list[str]:
    return sorted(p.name for p in lane_dir.iterdir() if not p.is_symlink())


# --- sizes and budgets ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("4096", 4096), ("1K", 1024), ("1KiB", 1024), ("10m", 10 * 1024**2), ("1.5G", 3 * 1024**3 // 2),
    ("2TB", 2 * 1024**4), ("0", 0),
])
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "-1G", "1X", "ten"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ParameterError):
        parse_size(text)


def test_format_size() -> None:
    sizes = (0, 1023, 1024, 1536 * 1024**2)
    assert [format_size(n) for n in sizes] == ["0 B", "1023 B", "1.0 KiB", "1.5 GiB"]


def test_budget_precedence(roots: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_budgets()["tmp"] == budget.AREAS_BY_NAME["tmp"].budget
    monkeypatch.setenv("UCNB_BUDGET_TMP", "1M")
    monkeypatch.setenv("UCNB_BUDGET_PROOF_ROOTS", "2M")
    assert resolve_budgets()["tmp"] == 1024**2
    assert resolve_budgets()["proof-roots"] == 2 * 1024**2
    assert resolve_budgets({"tmp": "3K"})["tmp"] == 3 * 1024
    with pytest.raises(ParameterError, match="unknown budget area"):
        resolve_budgets({"nope": "1K"})


# --- status and enforce --------------------------------------------------------------------------

def test_enforce_fails_over_budget_and_passes_small(roots: tuple[Path, Path]) -> None:
    work, _ = roots
    _fill(work / "tmp" / "disk.img", 64 * 1024)
    assert enforce() == 0
    assert enforce({"tmp": "1K"}) == 1
    assert enforce({"tmp": "1M"}) == 0


def test_enforce_env_override(roots: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    _fill(roots[0] / "cache" / "images" / "system.img", 64 * 1024)
    monkeypatch.setenv("UCNB_BUDGET_CACHE", "1K")
    assert enforce() == 1


def test_status_counts_proof_roots_per_lane(lanes: tuple[Path, Path]) -> None:
    current = status()
    by_lane = {lane.lane: lane for lane in current.lanes}
    assert by_lane["outputs/fresh-smoke"].count == 4
    assert by_lane["outputs/fresh-smoke"].newest == FRESH_SMOKE[-1]
    assert by_lane["outputs/fresh-smoke"].latest == FRESH_SMOKE[-1]
    assert by_lane["work/hardware-smoke"].count == 3
    proof = next(a for a in current.areas if a.area.name == "proof-roots")
    assert proof.size == sum(lane.size for lane in current.lanes) > 0


def test_dated_names_sort_across_zones() -> None:
    assert dated("latest") is None
    assert dated("0de75570-dabd-471b") is None
    # The seed writes both zone styles; +09:00 at 12:06 is 03:06 UTC, before 04:00Z.
    assert dated("20260410T120618+09:00") == datetime(2026, 4, 10, 3, 6, 18, tzinfo=UTC)
    assert dated("20260410T120618+0900") == dated("20260410T120618+09:00")
    assert dated("20260410T040000Z-run1") == datetime(2026, 4, 10, 4, 0, tzinfo=UTC)


def test_cli_enforce_exit_codes(roots: tuple[Path, Path], cli: Cli) -> None:
    _fill(roots[0] / "tmp" / "x", 64 * 1024)
    assert cli.invoke("budget", "enforce").exit_code == 0
    assert cli.invoke("budget", "enforce", "--budget", "tmp=1K").exit_code == 1
    assert cli.invoke("budget", "enforce", "--budget", "nope=1K").exit_code == 2
    assert cli.invoke("budget", "enforce", "--budget", "tmp").exit_code == 2


def test_cli_status_and_advice(lanes: tuple[Path, Path], cli: Cli) -> None:
    _fill(lanes[1].parent / "tmp" / "x", 4096)
    assert cli.invoke("budget", "status").exit_code == 0
    assert cli.invoke("budget", "cleanup-advice").exit_code == 0


# --- cleanup advice ------------------------------------------------------------------------------

def test_cleanup_advice(lanes: tuple[Path, Path]) -> None:
    work = lanes[1].parent
    _fill(work / "tmp" / "scratch", 64 * 1024)
    advice = {(a.area, a.path): a for a in cleanup_advice(keep=2)}
    tmp = advice[("tmp", work / "tmp")]
    assert tmp.disposable and tmp.command == f"rm -rf {work / 'tmp'}"
    prune = advice[("proof-roots", lanes[0])]
    assert prune.command == "ucnb budget prune-proof-logs 2 --delete"
    assert "2 old proof root(s)" in prune.note
    assert ("labs", work / "labs") not in advice  # absent areas give no advice


# --- prune-proof-logs ----------------------------------------------------------------------------

def test_prune_dry_run_deletes_nothing(lanes: tuple[Path, Path]) -> None:
    fresh, hardware = lanes
    before = (_names(fresh), _names(hardware))
    result = prune_proof_logs(2)
    assert not result.applied
    assert sorted(r.path.name for r in result.doomed) == sorted(FRESH_SMOKE[:2] + HARDWARE_SMOKE[:1])
    assert (_names(fresh), _names(hardware)) == before
    assert result.links == ()


def test_prune_delete_removes_exactly_the_older_ones(lanes: tuple[Path, Path]) -> None:
    fresh, hardware = lanes
    result = prune_proof_logs(2, delete=True)
    assert result.applied and result.freed > 0
    assert _names(fresh) == FRESH_SMOKE[2:]
    assert _names(hardware) == ["0de75570-not-dated", *HARDWARE_SMOKE[1:]]
    assert os.readlink(fresh / "latest") == FRESH_SMOKE[-1]
    assert os.readlink(hardware / "latest") == HARDWARE_SMOKE[-1]


def test_latest_is_not_counted(roots: tuple[Path, Path]) -> None:
    lane = _lane(roots[1] / "fresh-matrix", FRESH_SMOKE[:2], latest=FRESH_SMOKE[1])
    assert [len(r) for r in proof_roots().values()] == [2]
    assert prune_proof_logs(2, delete=True).doomed == ()
    assert (lane / "latest").is_symlink()


def test_latest_pointing_at_a_pruned_root_is_repointed(roots: tuple[Path, Path]) -> None:
    lane = _lane(roots[1] / "fresh-smoke", FRESH_SMOKE, latest=FRESH_SMOKE[0])
    dry = prune_proof_logs(2)
    assert [(c.old, c.new) for c in dry.links] == [(FRESH_SMOKE[0], FRESH_SMOKE[-1])]
    assert os.readlink(lane / "latest") == FRESH_SMOKE[0]  # dry run changes nothing
    prune_proof_logs(2, delete=True)
    assert os.readlink(lane / "latest") == FRESH_SMOKE[-1]
    assert (lane / "latest").resolve().is_dir()
    assert not any(p.name.endswith(".tmp") for p in lane.iterdir())


def test_dangling_latest_is_repointed(roots: tuple[Path, Path]) -> None:
    lane = _lane(roots[1] / "fresh-smoke", FRESH_SMOKE[:1], latest="20250101T000000Z-gone")
    prune_proof_logs(2, delete=True)
    assert os.readlink(lane / "latest") == FRESH_SMOKE[0]


def test_prune_keeps_at_least_one(roots: tuple[Path, Path], cli: Cli) -> None:
    with pytest.raises(ParameterError):
        prune_proof_logs(0)
    assert cli.invoke("budget", "prune-proof-logs", "0").exit_code == 2


def test_cli_prune(lanes: tuple[Path, Path], cli: Cli) -> None:
    fresh, _ = lanes
    dry = cli.invoke("budget", "prune-proof-logs", "2")
    assert dry.exit_code == 0 and "dry run" in dry.stdout
    assert _names(fresh) == FRESH_SMOKE
    assert cli.invoke("budget", "prune-proof-logs", "2", "--delete").exit_code == 0
    assert _names(fresh) == FRESH_SMOKE[2:]


def test_suite_roots_are_pruned_per_suite(roots: tuple[Path, Path]) -> None:
    """outputs/suites/<suite>/<dated> roots count per suite, not as one lane called `suites`."""
    suite = _lane(roots[1] / "suites" / "portable", FRESH_SMOKE, latest=FRESH_SMOKE[-1])
    assert sorted(proof_roots()) == ["outputs/suites/portable"]
    result = prune_proof_logs(2, delete=True)
    assert _names(suite) == FRESH_SMOKE[-2:]
    assert {r.path.name for r in result.doomed} == set(FRESH_SMOKE[:-2])
