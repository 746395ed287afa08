"""The product's serial-console contract: `ULTRACLOUD_MARKER <name>.<detail>` lines.

Pure parsing, shared by live serial watchers, supplied serial logs (hardware-smoke capture) and
unit tests. Matching is robust to kernel messages interleaved on the same console: a marker is
found anywhere in a line, and carriage returns are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PREFIX = "ULTRACLOUD_MARKER"
MARKER_RE = re.compile(PREFIX + r"\s+([A-Za-z0-9][A-Za-z0-9_.:@/+-]*)")
FAILURE_RE = re.compile(r"(^|\.)failed(\.|$)")


@dataclass(frozen=True)
class Marker:
    name: str      # full marker text, e.g. "pre-install.phone-home.complete.node01"
    offset: int    # byte offset of the line in the log it came from
    line: str      # the raw line, for context

    @property
    def failed(self) -> bool:
        return is_failure(self.name)

    def matches(self, expected: str) -> bool:
        """`expected` names a marker or a prefix of one at a dot boundary ("reboot" ~ "reboot.node01")."""
        return self.name == expected or self.name.startswith(expected + ".")


def is_failure(name: str) -> bool:
    return bool(FAILURE_RE.search(name))


def parse(data: bytes, base_offset: int = 0) -> tuple[list[Marker], int]:
    """Markers in the complete lines of `data`; returns them and how many bytes were consumed.

    An incomplete last line is left for the next call, so a marker split across two reads of a
    growing log is never missed nor seen twice.
    """
    markers: list[Marker] = []
    consumed = 0
    while True:
        end = data.find(b"\n", consumed)
        if end < 0:
            return markers, consumed
        line = data[consumed:end].decode("utf-8", "replace").replace("\r", "")
        for match in MARKER_RE.finditer(line):
            markers.append(Marker(match.group(1).rstrip("."), base_offset + consumed, line.strip()))
        consumed = end + 1


def parse_text(text: str) -> list[Marker]:
    markers, _ = parse((text if text.endswith("\n") else text + "\n").encode())
    return markers


@dataclass(frozen=True)
class SequenceCheck:
    expected: str
    seen: Marker | None
    in_order: bool

    @property
    def ok(self) -> bool:
        return self.seen is not None and self.in_order


def check_sequence(expected: Sequence[str], seen: Iterable[Marker]) -> list[SequenceCheck]:
    """Match each expected marker to the first later marker that matches it, in order."""
    seen_list = list(seen)
    results: list[SequenceCheck] = []
    position = 0
    for name in expected:
        index = next((i for i in range(position, len(seen_list)) if seen_list[i].matches(name)), None)
        if index is not None:
            results.append(SequenceCheck(name, seen_list[index], True))
            position = index + 1
            continue
        earlier = next((m for m in seen_list[:position] if m.matches(name)), None)
        results.append(SequenceCheck(name, earlier, False))
    return results
