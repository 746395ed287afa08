"""`baremetal-iso-e2e LOGDIR [--allow-tcg]`: the baremetal-iso harness as one command (seed:
`./result/bin/baremetal-iso-e2e ./work/baremetal-iso-e2e/latest`).

It runs the same notebook and harness as `ucnb run baremetal-iso`, with its proof root inside
LOGDIR, and refuses TCG unless `--allow-tcg` says it is acceptable. `LOGDIR/environment.txt`
records the execution model, whether TCG was allowed and the accelerator used; `LOGDIR/state`
points at the proof root (whose own environment.txt carries `vm_accelerator_mode`).

Mount it in the main CLI with `app.add_typer(baremetal.app)` (merges the command), or run it
as `python -m ucnb.cli.baremetal LOGDIR`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ucnb.errors import UcnbError
from ucnb.evidence import proof as evidence

EXECUTION_MODEL = "check-runner"  # one command over the lane's harness (the seed's materialized runner)
app = typer.Typer(help="Bare-metal proof runners.")


@app.command("baremetal-iso-e2e")
def baremetal_iso_e2e(
    logdir: Annotated[Path, typer.Argument(help="directory for this run's logs and proof root")],
    allow_tcg: Annotated[bool, typer.Option("--allow-tcg",
                                            help="accept TCG when KVM cannot run guests")] = False,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE (YAML value)")] = None,
    progress: Annotated[bool | None, typer.Option(help="live progress (default: on a terminal)")] = None,
) -> None:
    """Run baremetal-iso into LOGDIR; exit 0 passed, 1 failed, 3 infrastructure (e.g. no KVM)."""
    from ucnb.runner.execute import run_lane

    logdir.mkdir(parents=True, exist_ok=True)
    assignments = [*(param or []), f"allow_tcg={str(allow_tcg).lower()}",
                   f"execution_model={EXECUTION_MODEL}"]
    try:
        outcome = run_lane("baremetal-iso", "lab", [], assignments,
                           progress=progress if progress is not None else os.isatty(2), parent=logdir)
    except UcnbError as exc:
        typer.echo(f"{exc.kind}: {exc}", err=True)
        evidence.write_environment(logdir, {"execution_model": EXECUTION_MODEL,
                                            "allow_tcg": str(allow_tcg).lower(), "status": exc.kind})
        raise typer.Exit(exc.exit_code) from None
    inner = evidence.read_environment(outcome.proof_root)
    evidence.write_environment(logdir, {
        "execution_model": EXECUTION_MODEL, "allow_tcg": str(allow_tcg).lower(),
        "vm_accelerator_mode": inner.get("vm_accelerator_mode", "none (refused before any VM)"),
        "verdict": str(outcome.result.get("verdict")), "proof_root": str(outcome.proof_root)})
    link = logdir / "state"
    link.unlink(missing_ok=True)
    link.symlink_to(outcome.proof_root.name)  # relative: the log directory can be moved whole
    typer.echo(str(outcome.proof_root))
    raise typer.Exit(outcome.exit_code)


if __name__ == "__main__":
    app()
