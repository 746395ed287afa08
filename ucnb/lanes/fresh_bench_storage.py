"""fresh-bench-storage: fio on the guests' virtio disks, the host's physical reference side by side,
and regression tracking against the previous run of the same fingerprint. A benchmark, not a gate:
regressions are reported, and fail the lane only with `fail_on_regression`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from pydantic import Field, ValidationError, model_validator

from ucnb import files, paths
from ucnb.errors import LaneFailure
from ucnb.kernel.steps import boots, lab_step
from ucnb.lanes import Lane, LaneParameters
from ucnb.storage import fio
from ucnb.storage.fio import (
    FioMatrix,
    Jobs,
    RampS,
    Repetitions,
    RuntimeS,
    Size,
    SsDurS,
    SsRampS,
    SteadyState,
    default_jobs,
)
from ucnb.storage.regression import Fingerprint, Tolerances, Verdict

if TYPE_CHECKING:
    from ucnb.image.tools import ToolsDisk
    from ucnb.kernel.run import Run
    from ucnb.lab.lab import Lab
    from ucnb.storage.guest import GuestBench

FIO = "/usr/bin/fio"                 # Debian's fio: the host's reference and, on the tools disk, the guests'
BENCH_SERIAL = "ucnb-bench"          # the blank benchmark disk: /dev/disk/by-id/virtio-ucnb-bench
DISK_BUS = "virtio-blk"
CELL_TIMEOUT_S = 7200
# Seconds fio needs beyond ramp + runtime per job (start-up under TCG, JSON, the copy back).
JOB_OVERHEAD_S = 2.0
STORAGE_SERVICES_REASON = ("the lab runs no stand-in for the product's storage services (CoronaFS, "
                           "LightningStor): only the guests' virtio disks are measured")
CacheMode = Literal["none", "writethrough", "writeback", "directsync", "unsafe"]
Metric = Literal["iops", "bw_MiBps", "lat_p50_us", "lat_p99_us", "lat_p99_9_us"]
COUNTED_METRICS: tuple[Metric, ...] = ("iops", "bw_MiBps", "lat_p50_us", "lat_p99_us")


class Parameters(LaneParameters):
    nodes: int = Field(1, ge=1, le=4)
    memory_mib: int = Field(256, ge=128, le=8192)
    vcpus: int = Field(1, ge=1, le=4)
    disk_format: Literal["raw", "qcow2"] = "raw"
    cache_mode: CacheMode = "none"
    # The FioMatrix fields; runtime, ramp, size and repetitions keep the default lane to ~8 min on TCG.
    jobs: Jobs = Field(default_factory=default_jobs)
    runtime_s: RuntimeS = 5
    ramp_s: RampS = 1
    size: Size = "512M"
    repetitions: Repetitions = 3
    steady_state: bool = False
    ss: SteadyState = "iops_slope:5%"
    ss_dur_s: SsDurS = 5
    ss_ramp_s: SsRampS = 0
    host_reference: bool = True
    baseline_file: str = Field("bench/baseline.json", pattern=r"^[^\x00-\x1f]+$")
    tolerances: Tolerances = Field(default_factory=Tolerances)
    # Metrics whose regression counts; the others are reported as informational. p99.9 from runs of
    # a few seconds rests on a handful of samples.
    counted_metrics: list[Metric] = Field(default_factory=lambda: list(COUNTED_METRICS), min_length=1)
    fail_on_regression: bool = False
    update_baseline: bool = True
    throttle_iops: int = Field(0, ge=0, le=10_000_000)
    boot_timeout_s: float = Field(120.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _matrix_fits(self) -> Parameters:
        try:
            self.matrix()
        except ValidationError as exc:
            problems = (str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
            raise ValueError("; ".join(problems)) from None
        if self.estimated_matrix_s() > CELL_TIMEOUT_S:
            raise ValueError(f"the matrix would take ~{self.estimated_matrix_s() / 60:.0f} min, beyond the "
                             f"{CELL_TIMEOUT_S // 60} min a notebook cell may run: fewer jobs, repetitions "
                             "or a shorter runtime_s")
        return self

    def matrix(self) -> FioMatrix:
        return FioMatrix.from_fields(self)

    def estimated_matrix_s(self) -> float:
        """Seconds the matrix takes: every job, repetition and guest, then the host's run of it."""
        sides = self.nodes + (1 if self.host_reference else 0)
        return self.repetitions * len(self.jobs) * sides * (self.runtime_s + self.ramp_s + JOB_OVERHEAD_S)

    def baseline_path(self) -> Path:
        """`baseline_file`, relative to the work root unless absolute."""
        path = Path(self.baseline_file).expanduser()
        return path if path.is_absolute() else paths.work_root() / path


LANE = Lane(name="fresh-bench-storage", title="Storage benchmark (fio, guest vs host)", parameters=Parameters,
            cell_timeout_s=CELL_TIMEOUT_S)


@dataclass
class Bench:
    """The lane's subject: the guests with their fio, the host's reference, and what was measured."""

    lab: Lab
    tools: ToolsDisk
    matrix: FioMatrix
    guests: list[GuestBench]
    host: fio.HostBench | None
    results_dir: Path                 # the proof root's fio/: every raw JSON
    results: pd.DataFrame = field(default_factory=lambda: fio.concat([]))
    fingerprint: Fingerprint | None = None
    verdict: Verdict | None = None

    def side(self, side: str) -> pd.DataFrame:
        return self.results[self.results["side"] == side]


def _node_names(count: int) -> list[str]:
    return [f"bench{i:02d}" for i in range(1, count + 1)]


def _show_markdown(text: str) -> None:
    from IPython.display import Markdown, display

    display(Markdown(text))


@boots
def boot(run: Run) -> Bench:
    """Boot the guests with a blank benchmark disk each and the read-only tools disk (fio)."""
    from ucnb.image.tools import SERIAL, build_tools_disk, mount_command
    from ucnb.lab.lab import DiskConfig, NodeConfig
    from ucnb.storage.guest import GuestBench

    params = run.parameters(Parameters)
    matrix = params.matrix()
    with run.step("build tools disk") as row:
        tools = build_tools_disk([FIO], log=lambda m: print(m, flush=True))
        row.detail = f"{tools.key}: {tools.packages}"
    bench_disk = DiskConfig(BENCH_SERIAL, size=matrix.size, format=params.disk_format,
                            cache=params.cache_mode, total_iops_sec=params.throttle_iops)
    tools_disk = DiskConfig(SERIAL, image=tools.image)
    lab = run.lab([NodeConfig(name, memory_mib=params.memory_mib, vcpus=params.vcpus,
                              disks=(bench_disk, tools_disk)) for name in _node_names(params.nodes)])
    lab.boot(timeout=params.boot_timeout_s)
    results_dir = run.proof_root / "fio"
    guests = []
    for node in lab.nodes.values():
        with run.step("mount tools disk", node.name) as row:
            node.run(mount_command(), timeout=30, check=True)
            guest = GuestBench(node, matrix, tools.command("fio"), f"/dev/disk/by-id/virtio-{BENCH_SERIAL}",
                               results_dir)
            row.detail = guest.version()
        guests.append(guest)
    host = None
    if params.host_reference:
        # The lab's folder holds the guests' disk files: the host's backing file sits beside them.
        host = fio.HostBench(matrix, lab.directory / "host-fio", FIO, results=results_dir)
        run.on_teardown(host.close)
    return Bench(lab, tools, matrix, guests, host, results_dir)


def _filesystem(path: Path) -> str:
    out = subprocess.run(["df", "--output=fstype,source,target", str(path)], capture_output=True, text=True,
                         timeout=10)
    lines = out.stdout.split("\n")[1:2] if out.returncode == 0 else []
    fstype, source, target = [*(lines[0].split() if lines else []), "?", "?", "?"][:3]
    return f"{fstype} ({source} on {target})"


@lab_step("benchmark setup")
def setup(run: Run, bench: Bench) -> pd.DataFrame:
    """What is measured: each guest's benchmark disk and fio, and the host's reference file."""
    from ucnb.evidence.proof import write_environment

    params = run.parameters(Parameters)
    disks_dir = bench.lab.directory
    throttle = f"{params.throttle_iops} IOPS (iotune total_iops_sec)" if params.throttle_iops else "none"
    write_environment(run.proof_root, {
        "bench_disk_format": params.disk_format, "bench_cache_mode": params.cache_mode,
        "bench_disk_bus": DISK_BUS, "bench_throttle_iops": str(params.throttle_iops),
        "bench_tools_disk": f"{bench.tools.key} {bench.tools.packages}",
        "bench_backing_filesystem": _filesystem(disks_dir)})
    rows = [{"side": "guest", "where": g.node.name, "target": f"{g.device} ({DISK_BUS}, {params.disk_format} "
             f"file, cache={params.cache_mode})", "size": bench.matrix.size, "throttle": throttle,
             "fio": f"{g.fio} ({bench.tools.packages.get('fio', '?')}, tools disk {bench.tools.key})",
             "filesystem of the backing file": _filesystem(disks_dir)} for g in bench.guests]
    if bench.host is not None:
        rows.append({"side": "host", "where": "this host", "target": f"{bench.host.data_file} (raw file)",
                     "size": bench.matrix.size, "throttle": "none", "fio": f"{FIO} ({fio.fio_version(FIO)})",
                     "filesystem of the backing file": _filesystem(bench.host.folder)})
    else:
        run.skip("host reference", "host_reference=false: no physical reference, no guest/host ratios")
    return pd.DataFrame(rows)


@lab_step("storage services")
def storage_services(run: Run) -> pd.DataFrame:
    """fio against the product's storage services: none on the lab (skipped with the reason)."""
    return run.skip("fio against the storage services", STORAGE_SERVICES_REASON)


@lab_step("fill the benchmark disks")
def fill(run: Run, bench: Bench) -> pd.DataFrame:
    """Write each benchmark region once: reading never-written (sparse, qcow2) blocks measures nothing."""
    rows = []
    targets: list[tuple[str, str, fio.HostBench | GuestBench]] = [("guest", g.node.name, g)
                                                                   for g in bench.guests]
    if bench.host is not None:
        targets.append(("host", "host", bench.host))
    for side, where, target in targets:
        label = f"fill {bench.matrix.size}" + (" (host)" if side == "host" else "")
        with run.step(label, "" if side == "host" else where) as row:
            data = target.fill()
            write = data["jobs"][0]["write"]
            mib_s = write["bw_bytes"] / 2**20
            row.detail = f"{mib_s:,.0f} MiB/s"
        rows.append({"side": side, "where": where, "size": bench.matrix.size,
                     "seconds": round(write["runtime"] / 1000, 2), "MiB/s": round(mib_s, 1)})
    return pd.DataFrame(rows)


@lab_step("fio matrix")
def measure(run: Run, bench: Bench) -> pd.DataFrame:
    """The matrix, repetitions outermost: each repetition runs every job on every guest, then on the
    host, so a drift of this (shared, virtual) host spreads over every point and both sides."""
    params = run.parameters(Parameters)
    print(f"fio matrix: {len(bench.matrix.jobs)} jobs x {bench.matrix.repetitions} repetitions on "
          f"{len(bench.guests)} guest(s){' and the host' if bench.host else ''}, "
          f"~{params.estimated_matrix_s() / 60:.1f} min", flush=True)
    frames = []
    try:
        for rep in range(bench.matrix.repetitions):
            sides: list[tuple[str, fio.HostBench | GuestBench]] = [(g.node.name, g) for g in bench.guests]
            if bench.host is not None:
                sides.append(("host", bench.host))
            for where, target in sides:
                label = f"fio repetition {rep + 1}/{bench.matrix.repetitions}" + (" (host)" if where == "host"
                                                                                  else "")
                with run.step(label, "" if where == "host" else where) as row:
                    for job in bench.matrix.jobs:
                        frame = target.job(job, rep)
                        frame.insert(1, "node", where)
                        frames.append(frame)
                        print(f"  {where} rep {rep + 1}: {job.name}: {fio.iops_summary(frame)}", flush=True)
                    row.detail = f"{len(bench.matrix.jobs)} jobs"
    finally:
        if bench.host is not None:
            bench.host.close()
    bench.results = fio.concat(frames)
    files.atomic_write_text(run.proof_root / "fio.csv", bench.results.to_csv(index=False))
    return bench.results


def _attained(values: pd.Series) -> str:
    """'2/3' repetitions attained fio's steady state, or 'not asked' (steady_state=false)."""
    asked = [bool(v) for v in values if v is not None]
    return f"{sum(asked)}/{len(asked)}" if asked else "not asked"


@lab_step("repetitions and steady state")
def summary(run: Run, bench: Bench) -> pd.DataFrame:
    """Per point and side: medians, the repetitions' spread ((max - min) / median) and steady state."""
    long, keys = fio.summarise(bench.results), list(fio.KEYS)
    medians = long.pivot_table(index=keys, columns="metric", values="median").add_suffix(" median")
    spreads = long.pivot_table(index=keys, columns="metric", values="spread_pct").add_suffix(" spread %")
    wide = medians.join(spreads)
    order = [f"{m} {s}" for m in fio.METRICS for s in ("median", "spread %") if f"{m} {s}" in wide.columns]
    table = wide[order].round(1).reset_index()
    ss = (bench.results.groupby(list(fio.KEYS))["ss_attained"].agg(_attained)
          .rename("steady state attained").reset_index())
    table = table.merge(ss, on=keys)
    files.atomic_write_text(run.proof_root / "fio-summary.csv", table.to_csv(index=False))
    return table


def _small_blocks(df: pd.DataFrame) -> list[str]:
    """Block sizes below 128k: their IOPS share a scale (1M IOPS are a flat line beside 4k's)."""
    sizes = sorted({str(bs) for bs in df["bs"]}, key=fio.size_bytes)
    small = [bs for bs in sizes if fio.size_bytes(bs) < 128 * 2**10]
    return small or sizes


@lab_step("IOPS plot")
def iops_plot(run: Run, bench: Bench) -> None:
    """IOPS against iodepth, guest (solid) and host (dashed), repetitions' min-max as band and bars."""
    from ucnb.storage import plots

    fig = plots.iops(bench.results, title=f"{run.lane.name}: IOPS", bs=_small_blocks(bench.results))
    run.show_figure(fig, "fio-iops.png")


@lab_step("bandwidth plot")
def bandwidth_plot(run: Run, bench: Bench) -> None:
    """Bandwidth against iodepth, every block size, guest and host."""
    from ucnb.storage import plots

    run.show_figure(plots.bandwidth(bench.results, title=f"{run.lane.name}: bandwidth"), "fio-bandwidth.png")


@lab_step("latency plot")
def latency_plot(run: Run, bench: Bench) -> None:
    """Latency percentiles p50, p99, p99.9 against iodepth (log scale), guest and host."""
    from ucnb.storage import plots

    run.show_figure(plots.latency(bench.results, title=f"{run.lane.name}: latency"), "fio-latency.png")


def _point(row: dict[Hashable, Any]) -> str:
    """A point's name as fio's job names go (randread-4k-qd16), with the direction when mixed."""
    rw = row["rw"]
    return f"{rw}-{row['bs']}-qd{int(row['iodepth'])}" + (f"-{row['op']}" if rw in ("rw", "randrw") else "")


@lab_step("guest/host ratios")
def ratios(run: Run, bench: Bench) -> pd.DataFrame:
    """Guest/host ratios of the medians per point: IOPS and bandwidth (below 1: the guest is slower),
    p99 latency (above 1: the guest waits longer). Headline figures: every point's guest IOPS and
    IOPS ratio, and the median ratios over all points."""
    if bench.host is None:
        return run.skip("guest/host ratios", "host_reference=false: no physical reference")
    table = fio.ratios(bench.side("guest"), bench.side("host"))
    for row in table.dropna(subset=["iops_ratio"]).to_dict("records"):
        point = _point(row)
        run.recorder.figure(f"guest IOPS {point}", round(float(row["guest_iops"]), 1), "IOPS")
        run.recorder.figure(f"host IOPS {point}", round(float(row["host_iops"]), 1), "IOPS")
        run.recorder.figure(f"guest/host IOPS {point}", round(float(row["iops_ratio"]), 3), "ratio")
    for column, name in (("iops_ratio", "IOPS"), ("bw_ratio", "bandwidth"), ("lat_p99_ratio", "p99 latency")):
        median = round(float(table[column].median()), 3)
        run.recorder.figure(f"guest/host {name} (median over points)", median, "ratio")
    files.atomic_write_text(run.proof_root / "fio-ratios.csv", table.to_csv(index=False))
    return table.round(3)


def _qemu_version(run: Run) -> str:
    from ucnb.evidence.proof import read_environment

    return read_environment(run.proof_root).get("qemu", "").removeprefix("QEMU emulator version ").strip()


@lab_step("fingerprint")
def fingerprint(run: Run, bench: Bench) -> pd.DataFrame:
    """What these figures depend on besides the code: only a run of the same fingerprint compares."""
    params = run.parameters(Parameters)
    versions = sorted(set(bench.side("guest")["fio_version"]))
    if len(versions) != 1:
        raise LaneFailure(f"the guests ran different fio versions {versions}: no single fingerprint")
    bench.fingerprint = Fingerprint(
        accelerator=bench.lab.accelerator.mode, qemu_version=_qemu_version(run) or "unknown",
        disk_bus=DISK_BUS, cache_mode=params.cache_mode, disk_format=params.disk_format,
        fio_version=versions[0], guest_memory_mib=params.memory_mib, guest_vcpus=params.vcpus)
    files.atomic_write_text(run.proof_root / "fingerprint.json",
                            bench.fingerprint.model_dump_json(indent=2) + "\n")
    return pd.DataFrame([{"field": k, "value": v} for k, v in bench.fingerprint.model_dump().items()])


def regression_check(result: Verdict, fail_on_regression: bool) -> dict[str, Any]:
    """The check row of a comparison: failing only for a regression with `fail_on_regression`;
    otherwise informational, its name saying so (a benchmark is not a gate)."""
    informational = "" if fail_on_regression else " (informational: fail_on_regression=false)"
    return {"name": f"no regression against the baseline of this fingerprint{informational}",
            "expected": "0 regressed metrics", "observed": f"{len(result.regressions)}: {result.reason}",
            "ok": not (result.regressed and fail_on_regression)}


@lab_step("comparison with the baseline")
def compare(run: Run, bench: Bench) -> pd.DataFrame:
    """The guests' figures against the previous run of the same fingerprint, per metric; the table
    lists regressions first."""
    from ucnb.storage.regression import compare as compare_runs
    from ucnb.storage.regression import load_baseline, verdict

    params = run.parameters(Parameters)
    assert bench.fingerprint is not None, "the fingerprint step runs before the comparison"
    store = load_baseline(params.baseline_path())
    entry = store.get(bench.fingerprint)
    table = compare_runs(bench.side("guest"), store, bench.fingerprint, params.tolerances)
    informational = tuple(m for m in fio.METRICS if m not in params.counted_metrics)
    result = bench.verdict = verdict(table, informational)
    files.atomic_write_text(run.proof_root / "fio-comparison.csv", table.to_csv(index=False))
    against = f"run {entry.run_id} of {entry.recorded_at}" if entry is not None else "no comparable baseline"
    run.recorder.figure("baseline", against)
    run.recorder.figure("regressions", len(result.regressions), "metrics")
    run.recorder.figure("regressed metrics", "; ".join(result.regressions) or "none")
    run.recorder.figure("improvements", result.improvements, "metrics")
    run.recorder.check(**regression_check(result, params.fail_on_regression))
    if result.status == "no-baseline":
        _show_markdown(f"**No comparable baseline** in `{params.baseline_path()}`: {result.reason}. Runs are "
                       "never compared across fingerprints (a TCG figure says nothing about a KVM one).")
    else:
        _show_markdown(f"**{result.status}** against {against}: {result.reason}."
                       + "".join(f"\n- regression: {r}" for r in result.regressions)
                       + "".join(f"\n- informational: {r}" for r in result.informational))
    order = {"regression": 0, "improvement": 1, "ok": 2, "no-baseline": 3}
    return table.sort_values("status", key=lambda s: s.map(order), kind="stable").round(2)


@lab_step("baseline update")
def update_baseline(run: Run, bench: Bench) -> pd.DataFrame:
    """This run becomes its fingerprint's baseline only when it did not regress, was not throttled
    and `update_baseline` is on; otherwise the previous baseline stays."""
    from ucnb.storage.regression import update_baseline as record

    params = run.parameters(Parameters)
    assert bench.fingerprint is not None and bench.verdict is not None, "the comparison runs first"
    path = params.baseline_path()
    if not params.update_baseline:
        action, reason = "kept", "update_baseline=false"
    elif params.throttle_iops:
        action, reason = "kept", (f"a throttled run (throttle_iops={params.throttle_iops}) is a test, "
                                  "never a baseline")
    elif bench.verdict.regressed:
        action, reason = "kept", "this run regressed: the baseline stays the last run that did not"
    else:
        record(path, bench.side("guest"), bench.fingerprint, run_id=run.run_id)
        action, reason = "updated", f"{bench.verdict.status}: this run is now its fingerprint's baseline"
    run.recorder.figure("baseline updated", action == "updated")
    return pd.DataFrame([{"baseline file": str(path), "fingerprint": bench.fingerprint.key(),
                          "action": action, "why": reason}])
