"""The runner's own start-up and bookkeeping: the kernel's transport, the stage clock in the index
line, the parameters cell read without papermill, and the imports kept off the runner's path."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ucnb.evidence import index
from ucnb.runner import execute, kernel, prestart
from ucnb.runner.stages import Stages, since_process_start

from ..conftest import ROOT


def test_the_kernel_talks_over_ipc_sockets_in_its_own_folder(tmp_path: Path) -> None:
    km = kernel.kernel_manager(tmp_path)
    assert km.transport == "ipc"
    assert km.connection_file == str(tmp_path / "kernel.json")
    assert Path(km.ip).parent == tmp_path   # the sockets are files next to it, not ports


def test_the_kernel_is_ipykernels_launched_through_ucnbs_ending(tmp_path: Path) -> None:
    argv = kernel.kernel_manager(tmp_path).kernel_spec.argv
    assert argv[argv.index("-m") + 1] == "ucnb.kernel.launch" and "ipykernel_launcher" not in argv
    assert "{connection_file}" in argv


def test_a_folder_too_deep_for_a_unix_socket_falls_back_to_tcp(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * (kernel.UNIX_PATH_MAX - len(str(tmp_path))))
    assert kernel.kernel_manager(deep).transport == "tcp"


def _start(km: Any, **launch: Any) -> Any:
    from jupyter_core.utils import run_sync

    run_sync(km.start_kernel)(extra_arguments=kernel.KERNEL_ARGUMENTS, cwd=str(ROOT), **launch)
    client = km.client()
    client.start_channels()
    run_sync(client.wait_for_ready)(timeout=60)
    return client


def _run(client: Any, code: str) -> str:
    from jupyter_core.utils import run_sync

    seen: list[str] = []
    run_sync(client.execute_interactive)(code, timeout=60, output_hook=lambda m: seen.append(
        m["content"].get("text", "")))
    return "".join(seen)


@pytest.mark.parametrize("spare", [False, True], ids=["launched", "spare handed over"])
def test_the_kernel_imports_ucnb_in_the_background_and_runs_without_a_debugger(
        tmp_path: Path, spare: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from jupyter_core.utils import run_sync

    assert kernel.KERNEL_ARGUMENTS == ["--HistoryManager.hist_file=:memory:"]   # no exec_lines
    if spare:
        prestart.spawn(ROOT)
        time.sleep(1)   # it imports before the run is known
    spare_pid = prestart._spare[0].process.pid if spare else None
    km = kernel.kernel_manager(tmp_path)
    # A variable only the launch has: the spare's environment is the launch's, not its spawn's.
    client = _start(km, env={**os.environ, "UCNB_TEST_LAUNCH": "'quoted' & \\ ünïcode"})
    try:
        assert prestart._spare == [] and (km.provisioner.pid == spare_pid or not spare)
        client.kernel_info()
        assert "debugger" not in run_sync(client.get_shell_msg)(timeout=30)["content"]["supported_features"]
        code = ("import os, sys, time\n"
                "deadline = time.monotonic() + 30\n"
                "wanted = {'ucnb.kernel.run', 'paramiko'}\n"
                "while not wanted <= set(sys.modules) and time.monotonic() < deadline:\n"
                "    time.sleep(0.02)\n"
                "print(sorted(wanted & set(sys.modules)), 'ucnb' in dir(), os.getcwd(), os.getppid())\n"
                "print(os.environ['UCNB_TEST_LAUNCH'])")
        first, second = _run(client, code).splitlines()
        # Both imported without a cell asking, and nothing of them put in the notebook's namespace.
        assert first.split() == ["['paramiko',", "'ucnb.kernel.run']", "False", str(ROOT), str(os.getpid())]
        assert second == "'quoted' & \\ ünïcode"
    finally:
        client.stop_channels()
        run_sync(km.shutdown_kernel)(now=True)


def test_a_spare_is_ended_when_not_taken_or_when_a_variable_read_at_import_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prestart.spawn(ROOT)
    process = prestart._spare[0].process
    prestart.discard()
    assert process.poll() is not None and prestart._spare == []

    prestart.spawn(ROOT)
    process = prestart._spare[0].process
    km = kernel.kernel_manager(tmp_path)
    env = {**os.environ, "UCNB_NETNS": "another"}   # the spare imported ucnb.host.netns with "ucnb"
    client = _start(km, env=env)
    try:
        assert process.poll() is not None and km.provisioner.pid != process.pid
        assert _run(client, "import ucnb.host.netns as n; print(n.NAME)").strip() == "another"
    finally:
        from jupyter_core.utils import run_sync

        client.stop_channels()
        run_sync(km.shutdown_kernel)(now=True)


def test_the_client_is_ready_once_both_channels_answer_and_says_so_when_the_kernel_died(
        tmp_path: Path) -> None:
    from jupyter_core.utils import run_sync

    km = kernel.kernel_manager(tmp_path)
    client = _start(km)   # ready: a kernel_info reply, then IOPub
    try:
        assert _run(client, "print(6 * 7)").strip() == "42"
        os.kill(km.provisioner.pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match="died"):
            run_sync(client.wait_for_ready)(timeout=30)
    finally:
        client.stop_channels()
        run_sync(km.shutdown_kernel)(now=True)


def test_every_variable_read_at_import_is_named_for_the_spare() -> None:
    """A module-level read of an environment variable in ucnb: the spare kernel imported it before
    its launch's environment arrived, so prestart must compare that variable (READ_AT_IMPORT)."""
    found: set[str] = set()
    for path in sorted((ROOT / "ucnb").rglob("*.py")):
        for node in _import_time_nodes(ast.parse(path.read_text())):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Call) and ast.unparse(sub.func) in ("os.environ.get", "os.getenv"):
                    assert isinstance(sub.args[0], ast.Constant), f"{path}: {ast.unparse(sub)}"
                    found.add(sub.args[0].value)
                elif isinstance(sub, ast.Subscript) and ast.unparse(sub.value) == "os.environ":
                    raise AssertionError(f"{path}: {ast.unparse(sub)} at import")
    assert found and found <= set(prestart.READ_AT_IMPORT), found - set(prestart.READ_AT_IMPORT)


def _import_time_nodes(tree: ast.Module) -> list[ast.AST]:
    """The statements a module runs when imported (class bodies too; not functions' bodies,
    not `if __name__ == "__main__"`)."""
    nodes: list[ast.AST] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            nodes += [*stmt.decorator_list, *stmt.args.defaults, *stmt.args.kw_defaults]
        elif isinstance(stmt, ast.ClassDef):
            nodes += [s for s in stmt.body if not isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef)]
        elif not (isinstance(stmt, ast.If) and "__name__" in ast.unparse(stmt.test)):
            nodes.append(stmt)
    return [n for n in nodes if n is not None]


def test_stages_add_up_and_the_process_age_is_measured() -> None:
    stages = Stages()
    with stages.timed("seal"):
        time.sleep(0.02)
    stages.add("seal", 1.0)
    stages.add("clean labs", 0.5)
    assert list(stages.rounded()) == ["seal", "clean labs"]
    assert 1.02 <= stages.seconds["seal"] < 1.5
    assert 0 < since_process_start() < 24 * 3600   # this pytest process started a moment ago


def test_the_index_line_keeps_the_stages(tmp_path: Path) -> None:
    result = {"lane": "single-node-quickstart", "profile": "lab", "run_id": "ab12cd34", "verdict": "passed",
              "accelerator": "tcg"}
    root = tmp_path / "single-node-quickstart" / "20260101T000000Z-ab12cd34"
    entry = index.entry_for_result(result, root, 0.0, 9.5, outputs=tmp_path, stages={"seal": 0.4})
    index.append(entry, tmp_path)
    assert json.loads(index.index_path(tmp_path).read_text())["stages"] == {"seal": 0.4}
    assert index.load(tmp_path)[0].stages == {"seal": 0.4}


def test_the_parameters_cell_is_read_from_the_notebook_as_written(tmp_path: Path) -> None:
    notebook = tmp_path / "x.ipynb"
    source = 'a = 1  # one\nb: list[str] = ["x", "y"]\nc = d = "z"\nprint(a)\n'
    notebook.write_text(json.dumps({"cells": [
        {"cell_type": "code", "metadata": {}, "source": "e = 5"},
        {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": source.splitlines(True)}]}))
    assert execute.notebook_parameters(notebook) == {"a": {"default": "1"}, "b": {"default": '["x", "y"]'},
                                                    "d": {"default": '"z"'}}
    notebook.write_text(json.dumps({"cells": [{"cell_type": "code", "metadata": {}, "source": "a = 1"}]}))
    assert execute.notebook_parameters(notebook) == {}


def test_the_runner_reads_notebooks_without_compiling_an_iri_grammar(tmp_path: Path) -> None:
    # jsonschema (under nbformat) imports rfc3987-syntax when installed, which compiles a Lark
    # grammar for seconds: a stand-in on the path shows whether it is imported, with and without.
    fake = tmp_path / "rfc3987_syntax"
    fake.mkdir()
    (fake / "__init__.py").write_text("print('rfc3987_syntax imported')\n"
                                      "def is_valid_syntax(term, value):\n    return True\n")

    def imported(code: str) -> bool:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                              timeout=120, env={**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT}"})
        assert done.returncode == 0, done.stderr
        return "rfc3987_syntax imported" in done.stdout

    assert imported("import nbformat")   # the control: without ucnb.runner it is imported
    assert not imported("import ucnb.runner, nbformat, papermill")


def test_the_host_facts_are_the_runners_to_write_under_it(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`ucnb run` writes them while its kernel starts; the kernel's run writes them only run plainly."""
    from ucnb import lanes
    from ucnb.evidence import proof
    from ucnb.kernel.run import Run

    lane = lanes.get("single-node-quickstart")
    monkeypatch.setattr(proof, "host_environment", lambda execution_model: {"qemu": "host facts"})
    plain = Run(lane, lane.validate({}), "plainrun", tmp_path / "plain")
    assert proof.read_environment(plain.proof_root)["qemu"] == "host facts"
    monkeypatch.setenv("UCNB_RUNNER", "1")
    ran = Run(lane, lane.validate({}), "runnerrun", tmp_path / "runner")
    assert "qemu" not in proof.read_environment(ran.proof_root)
    assert proof.read_environment(ran.proof_root)["run_id"] == "runnerrun"
