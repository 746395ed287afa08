"""Guest logs pulled into the proof root: each node's kernel log (dmesg), its services' status
and the tails of its service logs, into `logs/<node>-dmesg.log` and `logs/<node>-services.log`.

Collected at the end of a run and when a cell fails (while the guests still run), in one SSH
command per node and in parallel, each part bounded in size. Best effort: a node that is down
or does not answer gets `logs/<node>-guest-logs.txt` saying why instead; collection never fails
a run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ucnb.lab.lab import Lab, Node

DMESG_BYTES = 256 * 1024
LOG_BYTES = 64 * 1024
SECTION = "@@ucnb-section "
TIMEOUT_S = 15.0


def script(status_command: str, files: Sequence[str]) -> str:
    """One shell command printing every part under a section line of its own (globs in `files`
    expand in the guest; a part that cannot be read says so in its section)."""
    parts = [f"echo '{SECTION}dmesg'", f"dmesg 2>&1 | tail -c {DMESG_BYTES}"]
    if status_command:
        parts += [f"echo '{SECTION}service status'", f"{status_command} 2>&1"]
    for pattern in files:
        parts.append(f"for f in {pattern}; do [ -f \"$f\" ] || continue; echo \"{SECTION}$f\"; "
                     f"tail -c {LOG_BYTES} \"$f\" 2>&1; done")
    return "; ".join(parts)


def split(output: str) -> dict[str, str]:
    """Section name -> its text, in order."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith(SECTION):
            current = sections.setdefault(line[len(SECTION):].strip(), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines) + "\n" for name, lines in sections.items()}


def collect_node(node: Node, directory: Path, status_command: str, files: Sequence[str],
                 why: str) -> str:
    """Pull one node's logs; returns what was written (or why nothing was)."""
    redact = node.lab.recorder.redactor.text
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    note = directory / f"{node.name}-guest-logs.txt"
    if not node.running():
        note.write_text(f"{stamp} ({why}): not collected: the domain is not running "
                        f"(powered off, crashed or not started yet)\n")
        return "not running"
    try:
        result = node.run(script(status_command, files), timeout=TIMEOUT_S, log_output=False)
    except Exception as exc:  # best effort: a node that does not answer is noted
        note.write_text(redact(f"{stamp} ({why}): not collected: {type(exc).__name__}: {exc}\n"))
        return f"not collected: {type(exc).__name__}"
    sections = split(result.stdout)
    header = f"# {node.name}, collected {stamp} ({why})\n"
    if "dmesg" in sections:
        (directory / f"{node.name}-dmesg.log").write_text(redact(header + sections.pop("dmesg")))
    services = "".join(f"## {name}\n{text}" for name, text in sections.items())
    (directory / f"{node.name}-services.log").write_text(redact(header + services))
    if result.exit_status is None:
        note.write_text(f"{stamp} ({why}): the collection command timed out after {TIMEOUT_S:g}s: "
                        f"what arrived before is kept\n")
    return "collected"


def collect(lab: Lab, status_command: str, files: Sequence[str], why: str) -> dict[str, str]:
    """Every node of a lab, in parallel (threads, so a node that hangs holds no other)."""
    outcome: dict[str, str] = {}
    directory = lab.log_dir

    def one(node: Node) -> None:
        outcome[node.name] = collect_node(node, directory, status_command, files, why)

    threads = [threading.Thread(target=one, args=(n,), name=f"guest-logs-{n.name}", daemon=True)
               for n in lab.nodes.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S + 5)
    return outcome


def status_for_all(template: str) -> str:
    """The service manager's status command for every service (`{service}` -> a glob)."""
    return template.replace("{service}", "*") if "{service}" in template else template

