"""Storage benchmarks (fresh-bench-storage): fio matrix, parsing, host reference, regressions.

`ucnb.storage.plots` is imported on its own: it pulls in matplotlib, which the parsing and the
regression checks do not need; `ucnb.storage.guest` runs the same jobs inside a guest.
"""

from __future__ import annotations

from .fio import (
    COLUMNS,
    FioError,
    FioJob,
    FioMatrix,
    HostBench,
    fill_argv,
    fio_argv,
    fio_version,
    parse,
    ratios,
    run_host,
    summarise,
)
from .regression import (
    BaselineStore,
    Fingerprint,
    Tolerances,
    Verdict,
    compare,
    load_baseline,
    update_baseline,
    verdict,
)

__all__ = [
    "COLUMNS",
    "BaselineStore",
    "Fingerprint",
    "FioError",
    "FioJob",
    "FioMatrix",
    "HostBench",
    "Tolerances",
    "Verdict",
    "compare",
    "fill_argv",
    "fio_argv",
    "fio_version",
    "load_baseline",
    "parse",
    "ratios",
    "run_host",
    "summarise",
    "update_baseline",
    "verdict",
]
