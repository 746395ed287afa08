"""A lane's kernel, started before the command line knows the run.

`ucnb run`'s first step (`ucnb.__main__`) spawns a *spare*: the `ucnb` kernel spec's interpreter
running the kernel launcher with `--handover` (`ucnb.kernel.launch`). It imports ipykernel and
ucnb's kernel side on the host's other core while the CLI imports, validates and makes the proof
root (about 0.6 s here), then waits on its stdin. When the runner's kernel manager would launch
a kernel process, `Handover` sends the spare that launch instead (its command line's arguments,
its environment, its working directory: one JSON line) and the spare goes on as if just launched.

What the spare imported saw the environment it was spawned with: ucnb's modules read their
variables when called, except the few in READ_AT_IMPORT (a unit test keeps that list whole),
and a launch whose environment gives any of those another value discards the spare. So does
a launch of another command (a changed kernel spec) or with other options; the kernel is then
launched the usual way. A spare not taken is killed when the CLI exits (`discard`, at exit), and
ends by itself at EOF on its stdin when the CLI dies.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KERNEL_NAME = "ucnb"
LAUNCHER = ("ipykernel_launcher", "ucnb.kernel.launch")   # the spec's launcher, ucnb's instead
HANDOVER = "--handover"
# The variables a module reads when imported: ucnb's (tests/unit/test_runner_startup.py finds
# every one), and ipykernel's parent pid.
READ_AT_IMPORT = ("UCNB_LIBVIRT_URI", "UCNB_LOCK_DIR", "UCNB_NETNS", "JPY_PARENT_PID")


@dataclass(frozen=True)
class Spare:
    process: subprocess.Popen[bytes]
    env: dict[str, str]   # what it was spawned with


_spare: list[Spare] = []   # at most one, spawned and not yet taken


def with_ucnb_launcher(spec_argv: list[str]) -> list[str]:
    """The spec's command line with ucnb's launcher in place of ipykernel's."""
    return [LAUNCHER[1] if a == LAUNCHER[0] else a for a in spec_argv]


def launcher_command(argv: list[str]) -> list[str]:
    """A kernel's command line up to ucnb's launcher (`python [options] -m ucnb.kernel.launch`):
    what a spare runs; the rest (`-f <connection file>`...) is the launch's own."""
    argv = with_ucnb_launcher(argv)
    return argv[:argv.index(LAUNCHER[1]) + 1] if LAUNCHER[1] in argv else argv


def _spec_argv() -> list[str] | None:
    """The `ucnb` kernel spec's argv, found as jupyter_client finds it (first in the path wins)."""
    from jupyter_core.paths import jupyter_path

    for folder in jupyter_path("kernels"):
        spec = Path(folder) / KERNEL_NAME / "kernel.json"
        if spec.is_file():
            try:
                return [str(a) for a in json.loads(spec.read_text())["argv"]]
            except (OSError, ValueError, KeyError, TypeError):
                return None
    return None


def spawn(cwd: Path) -> None:
    """Start the spare (once), in its own session as jupyter_client starts a kernel, in `cwd`."""
    argv = _spec_argv()
    if _spare or argv is None:
        return
    # As jupyter_client's launch_kernel sets it: the parent's pid the kernel polls to end with it.
    env = {**os.environ, "JPY_PARENT_PID": str(os.getpid())}
    process = subprocess.Popen([*launcher_command(argv), HANDOVER], stdin=subprocess.PIPE, cwd=cwd,
                               env=env, start_new_session=True)
    _spare.append(Spare(process, env))
    atexit.register(discard)


def take(cmd: list[str], launch: dict[str, Any]) -> subprocess.Popen[bytes] | None:
    """The spare, handed the launch of `cmd` (`launch`: env, cwd), or None (and the spare ended)
    when there is none, it has ended, it runs another command, `launch` asks for more, or its
    environment differs in a variable read at import."""
    spare = _spare.pop() if _spare else None
    if spare is None:
        return None
    head = launcher_command(cmd)
    env = {**(launch.get("env") or os.environ), "JPY_PARENT_PID": str(os.getpid())}
    usable = (spare.process.poll() is None and list(spare.process.args)[:-1] == head  # type: ignore[arg-type]
              and set(launch) <= {"env", "cwd"}
              and all(env.get(name) == spare.env.get(name) for name in READ_AT_IMPORT))
    message = {"argv": [os.path.expanduser(a) for a in cmd[len(head):]], "env": env,
               "cwd": str(launch.get("cwd") or os.getcwd())}
    try:
        if usable:
            assert spare.process.stdin is not None
            spare.process.stdin.write(json.dumps(message).encode() + b"\n")
            spare.process.stdin.close()   # as jupyter_client leaves a kernel's stdin: closed
            return spare.process
    except OSError:   # it died meanwhile
        pass
    _end(spare)
    return None


def discard() -> None:
    """End a spare nobody took (the run was refused or planned, or this process is exiting)."""
    while _spare:
        _end(_spare.pop())


def _end(spare: Spare) -> None:
    spare.process.kill()
    spare.process.wait()
    if spare.process.stdin is not None:
        with contextlib.suppress(OSError):   # a broken pipe's unwritten line
            spare.process.stdin.close()


def provisioner_class() -> type:
    """jupyter_client's local provisioner, launching by handing over to the spare when there is
    one (a function: jupyter_client is imported only when a kernel starts)."""
    from jupyter_client.provisioning import LocalProvisioner

    class Handover(LocalProvisioner):
        async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
            launch = LocalProvisioner._scrub_kwargs(kwargs)
            spare = take(cmd, launch)
            if spare is None:
                return await super().launch_kernel(cmd, **kwargs)
            self.process, self.pid = spare, spare.pid
            self.pgid = os.getpgid(spare.pid)
            self.cwd = launch.get("cwd", Path.cwd())
            return self.connection_info

    return Handover
