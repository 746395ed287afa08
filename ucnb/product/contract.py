"""The product's contract as data: the `commands:` section of the ultracloud profile, validated.

`plan(lane, flake=..., params=...)` turns a lane's entry into the `Command`s that run it (argv
lists from the flake's root); `format_plan()` prints them as a user would type them.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ucnb.errors import ParameterError
from ucnb.product.commands import Command, NixInfo, resolve_flake, resolve_overrides

CONTRACT_FILE = Path(__file__).resolve().parents[1] / "profiles" / "ultracloud.yaml"
SCHEMA = "ucnb.product-commands/v1"
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
BUILTIN_PLACEHOLDERS = frozenset({"work_root"})
ACTION = "action"


class ParamSpec(BaseModel):
    """A parameter a lane's commands take (rendered into argv or env, validated first)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["str", "int", "bool"] = "str"
    choices: list[str] | None = None
    pattern: str | None = None
    default: str | int | bool | None = None
    help: str = ""

    def coerce(self, name: str, value: Any) -> str | int | bool:
        if self.type == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes"):
                return True
            if str(value).lower() in ("0", "false", "no", ""):
                return False
            raise ParameterError(f"{name}: {value!r} is not true or false")
        if self.type == "int":
            if isinstance(value, bool) or not re.fullmatch(r"[0-9]+", str(value)):
                raise ParameterError(f"{name}: {value!r} is not a non-negative integer")
            return int(value)
        text = str(value)
        if self.choices is not None and text not in self.choices:
            raise ParameterError(f"{name}: {text!r} is not one of {', '.join(self.choices)}")
        if self.pattern is not None and not re.fullmatch(self.pattern, text):
            raise ParameterError(f"{name}: {text!r} does not match {self.pattern}")
        return text


class StepSpec(BaseModel):
    """One command of the contract, as written there."""

    model_config = ConfigDict(extra="forbid")
    name: str
    argv: list[str] = Field(min_length=1)
    env: dict[str, str] = {}
    env_if: dict[str, dict[str, str]] = {}
    timeout_s: float | None = None
    expect_output: str | None = None
    writes: str | None = None
    result_json: bool = False
    files: list[str] = []
    markers: list[str] = []
    interactive: bool = False
    assumed: bool = False
    note: str = ""

    @model_validator(mode="after")
    def _check(self) -> StepSpec:
        if self.expect_output is not None:
            re.compile(self.expect_output)
        if self.writes is not None and ("/" in self.writes or self.writes in ("", ".", "..")):
            raise ValueError(f"writes: {self.writes!r} is one folder name under the work root")
        if self.assumed and not self.note:
            raise ValueError(f"{self.name}: an assumed command says why in `note`")
        return self

    def placeholders(self) -> set[str]:
        return {m for arg in self.argv for m in PLACEHOLDER_RE.findall(arg)}


class EntrySpec(BaseModel):
    """A lane (or suite) of the contract: its steps, or one step list per `action`."""

    model_config = ConfigDict(extra="forbid")
    title: str = ""
    aliases: list[str] = []
    parameters: dict[str, ParamSpec] = {}
    steps: list[StepSpec] | None = None
    actions: dict[str, list[StepSpec]] | None = None

    @model_validator(mode="after")
    def _check(self) -> EntrySpec:
        if (self.steps is None) == (self.actions is None):
            raise ValueError("an entry has exactly one of `steps` and `actions`")
        if self.actions is not None:
            spec = self.parameters.get(ACTION)
            if spec is None or sorted(spec.choices or []) != sorted(self.actions):
                raise ValueError(f"`actions` needs an `{ACTION}` parameter whose choices are its keys")
        for step in self.all_steps():
            unknown = step.placeholders() - BUILTIN_PLACEHOLDERS - set(self.parameters)
            if unknown:
                raise ValueError(f"{step.name}: unknown placeholder(s) {sorted(unknown)} in argv")
            for param in step.env_if:
                if param not in self.parameters or self.parameters[param].type != "bool":
                    raise ValueError(f"{step.name}: env_if names {param!r}, not a declared bool parameter")
        return self

    def all_steps(self) -> list[StepSpec]:
        if self.steps is not None:
            return list(self.steps)
        return [s for steps in (self.actions or {}).values() for s in steps]


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    schema_: Literal["ucnb.product-commands/v1"] = Field(alias="schema")
    source: str
    default_timeout_s: float = 3600
    lanes: dict[str, EntrySpec]
    suites: dict[str, EntrySpec] = {}

    @model_validator(mode="after")
    def _aliases(self) -> Contract:
        seen: dict[str, str] = {}
        for name, entry in self.lanes.items():
            for alias in entry.aliases:
                if alias in self.lanes or alias in seen:
                    raise ValueError(f"alias {alias!r} of {name} is already a lane or alias")
                seen[alias] = name
        return self

    def lane(self, name: str) -> tuple[str, EntrySpec]:
        for lane_name, entry in self.lanes.items():
            if name == lane_name or name in entry.aliases:
                return lane_name, entry
        raise ParameterError(f"the ultracloud profile has no commands for lane {name!r}; "
                             f"lanes with commands: {', '.join(self.lanes)}")

    def suite(self, name: str) -> EntrySpec:
        try:
            return self.suites[name]
        except KeyError:
            raise ParameterError(f"the ultracloud profile has no commands for suite {name!r}; "
                                 f"suites: {', '.join(self.suites)}") from None


def load_contract(path: Path | None = None) -> Contract:
    """The `commands:` section of the ultracloud profile (or of `path`), validated."""
    return _load(str(path or CONTRACT_FILE))


@cache
def _load(path: str) -> Contract:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ParameterError(f"cannot read the product's commands from {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("commands"), dict):
        raise ParameterError(f"{path} has no `commands:` section (the product's contract as data)")
    try:
        return Contract.model_validate(data["commands"])
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ParameterError(f"the product's commands in {path} are invalid: {problems}") from None


# -- planning ---------------------------------------------------------------------------------------
def work_root_for(flake: Path, work_root: str | os.PathLike[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> Path:
    """`work_root`, else ULTRACLOUD_WORK_ROOT, else `<flake>/work` (relative paths: from the flake)."""
    environ = os.environ if environ is None else environ
    chosen = work_root if work_root is not None else environ.get("ULTRACLOUD_WORK_ROOT") or None
    if chosen is None:
        return flake / "work"
    return (flake / Path(os.fspath(chosen)).expanduser()).resolve()


def _values(params: Mapping[str, Any] | BaseModel | None) -> dict[str, Any]:
    if params is None:
        return {}
    if isinstance(params, BaseModel):
        return params.model_dump()
    return dict(params)


def planned_flake(flake: str | os.PathLike[str]) -> Path:
    """The flake path as a plan prints it when the checkout is not here (nothing runs from it)."""
    return Path(os.fspath(flake)).expanduser().absolute()


def _entry_plan(entry_name: str, entry: EntrySpec, contract: Contract, flake: str | os.PathLike[str],
                params: Mapping[str, Any] | BaseModel | None, work_root: str | os.PathLike[str] | None,
                timeout_s: float | None, check_flake: bool = True) -> list[Command]:
    root = resolve_flake(flake) if check_flake else planned_flake(flake)
    given = _values(params)
    values: dict[str, Any] = {}
    for name, spec in entry.parameters.items():
        value = given.get(name, spec.default)
        if value is None:
            raise ParameterError(f"{name}: the {entry_name} commands need a value")
        values[name] = spec.coerce(name, value)
    wr = work_root_for(root, work_root if work_root is not None else given.get("work_root"))
    explicit_root = work_root is not None or given.get("work_root") is not None
    values["work_root"] = "./work" if wr == root / "work" else str(wr)
    steps = entry.steps if entry.steps is not None else (entry.actions or {})[str(values[ACTION])]
    commands = []
    for step in steps:
        argv = [PLACEHOLDER_RE.sub(lambda m: str(values[m.group(1)]), arg) for arg in step.argv]
        env = dict(step.env)
        for param, extra in step.env_if.items():
            if values[param]:
                env.update(extra)
        if explicit_root:
            env.setdefault("ULTRACLOUD_WORK_ROOT", str(wr))
        commands.append(Command(
            argv=tuple(argv), cwd=root, name=step.name,
            timeout_s=timeout_s if timeout_s is not None else (step.timeout_s or contract.default_timeout_s),
            env=env, nix=argv[0] == "nix", needs_nix=True,
            cluster=any(a.startswith("./nix/test-cluster") for a in argv),
            expect_output=step.expect_output, proof_folder=step.writes, work_root=wr,
            result_json=step.result_json, expected_files=tuple(step.files), markers=tuple(step.markers),
            interactive=step.interactive, assumed=step.assumed, note=step.note))
    return commands


def plan(lane: str, *, flake: str | os.PathLike[str], params: Mapping[str, Any] | BaseModel | None = None,
         work_root: str | os.PathLike[str] | None = None, timeout_s: float | None = None,
         contract: Contract | None = None, check_flake: bool = True) -> list[Command]:
    """The commands that run `lane` on the product, in order. `params` may be the lane's whole
    parameter model: only the names the contract declares for the lane are read (and `work_root`).
    `check_flake=False`: a plan to print, for a checkout that need not be here."""
    contract = contract or load_contract()
    name, entry = contract.lane(lane)
    return _entry_plan(name, entry, contract, flake, params, work_root, timeout_s, check_flake)


def plan_suite(suite: str, *, flake: str | os.PathLike[str], params: Mapping[str, Any] | None = None,
               work_root: str | os.PathLike[str] | None = None, timeout_s: float | None = None,
               contract: Contract | None = None, check_flake: bool = True) -> list[Command]:
    """The commands of a suite of the contract (publishable, final-proof, portable), in order."""
    contract = contract or load_contract()
    return _entry_plan(suite, contract.suite(suite), contract, flake, params, work_root, timeout_s,
                       check_flake)


def has_lane(lane: str, contract: Contract | None = None) -> bool:
    """Whether the contract gives `lane` (a name or alias) commands."""
    try:
        (contract or load_contract()).lane(lane)
    except ParameterError:
        return False
    return True


def has_suite(suite: str, contract: Contract | None = None) -> bool:
    return suite in (contract or load_contract()).suites


# -- the eval guard -----------------------------------------------------------------------------------
def evaluations(flake: str | os.PathLike[str], contract: Contract | None = None,
                timeout_s: float = 600, check_flake: bool = True) -> list[tuple[str, Command]]:
    """Every canonical attr the contract names, as an evaluation (lane, command), each attr once:
    its `nix eval` commands verbatim, and each `nix build .#ATTR` as `nix eval .#ATTR.drvPath
    --raw` (evaluated, not built: what a fail-first eval guard checks before any long run)."""
    contract = contract or load_contract()
    root = resolve_flake(flake) if check_flake else planned_flake(flake)
    found: list[tuple[str, Command]] = []
    seen: set[str] = set()
    for lane, entry in contract.lanes.items():
        for step in entry.all_steps():
            argv = step.argv
            if argv[:2] == ["nix", "eval"] and not step.placeholders():
                installable = next((a for a in argv[2:] if "#" in a), "")
                command = Command(tuple(argv), root, name=step.name, timeout_s=timeout_s, nix=True)
            elif argv[:2] == ["nix", "build"] and len(argv) == 3 and argv[2].startswith(".#"):
                installable = f"{argv[2]}.drvPath"
                command = Command(("nix", "eval", installable, "--raw"), root, timeout_s=timeout_s, nix=True,
                                  name=f"eval {argv[2][2:]} (built by {step.name})")
            else:
                continue
            if installable and installable not in seen:
                seen.add(installable)
                found.append((lane, command))
    return found


def format_plan(commands: Sequence[Command], nix: NixInfo | None = None,
                overrides: Mapping[str, str] | None = None) -> str:
    """The commands as a user would type them from the flake's root (what `--plan` prints)."""
    if not commands:
        return "# (no commands)\n"
    overrides = overrides or resolve_overrides()
    lines = [f"cd {shlex.quote(str(commands[0].cwd))}",
             "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(overrides.items()))]
    for command in commands:
        lines.append(f"# {command.name}" + (f" (timeout {command.timeout_s:g}s)" if command.timeout_s else "")
                     + (" (assumed: not in the contract)" if command.assumed else "")
                     + (" (needs a terminal)" if command.interactive else ""))
        if command.assumed and command.note:
            lines.append(f"#   {command.note}")
        lines.append(command.display(nix, overrides))
        if command.proof_folder is not None and command.work_root is not None:
            lines.append(f"#   then ucnb ingests {command.work_root / command.proof_folder / 'latest'}"
                         + (" (result.json with `success` required)" if command.result_json else ""))
    return "\n".join(lines) + "\n"


def plan_text(name: str, flake: str | os.PathLike[str], params: Mapping[str, Any] | BaseModel | None = None,
              suite: bool = False) -> str:
    """A lane's (or a contract suite's) commands as `--plan` prints them, each with its timeout,
    and what `ucnb run` would refuse before starting (no flake.nix: exit 2; no nix: exit 3). The
    checkout need not be here."""
    from ucnb.errors import InfrastructureError
    from ucnb.product.commands import cap_timeouts, detect_nix, timeout_cap

    if suite:
        planned = plan_suite(name, flake=flake, params=_values(params), check_flake=False)
    else:
        planned = plan(name, flake=flake, params=params, check_flake=False)
    notes = [f"# {'suite' if suite else 'lane'} {name}, ultracloud profile: the product's own commands "
             f"(the contract: ucnb/profiles/ultracloud.yaml), from the flake's root, never through a shell"]
    root = planned_flake(flake)
    if not (root / "flake.nix").is_file():
        notes.append(f"# note: {root} has no flake.nix: `ucnb run` would refuse it (exit 2)")
    nix: NixInfo | None
    try:
        nix = detect_nix()
    except InfrastructureError:
        nix = None
        notes.append("# note: no nix on this host: `ucnb run` would refuse to start (exit 3); argv as the "
                     "contract writes it")
    return "\n".join(notes) + "\n" + format_plan(cap_timeouts(planned, timeout_cap()), nix)
