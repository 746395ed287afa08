"""The unit layer: no root, no libvirt, no network namespace, no VMs; seconds, as any user on any Linux.

Every unit test gets its own work and outputs roots, and finds libvirt, the lab namespace and the
host daemons out of reach: a unit test that touches them fails, saying it belongs in tests/vm.
What a test needs of the host is declared with `@pytest.mark.requires(...)`: a tool on PATH, a
file, or one of the CAPABILITIES below. When it is missing the test is skipped saying so, or fails
when UCNB_TEST_REQUIRE_TOOLS=1 (`make test`, as root after `make setup` installed every tool), so
no test is skipped silently where it must run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest

from ucnb.host import daemons, netns

from ..contract_fixtures import contract_flake, nix_offline

__all__ = ["contract_flake", "nix_offline"]
UNREACHABLE_LIBVIRT = "qemu+unix:///system?socket=/nonexistent/ucnb-unit-tests"


def _refuse(what: str) -> Callable[..., None]:
    def refused(*_args: object, **_kwargs: object) -> None:
        raise AssertionError(f"a unit test reached {what}: it belongs in tests/vm")
    return refused


@pytest.fixture(autouse=True)
def unit_isolation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Private work and outputs roots; libvirt, the namespace and the daemons refused (in this
    process, and for child processes libvirt at an address where nothing listens)."""
    monkeypatch.setenv("ULTRACLOUD_WORK_ROOT", str(tmp_path / "work"))
    monkeypatch.setenv("UCNB_OUTPUTS", str(tmp_path / "outputs"))  # the `outputs` fixture's path too
    monkeypatch.setenv("UCNB_LIBVIRT_URI", UNREACHABLE_LIBVIRT)
    for name in ("open", "openReadOnly", "openAuth"):
        monkeypatch.setattr(libvirt, name, _refuse(f"libvirt (libvirt.{name})"))
    for module, names in ((netns, ("enter", "create", "delete")), (daemons, ("up", "down"))):
        for name in names:
            monkeypatch.setattr(module, name, _refuse(f"the lab host ({module.__name__}.{name})"))


CAPABILITIES: dict[str, Callable[[], bool]] = {
    # nix builds need a store they can write: root's daemonless nix (`make setup`) or a nix daemon.
    "nix with a writable store": lambda: shutil.which("nix") is not None and (
        os.access("/nix/store", os.W_OK) or Path("/nix/var/nix/daemon-socket/socket").exists()),
}


def _present(need: str) -> bool:
    if need in CAPABILITIES:
        return CAPABILITIES[need]()
    return Path(need).exists() if "/" in need else shutil.which(need) is not None


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("requires"):
        missing = [str(tool) for tool in mark.args if not _present(str(tool))]
        if missing:
            reason = f"needs {', '.join(missing)} (as root, `make setup` provides it)"
            if os.environ.get("UCNB_TEST_REQUIRE_TOOLS") == "1":
                pytest.fail(f"{reason}; UCNB_TEST_REQUIRE_TOOLS=1: it must run here", pytrace=False)
            pytest.skip(reason)
