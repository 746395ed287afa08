"""A Run: one execution of one lane, from its parameters to its evidence.

Notebooks start one with `start_run`; everything the lane does goes through its recorder, and
`finish()` shows the verdict and writes the records into the proof root.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd

from ucnb import files, lanes, paths, profiles
from ucnb.errors import HarnessError, LaneFailure, ParameterError, error_class
from ucnb.evidence import banner, index, tables
from ucnb.evidence import proof as evidence
from ucnb.evidence.page import RESULT_MIME
from ucnb.evidence.redact import Redactor, SecretTooShort, from_environment, generated_secrets_file
from ucnb.kernel import interactive
from ucnb.kernel.record import Recorder, StepRow
from ucnb.lab.lab import Lab, NodeConfig
from ucnb.lab.registry import connect

if TYPE_CHECKING:
    from ucnb.lab.warm import Claim
    from ucnb.product.steps import CommandOutcome

P = TypeVar("P", bound=lanes.LaneParameters)


def _display(obj: Any, raw: bool = False) -> None:
    from IPython.display import display  # ipykernel's dependency: always there

    display(obj, raw=raw)


class Run:
    """One lane run: parameters, recorder, proof root, and the lab it drives."""

    def __init__(self, lane: lanes.Lane, params: lanes.LaneParameters, run_id: str, proof_root: Path):
        self.lane, self.params, self.run_id, self.proof_root = lane, params, run_id, proof_root
        self.profile = profiles.load(str(getattr(params, "profile", "lab")))
        try:
            self.redactor = from_environment()
            for name in lane.secret_env_parameters:
                self.redactor.add_env(str(getattr(params, name)))
        except SecretTooShort as exc:   # before anything starts, naming where it came from
            raise ParameterError(str(exc)) from None
        (proof_root / "logs").mkdir(parents=True, exist_ok=True)
        (proof_root / "plots").mkdir(parents=True, exist_ok=True)
        self.recorder = Recorder(proof_root / evidence.EVENTS, self.redactor)
        self.labs: list[Lab] = []
        self.teardowns: list[Callable[[], None]] = []   # run by finish() before the labs go
        self.warm: dict[str, Claim] = {}   # lab id -> its warm slot, for boot(mode="restore")
        self.product_outcomes: list[CommandOutcome] = []   # ultracloud: each product command's
        # Non-empty when this profile hands the lane to the product's own commands: the reason
        # every lab-only step gives when it skips itself.
        self.delegated = (f"{self.profile.name} profile: the product's own commands for {lane.name} "
                          f"covered this (logs/product.log)" if self.profile.name == "ultracloud" else "")
        self._sealed_view = False   # finish() began: it draws the timeline and pulls the guests' logs
        # The kernel mostly waits on guests: import the plotting stack meanwhile, not at the end.
        threading.Thread(target=_preload_plotting, args=(self.recorder,), name="preload-plots",
                         daemon=True).start()
        tables.install_formatter()   # every DataFrame a cell shows goes through the one table helper
        _record_cell_errors(proof_root, self.redactor, on_error=self._on_cell_error)
        self.first_cell = interactive.first_cell()   # of this run's record, when it is sealed here
        if not interactive.under_runner():
            interactive.keep_outputs()   # finish() seals the proof root from the kernel's record
        # Under `ucnb run` the runner wrote the host's facts while this kernel started.
        host = {} if interactive.under_runner() else evidence.host_environment("notebook-kernel")
        evidence.write_environment(proof_root, {**host, **interactive.environment(),
                                                "lane": lane.name, "profile": self.profile.name,
                                                "run_id": run_id,
                                                # `ucnb run` replaces it with its own, earlier start
                                                "run_started_utc": index.iso_utc(self.recorder.started)})

    def parameters(self, schema: type[P]) -> P:
        """The run's parameters as the lane's own schema (typed for the lane's steps)."""
        if not isinstance(self.params, schema):
            raise TypeError(f"{self.lane.name}: parameters are {type(self.params).__name__}, "
                            f"not {schema.__name__}")
        return self.params

    # -- recording -------------------------------------------------------------------------
    @contextmanager
    def step(self, name: str, node: str = "") -> Iterator[StepRow]:
        """A numbered, timed step of the lane (failed if its body raises)."""
        with self.recorder.step(name, node) as row:
            yield row

    def skip(self, name: str, reason: str, node: str = "", delegated: bool = False) -> pd.DataFrame:
        """Record a step this profile cannot run, with why (never a pass); the table says so.
        `delegated`: the product's own commands covered it instead (not a gap in the verdict)."""
        self.recorder.skip(name, reason, node, kind="delegated" if delegated else "step")
        frame = pd.DataFrame([{"skipped step": name, "reason": reason}])
        frame.attrs["caption"] = ("covered by the product's own commands" if delegated
                                  else "skipped: not a pass")
        return frame

    def on_teardown(self, action: Callable[[], None]) -> None:
        """Run `action` when the run finishes (before its labs are torn down), e.g. stop a service."""
        self.teardowns.append(action)

    def secret(self, env_name: str) -> str | None:
        """A secret's value from the environment, registered for redaction of every artifact."""
        try:
            return self.redactor.add_env(env_name)
        except SecretTooShort as exc:
            raise ParameterError(str(exc)) from None

    def generate_secret(self, prefix: str = "uc-") -> str:
        """A random secret for this run (e.g. a token no operator supplied), redacted everywhere.

        Under `ucnb run` the runner, which writes the notebook after this kernel is done, learns
        it through a root-only file outside the proof root (leased by the runner, removed when
        the run is sealed); run plainly (papermill, JupyterLab) nothing else needs it, so it is
        never written anywhere."""
        value = prefix + secrets.token_urlsafe(24)
        self.redactor.add(value)
        if os.environ.get("UCNB_RUNNER"):
            path = generated_secrets_file(self.run_id)
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as f:
                f.write(value + "\n")
        return value

    def run_product(self) -> None:
        """Run the product's own commands for this lane (the ultracloud profile's contract)."""
        from ucnb.kernel import product

        product.run_lane(self)

    # -- the lab ---------------------------------------------------------------------------
    def lab(self, nodes: list[NodeConfig], warm: bool = False) -> Lab:
        """Build (or reuse) the guest image, pick the accelerator, and create the lab's nodes.

        `warm` makes the lab under a free warm slot of its inputs (`ucnb.lab.warm`), which
        `boot(mode="restore")` restores or, the first time, saves."""
        from ucnb.host.accel import choose
        from ucnb.image import build_image
        from ucnb.image.packages import guest_packages
        from ucnb.lab import warm as warm_mod

        self._replace_labs()
        with self.step("build guest image"):
            image = build_image(self.profile, log=lambda m: print(m, flush=True))
        with self.step("choose accelerator") as row:
            accelerator = choose(image, connect())
            row.detail = f"{accelerator.mode}: {accelerator.reason}"
        evidence.write_environment(self.proof_root, {
            "vm_accelerator_mode": accelerator.mode, "vm_accelerator_reason": accelerator.reason,
            "guest_image": image.key, "guest_kernel": image.kernel_version,
            "guest_packages": guest_packages(image),
            "system_under_test": f"ucnb lab image {image.key} ({self.profile.description})"})

        def make(**options: Any) -> Lab:
            return Lab(nodes, image, accelerator, recorder=self.recorder, run_id=self.run_id,
                       log_dir=self.proof_root / "logs", **options)

        if warm:
            shape = warm_mod.inputs(image.key, accelerator.mode, self.profile.name, nodes,
                                    warm_mod.hypervisor(connect()))
            claim = warm_mod.claim(shape, make)
            lab = claim.lab
            self.warm[lab.lab_id] = claim
        else:
            lab = make()
        evidence.write_environment(self.proof_root, {"lab_id": lab.lab_id})
        self.labs.append(lab)
        frame = pd.DataFrame([{"accelerator": accelerator.mode, "why": accelerator.reason,
                               "guest image": image.key, "guest kernel": image.kernel_version}])
        frame.attrs["caption"] = banner.accelerator_text({"accelerator": accelerator.mode})
        _display(frame)
        return lab

    def _replace_labs(self) -> None:
        """A boot cell run again replaces the lab it made before (kept labs stay): one run drives
        one lab per `lab()` call of its lane, never a pile of earlier ones."""
        for lab in [lab for lab in self.labs if not lab.keep]:
            if not lab.torn_down:
                print(f"replacing lab {lab.lab_id} (made by an earlier run of this cell)", flush=True)
                lab.teardown()
            self.labs.remove(lab)

    def boot(self, lab: Lab, timeout: float, mode: str = "cold") -> str:
        """Boot a lab cold, or (mode "restore") from its warm snapshot; returns how it came up
        ("cold" or "restore"). environment.txt says which, what was asked and why, and the
        figure "lab ready" how long the nodes took to answer over SSH."""
        from ucnb.lab import warm as warm_mod

        claim = self.warm.get(lab.lab_id)
        if mode == "restore" and claim is None:
            raise HarnessError(f"boot_mode=restore for lab {lab.lab_id}, made without warm=True")
        start = time.monotonic()
        if claim is not None and claim.slot is not None and mode == "restore":
            snapshot = f"{claim.slot.key} slot {claim.slot.number}"
            settle = warm_mod.settled(self.profile, self.recorder)
            how = "restore" if lab.boot_warm(claim.slot, claim.shape, timeout, settle) else "cold"
            detail = (f"restored warm snapshot {snapshot}" if how == "restore" else
                      f"{claim.why}: booted cold, saved warm snapshot {snapshot}, resumed from it")
        else:
            lab.boot(timeout=timeout)
            how, snapshot = "cold", ""
            detail = claim.why if claim is not None else "boot_mode=cold"
        ready = round(time.monotonic() - start, 2)
        self.recorder.figure("lab ready", ready, f"s ({how} boot, {len(lab.nodes)} nodes, to SSH)")
        evidence.write_environment(self.proof_root, {"boot_mode": how, "boot_mode_requested": mode,
                                                     "boot_mode_detail": detail, "warm_snapshot": snapshot})
        _display(pd.DataFrame([{"boot mode": how, "asked": mode, "ready after (s)": ready, "why": detail}]))
        return how

    def stand_ins(self) -> pd.DataFrame:
        """What real software stands in for which product component on this profile."""
        frame = pd.DataFrame([{"component": name, "provided": c.provided,
                               "stands in": c.stands_in or "—", "why not": c.missing or ""}
                              for name, c in self.profile.components.items()])
        frame.attrs["caption"] = f"{self.profile.name} profile: {self.profile.description}"
        return frame

    def show_text(self, text: str, save_as: str, title: str) -> Path:
        """Save `text` (redacted) as `save_as` under the proof root and show it in the notebook,
        e.g. a file as read back from a guest. Returns the saved path."""
        import html

        from IPython.display import HTML

        path = self.proof_root / save_as
        path.parent.mkdir(parents=True, exist_ok=True)
        clean = self.redactor.text(text)
        path.write_text(clean)
        summary = f"{title} — saved as {save_as} ({len(clean.encode())} bytes)"
        _display(HTML(f"<details open><summary>{html.escape(summary)}</summary><pre style=\"white-space:"
                      f"pre-wrap;max-height:24em;overflow:auto;font-size:12px;border:1px solid #d0d7de;"
                      f"padding:4px 8px\">{html.escape(clean)}</pre></details>"))
        return path

    # -- the end ---------------------------------------------------------------------------
    def timeline(self, save_as: str = "timeline.png") -> None:
        """Show the run's timeline plot and save it under plots/ (rendered once, as PNG)."""
        self.show_figure(self._timeline_figure(), save_as)

    def _timeline_figure(self) -> Any:
        from ucnb.kernel.plots import timeline

        return timeline(self.recorder, f"{self.lane.name} ({self.profile.name}) run {self.run_id}")

    def show(self, obj: Any) -> None:
        """Show a table (anything IPython displays) from inside a step, beside the table the step
        returns: e.g. the operations around a violation, shown before the step fails."""
        _display(obj)

    def show_figure(self, fig: Any, save_as: str) -> None:
        """Save a matplotlib figure under plots/ and show that same PNG in the notebook."""
        from IPython.display import Image

        from ucnb.kernel.plots import save

        path = save(fig, self.proof_root / "plots" / save_as)
        _display(Image(data=path.read_bytes(), format="png"))

    def collect_guest_logs(self, why: str) -> None:
        """Pull every live node's dmesg and service logs into logs/ (best effort, bounded)."""
        from ucnb.lab import guestlogs

        manager = self.profile.service_manager
        for lab in self.labs:
            guestlogs.collect(lab, guestlogs.status_for_all(manager.status), manager.logs, why)

    def _on_cell_error(self, exc: BaseException) -> None:
        """A cell failed (papermill stops here): keep what the end of the run would have kept —
        the guests' logs while they still run, and the timeline plot — for the seal's page.
        Interactively, each failing cell refreshes them; after finish() there is nothing to add.
        An interrupted cell (the stop button) only says where that leaves the lab: at once."""
        if isinstance(exc, KeyboardInterrupt) and not interactive.under_runner():
            _display(pd.DataFrame(self._after_interrupt()))
            return
        if self._sealed_view or not self.recorder.rows["steps"]:
            return
        with contextlib.suppress(Exception):
            self.collect_guest_logs(f"a cell failed: {type(exc).__name__}")
        with contextlib.suppress(Exception):
            from ucnb.kernel.plots import save

            save(self._timeline_figure(), self.proof_root / evidence.TIMELINE_PNG)

    def _after_interrupt(self) -> list[dict[str, str]]:
        """Each node of the run's live labs after an interrupt: the cell stopped, the lab did not."""
        rows = [{"interrupted": "the cell stopped its wait or guest command",
                 "lab": lab.lab_id, "node": name, "state": "running" if node.running() else "not running",
                 "next": "run the next cell, or this one again"}
                for lab in self.labs if not lab.torn_down for name, node in lab.nodes.items()]
        return rows or [{"interrupted": "the cell stopped", "lab": "none running", "node": "",
                         "state": "", "next": "run the next cell, or this one again"}]

    def finish(self) -> dict[str, Any]:
        """Show the timeline and the verdict and write the records, while the labs are torn down
        (unless `keep_vm`); raise if the lane failed. Every lane ends with this call."""
        keep = self.params.keep_vm
        if keep:
            for lab in self.labs:
                lab.keep_alive()
                _display(pd.DataFrame({"reach the kept lab with": lab.reach_commands()}))
        self._sealed_view = True
        errors: list[BaseException] = []

        def end_labs() -> None:
            try:
                self.collect_guest_logs("end of the run")   # before the actions: some end the lab
                for action in self.teardowns:
                    action()
            except BaseException as exc:  # handed to finish() below, after the labs are gone
                errors.append(exc)
            teardowns = [threading.Thread(target=lab.teardown, name=f"teardown-{lab.lab_id}")
                         for lab in self.labs if not keep]
            for thread in teardowns:
                thread.start()
            for thread in teardowns:
                thread.join()

        # The guests' logs, the lane's teardown actions and the labs' teardown run while the
        # timeline is drawn (none of them waits for the other).
        ending = threading.Thread(target=end_labs, name="end-labs")
        ending.start()
        try:
            self.timeline()
        finally:
            ending.join()
        if errors:
            raise errors[0]
        result = evidence.build_result(self.proof_root, self.lane.name, self.profile.name, self.run_id)
        _display_result(result)
        if not interactive.under_runner():   # nobody else will seal it: as `ucnb run` would
            page = interactive.seal(self, result)
            _display(pd.DataFrame([{"sealed proof root": str(self.proof_root), "page": page.name}]))
        if result["verdict"] != "passed":
            raise LaneFailure(f"lane {self.lane.name} {result['verdict']}: "
                              f"{json.dumps(result['failing_step'] or result['failed_checks'])}")
        return result


def _record_cell_errors(proof_root: Path, redactor: Redactor,
                        on_error: Callable[[BaseException], None] | None = None) -> None:
    """Have the kernel write the error a cell ends with (its taxonomy class, by type) into the
    proof root, so the runner classifies by type instead of by the name papermill reports; then
    `on_error` (the run keeps its evidence while the kernel still lives)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return

    def handler(shell: Any, etype: type[BaseException], value: BaseException, tb: Any,
                tb_offset: int | None = None) -> Any:
        cls = error_class(value)
        record = {"type": etype.__name__, "kind": cls.kind, "exit_code": cls.exit_code,
                  "message": redactor.text(str(value))[-4000:]}
        with contextlib.suppress(OSError):
            (proof_root / evidence.ERROR_FILE).write_text(json.dumps(record, indent=2) + "\n")
        shown = shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        if on_error is not None:
            on_error(value)
        return shown

    shell.set_custom_exc((BaseException,), handler)


PLOTS_PRELOAD_S = 5.0   # a run that has not waited by then gets the plotting stack anyway


def _preload_plotting(recorder: Recorder) -> None:
    """Import the plotting stack (0.3 s of CPU) once the run first waits on a guest: before that,
    the lane's own set-up (parameters, lab, disks) would share the interpreter with it."""
    recorder.waiting.wait(PLOTS_PRELOAD_S)
    from ucnb.kernel import plots  # noqa: F401  (imports matplotlib.pyplot)


def _display_result(result: dict[str, Any]) -> None:
    """The verdict as ucnb's own MIME type, the banner as HTML, and a readable markdown fallback."""
    _display({RESULT_MIME: result, "text/html": banner.html(result),
              "text/markdown": banner.markdown(result)}, raw=True)


def start_run(namespace: dict[str, Any]) -> Run:
    """Start a run of the notebook's lane (its `lane_name` parameter) from its parameter variables.

    Under `ucnb run` the runner passes the run id and proof root through the environment; run
    plainly (papermill, JupyterLab) a new proof root is made under outputs/.
    """
    paths.pin_work_root()   # one work root for everything this kernel does, whatever its directory
    root_env = os.environ.get("UCNB_PROOF_ROOT")
    if root_env:  # a bad lane name or parameter below is then classified by its type too
        _record_cell_errors(Path(root_env), from_environment())
    lane = lanes.get(str(namespace.get("lane_name", "")))
    values = {k: namespace[k] for k in ["lane_name", *lane.parameters.model_fields] if k in namespace}
    params = lane.validate(values)
    run_id = os.environ.get("UCNB_RUN_ID") or files.new_run_id()
    proof_root = Path(root_env) if root_env else evidence.new_proof_root(lane.name, run_id)
    global _current
    if _current is not None:   # the start cell run again: the earlier run's labs go (kept ones stay)
        _current._replace_labs()
    _current = Run(lane, params, run_id, proof_root)
    return _current


_current: Run | None = None   # this kernel's latest run
