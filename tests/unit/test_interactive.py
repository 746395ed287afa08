"""Interactive step-through without a browser: the kernel's record of its cells, the watcher's
verdicts, the JupyterLab launcher's refusals and command line, interrupted steps in the verdict."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nbformat
import pytest
import yaml

from ucnb.errors import ParameterError
from ucnb.evidence.proof import build_result
from ucnb.host.procs import ProcessId
from ucnb.kernel import interactive
from ucnb.kernel.record import Recorder
from ucnb.lab import watcher
from ucnb.lab.registry import LabState
from ucnb.runner import jupyterlab

ROOT = Path(__file__).resolve().parents[2]


def _history_shell() -> Any:
    """What `transcript` reads of an IPython shell after four cells, the third rerun as the fourth."""
    from IPython.core.history import HistoryOutput

    outputs: defaultdict[int, list[Any]] = defaultdict(list)
    outputs[1] = [HistoryOutput("out_stream", {"stream": ["booting\n", "up\n"]})]
    outputs[2] = [HistoryOutput("display_data", {"text/plain": "table", "text/html": "<b>t</b>"})]
    outputs[4] = [HistoryOutput("execute_result", {"text/plain": "42"})]
    history = SimpleNamespace(input_hist_raw=["", "node = boot()", "show()", "wait()", "wait()"],
                              outputs=outputs,
                              exceptions={3: {"ename": "KeyboardInterrupt", "evalue": "",
                                              "traceback": ["KeyboardInterrupt"]}})
    return SimpleNamespace(history_manager=history, execution_count=4)


def test_the_transcript_holds_every_cell_as_it_ran_with_its_outputs() -> None:
    notebook = interactive.transcript(_history_shell(), "Single-node quickstart")
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert [c.source for c in code] == ["node = boot()", "show()", "wait()", "wait()"]
    assert [c.execution_count for c in code] == [1, 2, 3, 4]
    assert code[0].outputs[0].text == "booting\nup\n" and code[0].outputs[0].name == "stdout"
    assert code[1].outputs[0].data["text/html"] == "<b>t</b>"
    assert code[2].outputs[0].output_type == "error" and code[2].outputs[0].ename == "KeyboardInterrupt"
    assert code[3].outputs[0].output_type == "execute_result"
    later = interactive.transcript(_history_shell(), "x", first=3)
    assert [c.source for c in later.cells if c.cell_type == "code"] == ["wait()", "wait()"]


def test_environment_marks_a_run_in_a_jupyter_session(monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = "/srv/notebooks/single-node-quickstart.ipynb"
    monkeypatch.setenv("JPY_SESSION_NAME", notebook)
    assert interactive.environment() == {"interactive": "true", "interactive_notebook": notebook}
    monkeypatch.delenv("JPY_SESSION_NAME")
    assert interactive.environment() == {"interactive": "false"}


def _state(directory: Path, owner: ProcessId | None, keep: bool = False) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    LabState(directory.name, "run1", owner, 7, [f"ucnb-{directory.name}"], [], keep).save(directory)
    return directory


def test_the_watcher_cleans_only_a_lab_whose_owner_is_gone(tmp_path: Path) -> None:
    me = ProcessId.current()
    gone = ProcessId(me.pid, me.start + 1, me.boot)   # same pid, another start time: not this process
    assert watcher.verdict(_state(tmp_path / "a1", me)) == "wait"
    assert watcher.verdict(_state(tmp_path / "a2", gone)) == "clean"
    assert watcher.verdict(_state(tmp_path / "a3", gone, keep=True)) == "stop"
    assert watcher.verdict(tmp_path / "a4") == "stop"   # torn down: its folder is gone
    (tmp_path / "a5").mkdir()
    (tmp_path / "a5" / "state.json").write_text("{not json")
    assert watcher.verdict(tmp_path / "a5") == "stop"   # never acts on a state it cannot trust


def test_a_rerun_boot_replaces_the_runs_earlier_labs_but_not_kept_ones() -> None:
    from ucnb.kernel.run import Run

    class FakeLab:
        def __init__(self, lab_id: str, keep: bool = False) -> None:
            self.lab_id, self.keep, self.torn_down = lab_id, keep, False

        def teardown(self) -> None:
            self.torn_down = True

    old, kept = FakeLab("old1"), FakeLab("kept1", keep=True)
    run = SimpleNamespace(labs=[old, kept])
    Run._replace_labs(run)  # type: ignore[arg-type]
    assert old.torn_down and not kept.torn_down and run.labs == [kept]


def test_an_interrupted_wait_is_a_gap_not_a_failure(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "events.jsonl")
    with recorder.step("boot", "node01"):
        pass
    with pytest.raises(KeyboardInterrupt), recorder.step("marker: never.seen", "node01", kind="wait"):
        raise KeyboardInterrupt
    row = recorder.rows["steps"][-1]
    assert row.outcome == "interrupted" and re.fullmatch(r"interrupted by the user after [\d.]+s", row.detail)
    result = build_result(tmp_path, "lane", "lab", "run1")
    assert result["verdict"] == "passed" and result["verdict_label"] == "passed with gaps"
    assert result["gaps"] == result["interrupted"] == [{"name": "marker: never.seen", "node": "node01",
                                                         "reason": row.detail}]
    from ucnb.evidence import banner

    assert ("interrupted", f"marker: never.seen ({row.detail})") in banner.coverage_lines(result)
    failed = build_result(tmp_path, "lane", "lab", "run1", error={"type": "KeyboardInterrupt"}, exit_code=130)
    assert failed["failing_step"]["name"] == "marker: never.seen"   # under `ucnb run`: the run is interrupted


def test_the_server_never_gets_its_token_on_the_command_line(tmp_path: Path) -> None:
    argv = jupyterlab.server_argv(tmp_path, "127.0.0.1", 8890, tmp_path / "config.json", as_root=True)
    assert f"--config={tmp_path / 'config.json'}" in argv and "--allow-root" in argv
    assert "--ServerApp.port_retries=0" in argv and not any("token" in a.lower() for a in argv)


def test_the_launcher_refuses_bad_input_before_starting_anything(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    with pytest.raises(ParameterError, match="not an IP address"):
        jupyterlab.start(tmp_path, ip="lab.example")
    with pytest.raises(ParameterError, match="at least 16 characters"):
        jupyterlab.start(tmp_path, token="short")
    with pytest.raises(ParameterError, match="not a folder"):
        jupyterlab.start(tmp_path / "missing")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ParameterError, match=f"cannot listen on 127.0.0.1:{port}"):
            jupyterlab.start(tmp_path, port=port)
    assert list((tmp_path / "tmp").iterdir()) == []   # no private folder (and no token) left behind


def test_how_to_reach_a_root_server_from_another_machine(tmp_path: Path) -> None:
    server = jupyterlab.Server(SimpleNamespace(), "127.0.0.1", 8890, "t" * 32, tmp_path)  # type: ignore[arg-type]
    lines = jupyterlab.how_to_reach(server, host="labhost")
    assert lines[0] == f"JupyterLab: http://127.0.0.1:8890/lab?token={'t' * 32}"
    assert "ssh -N -L 8890:127.0.0.1:8890 <user>@labhost" in "\n".join(lines)
    if os.geteuid() == 0:
        assert any("running as root" in line for line in lines)


def test_environment_yml_names_jupyterlab_and_playwright_at_the_locks_pins() -> None:
    lock = dict(line.split("==") for line in (ROOT / "requirements.lock").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    pip = next(d["pip"] for d in yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
               if isinstance(d, dict))
    pins = dict(p.split("==") for p in pip if "==" in p)
    assert set(pins) >= {"jupyterlab", "playwright"}
    assert all(lock.get(name) == version for name, version in pins.items()), (pins, lock)

