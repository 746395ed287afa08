"""A relative ULTRACLOUD_WORK_ROOT means one folder to the runner and its kernel (which runs from
the project root, not from where `ucnb run` was typed): resolved once, absolute, handed down."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ucnb.evidence.proof import read_environment

from ..conftest import ROOT, Cli
from ..lab_fixtures import assert_run_left_nothing

UCNB = Cli(ROOT).argv()  # the one definition of the command line (tests/conftest.py)


def test_a_relative_work_root_is_the_same_folder_for_runner_and_kernel(outputs: Path, lab_host: None) -> None:
    from ucnb import paths

    work = paths.work_root()
    cwd = work.parent.parent            # a directory other than the project root the kernel runs from
    relative = os.path.relpath(work, cwd)
    assert not Path(relative).is_absolute()
    env = {**os.environ, "UCNB_OUTPUTS": str(outputs), "ULTRACLOUD_WORK_ROOT": relative}
    done = subprocess.run([*UCNB, "run", "single-node-quickstart", "--no-progress"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    root = Path(done.stdout.strip())
    assert read_environment(root)["work_root"] == str(work)   # the kernel's view, recorded by the kernel
    assert not (paths.project_root() / relative).exists() or (paths.project_root() / relative) == work
    assert_run_left_nothing(root)   # the runner cleaned the labs folder the kernel used
