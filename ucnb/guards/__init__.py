"""Fail-first guards over the supported surface (seed: "Regression Guards").

`guard_app` is the `guard` command group; each guard registers its own command on it.
"""

from __future__ import annotations

import typer

from .profiles import ProfileCheck, check_profiles, profiles_command
from .surface import Finding, Rule, RuleSet, load_rules, scan, surface_command

guard_app = typer.Typer(no_args_is_help=True, help="Fail-first guards over the supported surface.")


@guard_app.callback()
def _guards() -> None:
    """Fail-first guards over the supported surface."""
    # A callback keeps `guard` a command group even while it holds a single command.


guard_app.command("surface")(surface_command)
guard_app.command("profiles")(profiles_command)

__all__ = ["Finding", "ProfileCheck", "Rule", "RuleSet", "check_profiles", "guard_app", "load_rules",
           "profiles_command", "scan", "surface_command"]
