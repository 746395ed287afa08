"""A run outside `ucnb run` (JupyterLab cell by cell, plain papermill) sealed as the CLI would.

Only the kernel knows what it ran: the notebook in a browser is the browser's (unsaved, or saved
without the outputs of the cell still running). So the executed notebook of such a run is the
kernel's own record, from IPython's history: every cell in the order it ran, reruns included,
with its outputs (streams, results, displays: ipykernel keeps those once asked to, errors).
That notebook, result.json, parameters.yaml and environment.txt are then sealed (redaction, HTML
page, checksums, `latest`, the outputs index) by the same `seal` the runner calls.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ucnb.evidence import index
from ucnb.evidence import proof as evidence
from ucnb.kernel import live

if TYPE_CHECKING:
    from ucnb.kernel.run import Run

_last_sealed = 0   # the last cell an earlier run's record holds (its finish cell)


def under_runner() -> bool:
    """`ucnb run` runs this kernel: the runner seals the proof root itself."""
    return bool(os.environ.get("UCNB_RUNNER"))


def keep_outputs() -> None:
    """Have ipykernel keep every display in the history too (it keeps results and streams)."""
    shell = live._shell()
    if shell is not None and hasattr(shell.display_pub, "store_display_history"):
        shell.display_pub.store_display_history = True


def first_cell() -> int:
    """Where a run starting now begins its record: after the cells earlier runs sealed (so the
    parameters cell run before `start_run` is in it); a run sealed again keeps its own start."""
    return _last_sealed + 1


def environment() -> dict[str, str]:
    """What environment.txt says about how the run was driven."""
    session = os.environ.get("JPY_SESSION_NAME", "")
    return {"interactive": "true" if session else "false",
            **({"interactive_notebook": session} if session else {})}


def transcript(shell: Any, lane_title: str, first: int = 1) -> Any:
    """The kernel's cells `first`.. (the running one included) as an executed notebook."""
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    history = shell.history_manager
    current = shell.execution_count
    cells = [new_markdown_cell(f"# {lane_title}: interactive run\n\nThe cells this kernel ran, in the "
                               f"order they ran (reruns included), with their outputs.")]
    for count in range(first, current + 1):
        if count >= len(history.input_hist_raw):
            break
        cell = new_code_cell(source=history.input_hist_raw[count], execution_count=count)
        for output in history.outputs.get(count, []):
            if output.output_type in ("out_stream", "err_stream"):
                cell.outputs.append(new_output("stream", text="".join(output.bundle.get("stream", [])),
                                               name="stdout" if output.output_type == "out_stream"
                                               else "stderr"))
            elif output.output_type == "execute_result":
                cell.outputs.append(new_output("execute_result", data=dict(output.bundle),
                                               execution_count=count))
            else:
                cell.outputs.append(new_output("display_data", data=dict(output.bundle)))
        if count in history.exceptions:
            cell.outputs.append(new_output("error", **history.exceptions[count]))
        cells.append(cell)
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "ucnb", "display_name": "Python (ucnb)", "language": "python"}
    return notebook


def seal(run: Run, result: dict[str, Any]) -> Path:
    """Seal `run`'s proof root from this kernel (after `finish` showed the verdict); returns the page."""
    import nbformat

    global _last_sealed
    shell = live._shell()
    root = run.proof_root
    values = {"lane_name": run.lane.name, **run.params.model_dump(mode="json")}
    (root / "parameters.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    notebook_path = root / f"{run.lane.name}.ipynb"
    if shell is not None:
        nbformat.write(transcript(shell, run.lane.title, run.first_cell), notebook_path)
        _last_sealed = shell.execution_count
    else:   # a plain Python process: no cells, only the records
        nbformat.write(nbformat.v4.new_notebook(), notebook_path)
    evidence.seal(root, notebook_path, run.redactor, result)
    started = run.recorder.started
    index.append(index.entry_for_result(result, root, started, time.time() - started))
    return notebook_path.with_suffix(".html")
