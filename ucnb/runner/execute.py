"""`ucnb run`: validate parameters, execute the lane notebook with papermill, seal the evidence.

Whatever happens (a failing lane, a timeout, Ctrl-C or SIGTERM) the executed notebook and
result.json are written and the run's labs are removed unless the lane kept them on purpose.
What the runner prints and returns is redacted like the proof root.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from rich.console import Console

from ucnb import files, lanes, paths
from ucnb.errors import HarnessError, InfrastructureError, Interrupted, ParameterError
from ucnb.evidence import html, index
from ucnb.evidence import proof as evidence
from ucnb.evidence.redact import (
    SECRETS_ENV,
    Redactor,
    SecretTooShort,
    from_environment,
    generated_secrets_file,
)
from ucnb.host.procs import SUPERVISOR_ENV, ProcessId
from ucnb.runner import interrupt
from ucnb.runner import params as params_mod
from ucnb.runner.prestart import KERNEL_NAME
from ucnb.runner.stages import Stages, since_process_start

if TYPE_CHECKING:
    from ucnb.runner.progress import Board


@dataclass(frozen=True)
class Beside:
    """How a suite runs a lane (alone or beside others, `ucnb.runner.parallel`): the suite's main
    thread owns the signals and passes them to `interruption`; progress goes on the suite's
    `board` when lanes share the console; `environment()` is what the lane's environment.txt
    records of the suite run (its jobs, the lanes that ran alongside), asked for at seal."""

    interruption: interrupt.Interruption
    environment: Callable[[], dict[str, str]]
    board: Board | None = None


@dataclass(frozen=True)
class RunOutcome:
    exit_code: int
    proof_root: Path
    result: dict[str, Any]          # as sealed: redacted
    redactor: Redactor = field(default_factory=Redactor, repr=False)   # the run's secrets


def secret_variables(lane: lanes.Lane, values: dict[str, Any]) -> dict[str, str]:
    """parameter -> the environment variable it names, for the lane's secret parameters."""
    return {p: str(values[p]) for p in lane.secret_env_parameters if values.get(p)}


def secrets_redactor(lane: lanes.Lane, values: dict[str, Any],
                     environ: dict[str, str] | None = None) -> Redactor:
    """A redactor of the secrets the lane's parameters name; a secret too short to mask is a
    parameter error naming the parameter (before anything starts)."""
    environ = dict(os.environ if environ is None else environ)
    redactor = Redactor()
    for param, variable in secret_variables(lane, values).items():
        try:
            redactor.add(environ.get(variable), source=f"environment variable {variable}")
        except SecretTooShort as exc:
            raise ParameterError(f"{param}: {exc}") from None
    return redactor


def notebook_parameters(notebook: Path) -> dict[str, dict[str, str]]:
    """The names a notebook's `parameters` cell assigns, each with its default as source text
    (papermill's `inspect_notebook` shape, without importing papermill before the kernel starts)."""
    cells = json.loads(notebook.read_text()).get("cells", [])
    cell = next((c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        return {}
    source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    declared = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            target = node.targets[-1] if isinstance(node, ast.Assign) else node.target
            if isinstance(target, ast.Name):
                declared[target.id] = {"default": ast.get_source_segment(source, node.value) or ""}
    return declared


def prepare(lane_name: str, profile: str, files: list[Path], assignments: list[str]
            ) -> tuple[lanes.Lane, lanes.LaneParameters]:
    """Everything that can be refused before a VM exists: lane, profile, parameters, notebook."""
    lane = lanes.get(lane_name)
    params = params_mod.resolve(lane, profile, files, assignments)
    secrets_redactor(lane, params.model_dump(mode="json"))   # a secret too short to mask: refused now
    if not lane.notebook.exists():
        raise HarnessError(f"lane {lane.name} has no notebook at {lane.notebook}")
    declared = notebook_parameters(lane.notebook)
    missing = {"lane_name", *lane.parameters.model_fields} - set(declared)
    if missing:
        raise HarnessError(f"{lane.notebook.name}'s parameters cell lacks {sorted(missing)}")
    return lane, params


@dataclass
class Execution:
    """One lane run as the runner sees it, carried through the stages of `execute`."""

    lane: lanes.Lane
    values: dict[str, Any]          # the validated parameters, as papermill injects them
    run_id: str
    root: Path
    started: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.time)
    error: dict[str, str] | None = None
    exit_code: int = 0
    redactor: Redactor = field(default_factory=Redactor, repr=False)
    interruption: interrupt.Interruption = field(default_factory=interrupt.Interruption)
    stages: Stages = field(default_factory=Stages)   # where the runner's time went (index line)

    @property
    def notebook(self) -> Path:
        return self.root / f"{self.lane.name}.ipynb"

    @property
    def profile(self) -> str:
        return str(self.values.get("profile"))


def new_root(lane: lanes.Lane, params: lanes.LaneParameters, parent: Path | None) -> Execution:
    """Stage 1: the run id and its dated proof root, with the validated parameters in it."""
    run_id = files.new_run_id()
    root = evidence.new_proof_root(lane.name, run_id, parent)
    values = {"lane_name": lane.name, **params.model_dump(mode="json")}
    (root / "parameters.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    return Execution(lane, values, run_id, root, redactor=secrets_redactor(lane, values))


def kernel_environment(ex: Execution) -> dict[str, str]:
    """Stage 2: the kernel's environment, given to it explicitly (the CLI's own is untouched):
    where its proof root is, which variables hold secrets, the work root (resolved once,
    absolute) and who supervises the kernel (this runner, by pid and start time)."""
    secret_vars = list(secret_variables(ex.lane, ex.values).values())
    # ULTRACLOUD_WORK_ROOT is also the product's variable: passed on (resolved, absolute) only when
    # the user set it, so that the product's own default (<flake>/work) holds otherwise.
    work_root = {"ULTRACLOUD_WORK_ROOT": str(paths.work_root())} if os.environ.get("ULTRACLOUD_WORK_ROOT") \
        else {}
    return {**os.environ, "UCNB_RUN_ID": ex.run_id, "UCNB_PROOF_ROOT": str(ex.root), "UCNB_RUNNER": "1",
            **work_root, "UCNB_OUTPUTS": str(paths.outputs_root()),
            SECRETS_ENV: ",".join(secret_vars), SUPERVISOR_ENV: str(ProcessId.current())}


def cell_timeout_s(lane: lanes.Lane, values: dict[str, Any]) -> float:
    """papermill's per-cell timeout: the lane's own; on ultracloud its product commands run in one
    cell, each bounded by its own timeout, so that cell may take their sum (plus the lane's)."""
    if values.get("profile") != "ultracloud":
        return lane.cell_timeout_s
    from ucnb.product import commands, contract

    planned = contract.plan(lane.name, flake=str(values["flake"]), params=values, check_flake=False)
    capped = commands.cap_timeouts(planned, commands.timeout_cap())
    return lane.cell_timeout_s + sum(c.timeout_s or 0 for c in capped)


def execute_notebook(ex: Execution, env: dict[str, str], after_seal: contextlib.ExitStack) -> None:
    """Stage 3: papermill runs the notebook in a kernel started with `env`; whatever ends it
    (an error in a cell, a cell timeout, a dead kernel, Ctrl-C or SIGTERM) is classified into
    `ex`. papermill runs in a worker thread so that this (main) thread owns the signals
    (`ucnb.runner.interrupt`); the worker launches the kernel before it imports papermill (so the
    kernel starts up meanwhile) and shuts it down afterwards, gracefully first.

    A notebook that ran to its end has torn its labs down and written its last file, so its kernel
    exits while the runner seals: `after_seal` waits for that (and then removes the kernel's
    folder). After a failure or an interrupt the kernel is gone before this returns (its own
    teardown first, then `clean_labs`)."""
    from jupyter_core.utils import run_sync

    from ucnb.lab import leases
    from ucnb.runner.kernel import KERNEL_ARGUMENTS, KERNEL_SHUTDOWN_S, kernel_manager

    interruption = ex.interruption
    failure: list[BaseException] = []
    launched = [0.0, 0.0]   # when the kernel was launched, when its first cell began
    returned = threading.Event()   # papermill returned (and, unless it ran to the end, the kernel is gone)

    def before_cell(**kw: Any) -> None:
        if not launched[1]:
            launched[1] = time.monotonic()
            ex.stages.add("kernel start", launched[1] - launched[0])
            # The HTML exporter is built (templates compiled) while the cells run, not at the seal.
            threading.Thread(target=html.prewarm, name="prewarm-html", daemon=True).start()
        interruption.before_cell(**kw)

    def shut_down(km: Any) -> None:
        try:
            if run_sync(km.is_alive)():
                run_sync(km.shutdown_kernel)(now=False)
        except Exception as exc:  # the kernel may be gone already; clean_labs stops it anyway
            print(f"kernel shutdown: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    def run_papermill(km: Any) -> None:
        try:
            launched[0] = time.monotonic()
            run_sync(km.start_kernel)(env=env, cwd=str(paths.project_root()),
                                      extra_arguments=KERNEL_ARGUMENTS)
            interruption.kernel_started(getattr(km.provisioner, "pid", None))
            # The host's facts (git, qemu and libvirt versions: commands) written while the kernel
            # starts, instead of by its first cell (`Run` leaves them to the runner).
            evidence.write_environment(ex.root, evidence.host_environment(execution_model="papermill"))
            import papermill

            papermill.execute_notebook(
                str(ex.lane.notebook), str(ex.notebook), parameters=ex.values, kernel_name=KERNEL_NAME,
                cwd=str(paths.project_root()), progress_bar=False, log_output=False,
                request_save_on_cell_execute=True, execution_timeout=cell_timeout_s(ex.lane, ex.values),
                interrupt_on_timeout=True, km=km, on_cell_execute=before_cell,
                on_cell_executed=interruption.after_cell)
        except BaseException as exc:
            failure.append(exc)
        if launched[1]:
            ex.stages.add("cells", time.monotonic() - launched[1])
        if failure or interruption.requested:
            with ex.stages.timed("kernel shutdown"):
                shut_down(km)
            returned.set()
        else:
            returned.set()
            shut_down(km)

    folder = after_seal.enter_context(leases.temp_dir(paths.work_root() / "kernels", "kernel",
                                                      run_id=ex.run_id))
    worker = threading.Thread(target=run_papermill, args=(kernel_manager(folder),), name="papermill",
                              daemon=True)

    @after_seal.callback
    def kernel_gone() -> None:
        # Bounded: a graceful shutdown gives up after KERNEL_SHUTDOWN_S and kills the kernel.
        with ex.stages.timed("kernel shutdown"):
            worker.join(0 if interruption.stuck() else KERNEL_SHUTDOWN_S + 5)

    worker.start()
    while not returned.wait(0.2):
        interruption.tick()
        if interruption.stuck():   # killed its kernel long ago: go on with what was saved
            print("papermill did not return after the kernel was killed; sealing what it saved",
                  file=sys.stderr, flush=True)
            break
    if failure:
        ex.error, ex.exit_code = classify(failure[0], ex.root)
    if interruption.requested:
        ex.error = {"type": "KeyboardInterrupt", "kind": Interrupted.kind,
                    "message": interruption.describe()}
        ex.exit_code = Interrupted.exit_code


def classify(exc: BaseException, root: Path) -> tuple[dict[str, str], int]:
    """What ended the notebook, by type: the kernel's own record of a cell's error (error.json,
    written by the run with the error's class), else the runner-side exception itself."""
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    recorded = read_error(root)
    if recorded is not None and isinstance(exc, PapermillExecutionError):
        return recorded, int(recorded.get("exit_code", HarnessError.exit_code))
    if isinstance(exc, CellTimeoutError):
        return {"type": type(exc).__name__, "kind": "timeout", "message": str(exc)[-4000:]}, 1
    if isinstance(exc, KeyboardInterrupt) or (isinstance(exc, PapermillExecutionError)
                                              and exc.ename == "KeyboardInterrupt"):
        return {"type": "KeyboardInterrupt", "kind": Interrupted.kind, "message": "interrupted"}, 130
    kind = "kernel-died" if isinstance(exc, DeadKernelError) else HarnessError.kind
    name = exc.ename if isinstance(exc, PapermillExecutionError) else type(exc).__name__
    message = str(exc.evalue if isinstance(exc, PapermillExecutionError) else exc)
    return {"type": name, "kind": kind, "message": message[-4000:]}, HarnessError.exit_code


def read_error(root: Path) -> dict[str, str] | None:
    """The error a cell ended with, as the kernel recorded it (`Run` writes error.json)."""
    path = root / evidence.ERROR_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else None


def clean_labs(ex: Execution, console: Console) -> None:
    """Stage 4: remove this run's labs (unless kept), or on ultracloud end any product process
    still running (unless kept): the kernel's own teardown may not have run."""
    if ex.profile != "lab":
        if not ex.values.get("keep_vm"):
            from ucnb.product.commands import end_processes_of_run

            for line in end_processes_of_run(ex.run_id):
                console.print(f"[yellow]warning:[/] {line}", markup=True, highlight=False)
        return
    from ucnb.lab import registry

    try:
        registry.clean(run_id=ex.run_id, include_kept=False)
    except InfrastructureError as exc:
        console.print(f"[yellow]warning:[/] could not clean this run's labs: {exc}")


def seal(ex: Execution, environment: dict[str, str] | None = None) -> dict[str, Any]:
    """Stage 5: result.json, redaction of every artifact, HTML, checksums, `latest`. Returns
    result.json as sealed (redacted), which is what the console and a suite report.
    `environment`: more lines for environment.txt (a suite's, see `Beside`)."""
    redactor = ex.redactor   # the secrets the kernel's Run redacts: the same variables
    redactor.update(from_environment(kernel_environment(ex)))
    generated = generated_secrets_file(ex.run_id)
    redactor.add_file(generated)  # secrets the kernel made up (tokens no operator supplied)
    generated.unlink(missing_ok=True)
    evidence.write_environment(ex.root, {"wall_time_s": f"{time.monotonic() - ex.started:.2f}",
                                         "run_started_utc": index.iso_utc(ex.started_at),
                                         **(environment or {})})
    result = evidence.build_result(ex.root, ex.lane.name, ex.profile, ex.run_id, ex.error, ex.exit_code)
    evidence.seal(ex.root, ex.notebook, redactor, result)
    sealed: dict[str, Any] = json.loads((ex.root / "result.json").read_text())  # as redacted
    return sealed


def index_run(ex: Execution, result: dict[str, Any]) -> None:
    """Stage 6: the run's line in outputs/index.jsonl, with where the runner's time went."""
    index.append(index.entry_for_result(result, ex.root, ex.started_at, time.monotonic() - ex.started,
                                        stages=ex.stages.rounded()))


def execute(lane: lanes.Lane, params: lanes.LaneParameters, console: Console | None = None,
            progress: bool = True, parent: Path | None = None, beside: Beside | None = None) -> RunOutcome:
    """Run the lane notebook under papermill into a new proof root, seal it and index it.

    The proof root is `outputs/<lane>/<stamp>-<run id>`, or `<parent>/<stamp>-<run id>` when a
    parent is given (a suite keeps its lanes' proof roots inside its own dated root); `beside`
    when a suite runs it.
    """
    from ucnb.lab import leases

    # A lone run's process start-up is its own (a suite's lanes share one process).
    before = since_process_start() if parent is None else 0.0
    interruption = beside.interruption if beside else interrupt.Interruption()
    with interruption.handling():   # from here on a signal ends the run the one way (see interrupt)
        ex = new_root(lane, params, parent)
        if before:
            ex.stages.add("before the run", before)   # interpreter, imports, validation, lab host
        ex.interruption = interruption
        console = redacted_console(console or Console(stderr=True), ex.redactor)
        # The secrets file the kernel may write is leased by this runner, which removes it when
        # sealed (or `ucnb lab clean`, should this runner die).
        secrets_lease = leases.take("secrets", paths=[generated_secrets_file(ex.run_id)], run_id=ex.run_id)
        try:
            console.print(f"[bold]{lane.name}[/] ({ex.profile}) run {ex.run_id} → {ex.root}")
            with contextlib.ExitStack() as after_seal:   # the kernel's exit, awaited once sealed
                try:
                    with LaneProgressOrNone(ex.root, console, lane.name, progress,
                                            beside.board if beside else None):
                        execute_notebook(ex, kernel_environment(ex), after_seal)
                finally:
                    with ex.stages.timed("clean labs"):
                        clean_labs(ex, console)
                with ex.stages.timed("seal"):
                    result = seal(ex, beside.environment() if beside else None)
        finally:
            generated_secrets_file(ex.run_id).unlink(missing_ok=True)
            secrets_lease.release()
        index_run(ex, result)
        report(ex, result, console)
        exit_code = ex.exit_code or (0 if result["verdict"] == "passed" else 1)
        return RunOutcome(exit_code, ex.root, result, ex.redactor)


def redacted_console(console: Console, redactor: Redactor) -> Console:
    """`console` with everything it prints passed through `redactor` (which may learn secrets
    later: a generated token, at seal); a secret cut by a line wrap is masked whole."""
    writer = redactor.stream(console.file.write, console.file.flush)
    return Console(file=writer, force_terminal=console.is_terminal, width=console.width,  # type: ignore[arg-type]
                   color_system=console.color_system, soft_wrap=console.soft_wrap,  # type: ignore[arg-type]
                   stderr=console.stderr)


def report(ex: Execution, result: dict[str, Any], console: Console) -> None:
    """The verdict line (and the failing step) on the console."""
    label = "interrupted" if ex.exit_code == Interrupted.exit_code else \
        str(result.get("verdict_label") or result["verdict"])
    colour = "red" if result["verdict"] != "passed" else "yellow" if result.get("gaps") else "green"
    console.print(f"[bold {colour}]{label.upper()}[/] {ex.lane.name} in "
                  f"{time.monotonic() - ex.started:.1f}s — evidence: {ex.root}")
    failing = result["failing_step"]
    if failing:
        console.print(f"  failing step: {failing['name']} [{failing['node']}]: {failing['last_observation']}",
                      markup=False)


class LaneProgressOrNone:
    """Progress display when wanted (a TTY or --progress), silence otherwise."""

    def __init__(self, root: Path, console: Console, title: str, enabled: bool,
                 board: Board | None = None) -> None:
        from ucnb.runner.progress import LaneProgress

        self._inner = LaneProgress(root / evidence.EVENTS, console, title, board) if enabled else None

    def __enter__(self) -> None:
        if self._inner:
            self._inner.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self._inner:
            self._inner.__exit__(*exc)


def run_lane(lane_name: str, profile: str = "lab", files: list[Path] | None = None,
             assignments: list[str] | None = None, progress: bool = True,
             console: Console | None = None, parent: Path | None = None,
             beside: Beside | None = None) -> RunOutcome:
    """Validate, bring the lab host up when the profile needs it, execute and seal."""
    lane, params = prepare(lane_name, profile, files or [], assignments or [])
    return launch(lane, params, progress, console, parent, beside)


def launch(lane: lanes.Lane, params: lanes.LaneParameters, progress: bool = True,
           console: Console | None = None, parent: Path | None = None,
           beside: Beside | None = None) -> RunOutcome:
    """Run a lane `prepare` validated: the lab host up (or the product's preflight), then execute."""
    if params.profile == "lab":
        from ucnb.host import daemons

        daemons.up()
    else:
        product_preflight(lane, params)
    return execute(lane, params, console, progress, parent, beside)


def product_preflight(lane: lanes.Lane, params: lanes.LaneParameters) -> None:
    """What the product's commands need, refused before anything starts: the flake checkout (a bad
    `flake` is exit 2, nothing runs), the contract's parameters, nix (its absence is exit 3)."""
    from ucnb.product import commands, contract

    commands.timeout_cap()
    contract.plan(lane.name, flake=params.flake, params=params)
    commands.detect_nix()
