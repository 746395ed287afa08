"""A Run: one execution of one lane, from its parameters to its evidence.

Notebooks start one with `start_run`; everything the lane does goes through its recorder, and
`finish()` shows the verdict and writes the records into the proof root.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from ucnb import lanes, profiles
from ucnb.errors import LaneFailure
from ucnb.evidence import proof as evidence
from ucnb.evidence.redact import from_environment, generated_secrets_file
from ucnb.kernel.record import Recorder, StepRow
from ucnb.lab.lab import Lab, NodeConfig
from ucnb.lab.registry import connect

RESULT_MIME = "application/vnd.ucnb.result+json"


def _display(obj: Any, raw: bool = False) -> None:
    from IPython.display import display  # ipykernel's dependency: always there

    display(obj, raw=raw)


class Run:
    """One lane run: parameters, recorder, proof root, and the lab it drives."""

    def __init__(self, lane: lanes.Lane, params: lanes.LaneParameters, run_id: str, proof_root: Path):
        self.lane, self.params, self.run_id, self.proof_root = lane, params, run_id, proof_root
        self.profile = profiles.load(str(getattr(params, "profile", "lab")))
        self.redactor = from_environment()
        for name in lane.secret_env_parameters:
            self.redactor.add_env(str(getattr(params, name)))
        (proof_root / "logs").mkdir(parents=True, exist_ok=True)
        (proof_root / "plots").mkdir(parents=True, exist_ok=True)
        self.recorder = Recorder(proof_root / evidence.EVENTS, self.redactor)
        self.labs: list[Lab] = []
        self.warm_key = ""   # set by lab(warm=True): the snapshot boot(mode="restore") uses
        self.started = time.time()
        # The kernel mostly waits on guests: import the plotting stack meanwhile, not at the end.
        threading.Thread(target=_preload_plotting, name="preload-plots", daemon=True).start()
        evidence.write_environment(proof_root, {**evidence.host_environment(),
                                                "lane": lane.name, "profile": self.profile.name,
                                                "run_id": run_id})

    # -- recording -------------------------------------------------------------------------
    @contextmanager
    def step(self, name: str, node: str = "") -> Iterator[StepRow]:
        """A numbered, timed step of the lane (failed if its body raises)."""
        with self.recorder.step(name, node) as row:
            yield row

    def skip(self, name: str, reason: str, node: str = "") -> None:
        """Record a step this profile cannot run, with why; shown in the notebook, never a pass."""
        self.recorder.skip(name, reason, node)
        _display(pd.DataFrame([{"skipped step": name, "reason": reason}]))

    def secret(self, env_name: str) -> str | None:
        """A secret's value from the environment, registered for redaction of every artifact."""
        return self.redactor.add_env(env_name)

    def generate_secret(self, prefix: str = "uc-") -> str:
        """A random secret for this run (e.g. a token no operator supplied), redacted everywhere:
        the runner learns it through a root-only file outside the proof root."""
        value = prefix + secrets.token_urlsafe(24)
        self.redactor.add(value)
        path = generated_secrets_file(self.run_id)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as f:
            f.write(value + "\n")
        return value

    def run_commands(self, commands: list[str], cwd: str, log_name: str, tool: str = "nix") -> None:
        """Run host commands (the product's own tools) as steps, output to logs/<log_name>."""
        import shutil
        import subprocess

        from ucnb.errors import InfrastructureError

        if shutil.which(tool) is None:
            raise InfrastructureError(f"`{tool}` is not installed on this host; "
                                      f"`ucnb run {self.lane.name} --profile {self.profile.name} --plan` "
                                      f"prints the commands instead")
        log = self.proof_root / "logs" / log_name
        for command in commands:
            with self.step(command) as row, log.open("a") as out:
                out.write(f"$ {command}\n")
                out.flush()
                proc = subprocess.run(command, shell=True, cwd=cwd, stdout=out,
                                      stderr=subprocess.STDOUT)
                row.detail = f"exit {proc.returncode}"
                if proc.returncode != 0:
                    raise LaneFailure(f"`{command}` exited {proc.returncode} (see logs/{log_name})")

    # -- the lab ---------------------------------------------------------------------------
    def lab(self, nodes: list[NodeConfig], warm: bool = False) -> Lab:
        """Build (or reuse) the guest image, pick the accelerator, and create the lab's nodes.

        `warm` makes the lab under the id and subnet of the snapshot that `Lab.boot_warm` restores
        (falling back to a fresh lab, which boots cold, when they are taken)."""
        from ucnb.host.accel import choose
        from ucnb.image import build_image
        from ucnb.lab import warm as warm_mod
        from ucnb.lab.lab import LabUnavailable

        with self.step("build guest image"):
            image = build_image(self.profile, log=lambda m: print(m, flush=True))
        with self.step("choose accelerator") as row:
            accelerator = choose(image, connect())
            row.detail = f"{accelerator.mode}: {accelerator.reason}"
        evidence.write_environment(self.proof_root, {
            "vm_accelerator_mode": accelerator.mode, "vm_accelerator_reason": accelerator.reason,
            "guest_image": image.key, "guest_kernel": image.kernel_version,
            "system_under_test": f"ucnb lab image {image.key} ({self.profile.description})"})
        options: dict[str, Any] = {}
        if warm:
            self.warm_key = warm_mod.snapshot_key(image.key, accelerator.mode, nodes)
            snapshot = warm_mod.find(self.warm_key)
            options = {"lab_id": warm_mod.lab_id_for(self.warm_key),
                       "subnet": snapshot.subnet if snapshot else None}
        try:
            lab = Lab(nodes, image, accelerator, recorder=self.recorder, run_id=self.run_id,
                      log_dir=self.proof_root / "logs", **options)
        except LabUnavailable as exc:
            print(f"warm start unavailable ({exc}): this lab boots cold", flush=True)
            self.warm_key = ""
            lab = Lab(nodes, image, accelerator, recorder=self.recorder, run_id=self.run_id,
                      log_dir=self.proof_root / "logs")
        evidence.write_environment(self.proof_root, {"lab_id": lab.lab_id})
        self.labs.append(lab)
        _display(pd.DataFrame([{"accelerator": accelerator.mode, "why": accelerator.reason,
                                "guest image": image.key, "guest kernel": image.kernel_version}]))
        return lab

    def boot(self, lab: Lab, timeout: float, mode: str = "cold") -> str:
        """Boot a lab cold, or (mode "restore") from its warm snapshot; the evidence says which."""
        if mode == "restore" and self.warm_key:
            how = lab.boot_warm(self.warm_key, timeout)
        else:
            lab.boot(timeout=timeout)
            how = "cold" if mode == "cold" else "cold (warm start unavailable: lab id or subnet taken)"
        evidence.write_environment(self.proof_root, {"boot_mode": how})
        _display(pd.DataFrame([{"boot mode": how}]))
        return how

    def stand_ins(self) -> pd.DataFrame:
        """What real software stands in for which product component on this profile."""
        return pd.DataFrame([{"component": name, "provided": c.provided,
                              "stands in": c.stands_in or "—", "why not": c.missing or ""}
                             for name, c in self.profile.components.items()])

    # -- the end ---------------------------------------------------------------------------
    def timeline(self, save_as: str = "timeline.png") -> None:
        """Show the run's timeline plot and save it under plots/ (rendered once, as PNG)."""
        from ucnb.kernel.plots import timeline

        fig = timeline(self.recorder, f"{self.lane.name} ({self.profile.name}) run {self.run_id}")
        self.show_figure(fig, save_as)

    def show_figure(self, fig: Any, save_as: str) -> None:
        """Save a matplotlib figure under plots/ and show that same PNG in the notebook."""
        import matplotlib.pyplot as plt
        from IPython.display import Image

        path = self.proof_root / "plots" / save_as
        fig.savefig(path, dpi=110)
        plt.close(fig)
        _display(Image(data=path.read_bytes(), format="png"))

    def finish(self, keep: bool = False) -> dict[str, Any]:
        """Show the timeline and the verdict and write the records, while the labs are torn down
        (unless kept); raise if the lane failed."""
        teardowns = []
        for lab in self.labs:
            if keep:
                lab.keep_alive()
                _display(pd.DataFrame({"reach the kept lab with": lab.reach_commands()}))
            else:
                teardowns.append(threading.Thread(target=lab.teardown, name=f"teardown-{lab.lab_id}"))
                teardowns[-1].start()
        self.timeline()
        for thread in teardowns:
            thread.join()
        result = evidence.build_result(self.proof_root, self.lane.name, self.profile.name, self.run_id)
        _display_result(result)
        if result["verdict"] != "passed":
            raise LaneFailure(f"lane {self.lane.name} {result['verdict']}: "
                              f"{json.dumps(result['failing_step'] or result['failed_checks'])}")
        return result


def _preload_plotting() -> None:
    pass


def _verdict_markdown(result: dict[str, Any]) -> str:
    steps = result["steps"]
    lines = [f"## Verdict: **{result['verdict'].upper()}**", "",
             f"{steps['passed']} steps passed, {steps['failed']} failed, {steps['skipped']} skipped; "
             f"{result['checks']['total']} checks, {result['checks']['failed']} failed. "
             f"Accelerator: {result['accelerator'] or 'n/a'}."]
    for s in result["skipped"]:
        lines.append(f"- skipped **{s['name']}**: {s['reason']}")
    return "\n".join(lines)


def _display_result(result: dict[str, Any]) -> None:
    """The verdict as ucnb's own MIME type with a readable markdown fallback."""
    _display({RESULT_MIME: result, "text/markdown": _verdict_markdown(result)}, raw=True)


def start_run(lane_name: str, namespace: dict[str, Any]) -> Run:
    """Start a run of `lane_name` from the notebook's parameter variables.

    Under `ucnb run` the runner passes the run id and proof root through the environment; run
    plainly (papermill, JupyterLab) a new proof root is made under outputs/.
    """
    lane = lanes.get(lane_name)
    values = {k: namespace[k] for k in lane.parameters.model_fields if k in namespace}
    params = lane.validate(values)
    run_id = os.environ.get("UCNB_RUN_ID") or evidence.new_run_id()
    root_env = os.environ.get("UCNB_PROOF_ROOT")
    proof_root = Path(root_env) if root_env else evidence.new_proof_root(lane.name, run_id)
    return Run(lane, params, run_id, proof_root)
