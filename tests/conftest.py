"""What every test layer uses: the checkout under test, a private outputs root, the `cli` fixture,
and the check that no secret reached a file.

The layers are folders (`tests/unit`, `tests/vm`, `tests/e2e`), each with its own conftest.py;
a test is marked with its folder's name, so `pytest tests/vm` and `pytest -m vm` select the same.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ucnb.host.procs import ProcessId

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
LAYERS = ("unit", "vm", "e2e")
REMOTE_REFERENCE = re.compile(rb"https?://", re.I)


@pytest.hookimpl(tryfirst=True)   # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its layer; a test outside the layer folders is an error, not a
    test that silently belongs to no layer. For xdist: group the tests of each shared run
    (`shared_run`, tests/lab_fixtures.py), and the `cluster` tests into one slot per core; start
    the `long` tests first, longest first, so a parallel layer does not end on one started last."""
    for item in items:
        relative = item.path.relative_to(TESTS) if item.path.is_relative_to(TESTS) else None
        layer = relative.parts[0] if relative is not None and len(relative.parts) > 1 else None
        if layer not in LAYERS:
            raise pytest.UsageError(f"{item.nodeid}: every test lives in a layer folder "
                                    f"({', '.join(f'tests/{name}' for name in LAYERS)})")
        item.add_marker(layer)
        for group in _shared_runs(item):
            item.add_marker(pytest.mark.xdist_group(group))
    _share_cluster_slots([item for item in items if item.get_closest_marker("cluster")])
    if getattr(config.option, "loadgroup", False):   # an xdist worker, --dist loadgroup
        for item in items:
            _name_group(item)
    items.sort(key=_minutes, reverse=True)   # stable: the rest keep their order, modules stay whole


def _share_cluster_slots(items: list[pytest.Item]) -> None:
    """At most one `cluster` test per two cores at a time: each slot is an xdist group (one
    worker, one test after another), filled longest first into the least loaded. On two cores
    shared with other labs, two or three six-node etcd clusters at once missed their health waits
    (60 s for a healthy member, 30 s for an agreed leader); one at a time passed. A quiet host
    may take more: UCNB_TEST_CLUSTER_SLOTS."""
    slots = int(os.environ.get("UCNB_TEST_CLUSTER_SLOTS") or 0) or max(1, (os.cpu_count() or 1) // 2)
    load = [0.0] * slots
    for item in sorted(items, key=_minutes, reverse=True):
        slot = load.index(min(load))
        load[slot] += _minutes(item) or 1.0
        item.add_marker(pytest.mark.xdist_group(f"cluster-slot-{slot}"))


def _name_group(item: pytest.Item) -> None:
    """What xdist's loadgroup does, done where pytest 9 looks: xdist 3.8 renames a grouped test
    `<nodeid>@<group>` (the scheduler's unit of work) through `item._nodeid`, which pytest 9 no
    longer reads (its id is `item._id`), so every group was spread over the workers."""
    from _pytest.nodeid import NodeId

    groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                     for m in item.iter_markers("xdist_group")})
    if groups and "@" not in item.nodeid:
        item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(groups)}")  # type: ignore[attr-defined]


def _minutes(item: pytest.Item) -> float:
    """What `long(minutes)` says the test takes (0 unmarked)."""
    mark = item.get_closest_marker("long")
    return float(mark.args[0]) if mark is not None else 0.0


def _shared_runs(item: pytest.Item) -> list[str]:
    """The shared-run fixtures the test requests (directly or not), each named `<where>.<name>`
    (`test_bench_storage.runs`, `e2e.baremetal_default`)."""
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs.items() if info is not None else ()
    return sorted(f"{Path(defs[-1].baseid or 'tests').stem}.{name}" for name, defs in definitions
                  if getattr(defs[-1].func, "ucnb_shared_run", False))


@pytest.fixture()
def outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Evidence goes to a temporary outputs root (the work root and its image cache stay as set)."""
    path = tmp_path / "outputs"
    monkeypatch.setenv("UCNB_OUTPUTS", str(path))
    return path


def dead_process() -> ProcessId:
    """The identity (pid and start time) of a process that has exited: an owner that is gone."""
    proc = subprocess.Popen(["sleep", "5"])
    gone = ProcessId.of(proc.pid)
    proc.kill()
    proc.wait()
    assert gone is not None
    return gone


def assert_no_secret(root: Path, *secrets: str) -> None:
    """No file under `root` holds any of `secrets` (read raw)."""
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            leaked = [s for s in secrets if s.encode() in data]
            assert not leaked, f"a secret leaked into {path}"


def assert_reviewable_evidence(root: Path, secret: str | None = None) -> list[Path]:
    """What every sealed proof root promises a reviewer (issue 11): each HTML page is one
    self-contained file (no `http://` or `https://` anywhere, no script) that opens with the
    verdict banner; every file is world-readable (0644, folders 0755); `secret` is in no file.
    Every lane's e2e test calls this on its proof root. Returns the pages checked."""
    pages = sorted(root.rglob("*.html"))
    assert pages, f"no HTML page in {root}"
    for page in pages:
        data = page.read_bytes()
        assert not REMOTE_REFERENCE.search(data), \
            f"{page}: remote reference {REMOTE_REFERENCE.findall(data)[:3]}"
        assert b"<script" not in data.lower(), f"{page}: a script tag"
        body = data[data.index(b"<body"):]
        cells = [m.start() for m in re.finditer(rb'<div class="jp-Cell ', body)]
        banner = body.find(b'id="ucnb-verdict"')
        assert banner != -1 and (len(cells) < 2 or cells[0] < banner < cells[1]), \
            f"{page}: the verdict banner is not the first cell"
    for path in root.rglob("*"):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue
        want = 0o755 if stat.S_ISDIR(info.st_mode) else 0o644
        assert stat.S_IMODE(info.st_mode) == want, f"{path} is {oct(stat.S_IMODE(info.st_mode))}"
        if secret and stat.S_ISREG(info.st_mode):
            assert secret.encode() not in path.read_bytes(), f"secret leaked into {path}"
    return pages


@dataclass(frozen=True)
class Cli:
    """The `ucnb` command line of this checkout, as a user runs it, writing evidence under `outputs`.

    `cli(...)` runs it as a child process (the kernel it starts imports this checkout too);
    `cli.start(...)` leaves it running in its own session (for signals); `cli.invoke(...)` runs
    it in this process (for tests that patch what the command calls).
    """

    outputs: Path

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "ucnb", *args]

    def env(self, **extra: str) -> dict[str, str]:
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        return {**os.environ, "PYTHONPATH": path, "UCNB_PROJECT_ROOT": str(ROOT),
                "UCNB_OUTPUTS": str(self.outputs), "COLUMNS": "240", **extra}  # tables on one line

    def __call__(self, *args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), capture_output=True, text=True, env=self.env(**env),
                              cwd=ROOT, timeout=timeout)

    def run(self, lane: str, *args: str, timeout: float = 600,
            **env: str) -> subprocess.CompletedProcess[str]:
        """`ucnb run LANE --no-progress ARGS`."""
        return self("run", lane, "--no-progress", *args, timeout=timeout, **env)

    def start(self, *args: str, stderr: Any = subprocess.DEVNULL, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args), env=self.env(**env), cwd=ROOT, text=True,
                                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)

    def invoke(self, *args: str) -> Any:
        """In process, through Typer's test runner; returns its Result (exit_code, output)."""
        from typer.testing import CliRunner

        from ucnb.cli.main import app

        return CliRunner().invoke(app, list(args))

    def latest(self, lane: str) -> Path:
        """The proof root of the lane's last run under `outputs`."""
        return (self.outputs / lane / "latest").resolve()


@pytest.fixture()
def cli(outputs: Path) -> Cli:
    return Cli(outputs)
