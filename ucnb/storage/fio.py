"""fio for fresh-bench-storage: the job matrix as data, argv lists, json+ parsing into one tidy table,
and the host's physical reference.

Values of the matrix end up on a command line (on the host, or through SSH in a guest), so every
one is validated by pattern or range before any argv is built; argv is always a list, never a
shell string (`shlex.join(argv)` when it must travel through SSH).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import InfrastructureError, LaneFailure, ParameterError

Rw = Literal["read", "write", "randread", "randwrite", "rw", "randrw"]
Side = Literal["guest", "host"]

BS_PATTERN = r"^[1-9][0-9]{0,8}[kKmM]?$"
SIZE_PATTERN = r"^[1-9][0-9]{0,11}[kKmMgG]?$"
# fio's steady-state criterion: iops|bw, optionally _slope, then a limit (absolute, or % of the mean).
SS_PATTERN = r"^(iops|bw)(_slope)?:[0-9]{1,6}(\.[0-9]{1,6})?%?$"
PERCENTILE_LIST = "50:90:99:99.9"

KEYS = ("side", "rw", "op", "bs", "iodepth")   # one benchmark point; repetitions share it
COLUMNS = [*KEYS, "rep", "iops", "bw_MiBps", "lat_p50_us", "lat_p99_us", "lat_p99_9_us", "runtime_s",
           "ss_attained", "fio_version", "job"]
METRICS = ("iops", "bw_MiBps", "lat_p50_us", "lat_p99_us", "lat_p99_9_us")
# Which of fio's read/write blocks a workload fills; mixed workloads give one row per direction.
OPS: dict[str, tuple[str, ...]] = {"read": ("read",), "randread": ("read",), "write": ("write",),
                                   "randwrite": ("write",), "rw": ("read", "write"),
                                   "readwrite": ("read", "write"), "randrw": ("read", "write")}
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}


class FioError(LaneFailure):
    """fio failed, or its output cannot be read: names the job and fio's error where known."""

    def __init__(self, message: str, job: str | None = None, error: int | None = None) -> None:
        super().__init__(message)
        self.job, self.error = job, error


def size_bytes(text: str) -> int:
    """fio's size notation (`4k`, `1M`, `2G`, plain bytes; base 1024, fio's default)."""
    m = re.fullmatch(r"([0-9]+)([kKmMgG]?)", text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a size such as 4k, 1M or 2G")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def canonical_size(n: int) -> str:
    """One spelling per size (`1024k` and `1m` are `1M`), so tables and baselines key the same."""
    for suffix, unit in (("G", 2**30), ("M", 2**20), ("k", 2**10)):
        if n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


class FioJob(BaseModel):
    """One point of the matrix: a workload, a block size and a queue depth."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rw: Rw
    bs: str = Field(pattern=BS_PATTERN)
    iodepth: int = Field(ge=1, le=256, strict=True)
    rwmixread: int = Field(default=50, ge=0, le=100, strict=True)   # only used by rw/randrw

    @field_validator("bs")
    @classmethod
    def _bs(cls, value: str) -> str:
        n = size_bytes(value)
        # direct=1 needs sector-aligned transfers; anything larger than 64M is a typo.
        if n % 512 or n > 64 * 2**20:
            raise ValueError("must be a multiple of 512 bytes, at most 64M (direct I/O)")
        return canonical_size(n)

    @property
    def mixed(self) -> bool:
        return self.rw in ("rw", "randrw")

    @property
    def name(self) -> str:
        mix = f"-mix{self.rwmixread}" if self.mixed else ""
        return f"{self.rw}-{self.bs}-qd{self.iodepth}{mix}"


def default_jobs() -> tuple[FioJob, ...]:
    """4k random read and write at QD 1, 4, 16, 32, then 1M sequential read and write at QD 16."""
    rand = tuple(FioJob(rw=rw, bs="4k", iodepth=qd)
                 for rw in ("randread", "randwrite") for qd in (1, 4, 16, 32))
    return (*rand, FioJob(rw="read", bs="1M", iodepth=16), FioJob(rw="write", bs="1M", iodepth=16))


# The matrix's field types, so that a lane's parameters can declare the same fields with its own
# defaults and exactly these bounds (FioMatrix.from_fields builds the matrix from them).
Jobs = Annotated[tuple[FioJob, ...], Field(min_length=1)]
RuntimeS = Annotated[int, Field(ge=1, le=3600, strict=True)]
RampS = Annotated[int, Field(ge=0, le=600, strict=True)]
Size = Annotated[str, Field(pattern=SIZE_PATTERN)]
Repetitions = Annotated[int, Field(ge=1, le=20, strict=True)]
SteadyState = Annotated[str, Field(pattern=SS_PATTERN)]
SsDurS = Annotated[int, Field(ge=1, le=3600, strict=True)]
SsRampS = Annotated[int, Field(ge=0, le=3600, strict=True)]


class FioMatrix(BaseModel):
    """The whole benchmark: usable as a lane parameter (lists of jobs come from YAML as dicts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    jobs: Jobs = Field(default_factory=default_jobs)
    runtime_s: RuntimeS = 10
    ramp_s: RampS = 2
    size: Size = "1G"
    repetitions: Repetitions = 3
    steady_state: bool = False
    ss: SteadyState = "iops_slope:5%"
    ss_dur_s: SsDurS = 5
    ss_ramp_s: SsRampS = 0

    @classmethod
    def from_fields(cls, source: BaseModel) -> FioMatrix:
        """The matrix from another model holding the same fields (a lane's parameters)."""
        return cls.model_validate({name: getattr(source, name) for name in cls.model_fields})

    @model_validator(mode="after")
    def _consistent(self) -> FioMatrix:
        largest = max(size_bytes(j.bs) for j in self.jobs)
        if size_bytes(self.size) < max(largest, 2**20):
            raise ValueError(f"size {self.size} is smaller than 1M or than the largest block size")
        if self.steady_state and self.ss_ramp_s + self.ss_dur_s > self.runtime_s:
            # fio would simply report "not attained": a matrix that cannot attain is a mistake.
            raise ValueError(f"ss_ramp_s + ss_dur_s ({self.ss_ramp_s} + {self.ss_dur_s}) exceed "
                             f"runtime_s ({self.runtime_s}): steady state could never be attained")
        if len({j.name for j in self.jobs}) != len(self.jobs):
            raise ValueError("jobs repeat: every (rw, bs, iodepth) once (repetitions repeat them)")
        return self


def _path_arg(value: str | os.PathLike[str], what: str) -> str:
    text = os.fspath(value)
    if not text or any(ord(c) < 32 for c in text):
        raise ParameterError(f"fio {what} {text!r} must be non-empty, without control characters")
    # fio splits --filename on ':' (several files) unless escaped; /dev/disk/by-path names have colons.
    return text.replace(":", "\\:") if what == "filename" else text


def fio_argv(job: FioJob, matrix: FioMatrix, filename: str | os.PathLike[str],
             output: str | os.PathLike[str], fio: str = "fio") -> list[str]:
    """The argv of one job: JSON+ to `output` (fio may print warnings on stdout, never in the file)."""
    argv = [fio, f"--name={job.name}", f"--filename={_path_arg(filename, 'filename')}",
            f"--rw={job.rw}", f"--bs={job.bs}", f"--iodepth={job.iodepth}", "--ioengine=libaio",
            "--direct=1", "--time_based", f"--runtime={matrix.runtime_s}", f"--ramp_time={matrix.ramp_s}",
            f"--size={matrix.size}", "--lat_percentiles=1", f"--percentile_list={PERCENTILE_LIST}",
            "--output-format=json+", f"--output={_path_arg(output, 'output')}"]
    if job.mixed:
        argv.append(f"--rwmixread={job.rwmixread}")
    if matrix.steady_state:
        argv += [f"--ss={matrix.ss}", f"--ss_dur={matrix.ss_dur_s}", f"--ss_ramp={matrix.ss_ramp_s}"]
    return argv


def fill_argv(matrix: FioMatrix, filename: str | os.PathLike[str], output: str | os.PathLike[str],
              fio: str = "fio") -> list[str]:
    """Write the whole benchmark region once, before any job: reading unallocated (qcow2, sparse)
    regions returns zeros without touching the disk and measures nothing."""
    return [fio, "--name=fill", f"--filename={_path_arg(filename, 'filename')}", "--rw=write", "--bs=1M",
            "--iodepth=16", "--ioengine=libaio", "--direct=1", f"--size={matrix.size}", "--end_fsync=1",
            "--output-format=json", f"--output={_path_arg(output, 'output')}"]


# -- parsing ------------------------------------------------------------------------------------

def load(source: str | bytes | Path | Mapping[str, Any]) -> dict[str, Any]:
    """fio's JSON document from a dict, a file, or captured text that may begin with warning lines."""
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, Path):
        source = source.read_bytes()
    text = source.decode(errors="replace") if isinstance(source, bytes) else source
    decoder = json.JSONDecoder()
    for m in re.finditer(r"^\{", text, re.MULTILINE):   # fio starts its document at column 0
        try:
            data, _ = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and isinstance(data.get("jobs"), list):
            return data
    first = text.strip().splitlines()[:1]
    raise FioError(f"no fio JSON document in the output (it begins {first[0][:200]!r})" if first
                   else "fio output is empty")


def check(data: Mapping[str, Any], detail: str = "") -> None:
    """Raise for the first job fio reports as failed (`error` is an errno value)."""
    if not data.get("jobs"):
        raise FioError("fio output holds no jobs")
    for job in data["jobs"]:
        code = int(job.get("error", 0) or 0)
        if code:
            name = job.get("jobname", "?")
            said = f"; fio said: {detail}" if detail else ""
            raise FioError(f"fio job {name!r} failed with error {code} ({os.strerror(code)}){said}",
                           job=name, error=code)


def _percentiles_us(block: Mapping[str, Any]) -> dict[float, float]:
    """Total latency (lat_ns, with lat_percentiles=1) when present, else completion latency."""
    for key in ("lat_ns", "clat_ns"):
        pct = block.get(key, {}).get("percentile")
        if pct:
            return {round(float(k), 6): v / 1000 for k, v in pct.items()}
    return {}


def _rows(data: Mapping[str, Any], rep: int, side: Side) -> Iterator[dict[str, Any]]:
    common = data.get("global options", {})
    for job in data["jobs"]:
        opts = {**common, **job.get("job options", {})}
        name = job.get("jobname", "?")
        rw = str(opts.get("rw", opts.get("readwrite", "read"))).split(":")[0]
        if rw not in OPS:
            raise FioError(f"fio job {name!r}: rw={rw} is not a read/write workload", job=name)
        bs = str(opts.get("bs", opts.get("blocksize", "4k")))
        with contextlib.suppress(ValueError):   # e.g. "4k,64k" (read,write): kept as fio spelled it
            bs = canonical_size(size_bytes(bs))
        ops = OPS[rw]
        for op in ops:
            block = job[op]
            if len(ops) > 1 and not block.get("total_ios"):
                continue   # rwmixread=0 or 100: the other direction did nothing
            pct = _percentiles_us(block)
            ss = job.get("steadystate")
            yield {"side": side, "rw": "rw" if rw == "readwrite" else rw, "op": op, "bs": bs,
                   "iodepth": int(opts.get("iodepth", 1)), "rep": rep, "iops": float(block["iops"]),
                   "bw_MiBps": block["bw_bytes"] / 2**20, "lat_p50_us": pct.get(50.0, float("nan")),
                   "lat_p99_us": pct.get(99.0, float("nan")), "lat_p99_9_us": pct.get(99.9, float("nan")),
                   "runtime_s": block["runtime"] / 1000,
                   "ss_attained": None if ss is None else bool(ss.get("attained")),
                   "fio_version": data.get("fio version", ""), "job": name}


def parse(source: str | bytes | Path | Mapping[str, Any], rep: int = 0, side: Side = "guest") -> pd.DataFrame:
    """fio JSON/JSON+ output as tidy rows (COLUMNS): one per job and direction.

    A job with a non-zero `error` raises FioError naming it. `ss_attained` holds True/False, or
    None when the job ran without `ss=`.
    """
    data = load(source)
    check(data)
    df = pd.DataFrame(list(_rows(data, rep, side)), columns=COLUMNS)
    df["ss_attained"] = pd.Series(list(df["ss_attained"]), index=df.index, dtype=object)
    return df


def concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Tables of several jobs, repetitions or sides as one (keeps ss_attained's None)."""
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    df = pd.concat(frames, ignore_index=True)
    df["ss_attained"] = pd.Series([v if v is None else bool(v) for v in df["ss_attained"]],
                                  index=df.index, dtype=object)
    return df


def summarise(df: pd.DataFrame, metrics: tuple[str, ...] = METRICS) -> pd.DataFrame:
    """Per benchmark point and metric: n, median, min, max and spread_pct = (max - min) / median."""
    long = df.melt(id_vars=list(KEYS), value_vars=list(metrics), var_name="metric", value_name="value")
    long = long.dropna(subset=["value"])
    out = (long.groupby([*KEYS, "metric"], dropna=False)["value"]
           .agg(n="count", median="median", min="min", max="max").reset_index())
    median = out["median"].where(out["median"] > 0)
    out["spread_pct"] = (out["max"] - out["min"]) / median * 100
    return out


def ratios(guest: pd.DataFrame, host: pd.DataFrame) -> pd.DataFrame:
    """Guest/host ratios of the median IOPS, bandwidth and p99 latency per (rw, op, bs, iodepth).

    A ratio of 0.1 on IOPS means the guest reaches a tenth of the host; on p99 latency, 10 means
    the guest waits ten times longer. Points measured on one side only keep NaN ratios.
    """
    keys = ["rw", "op", "bs", "iodepth"]
    cols = ["iops", "bw_MiBps", "lat_p99_us"]
    g = guest.groupby(keys)[cols].median().add_prefix("guest_")
    h = host.groupby(keys)[cols].median().add_prefix("host_")
    out = g.join(h, how="outer")
    for col, ratio in (("iops", "iops_ratio"), ("bw_MiBps", "bw_ratio"), ("lat_p99_us", "lat_p99_ratio")):
        out[ratio] = out[f"guest_{col}"] / out[f"host_{col}"].where(out[f"host_{col}"] > 0)
    return out.reset_index()


# -- the host's physical reference --------------------------------------------------------------

def fio_version(fio: str = "fio") -> str:
    """`fio --version` (e.g. fio-3.33), for the fingerprint."""
    exe = _which(fio)
    return subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10,
                          check=True).stdout.strip()


def _which(fio: str) -> str:
    exe = shutil.which(fio)
    if exe is None:
        raise InfrastructureError(f"fio ({fio}) is not installed on this host: apt-get install fio "
                                  "(scripts/setup.sh installs it)")
    return exe


def checked_output(output: str | bytes, returncode: int, stderr: str, what: str) -> dict[str, Any]:
    """fio's JSON from one run (`output`: the --output file's content), checked: an empty file,
    a failed job (errno named) or a non-zero exit raises FioError with fio's last stderr line."""
    tail = (stderr.strip().splitlines() or [""])[-1][-300:]
    if not output.strip():
        raise FioError(f"fio {what} exited {returncode} without output: {tail}", job=what)
    data = load(output)
    check(data, detail=tail)
    if returncode != 0:
        raise FioError(f"fio {what} exited {returncode}: {tail}", job=what)
    return data


def _run(argv: list[str], output: Path, timeout: float, what: str) -> dict[str, Any]:
    """Run fio once on this host; its JSON, checked (see checked_output)."""
    output.unlink(missing_ok=True)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise FioError(f"fio {what}: no result within {timeout:.0f} s", job=what) from None
    return checked_output(output.read_bytes() if output.exists() else b"", proc.returncode, proc.stderr, what)


def job_timeout(matrix: FioMatrix) -> float:
    """How long one job may take: its ramp and runtime, and a minute for fio to start and write."""
    return matrix.runtime_s + matrix.ramp_s + 60


def iops_summary(frame: pd.DataFrame) -> str:
    """One job's result in a progress line: `read 2,175 IOPS`."""
    return ", ".join(f"{r.op} {r.iops:,.0f} IOPS" for r in frame.itertuples())


class HostBench:
    """The host's fio against a backing file in `directory`: fill once, then any job, any order.

    The raw JSON of each run goes to `results` (default `directory`) as host-<job>-rep<N>.json;
    `close()` removes the backing file (a context manager does it too).
    """

    def __init__(self, matrix: FioMatrix, directory: str | os.PathLike[str], fio: str = "fio",
                 job_timeout_s: float | None = None, results: str | os.PathLike[str] | None = None) -> None:
        self.matrix, self.fio = matrix, _which(fio)
        self.folder = Path(directory)
        self.results = Path(results) if results is not None else self.folder
        for folder in (self.folder, self.results):
            folder.mkdir(parents=True, exist_ok=True)
        self.data_file = self.folder / "ucnb-fio-bench.dat"
        self.timeout = job_timeout_s or job_timeout(matrix)

    def fill(self, timeout_s: float = 900) -> dict[str, Any]:
        """Write the whole region once (see fill_argv); fio's JSON of it."""
        out = self.results / "host-fill.json"
        return _run(fill_argv(self.matrix, self.data_file, out, self.fio), out, timeout_s, "fill")

    def job(self, job: FioJob, rep: int) -> pd.DataFrame:
        """One job of the matrix as repetition `rep`: its tidy rows (side "host")."""
        out = self.results / f"host-{job.name}-rep{rep}.json"
        data = _run(fio_argv(job, self.matrix, self.data_file, out, self.fio), out, self.timeout, job.name)
        return parse(data, rep=rep, side="host")

    def close(self) -> None:
        self.data_file.unlink(missing_ok=True)

    def __enter__(self) -> HostBench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_host(matrix: FioMatrix, directory: str | os.PathLike[str],
             progress: Callable[[str], None] | None = None, fio: str = "fio",
             job_timeout_s: float | None = None, fill_timeout_s: float = 900) -> pd.DataFrame:
    """The matrix with the host's fio against a filled backing file in `directory` (side "host").

    Repetitions are the outer loop, so a drift of the host (it is often a VM itself, behind an
    outer cache) spreads over every job rather than biasing one. The backing file is removed at
    the end; the raw JSON stays (see HostBench).
    """
    say = progress or (lambda _msg: None)
    frames: list[pd.DataFrame] = []
    total = matrix.repetitions * len(matrix.jobs)
    with HostBench(matrix, directory, fio, job_timeout_s) as bench:
        say(f"host fio: filling {bench.data_file} ({matrix.size})")
        bench.fill(fill_timeout_s)
        for rep in range(matrix.repetitions):
            for i, job in enumerate(matrix.jobs):
                frame = bench.job(job, rep)
                frames.append(frame)
                say(f"host fio {rep * len(matrix.jobs) + i + 1}/{total}: {job.name} rep {rep}: "
                    f"{iops_summary(frame)}")
    return concat(frames)
