"""Comparing a logical backup with its source: ordered digests, and the differences behind them.

A digest says equal or not; when not, the comparison names what differs (missing, extra or
changed keys), so a restore that lost one key fails naming that key. The same digest serves KV
keys and SQL rows: records are JSON-encoded (no raw newline can split one), sorted, one a line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


def ordered_digest(records: Iterable[str]) -> str:
    """sha256 over the records in sorted order, each followed by a newline (order-independent
    input, one answer); a record must hold no newline of its own."""
    digest = hashlib.sha256()
    for record in sorted(records):
        if "\n" in record:
            raise ValueError(f"a digest record holds a newline (JSON-encode it): {record[:60]!r}")
        digest.update(record.encode() + b"\n")
    return digest.hexdigest()


def kv_records(data: Mapping[str, str]) -> list[str]:
    """One `["key", "value"]` JSON record per key: sorted, these are sha256'd as key=value lines."""
    return [json.dumps([key, value], ensure_ascii=False) for key, value in data.items()]


def kv_digest(data: Mapping[str, str]) -> str:
    """The ordered digest of keys and values."""
    return ordered_digest(kv_records(data))


@dataclass(frozen=True)
class Difference:
    """What a restored copy lacks, has in excess, or holds with another value."""

    missing: tuple[str, ...]
    extra: tuple[str, ...]
    changed: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.changed)

    def describe(self, limit: int = 10) -> str:
        """`missing 1: k; changed 2: a, b` (the first `limit` of each), or `none`."""
        parts = [f"{label} {len(keys)}: {', '.join(keys[:limit])}{' …' if len(keys) > limit else ''}"
                 for label, keys in (("missing", self.missing), ("extra", self.extra),
                                     ("changed", self.changed)) if keys]
        return "; ".join(parts) or "none"


def compare(source: Mapping[str, str], restored: Mapping[str, str]) -> Difference:
    """The keys `restored` lacks, has that `source` does not, and holds with another value."""
    return Difference(
        missing=tuple(sorted(k for k in source if k not in restored)),
        extra=tuple(sorted(k for k in restored if k not in source)),
        changed=tuple(sorted(k for k in source if k in restored and restored[k] != source[k])))
