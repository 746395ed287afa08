"""Real nix, offline, against the contract flake: the fixtures of the product-command tests.

Imported by the conftest.py of a layer that runs the product's commands (tests/unit today);
`copy_contract_flake` by the tests themselves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ucnb.overrides import OVERRIDES
from ucnb.product.commands import offline_nix_config

CONTRACT_FLAKE = Path(__file__).resolve().parent / "contract-flake"


def copy_contract_flake(destination: Path, fail: tuple[str, ...] = ()) -> Path:
    """The contract flake in its own git repository (a flake sees only git-added files; inside
    ucnb's tree it would see ucnb's index instead). `fail`: builds/evals to fail (fail/<name>)."""
    shutil.copytree(CONTRACT_FLAKE, destination, ignore=shutil.ignore_patterns("work", "result"))
    for name in fail:
        (destination / "fail").mkdir(exist_ok=True)
        (destination / "fail" / name).write_text("steered by the test\n")
    git = ["git", "-c", "init.defaultBranch=main", "-c", "user.name=ucnb", "-c", "user.email=ucnb@localhost"]
    subprocess.run([*git, "init", "-q"], cwd=destination, check=True)
    subprocess.run([*git, "add", "-A"], cwd=destination, check=True)
    return destination


@pytest.fixture()
def nix_offline(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    """NIX_CONFIG that reaches for nothing on the network; no ambient overrides or work root."""
    config = offline_nix_config(tmp_path_factory.mktemp("nix-config"))
    monkeypatch.setenv("NIX_CONFIG", config)
    for name in (*OVERRIDES, "ULTRACLOUD_WORK_ROOT"):
        monkeypatch.delenv(name, raising=False)
    for name in ("FAIL", "SUCCESS_FALSE", "NO_RESULT", "FAIL_MARKER", "HANG", "HW_TRANSPORT"):
        monkeypatch.delenv(f"UCNB_CONTRACT_{name}", raising=False)
    return config


@pytest.fixture()
def contract_flake(tmp_path: Path, nix_offline: str) -> Path:
    """A fresh copy of the contract flake (git-initialised) with offline nix settings."""
    return copy_contract_flake(tmp_path / "flake")


@pytest.fixture()
def path_without_nix(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PATH with every program of this one but nix (links to them in one folder)."""
    folder = tmp_path_factory.mktemp("path-without-nix")
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            target = Path(directory) / name
            if not name.startswith("nix") and not (folder / name).exists() and os.access(target, os.X_OK):
                (folder / name).symlink_to(target)
    assert shutil.which("nix", path=str(folder)) is None
    return str(folder)
