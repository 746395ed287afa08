"""Where things live: the project root, the work root (state, caches) and the evidence root."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    """The checkout ucnb runs from (where `notebooks/` and `parameters/` are)."""
    env = os.environ.get("UCNB_PROJECT_ROOT")
    if env:
        return Path(env).resolve()
    candidate = PACKAGE_DIR.parent
    if (candidate / "notebooks").is_dir():
        return candidate
    return Path.cwd()


def work_root() -> Path:
    """Runtime state and caches: `ULTRACLOUD_WORK_ROOT` (the product's variable), else `./work`."""
    env = os.environ.get("ULTRACLOUD_WORK_ROOT")
    root = Path(env) if env else project_root() / "work"
    return root.resolve()


def pin_work_root() -> Path:
    """Resolve a relative `ULTRACLOUD_WORK_ROOT` once (against the current directory) and export
    the absolute path, so later calls and child processes agree whatever their directory."""
    root = work_root()
    if "ULTRACLOUD_WORK_ROOT" in os.environ:
        os.environ["ULTRACLOUD_WORK_ROOT"] = str(root)
    return root


def outputs_root() -> Path:
    """Dated evidence: `UCNB_OUTPUTS` or `<project>/outputs`."""
    env = os.environ.get("UCNB_OUTPUTS")
    return Path(env).resolve() if env else project_root() / "outputs"


def cache_dir(*parts: str) -> Path:
    path = work_root().joinpath("cache", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def labs_dir() -> Path:
    """One folder per live lab (overlays, serial logs, state.json)."""
    path = work_root() / "labs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def host_lock(name: str) -> Path:
    """A lock file shared by every ucnb on this host, whatever its work root (`/run/lock`)."""
    directory = Path("/run/lock") if Path("/run/lock").is_dir() else Path(tempfile.gettempdir())
    return directory / f"ucnb-{name}.lock"
