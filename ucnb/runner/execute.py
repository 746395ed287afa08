"""`ucnb run`: validate parameters, execute the lane notebook with papermill, seal the evidence.

Whatever happens (a failing lane, a timeout, Ctrl-C) the executed notebook and result.json are
written and the run's labs are removed unless the lane kept them on purpose.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from ucnb import lanes, paths
from ucnb.errors import HarnessError, InfrastructureError, Interrupted, classify
from ucnb.evidence import index
from ucnb.evidence import proof as evidence
from ucnb.evidence.redact import SECRETS_ENV, from_environment, generated_secrets_file
from ucnb.runner import params as params_mod

KERNEL_NAME = "ucnb"


@dataclass(frozen=True)
class RunOutcome:
    exit_code: int
    proof_root: Path
    result: dict[str, Any]


def notebook_parameters(notebook: Path) -> dict[str, Any]:
    """The names declared in a notebook's `parameters` cell."""
    import papermill

    return dict(papermill.inspect_notebook(str(notebook)))


def prepare(lane_name: str, profile: str, files: list[Path], assignments: list[str]
            ) -> tuple[lanes.Lane, lanes.LaneParameters]:
    """Everything that can be refused before a VM exists: lane, profile, parameters, notebook."""
    lane = lanes.get(lane_name)
    params = params_mod.resolve(lane, profile, files, assignments)
    if not lane.notebook.exists():
        raise HarnessError(f"lane {lane.name} has no notebook at {lane.notebook}")
    declared = notebook_parameters(lane.notebook)
    missing = set(lane.parameters.model_fields) - set(declared)
    if missing:
        raise HarnessError(f"{lane.notebook.name}'s parameters cell lacks {sorted(missing)}")
    return lane, params


def execute(lane: lanes.Lane, params: lanes.LaneParameters, console: Console | None = None,
            progress: bool = True, parent: Path | None = None) -> RunOutcome:
    """Run the lane notebook under papermill into a new proof root, seal it and index it.

    The proof root is `outputs/<lane>/<stamp>-<run id>`, or `<parent>/<stamp>-<run id>` when a
    parent is given (a suite keeps its lanes' proof roots inside its own dated root).
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from ucnb.lab import registry

    console = console or Console(stderr=True)
    run_id = evidence.new_run_id()
    root = evidence.new_proof_root(lane.name, run_id, parent)
    output = root / f"{lane.name}.ipynb"
    values = params.model_dump(mode="json")
    (root / "parameters.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    secret_vars = [str(values[p]) for p in lane.secret_env_parameters]
    os.environ.update({"UCNB_RUN_ID": run_id, "UCNB_PROOF_ROOT": str(root), "UCNB_RUNNER": "1",
                       SECRETS_ENV: ",".join(secret_vars)})
    redactor = from_environment()  # the same secrets the kernel's Run redacts
    console.print(f"[bold]{lane.name}[/] ({values.get('profile')}) run {run_id} → {root}")
    # Build the HTML exporter while the lane runs: it is needed only at the end.
    threading.Thread(target=evidence.html_exporter, name="prewarm-html", daemon=True).start()
    error: dict[str, str] | None = None
    exit_code = 0
    started = time.monotonic()
    started_at = time.time()
    try:
        with LaneProgressOrNone(root, console, lane.name, progress):
            papermill.execute_notebook(
                str(lane.notebook), str(output), parameters=values, kernel_name=KERNEL_NAME,
                cwd=str(paths.project_root()), progress_bar=False, log_output=False,
                request_save_on_cell_execute=True, execution_timeout=lane.cell_timeout_s,
                interrupt_on_timeout=True,
                # The notebook is saved when the last cell ends: no need to wait for a graceful
                # kernel exit (the run's labs are cleaned below either way).
                shutdown_kernel="immediate")
    except PapermillExecutionError as exc:
        cls = classify(exc.ename)
        error = {"type": exc.ename, "kind": cls.kind, "message": str(exc.evalue)[-4000:]}
        exit_code = cls.exit_code
    except KeyboardInterrupt:
        error = {"type": "KeyboardInterrupt", "kind": Interrupted.kind, "message": "interrupted (Ctrl-C)"}
        exit_code = Interrupted.exit_code
    except Exception as exc:  # the kernel died, a cell timed out, nbclient failed
        kind = "timeout" if "Timeout" in type(exc).__name__ else HarnessError.kind
        error = {"type": type(exc).__name__, "kind": kind, "message": str(exc)[-4000:]}
        exit_code = 1 if kind == "timeout" else HarnessError.exit_code
    finally:
        try:
            registry.clean(run_id=run_id, include_kept=False)  # the kernel's own teardown may not have run
        except InfrastructureError as exc:
            console.print(f"[yellow]warning:[/] could not clean this run's labs: {exc}")
    generated = generated_secrets_file(run_id)
    redactor.add_file(generated)  # secrets the kernel made up (tokens no operator supplied)
    generated.unlink(missing_ok=True)
    evidence.write_environment(root, {"wall_time_s": f"{time.monotonic() - started:.2f}"})
    result = evidence.build_result(root, lane.name, str(values.get("profile")), run_id, error, exit_code)
    evidence.seal(root, output, redactor)
    index.append(index.entry_for_result(result, root, started_at, time.monotonic() - started))
    colour = "green" if result["verdict"] == "passed" else "red"
    console.print(f"[bold {colour}]{result['verdict'].upper()}[/] {lane.name} in "
                  f"{time.monotonic() - started:.1f}s — evidence: {root}")
    if result["failing_step"]:
        console.print(f"  failing step: {result['failing_step']['name']} "
                      f"[{result['failing_step']['node']}]: {result['failing_step']['last_observation']}",
                      markup=False)
    return RunOutcome(exit_code if exit_code else (0 if result["verdict"] == "passed" else 1), root, result)


class LaneProgressOrNone:
    """Progress display when wanted (a TTY or --progress), silence otherwise."""

    def __init__(self, root: Path, console: Console, title: str, enabled: bool) -> None:
        from ucnb.runner.progress import LaneProgress

        self._inner = LaneProgress(root / evidence.EVENTS, console, title) if enabled else None

    def __enter__(self) -> None:
        if self._inner:
            self._inner.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self._inner:
            self._inner.__exit__(*exc)


def run_lane(lane_name: str, profile: str = "lab", files: list[Path] | None = None,
             assignments: list[str] | None = None, progress: bool = True,
             console: Console | None = None, parent: Path | None = None) -> RunOutcome:
    """Validate, bring the lab host up when the profile needs it, execute and seal."""
    lane, params = prepare(lane_name, profile, files or [], assignments or [])
    if profile == "lab":
        from ucnb.host import daemons

        daemons.up()
    return execute(lane, params, console, progress, parent)
