"""`ucnb budget`: the work-root budget (seed: `work-root-budget.sh`: status, enforce,
cleanup-advice, prune-proof-logs N)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ucnb.errors import ParameterError
from ucnb.evidence.budget import (
    AREAS_BY_NAME,
    BudgetStatus,
    cleanup_advice,
    format_size,
    parse_budget_options,
    prune_proof_logs,
    status,
)

budget_app = typer.Typer(no_args_is_help=True,
                         help="Work-root budget: status, enforce, cleanup-advice, prune-proof-logs.")
_out = Console()
_err = Console(stderr=True)

BudgetOption = Annotated[
    list[str] | None,
    typer.Option("--budget", metavar="AREA=SIZE",
                 help=f"Override a soft budget (repeatable). Areas: {', '.join(AREAS_BY_NAME)}."),
]


@contextmanager
def _parameter_errors() -> Iterator[None]:
    """Bad input exits 2 with one readable line instead of a traceback."""
    try:
        yield
    except ParameterError as exc:
        _err.print(f"budget: {exc}", markup=False)
        raise typer.Exit(exc.exit_code) from exc


def _status_table(current: BudgetStatus) -> Table:
    table = Table(title=f"work root {current.work_root}  outputs {current.outputs_root}")
    for column in ("area", "size", "budget", "use", "state", "paths"):
        table.add_column(column, justify="right" if column in ("size", "budget", "use") else "left")
    for usage in current.areas:
        use = f"{100 * usage.size / usage.budget:.0f}%" if usage.budget else "-"
        state = "[red]OVER[/red]" if usage.over else "[green]ok[/green]"
        table.add_row(usage.area.name, format_size(usage.size), format_size(usage.budget), use, state,
                      "\n".join(str(p) for p in usage.paths) or "-")
    return table


def _lanes_table(current: BudgetStatus) -> Table:
    table = Table(title="dated proof roots per lane")
    for column in ("lane", "roots", "size", "newest", "latest ->"):
        table.add_column(column, justify="right" if column in ("roots", "size") else "left")
    for lane in current.lanes:
        table.add_row(lane.lane, str(lane.count), format_size(lane.size), lane.newest, lane.latest or "-")
    return table


def _show_status(budget: list[str] | None) -> BudgetStatus:
    with _parameter_errors():
        current = status(parse_budget_options(budget or []))
    _out.print(_status_table(current))
    if current.lanes:
        _out.print(_lanes_table(current))
    return current


@budget_app.command("status")
def status_command(budget: BudgetOption = None) -> None:
    """Report sizes per area against their soft budgets, and dated proof roots per lane."""
    _show_status(budget)


@budget_app.command("enforce")
def enforce_command(budget: BudgetOption = None) -> None:
    """Like status, but exit 1 when any area is over its budget."""
    current = _show_status(budget)
    for usage in current.overruns:
        _err.print(f"[red]over budget: {usage.area.name} {format_size(usage.size)} > "
                   f"{format_size(usage.budget)}[/red]")
    raise typer.Exit(current.exit_code)


@budget_app.command("cleanup-advice")
def cleanup_advice_command(
    keep: Annotated[int, typer.Option("--keep", help="Proof roots to keep per lane.")] = 2,
) -> None:
    """List what is reclaimable and the command that reclaims it."""
    with _parameter_errors():
        advice = cleanup_advice(keep)
    if not advice:
        _out.print("nothing to clean")
        return
    table = Table(title="cleanup advice (largest first)")
    for column in ("area", "size", "disposable", "command", "note"):
        table.add_column(column, justify="right" if column == "size" else "left")
    for item in advice:
        table.add_row(item.area, format_size(item.size), "yes" if item.disposable else "after check",
                      item.command, item.note)
    _out.print(table)


@budget_app.command("prune-proof-logs")
def prune_proof_logs_command(
    keep: Annotated[int, typer.Argument(help="Dated proof roots to keep per lane (newest).")],
    delete: Annotated[bool, typer.Option("--delete", help="Really delete (default: dry run).")] = False,
) -> None:
    """Keep the KEEP newest dated proof roots per lane; a dry run unless --delete."""
    with _parameter_errors():
        result = prune_proof_logs(keep, delete)
    if not result.doomed and not result.links:
        _out.print(f"nothing to prune: no lane has more than {keep} dated proof root(s)")
        return
    verb = "deleted" if result.applied else "would delete"
    table = Table(title=f"prune-proof-logs {keep}: {verb} {len(result.doomed)} "
                        f"({format_size(result.freed)}), keeps {len(result.kept)}")
    table.add_column("lane")
    table.add_column("proof root")
    for root in result.doomed:
        table.add_row(root.lane, root.path.name)
    _out.print(table)
    for change in result.links:
        action = f"-> {change.new}" if change.new else "removed"
        _out.print(f"{change.link}: {change.old} {action}" + ("" if result.applied else " (dry run)"),
                   markup=False, soft_wrap=True)
    if not result.applied and result.doomed:
        _out.print(f"dry run: re-run with --delete to remove {len(result.doomed)} proof root(s)")
