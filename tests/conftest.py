"""Shared fixtures. VM tests need root and the lab host (`make setup` / `ucnb host up`)."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REMOTE_REFERENCE = re.compile(rb"https?://", re.I)


@pytest.fixture(scope="session")
def lab_host() -> None:
    """The lab namespace and libvirtd are up (started, idempotently, if needed)."""
    from ucnb.host import daemons

    daemons.up()


@pytest.fixture(scope="session")
def lab_image(lab_host: None):  # type: ignore[no-untyped-def]
    from ucnb import profiles
    from ucnb.image import build_image

    return build_image(profiles.load("lab"))


@pytest.fixture(scope="session")
def accelerator(lab_image):  # type: ignore[no-untyped-def]
    from ucnb.host.accel import choose
    from ucnb.lab.registry import connect

    return choose(lab_image, connect())


@pytest.fixture()
def outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Evidence goes to a temporary outputs root (the image cache stays shared)."""
    path = tmp_path / "outputs"
    monkeypatch.setenv("UCNB_OUTPUTS", str(path))
    return path


def ucnb_objects() -> dict[str, list[str]]:
    """Every ucnb domain, network and lab folder that exists now."""
    from ucnb import paths
    from ucnb.lab.registry import connect

    conn = connect()
    return {
        "domains": sorted(d.name() for d in conn.listAllDomains() if d.name().startswith("ucnb-")),
        "networks": sorted(n.name() for n in conn.listAllNetworks() if n.name().startswith("ucnb-")),
        "labs": sorted(p.name for p in paths.labs_dir().iterdir() if p.is_dir()),
    }


def _processes(field: str) -> Iterator[tuple[int, bytes]]:
    """(pid, /proc/<pid>/<field>) of every process but this one."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                yield int(entry.name), (entry / field).read_bytes()
            except OSError:
                continue


def kernel_processes() -> list[int]:
    """ipykernel processes running the ucnb kernel (left behind by a killed runner?)."""
    return [pid for pid, cmd in _processes("cmdline") if b"ipykernel_launcher" in cmd]


def assert_run_left_nothing(root: Path) -> None:
    """This run's lab (named in environment.txt) left no domain, network, lab folder or process.

    Only this run's objects are checked: other labs may be running on the same host meanwhile.
    """
    from ucnb.evidence.proof import read_environment

    env = read_environment(root)
    lab_id, run_id = env["lab_id"], env["run_id"]
    objects = ucnb_objects()
    assert not [d for d in objects["domains"] if d.startswith(f"ucnb-{lab_id}-")], objects
    assert not [n for n in objects["networks"] if n == f"ucnb-{lab_id}" or n.startswith(f"ucnb-{lab_id}-")]
    assert lab_id not in objects["labs"]
    marker = f"UCNB_RUN_ID={run_id}".encode()
    left = [pid for pid, environ in _processes("environ") if marker in environ.split(b"\0")]
    assert not left, f"processes of run {run_id} left: {left}"


@pytest.fixture()
def no_leaks(lab_host: None) -> Iterator[None]:
    """Fail the test if it leaves a domain, network, lab folder or kernel behind."""
    before = ucnb_objects()
    yield
    after = ucnb_objects()
    assert after == before, f"leaked lab objects: before {before}, after {after}"
    assert kernel_processes() == [], "a ucnb kernel process was left running"


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
