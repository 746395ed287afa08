"""The kernel side of the ultracloud profile: run the lane's product commands, ingest what they wrote.

Glue only: the contract (`ucnb.product.contract`) plans the commands, `ucnb.product.steps` runs
and judges each one, `ucnb.product.ingest` copies the product's proof root. This module records
the environment and shows the tables in the notebook.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ucnb.evidence import proof as evidence
from ucnb.overrides import resolve as resolve_overrides
from ucnb.product import commands, contract
from ucnb.product.steps import CommandOutcome, run_recorded

if TYPE_CHECKING:
    import pandas as pd

    from ucnb.kernel.run import Run

PRODUCT_DIR = "product"      # under the proof root: what the product wrote, copied
PRODUCT_LOG = "product.log"  # under logs/: every product command's output


def _display(obj: Any) -> None:
    from IPython.display import display

    display(obj)


def _display_markdown(text: str) -> None:
    from IPython.display import Markdown

    _display(Markdown(text))


def _table(rows: list[dict[str, Any]], title: str) -> None:
    import pandas as pd

    _display_markdown(f"**{title}**")
    _display(pd.DataFrame(rows) if rows else pd.DataFrame([{title: "(none)"}]))


def flake_revision(flake: Path) -> str:
    """The checkout's git revision (with `-dirty`), for environment.txt; why there is none, otherwise."""
    try:
        done = subprocess.run(["git", "-C", str(flake), "describe", "--always", "--dirty", "--abbrev=40"],
                              capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    if done.returncode == 0:
        return done.stdout.strip()
    return "no git revision (" + ((done.stderr.strip().splitlines() or ["git failed"])[0]) + ")"


def run_lane(run: Run) -> None:
    """Run this lane's product commands (the contract's, with the run's parameters) from the flake's
    root, each as a recorded step; ingest what they wrote under `product/`; fail as the product did."""
    flake = commands.resolve_flake(run.params.flake)        # ParameterError naming `flake`
    cap = commands.timeout_cap()
    planned = commands.cap_timeouts(contract.plan(run.lane.name, flake=flake, params=run.params), cap)
    nix = commands.detect_nix()                              # InfrastructureError naming what to install
    overrides = resolve_overrides()
    revision = flake_revision(flake)
    evidence.write_environment(run.proof_root, {
        **nix.environment(), **dict(line.split("=", 1) for line in overrides.environment_lines()),
        "product_flake": str(flake), "product_flake_revision": revision,
        "system_under_test": f"UltraCloud flake {flake} ({revision})",
        **({"product_timeout_cap_s": f"{cap:g}"} if cap is not None else {})})
    try:
        for command in planned:
            outcome = run_recorded(run.recorder, command, run.proof_root / "logs" / PRODUCT_LOG,
                                   run.proof_root / PRODUCT_DIR, overrides=overrides.exported(),
                                   redactor=run.redactor)
            run.product_outcomes.append(outcome)
            _show(run, outcome)
            outcome.raise_for_failure()
    finally:  # shown on a failure too
        _display_markdown("**markers the product printed** (seconds since the run started, and since "
                          "its command started)")
        _display(run.recorder.table("markers"))


def _show(run: Run, outcome: CommandOutcome) -> None:
    """What one command wrote, as tables; its environment into ucnb's environment.txt."""
    found = outcome.ingested
    if found is None:
        return
    product_env = found.environment
    values = {f"product_{k}": v for k, v in product_env.items()}
    if "vm_accelerator_mode" in product_env:  # ucnb chose no accelerator: the product did
        values |= {"vm_accelerator_mode": product_env["vm_accelerator_mode"],
                   "vm_accelerator_reason": f"reported by the product (environment.txt in {found.expected})"}
    evidence.write_environment(run.proof_root, values)
    where = found.destination.relative_to(run.proof_root)
    _table(found.file_rows(),
           f"files the product wrote ({found.source or found.expected}), copied to {where}/")
    _table(found.key_value_rows(), "result.json and environment.txt")
    if found.markers:
        _table(found.marker_rows(), "markers in the files it wrote")
    if found.skipped:
        _table([{"file": f, "why not copied": why} for f, why in found.skipped], "not copied")


def product_result(run: Run) -> pd.DataFrame:
    """The product's verdict, one row per command: how it ended, its exit status, result.json's
    `success`, its proof root, and whether ucnb counts it passed (they must agree)."""
    import pandas as pd

    return pd.DataFrame([outcome.summary() for outcome in run.product_outcomes])
