"""`ucnb hardware-smoke preflight | run | capture`: the hardware bring-up pack (seed: Hardware
Bring-Up Pack). Artifacts go under `<work>/hardware-smoke/<run-id>`, `latest` refreshed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ucnb import paths
from ucnb.errors import InfrastructureError, ParameterError, UcnbError
from ucnb.runner.params import parse_assignment, read_yaml_mapping

app = typer.Typer(help="Hardware bring-up: preflight, present the ISO (USB or Redfish), capture.",
                  no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)


def _fail(exc: UcnbError) -> None:
    console.print(f"[bold red]{exc.kind}:[/] {exc}", highlight=False)
    raise typer.Exit(exc.exit_code)


def _run_dir(run_dir: Path | None) -> Path:
    from ucnb.baremetal import hardware_smoke  # imported where used: every `ucnb` starts faster

    path = run_dir or paths.work_root() / hardware_smoke.LANE_DIR / "latest"
    if not (path / "status.env").exists():
        _fail(ParameterError(f"{path} is not a hardware-smoke run (no status.env): run preflight first"))
    return path.resolve()


@app.command()
def preflight(
    file: Annotated[Path | None, typer.Option("--file", "-f", help="YAML parameter file")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE")] = None,
    run_id: Annotated[str | None, typer.Option(help="default: a new dated id")] = None,
) -> None:
    """Write kernel-params.txt, expected/failure markers, operator-handoff.md and status.env;
    exit 3 with missing-requirements.txt when no transport (USB or BMC) is available."""
    from ucnb.baremetal import hardware_smoke

    try:
        values = read_yaml_mapping(file) if file else {}
        values.update(parse_assignment(a) for a in param or [])
        run_dir = hardware_smoke.preflight(None, hardware_smoke.load_params(values), run_id=run_id)
    except UcnbError as exc:
        _fail(exc)
    status = hardware_smoke.read_status(run_dir)
    typer.echo(str(run_dir))
    if status.get("status") == "blocked":
        missing = (run_dir / "missing-requirements.txt").read_text().strip()
        _fail(InfrastructureError(f"blocked: missing inputs:\n{missing}"))


@app.command("run")
def run_media(
    run_dir: Annotated[Path | None, typer.Argument(help="default: the latest preflight")] = None,
    iso: Annotated[Path | None, typer.Option(help="an ISO to present (default: the reference "
                                                  "installer, built for this run)")] = None,
) -> None:
    """Write the ISO to the USB device, or insert it as Redfish virtual media and boot from it."""
    from ucnb.baremetal import hardware_smoke

    path = _run_dir(run_dir)
    try:
        artifacts = None
        if iso is None:
            from ucnb import profiles
            from ucnb.image import build_image
            from ucnb.installer.build import build_installer

            artifacts = build_installer(build_image(profiles.load("lab")))
        outcome = hardware_smoke.run(path, artifacts=artifacts, iso=iso)
    except UcnbError as exc:
        _fail(exc)
    typer.echo(f"{path}: {outcome.get('transport', '')} media presented")


@app.command()
def capture(
    serial_log: Annotated[Path | None, typer.Option(help="the machine's console log")] = None,
    ssh: Annotated[str | None, typer.Option(
        "--ssh", metavar="HOST", help="collect the evidence over SSH from the installed host")] = None,
    ssh_user: Annotated[str | None, typer.Option(help="default: the run's ssh_user parameter")] = None,
    ssh_key: Annotated[Path | None, typer.Option(help="default: the run's ssh_key_file parameter")] = None,
    run_dir: Annotated[Path | None, typer.Argument(help="default: the latest preflight")] = None,
) -> None:
    """Check the marker sequence, up to desired-system-active, in a supplied serial log, or over SSH
    (`--ssh HOST`: the host's marker log and the node agent's status; a stopped agent does not
    confirm desired-system-active)."""
    from ucnb.baremetal import hardware_smoke

    path = _run_dir(run_dir)
    if (serial_log is None) == (ssh is None):
        _fail(ParameterError("capture takes exactly one of --serial-log FILE or --ssh HOST"))
    try:
        if ssh is not None:
            from ucnb.baremetal.ssh_capture import capture_ssh

            result = capture_ssh(path, ssh, user=ssh_user, key_file=ssh_key)
        else:
            result = hardware_smoke.capture(path, serial_log)
    except UcnbError as exc:
        _fail(exc)
    if result.passed:
        typer.echo(f"{path}: passed")
        raise typer.Exit(0)
    culprit = (f"failure marker {result.failure_marker}" if result.failure_marker
               else f"missing marker {result.first_missing}")
    reason = hardware_smoke.read_status(path).get("reason")
    typer.echo(f"{path}: failed: {culprit}" + (f" ({reason})" if reason else ""))
    raise typer.Exit(1)
