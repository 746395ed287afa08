"""The product-command layer: the UltraCloud flake's own commands, run for real.

A `Command` is an argv list run from the flake's root: never a shell string, never through a
shell. nix commands get `--extra-experimental-features 'nix-command flakes'` (two argv items,
after the subcommand) and otherwise the user's own nix settings; `nix build`/`nix run` get
`--max-jobs N --cores N` from the wrappers' overrides (`ULTRACLOUD_LOCAL_NIX_*`, and
`PHOTON_CLUSTER_NIX_*` for `./nix/test-cluster` commands), which are also exported to every
command's environment, as the product's wrappers do.

`run()` starts the command in its own process group, streams stdout+stderr line by line into a
log file and to a callback, ends it at its timeout (SIGTERM to the group, SIGKILL after a grace),
ends it at once on a failure marker, and on KeyboardInterrupt kills the group and re-raises.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ucnb import markers as markers_mod
from ucnb.errors import InfrastructureError, LaneFailure, ParameterError
from ucnb.markers import Marker
from ucnb.overrides import CLUSTER_OVERRIDES, LOCAL_OVERRIDES, resolve_overrides

if TYPE_CHECKING:
    from ucnb.evidence.redact import Redactor
    from ucnb.kernel.record import Recorder, StepRow

EXPERIMENTAL_FLAG = "--extra-experimental-features"
EXPERIMENTAL_VALUE = "nix-command flakes"
# nix subcommands that take a second word (`nix flake show`): flags go after both words.
TWO_WORD_SUBCOMMANDS = frozenset({"flake", "profile", "registry", "store", "derivation", "key", "hash",
                                  "nar", "realisation", "daemon"})
# `nix flake show --all-systems` exists from nix 2.13 on; 2.8 shows every system without it.
ALL_SYSTEMS_SINCE = (2, 13)

NIX_INSTALL_HINT = ("install nix (Debian: `apt-get install --no-install-recommends nix-bin`; "
                    "elsewhere https://nixos.org/download), or print the commands with `--plan`")

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
TAIL_LINES = 20
MAX_LINE_BYTES = 1 << 20
CONTEXT_LINES = 10


# -- the flake ------------------------------------------------------------------------------------
def resolve_flake(flake: str | os.PathLike[str]) -> Path:
    """The `flake` parameter as an existing directory holding flake.nix; anything else is refused."""
    text = os.fspath(flake)
    if not text or "\x00" in text:
        raise ParameterError(f"flake: {text!r} is not a path to an UltraCloud checkout")
    path = Path(text).expanduser()
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise ParameterError(f"flake: {text!r} does not exist (a path to the UltraCloud flake's "
                             f"checkout is expected; commands run from its root, never through a shell)"
                             ) from None
    if not resolved.is_dir():
        raise ParameterError(f"flake: {text!r} is not a directory (the UltraCloud checkout is expected)")
    if not (resolved / "flake.nix").is_file():
        raise ParameterError(f"flake: {resolved} has no flake.nix (is it the UltraCloud checkout?)")
    return resolved


# -- nix --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NixInfo:
    path: str                       # the nix binary found on PATH
    version_text: str               # `nix --version` as printed, e.g. "nix (Nix) 2.8.0"
    version: tuple[int, ...]        # (2, 8, 0)

    @property
    def has_all_systems(self) -> bool:
        return self.version >= ALL_SYSTEMS_SINCE

    def environment(self) -> dict[str, str]:
        """For environment.txt: which nix ran the product's commands."""
        return {"nix_version": ".".join(map(str, self.version)), "nix_path": self.path,
                "nix_version_text": self.version_text}


def detect_nix(path: str | None = None) -> NixInfo:
    """The nix on PATH and its version (detected once per binary); no nix is an infrastructure error."""
    found = path or shutil.which("nix")
    if found is None:
        raise InfrastructureError(f"nix is not installed on this host (no `nix` on PATH): {NIX_INSTALL_HINT}")
    return _nix_version(str(Path(found).resolve()))


@functools.cache
def _nix_version(path: str) -> NixInfo:
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InfrastructureError(f"`{path} --version` failed ({exc}): {NIX_INSTALL_HINT}") from None
    text = (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else ""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if done.returncode != 0 or match is None:
        raise InfrastructureError(f"`{path} --version` gave no version (exit {done.returncode}: "
                                  f"{text or 'no output'}): {NIX_INSTALL_HINT}")
    return NixInfo(path, text, tuple(int(g) for g in match.groups() if g is not None))


# -- commands ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    """One product command as the contract writes it, run from the flake's root."""

    argv: tuple[str, ...]
    cwd: Path                                   # the flake's root
    name: str = ""                              # what it is, e.g. "build trial VM"
    timeout_s: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)   # overrides on top of os.environ
    nix: bool = False                           # argv is a nix invocation (flags inserted)
    needs_nix: bool = True                      # nix must exist (wrappers and runners call it)
    cluster: bool = False                       # a ./nix/test-cluster command: PHOTON_CLUSTER_* flags
    expect_output: str | None = None            # a regex some output line must match (seed: `| rg -n`)
    proof_folder: str | None = None             # <work root>/<folder>/latest the product writes
    work_root: Path | None = None               # ULTRACLOUD_WORK_ROOT or <flake>/work
    result_json: bool = False                   # that folder must hold result.json
    expected_files: tuple[str, ...] = ()        # files the contract names in that folder
    markers: tuple[str, ...] = ()               # the marker sequence the contract expects
    interactive: bool = False                   # needs a terminal (ssh NODE): plan only
    assumed: bool = False                       # not in the contract: by analogy (note says why)
    note: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.argv, str) or not self.argv or not all(isinstance(a, str) for a in self.argv):
            raise ParameterError(f"a command is a non-empty argv list of strings, not {self.argv!r}")
        object.__setattr__(self, "argv", tuple(self.argv))

    def final_argv(self, nix: NixInfo | None = None, overrides: Mapping[str, str] | None = None) -> list[str]:
        """The argv that runs: nix flags inserted after the subcommand; `--all-systems` dropped on
        a nix without it (`nix` None: unknown version, the contract's argv is kept)."""
        argv = list(self.argv)
        if not self.nix:
            return argv
        depth = 3 if len(argv) > 2 and argv[1] in TWO_WORD_SUBCOMMANDS else 2
        head, rest = argv[:depth], argv[depth:]
        inserted = [EXPERIMENTAL_FLAG, EXPERIMENTAL_VALUE]
        if len(argv) > 1 and argv[1] in ("build", "run"):
            jobs, cores = self._job_overrides(overrides or resolve_overrides())
            inserted += ["--max-jobs", jobs, "--cores", cores]
        if nix is not None and not nix.has_all_systems and head[1:3] == ["flake", "show"]:
            rest = [a for a in _before_double_dash(rest) if a != "--all-systems"] + _after_double_dash(rest)
        return head + inserted + rest

    def _job_overrides(self, overrides: Mapping[str, str]) -> tuple[str, str]:
        jobs, cores = CLUSTER_OVERRIDES if self.cluster else LOCAL_OVERRIDES
        return overrides[jobs], overrides[cores]

    def environment(self, overrides: Mapping[str, str] | None = None,
                    base: Mapping[str, str] | None = None) -> dict[str, str]:
        """os.environ (or `base`), the overrides exported, then the command's own env."""
        env = dict(os.environ if base is None else base)
        env.update(overrides or resolve_overrides())
        env.update(self.env)
        return env

    def display(self, nix: NixInfo | None = None, overrides: Mapping[str, str] | None = None) -> str:
        """As a user would type it from the flake's root (with the command's own env prefixed)."""
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        line = shlex.join(self.final_argv(nix, overrides))
        return f"{prefix} {line}" if prefix else line


def _before_double_dash(args: list[str]) -> list[str]:
    return args[:args.index("--")] if "--" in args else args


def _after_double_dash(args: list[str]) -> list[str]:
    return args[args.index("--"):] if "--" in args else []


# -- running ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Line:
    text: str                   # one line of output, ANSI colours stripped
    elapsed: float              # seconds since the command started
    markers: tuple[Marker, ...]


@dataclass
class CommandResult:
    command: Command
    argv: list[str]                     # what actually ran
    exit_status: int | None             # None: ended by ucnb (timeout, failure marker)
    duration: float
    started: float
    markers: list[Marker] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)       # the last lines of output
    matched: list[str] = field(default_factory=list)    # lines matching command.expect_output
    timed_out: bool = False
    failure_marker: Marker | None = None
    failure_context: list[str] = field(default_factory=list)
    lingering: bool = False             # exited, but something it started still holds its output
    nix_version: str = ""
    log_path: Path | None = None
    pid: int | None = None              # the leader's pid, i.e. the process group's id
    failure: str | None = None          # why it failed, for an error message; None: passed

    @property
    def passed(self) -> bool:
        return self.failure is None

    def raise_for_failure(self) -> None:
        if self.failure is not None:
            raise LaneFailure(self.failure)


OnLine = Callable[[Line], None]


def run(command: Command, log_path: Path | None = None, on_line: OnLine | None = None, *,
        check: bool = True, overrides: Mapping[str, str] | None = None, kill_grace_s: float = 5.0,
        exit_grace_s: float = 2.0, redactor: Redactor | None = None) -> CommandResult:
    """Run one product command; see the module docstring. `check`: raise LaneFailure on failure
    (else return the result with `failure` set, e.g. to ingest what a failed run wrote)."""
    if command.interactive:
        raise ParameterError(f"`{command.display()}` needs a terminal: run it yourself from {command.cwd}")
    nix = detect_nix() if (command.nix or command.needs_nix) else None
    overrides = dict(overrides or resolve_overrides())
    argv = command.final_argv(nix, overrides)
    program = argv[0]
    if not command.nix and ("/" in program) and not (command.cwd / program).exists():
        failure = (f"`{shlex.join(argv)}`: {program} does not exist in {command.cwd} "
                   f"(the contract names it; is `flake` the UltraCloud checkout, and was it built?)")
        result = CommandResult(command, argv, None, 0.0, time.time(), failure=failure,
                               nix_version=nix.version_text if nix else "")
        if check:
            raise LaneFailure(failure)
        return result
    shown = shlex.join(argv)
    log = _Log(log_path, redactor)
    log.write(f"$ cd {shlex.quote(str(command.cwd))} && "
              + " ".join(f"{k}={shlex.quote(v)}" for k, v in command.env.items())
              + (" " if command.env else "") + shown + "\n")
    expect = re.compile(command.expect_output) if command.expect_output else None
    started = time.time()
    result = CommandResult(command, argv, None, 0.0, started, log_path=log_path,
                           nix_version=nix.version_text if nix else "")
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    try:
        proc = subprocess.Popen(argv, cwd=command.cwd, env=command.environment(overrides),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True, bufsize=0)
    except OSError as exc:
        log.close()
        raise InfrastructureError(f"cannot start `{shown}` in {command.cwd}: {exc}") from None
    assert proc.stdout is not None
    result.pid = proc.pid
    fd = proc.stdout.fileno()
    deadline = started + command.timeout_s if command.timeout_s else None
    buffer, offset, exited_at = b"", 0, None

    def handle(raw: bytes) -> bool:
        """One line; True when it carries a failure marker."""
        nonlocal offset
        text = ANSI_RE.sub("", raw.decode("utf-8", "replace")).replace("\r", "")
        found, _ = markers_mod.parse(text.encode() + b"\n", offset)  # offsets: of the raw output
        offset += len(raw) + 1
        if redactor is not None:
            text = redactor.text(text)
        log.write(text + "\n")
        tail.append(text)
        result.markers.extend(found)
        if expect is not None and expect.search(text):
            result.matched.append(text)
        if on_line is not None:
            on_line(Line(text, time.time() - started, tuple(found)))
        failed = next((m for m in found if m.failed), None)
        if failed is not None:
            result.failure_marker = failed
            result.failure_context = list(tail)[-CONTEXT_LINES:]
            return True
        return False

    try:
        stop = eof = False
        while not stop:
            now = time.time()
            if deadline is not None and now >= deadline:
                result.timed_out = True
                break
            wait = 0.2 if deadline is None else max(0.0, min(0.2, deadline - now))
            if eof:  # output closed: wait for the exit, still bounded by the deadline
                if proc.poll() is not None:
                    break
                time.sleep(min(wait, 0.05))
                continue
            ready, _, _ = select.select([fd], [], [], wait)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    eof = True
                    continue
                buffer += chunk
                while b"\n" in buffer and not stop:
                    raw, buffer = buffer.split(b"\n", 1)
                    stop = handle(raw)
                if len(buffer) > MAX_LINE_BYTES and not stop:  # no newline in sight: a line anyway
                    stop, buffer = handle(buffer), b""
            if not stop and proc.poll() is not None:
                exited_at = exited_at or time.time()
                if time.time() - exited_at > exit_grace_s:
                    result.lingering = True  # a child it left holds the pipe: leave it be
                    break
        if buffer and not stop:
            handle(buffer)
        if result.timed_out or result.failure_marker is not None:
            _kill_group(proc, kill_grace_s)
        else:
            result.exit_status = proc.wait()
    except BaseException:  # KeyboardInterrupt above all: nothing of it may outlive us
        _kill_group(proc, kill_grace_s)
        log.write("# interrupted: process group killed\n")
        log.close()
        proc.stdout.close()
        raise
    if result.lingering:
        _drain_in_background(proc.stdout, log_path, redactor)
    else:
        proc.stdout.close()
    result.duration = time.time() - started
    result.tail = list(tail)
    result.failure = _failure(command, shown, result)
    log.write(f"# {_outcome(result)} after {result.duration:.2f}s\n")
    log.close()
    if check:
        result.raise_for_failure()
    return result


def _outcome(result: CommandResult) -> str:
    if result.failure_marker is not None:
        return f"ended at failure marker {result.failure_marker.name}"
    if result.timed_out:
        return f"ended at its timeout ({result.command.timeout_s:g}s)"
    return f"exit {result.exit_status}" + ("" if result.failure is None else " (failed)")


def _failure(command: Command, shown: str, result: CommandResult) -> str | None:
    last = "\n".join(f"  | {line}" for line in result.tail[-TAIL_LINES:]) or "  | (no output)"
    if result.failure_marker is not None:
        context = "\n".join(f"  | {line}" for line in result.failure_context)
        return (f"`{shown}` printed failure marker {result.failure_marker.name} after "
                f"{result.duration:.1f}s (ended at once, process group killed); context:\n{context}")
    if result.timed_out:
        return (f"`{shown}` did not finish within its timeout of {command.timeout_s:g}s "
                f"(process group killed); last output:\n{last}")
    if result.exit_status != 0:
        return f"`{shown}` exited {result.exit_status} after {result.duration:.1f}s; last output:\n{last}"
    if command.expect_output and not result.matched:
        return (f"`{shown}` exited 0 but no output line matched /{command.expect_output}/ "
                f"(the contract filters it through `rg -n`); last output:\n{last}")
    return None


def _drain_in_background(stream: IO[bytes], log_path: Path | None, redactor: Redactor | None) -> None:
    """Keep reading what a lingering child (a kept VM) writes, so it never meets a closed pipe."""
    def drain() -> None:
        log = _Log(log_path, redactor)
        try:
            for raw in iter(lambda: os.read(stream.fileno(), 65536), b""):
                log.write(ANSI_RE.sub("", raw.decode("utf-8", "replace")))
        except OSError:
            pass
        finally:
            log.close()
            stream.close()
    threading.Thread(target=drain, name="ucnb-drain-lingering", daemon=True).start()


def _group_alive(pgid: int) -> bool:
    """Any process of the group that is not a zombie (PID 1 here reaps late)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields_ = stat[stat.rindex(")") + 2:].split()
        if int(fields_[2]) == pgid and fields_[0] != "Z":
            return True
    return False


def end_processes_of_run(run_id: str, grace_s: float = 3.0) -> list[str]:
    """End every process still carrying this run's `UCNB_RUN_ID` (the kernel's environment, which
    every product command inherits): what a killed kernel could not end itself. Returns what it
    ended, one line each."""
    needle = f"UCNB_RUN_ID={run_id}".encode()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (needle in (entry / "environ").read_bytes().split(b"\0") and _alive(int(entry.name))
                    and b"ipykernel_launcher" not in (entry / "cmdline").read_bytes()):  # jupyter ends it
                found.append(int(entry.name))
        except OSError:
            continue
    ended = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [pid for pid in found if _alive(pid)]
        for pid in alive:
            if sig == signal.SIGTERM:
                ended.append(f"ended process {pid} of run {run_id} ({_cmdline(pid)}), still running "
                             f"after its kernel")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        end = time.time() + grace_s
        while sig == signal.SIGTERM and time.time() < end and any(_alive(pid) for pid in alive):
            time.sleep(0.05)
    return ended


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "gone"


def _zombie(entry: Path) -> bool:
    stat = (entry / "stat").read_text()
    return stat[stat.rindex(")") + 2:].split()[0] == "Z"


def _alive(pid: int) -> bool:
    """Running, i.e. neither a zombie nor exiting (an exiting process has released its memory, and
    with it its command line: the killed kernel, while the runner reaps it)."""
    try:
        entry = Path(f"/proc/{pid}")
        return not _zombie(entry) and bool((entry / "cmdline").read_bytes())
    except OSError:
        return False


def _kill_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM to the whole group, SIGKILL to what is left after `grace_s`."""
    pgid = proc.pid  # start_new_session: the leader's pid is the group's id
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        end = time.time() + wait
        while time.time() < end:
            if proc.poll() is not None and not _group_alive(pgid):
                proc.wait()
                return
            time.sleep(0.02)
    proc.poll()


class _Log:
    """The command's log file (appended), redacted when a redactor is given."""

    def __init__(self, path: Path | None, redactor: Redactor | None) -> None:
        self.redactor = redactor
        self.file = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = path.open("a", encoding="utf-8")

    def write(self, text: str) -> None:
        if self.file is not None:
            self.file.write(self.redactor.text(text) if self.redactor else text)
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


# -- tying it to a run ------------------------------------------------------------------------------
def recorder_callback(recorder: Recorder, node: str = "", echo: Callable[[str], object] | None = print
                      ) -> OnLine:
    """An on_line callback recording every marker live (since_boot: since the command started) and
    echoing each line (e.g. to the notebook)."""
    def on_line(line: Line) -> None:
        for marker in line.markers:
            recorder.marker(node, marker.name, time.time(), line.elapsed)
        if echo is not None:
            echo(line.text)
    return on_line


def run_steps(recorder: Recorder, commands: Iterable[Command], log_path: Path, node: str = "",
              echo: Callable[[str], object] | None = print, overrides: Mapping[str, str] | None = None,
              redactor: Redactor | None = None) -> list[CommandResult]:
    """Each command as a recorded step (named by its display form), markers recorded live; the first
    failure fails its step and raises LaneFailure."""
    results = []
    for command in commands:
        with recorder.step(command.name or command.display(), node) as row:
            result = run(command, log_path, recorder_callback(recorder, node, echo), check=False,
                         overrides=overrides, redactor=redactor)
            _describe(row, result)
            results.append(result)
            result.raise_for_failure()
    return results


def _describe(row: StepRow, result: CommandResult) -> None:
    row.detail = f"{shlex.join(result.argv)}: {_outcome(result)}"


# -- nix for tests ----------------------------------------------------------------------------------
def offline_nix_config(directory: Path, experimental: bool = True) -> str:
    """A NIX_CONFIG that reaches for nothing on the network: no substituters (else each build
    retries the public cache for ~5 s), an empty flake registry file (2.8 tries to download an
    empty value), no sandbox (the contract flake's builders are /bin/sh), no dirty-tree warnings.
    Build users stay nix's default (`nixbld`, which scripts/setup.sh creates), as for a release
    engineer's own runs."""
    directory.mkdir(parents=True, exist_ok=True)
    registry = directory / "registry.json"
    registry.write_text(json.dumps({"flakes": [], "version": 2}))
    lines = ["substituters =", f"flake-registry = {registry}", "sandbox = false", "warn-dirty = false"]
    if experimental:
        lines.append("extra-experimental-features = nix-command flakes")
    return "\n".join(lines) + "\n"


def with_timeout(commands: Sequence[Command], timeout_s: float) -> list[Command]:
    """The same commands with another timeout (tests, or a user's shorter budget)."""
    return [replace(c, timeout_s=timeout_s) for c in commands]


TIMEOUT_CAP_VAR = "UCNB_PRODUCT_TIMEOUT_S"


def timeout_cap(environ: Mapping[str, str] | None = None) -> float | None:
    """`UCNB_PRODUCT_TIMEOUT_S`: no product command may run longer (a user's shorter budget, or a
    test's); unset: each command's timeout is the contract's."""
    raw = (os.environ if environ is None else environ).get(TIMEOUT_CAP_VAR, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ParameterError(f"{TIMEOUT_CAP_VAR}={raw!r} is not a positive number of seconds")
    return value


def cap_timeouts(commands: Sequence[Command], cap_s: float | None) -> list[Command]:
    """The same commands, none allowed longer than `cap_s` (None: as the contract says)."""
    if cap_s is None:
        return list(commands)
    return [replace(c, timeout_s=min(c.timeout_s or cap_s, cap_s)) for c in commands]
