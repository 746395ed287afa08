"""`ucnb guard surface|profiles`: the fail-first guards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ucnb.errors import ParameterError
from ucnb.guards.profiles import (
    FAILED,
    NOT_BUILT,
    NOT_EVALUATED,
    NOT_RUNNABLE,
    PASSED,
    check_profiles,
    summary,
)
from ucnb.guards.surface import load_rules, scan

guard_app = typer.Typer(no_args_is_help=True, help="Fail-first guards over the supported surface.")


@guard_app.callback()
def _guards() -> None:
    """Fail-first guards over the supported surface."""
    # A callback keeps `guard` a command group even while it holds a single command.


@guard_app.command("surface")
def surface_command(
    path: Annotated[Path, typer.Argument(help="Tree (or file) to scan, e.g. an UltraCloud checkout.")],
    rules: Annotated[
        Path | None, typer.Option("--rules", help="Rules file (default: the shipped rules).")
    ] = None,
) -> None:
    """Scan PATH for unfinished public-surface wording, stubs, markers and archived helpers.

    Exits 1 when there is any finding, 0 when clean, 2 when PATH or the rules are unusable.
    """
    out, err = Console(soft_wrap=True), Console(stderr=True, soft_wrap=True)
    if not path.exists():
        err.print(f"surface guard: {path} does not exist", markup=False)
        raise typer.Exit(ParameterError.exit_code)
    try:
        ruleset = load_rules(rules)
    except ParameterError as exc:
        err.print(f"surface guard: {exc}", markup=False)
        raise typer.Exit(exc.exit_code) from exc
    findings = scan(path, ruleset)
    for finding in findings:
        # markup off: `[rule-id]` would otherwise be read as a rich style tag.
        out.print(finding.format(), markup=False, highlight=False)
    if findings:
        err.print(f"[red]surface guard: {len(findings)} finding(s) in {path}[/red]")
        raise typer.Exit(1)
    out.print(f"[green]surface guard: {path} is clean ({len(ruleset.rules)} rules)[/green]")


@guard_app.command("profiles")
def profiles_command(
    flake: Annotated[str | None, typer.Option(
        help="UltraCloud flake whose canonical attrs are evaluated (default: the current directory)")] = None,
) -> None:
    """Every profile's entry points evaluate: parameter files against their notebooks, and every
    canonical attr of the contract with `nix eval` (through the product layer) in the flake.

    Exits 1 when a check fails, 0 otherwise; attrs not evaluated (no flake.nix, no nix) and lanes a
    profile cannot run are listed, never passed.
    """
    out = Console(soft_wrap=True)
    try:
        checks = check_profiles(flake)
    except ParameterError as exc:
        Console(stderr=True).print(f"profile guard: {exc}", markup=False)
        raise typer.Exit(exc.exit_code) from exc
    colours = {PASSED: "green", FAILED: "red", NOT_EVALUATED: "yellow", NOT_BUILT: "yellow",
               NOT_RUNNABLE: "yellow"}
    table = Table()
    for column in ("profile", "lane", "entry point", "status", "detail"):
        table.add_column(column, overflow="fold")
    for c in checks:
        table.add_row(escape(c.profile), escape(c.lane), escape(c.what),
                      f"[{colours[c.status]}]{c.status}[/]", escape(c.detail))
    out.print(table)
    failed = any(c.status == FAILED for c in checks)
    out.print(f"[{'red' if failed else 'green'}]profile guard: {summary(checks)}[/]")
    if failed:
        raise typer.Exit(1)
