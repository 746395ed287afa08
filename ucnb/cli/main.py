"""The `ucnb` command line."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ucnb import fastexit
from ucnb.cli import baremetal as cli_baremetal
from ucnb.cli import hardware as cli_hardware
from ucnb.cli.budget import budget_app
from ucnb.cli.guards import guard_app
from ucnb.errors import ParameterError, UcnbError

if TYPE_CHECKING:
    from ucnb.lanes import Lane, LaneParameters


class _App(typer.Typer):
    """The command line as a program: it ends without the interpreter's teardown (`ucnb.fastexit`).
    Tests that invoke it in-process (CliRunner) go through click, not here, and keep theirs."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except SystemExit as exc:
            fastexit.end(fastexit.status_of(exc))


app = _App(help="UltraCloud proof notebooks: run release-validation lanes, keep the evidence.",
           no_args_is_help=True, pretty_exceptions_enable=False)
lab_app = typer.Typer(help="Inspect and clean labs (running or kept VMs).", no_args_is_help=True)
host_app = typer.Typer(help="The lab host: network namespace, virtlogd, libvirtd.", no_args_is_help=True)
app.add_typer(lab_app, name="lab")
app.add_typer(host_app, name="host")
app.add_typer(guard_app, name="guard")
app.add_typer(budget_app, name="budget")
app.add_typer(cli_baremetal.app)
app.add_typer(cli_hardware.app, name="hardware-smoke")
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


@app.callback()
def _main() -> None:
    """Resolve the work root once, for this process and every process it starts (kernels,
    helpers): a relative ULTRACLOUD_WORK_ROOT means the same folder to all of them."""
    from ucnb import paths

    paths.pin_work_root()


def _fail(exc: UcnbError) -> None:
    console.print(f"[bold red]{exc.kind}:[/] {exc}", markup=True, highlight=False)
    raise typer.Exit(exc.exit_code)


@app.command()
def run(
    lane: Annotated[str, typer.Argument(help="lane name or alias (see `ucnb list`)")],
    profile: Annotated[str, typer.Option("--profile", "-P", help="lab or ultracloud")] = "lab",
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE (YAML value)")] = None,
    file: Annotated[list[Path] | None, typer.Option("--file", "-f", help="YAML parameter file")] = None,
    plan: Annotated[bool, typer.Option(help="print what would run, run nothing")] = False,
    progress: Annotated[bool | None, typer.Option(help="live progress (default: on a terminal)")] = None,
) -> None:
    """Run a lane: validate parameters, execute its notebook, write the dated proof root."""
    from ucnb.runner import execute as runner

    try:
        lane_obj, params = runner.prepare(lane, profile, file or [], param or [])
        if plan:
            _print_plan(lane_obj, params)
            return
        outcome = runner.launch(lane_obj, params, console=console,
                                progress=sys.stderr.isatty() if progress is None else progress)
    except UcnbError as exc:
        _fail(exc)
    except KeyboardInterrupt:   # before the run had its proof root (once it has, the runner handles it)
        console.print("[bold red]interrupted[/] before the lane started")
        raise typer.Exit(130) from None
    typer.echo(str(outcome.proof_root))
    raise typer.Exit(outcome.exit_code)


def _print_plan(lane: Lane, params: LaneParameters) -> None:
    """Lab: the papermill call. ultracloud: the product's own commands, from the contract."""
    if params.profile != "ultracloud":
        out.print(f"papermill notebooks/{lane.name}.ipynb <proof root> -k ucnb "
                  f"with parameters: {params.model_dump(mode='json')}", highlight=False)
        return
    from ucnb.product.contract import plan_text

    out.print(plan_text(lane.name, params.flake, params), markup=False, highlight=False)


@app.command("list")
def list_lanes() -> None:
    """The lanes, their aliases and profiles."""
    from ucnb import lanes

    table = Table("lane", "aliases", "profiles", "notebook")
    for lane in lanes.all_lanes().values():
        table.add_row(lane.name, ", ".join(lane.aliases), ", ".join(lane.profiles),
                      str(lane.notebook.relative_to(lane.notebook.parents[1])))
    out.print(table)


@app.command()
def preflight() -> None:
    """Check this host can run the lab: tools, daemons, namespace, accelerator, guest image."""
    from ucnb import profiles
    from ucnb.host import daemons
    from ucnb.host.accel import choose
    from ucnb.image import build_image
    from ucnb.lab.registry import connect

    table = Table("check", "result")
    try:
        daemons.up()
        for key, value in daemons.status().items():
            table.add_row(key, value)
        image = build_image(profiles.load("lab"), log=lambda m: console.print(m))
        table.add_row("guest image", f"{image.key} (kernel {image.kernel_version})")
        accel = choose(image, connect())
        table.add_row("accelerator", f"{accel.mode}: {accel.reason}")
    except UcnbError as exc:
        out.print(table)
        _fail(exc)
    out.print(table)


@app.command()
def verify(proof_root: Path) -> None:
    """Re-check a proof root for a reviewer: checksums and notebook validity."""
    import nbformat

    from ucnb.evidence.proof import verify_checksums

    if not (proof_root / "SHA256SUMS").exists():
        _fail(ParameterError(f"{proof_root} has no SHA256SUMS: not a sealed proof root"))
    bad = verify_checksums(proof_root)
    for nb in proof_root.glob("*.ipynb"):
        nbformat.validate(nbformat.read(nb, as_version=4))
    if bad:
        out.print(f"[red]modified or missing:[/] {', '.join(bad)}")
        raise typer.Exit(1)
    out.print(f"[green]intact[/]: {proof_root}")


@app.command()
def suite(
    name: Annotated[str, typer.Argument(help="suite name (ucnb/suites.yaml): portable, publishable, …")],
    profile: Annotated[str | None, typer.Option("--profile", "-P",
                                                help="lab or ultracloud (default: the suite's)")] = None,
    require_kvm: Annotated[bool, typer.Option(
        "--require-kvm", help="refuse to start when guests would run under TCG")] = False,
    junit: Annotated[Path | None, typer.Option(help="also write the JUnit XML here")] = None,
    surface_path: Annotated[Path | None, typer.Option(help="tree the surface guard scans")] = None,
    allow_incomplete: Annotated[bool, typer.Option(
        help="exit 0 when nothing failed but some lanes were not run (not built, not runnable)")] = False,
    progress: Annotated[bool | None, typer.Option(help="live progress (default: on a terminal)")] = None,
    plan: Annotated[bool, typer.Option(help="list the steps and why some cannot run, run nothing")] = False,
    jobs: Annotated[int | None, typer.Option(
        "--jobs", "-j", min=1, help="lanes side by side, each in its own lab (default: from the host's "
                                    "cores and memory)")] = None,
    only: Annotated[list[str] | None, typer.Option(
        help="run only these steps (names, comma-separated or repeated): a CI matrix job's share")] = None,
    matrix: Annotated[bool, typer.Option(
        help="print the suite as a CI matrix (JSON for GitHub's fromJSON), run nothing")] = False,
) -> None:
    """Run a suite of guards and lanes into one dated root, with JUnit XML and a summary table.

    Exit codes: 0 every step passed; the first failure's code (1 lane or guard failed, 2, 3, 4);
    1 when nothing failed but a named lane was not run (unless --allow-incomplete); 3 when KVM is
    required (--require-kvm, or the suite requires it) and this host would use TCG; 130 interrupted.
    """
    import json

    from ucnb.runner import parallel, suites

    try:
        suite_plan = suites.select(suites.plan(name, profile, surface_path), only or [])
        if matrix:
            typer.echo(json.dumps(suites.matrix(suite_plan), separators=(",", ":")))
            return
        if plan:
            table = Table(title=f"suite {name} ({suite_plan.profile})"
                                f"{', requires KVM' if suite_plan.require_kvm or require_kvm else ''}")
            for column in ("step", "status", "reason"):
                table.add_column(column, overflow="fold")
            for e in suite_plan.entries:
                table.add_row(f"{e.kind} {e.name}" + (f" {e.path}" if e.path else ""), e.status, e.reason)
            out.print(table)
            if suite_plan.profile == "ultracloud":
                out.print(suites.product_plan_text(suite_plan), markup=False, highlight=False)
            return
        outcome = suites.run(suite_plan, console=console, junit_file=junit, kvm=require_kvm,
                             allow_incomplete=allow_incomplete, out=out,
                             progress=sys.stderr.isatty() if progress is None else progress,
                             jobs=parallel.Jobs(jobs, f"given: --jobs {jobs}") if jobs
                             else parallel.default_jobs())
    except UcnbError as exc:
        _fail(exc)
    typer.echo(str(outcome.root))
    raise typer.Exit(outcome.exit_code)


@app.command()
def report(
    sources: Annotated[list[Path] | None, typer.Argument(
        help="outputs folders or index.jsonl files, e.g. CI jobs' downloaded outputs (default: outputs/)",
        show_default=False)] = None,
    output: Annotated[Path | None, typer.Option(help="HTML file (default: outputs/report.html)")] = None,
    screenshot: Annotated[Path | None, typer.Option(help="also a PNG of the page (headless chromium)")
                          ] = None,
    suite: Annotated[str | None, typer.Option(
        help="merge the sources' runs of this suite into one verdict (the exit code, as `ucnb suite`'s)")
                     ] = None,
    junit: Annotated[Path | None, typer.Option(help="with --suite: the merged JUnit XML here")] = None,
    allow_incomplete: Annotated[bool, typer.Option(
        help="with --suite: exit 0 when nothing failed but some steps were not run")] = False,
) -> None:
    """One static, self-contained HTML page of every indexed run, failed runs diffed against the
    last good run of the same lane. With --suite, also one verdict and one JUnit for that suite
    over every source (a CI matrix's jobs, each having run part of it with `ucnb suite --only`)."""
    from ucnb.evidence import index
    from ucnb.evidence import report as report_mod
    from ucnb.runner import merge, suites

    if junit is not None and suite is None:
        _fail(ParameterError("--junit needs --suite (which suite's steps to merge)"))
    try:
        merged = None
        if suite is not None:
            merged = merge.merge(suites.plan(suite), index.load_sources(sources) if sources else index.load(),
                                 allow_incomplete)
        path = report_mod.write_report(output, sources=sources or None,
                                       suite=merge.view(merged) if merged else None)
        if merged is not None and junit is not None:
            merge.write_junit(merged, junit)
        if screenshot is not None:
            report_mod.screenshot(path, screenshot)
    except UcnbError as exc:
        _fail(exc)
    if merged is not None:
        suites.print_summary(out, merged.name, merged.entries, merged.verdict)
    typer.echo(str(path))
    raise typer.Exit(merged.exit_code if merged else 0)


@app.command()
def jupyter(
    folder: Annotated[Path | None, typer.Argument(help="folder to serve (default: the notebooks)")] = None,
    ip: Annotated[str, typer.Option(help="address to listen on (default: loopback only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0: a free one)")] = 8888,
) -> None:
    """JupyterLab with the `ucnb` kernel, to step through a lane cell by cell (`make lab`)."""
    from ucnb import paths
    from ucnb.runner import jupyterlab

    try:
        jupyterlab.serve(folder or paths.project_root() / "notebooks", ip, port, out.print)
    except UcnbError as exc:
        _fail(exc)


# -- host -----------------------------------------------------------------------------------
@host_app.command("up")
def host_up() -> None:
    """Create the lab namespace and start virtlogd and libvirtd (idempotent)."""
    from ucnb.host import daemons

    try:
        daemons.up()
    except UcnbError as exc:
        _fail(exc)
    for key, value in daemons.status().items():
        out.print(f"{key}: {value}")


@host_app.command("down")
def host_down() -> None:
    """Clean every lab, stop libvirtd and virtlogd, delete the namespace."""
    from ucnb.host import daemons
    from ucnb.lab import registry

    if daemons.pid_of("libvirtd") is not None:
        registry.clean(include_kept=True, include_live=True, log=out.print)
    daemons.down()


@host_app.command("status")
def host_status() -> None:
    from ucnb.host import daemons

    for key, value in daemons.status().items():
        out.print(f"{key}: {value}")


# -- lab ------------------------------------------------------------------------------------
@lab_app.command("status")
def lab_status() -> None:
    """Every lab's nodes, their state and address."""
    from ucnb.lab import registry

    try:
        rows = registry.status_rows()
    except UcnbError as exc:
        _fail(exc)
    columns = ("lab", "run", "node", "address", "domain", "state", "kept", "owner_pid", "owner")
    table = Table(*columns)
    for row in rows:
        table.add_row(*(str(row[k]) for k in columns))
    out.print(table if rows else "no labs")


@lab_app.command("ssh")
def lab_ssh(node: str, lab_id: Annotated[str | None, typer.Option("--lab")] = None,
            command: Annotated[list[str] | None, typer.Argument()] = None) -> None:
    """SSH into a node of the newest lab (or --lab ID), inside the lab namespace."""
    from ucnb.host import netns
    from ucnb.image.keys import lab_keys
    from ucnb.lab import registry

    try:
        _, info = registry.find_node(node, lab_id)
    except UcnbError as exc:
        _fail(exc)
    keys = lab_keys()
    known = keys.client_private.parent / "known_hosts"
    known.write_text(f"{info['address']} {keys.host_public}\n")
    argv = ["ip", "netns", "exec", netns.NAME, "ssh", "-i", str(keys.client_private),
            "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
            f"root@{info['address']}", *(command or [])]
    os.execvp(argv[0], argv)


@lab_app.command("logs")
def lab_logs(node: str, lab_id: Annotated[str | None, typer.Option("--lab")] = None) -> None:
    """A node's serial console log."""
    from ucnb.lab import registry

    try:
        _, info = registry.find_node(node, lab_id)
    except UcnbError as exc:
        _fail(exc)
    out.print(Path(info["serial_log"]).read_text(errors="replace"), markup=False, highlight=False)


@lab_app.command("stop")
def lab_stop() -> None:
    """Power off every lab's VMs (files are kept until `ucnb lab clean`)."""
    from ucnb.lab import registry

    registry.stop(log=out.print)


@lab_app.command("attach")
def lab_attach(
    lab_id: Annotated[str | None, typer.Argument(help="lab id (default: the newest kept lab)")] = None,
    probe: Annotated[bool, typer.Option(help="run `hostname` on every node over SSH")] = False,
) -> None:
    """Reattach to a kept lab: its nodes, and the Python that drives them from a new kernel."""
    from ucnb.lab.lab import Lab

    try:
        lab = Lab.attach(lab_id)
        table = Table("node", "address", "domain", "state", "hostname" if probe else "")
        for node in lab.nodes.values():
            answer = node.run("hostname", timeout=15).stdout.strip() if probe else ""
            table.add_row(node.name, node.address, node.domain_name,
                          "running" if node.running() else "stopped", answer)
    except UcnbError as exc:
        _fail(exc)
    out.print(table)
    first = next(iter(lab.nodes), "node01")
    out.print(f"""# in a notebook with the `ucnb` kernel, or `.venv/bin/python`:
import ucnb
lab = ucnb.attach({lab.lab_id!r})
node = lab[{first!r}]
print(node.run("uptime").stdout)
# done with it: `ucnb lab clean {lab.lab_id}`""", markup=False, highlight=False)


@lab_app.command("clean")
def lab_clean(
    lab_id: Annotated[str | None, typer.Argument(
        help="one lab (kept or running: its owner is stopped); default: every lab nobody runs")] = None,
    all_labs: Annotated[bool, typer.Option("--all", help="also kept labs whose run has ended")] = False,
) -> None:
    """Remove labs and what dead runs left: domains, networks, disks, sushy-emulator processes and
    their pools, temporary and staging folders, secrets files. With no lab id, a lab whose run is
    still in progress is never touched, nor a kept one (unless --all)."""
    from ucnb.lab import registry

    try:
        removed = registry.clean(lab_id=lab_id, include_kept=all_labs or lab_id is not None,
                                 log=lambda line: out.print(line, markup=False, highlight=False))
    except UcnbError as exc:
        _fail(exc)
    if not removed:
        out.print("nothing to clean")
