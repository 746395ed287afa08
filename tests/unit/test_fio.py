"""ucnb.storage: fio matrix and argv, parsing of real fio 3.33 outputs, host reference, regressions, plots."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import ValidationError

from ucnb.errors import InfrastructureError, ParameterError
from ucnb.storage import fio, plots, regression
from ucnb.storage.fio import FioError, FioJob, FioMatrix
from ucnb.storage.regression import Fingerprint, Tolerances

DATA = Path(__file__).parent / "data"


def raw(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


# -- matrix and argv ----------------------------------------------------------------------------

def test_default_matrix_is_the_lane_s_jobs() -> None:
    m = FioMatrix()
    assert [j.name for j in m.jobs] == [
        "randread-4k-qd1", "randread-4k-qd4", "randread-4k-qd16", "randread-4k-qd32",
        "randwrite-4k-qd1", "randwrite-4k-qd4", "randwrite-4k-qd16", "randwrite-4k-qd32",
        "read-1M-qd16", "write-1M-qd16"]
    assert (m.repetitions, m.steady_state) == (3, False)


def test_matrix_from_lane_parameters_and_canonical_bs() -> None:
    m = FioMatrix.model_validate({"jobs": [{"rw": "randread", "bs": "4K", "iodepth": 8},
                                           {"rw": "read", "bs": "1024k", "iodepth": 2}],
                                  "runtime_s": 2, "size": "64M", "repetitions": 1})
    assert [j.bs for j in m.jobs] == ["4k", "1M"]


@pytest.mark.parametrize("job", [
    {"rw": "randread", "bs": "4k; rm -rf /", "iodepth": 1},
    {"rw": "randread", "bs": "4kb", "iodepth": 1},
    {"rw": "randread", "bs": "1000", "iodepth": 1},          # not sector-aligned for direct I/O
    {"rw": "randread", "bs": "4k", "iodepth": 0},
    {"rw": "randread", "bs": "4k", "iodepth": 257},
    {"rw": "randread", "bs": "4k", "iodepth": "16"},          # strings never pass as numbers
    {"rw": "randread", "bs": "4k", "iodepth": True},
    {"rw": "trim", "bs": "4k", "iodepth": 1},
    {"rw": "randread", "bs": "4k", "iodepth": 1, "extra": "--exec_prerun=sh"},
])
def test_bad_jobs_are_refused(job: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        FioJob.model_validate(job)


@pytest.mark.parametrize("fields", [
    {"size": "256MB"}, {"size": "1G --exec_prerun=x"}, {"size": "512k"}, {"repetitions": 0},
    {"repetitions": 21}, {"runtime_s": 0}, {"ss": "iops_slope:5%;reboot", "steady_state": True},
    {"steady_state": True, "runtime_s": 4, "ss_dur_s": 5}, {"jobs": []},
    {"jobs": [{"rw": "read", "bs": "4k", "iodepth": 1}, {"rw": "read", "bs": "4K", "iodepth": 1}]},
])
def test_bad_matrices_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        FioMatrix.model_validate(fields)


def test_argv_is_a_list_with_every_option() -> None:
    m = FioMatrix(runtime_s=2, ramp_s=1, size="256M")
    argv = fio.fio_argv(FioJob(rw="randread", bs="4k", iodepth=16), m, "/tmp/a dir/bench.dat", "/tmp/o.json")
    assert all(isinstance(a, str) for a in argv)
    assert argv[0] == "fio"
    assert "--filename=/tmp/a dir/bench.dat" in argv      # one element, spaces and all: no shell
    for opt in ("--name=randread-4k-qd16", "--rw=randread", "--bs=4k", "--iodepth=16", "--ioengine=libaio",
                "--direct=1", "--time_based", "--runtime=2", "--ramp_time=1", "--size=256M",
                "--lat_percentiles=1", "--percentile_list=50:90:99:99.9", "--output-format=json+",
                "--output=/tmp/o.json"):
        assert opt in argv, opt
    assert not [a for a in argv if a.startswith(("--ss", "--rwmixread"))]


def test_argv_steady_state_and_mixed() -> None:
    m = FioMatrix(runtime_s=10, steady_state=True, ss="bw_slope:1.5%", ss_dur_s=4, ss_ramp_s=2)
    argv = fio.fio_argv(FioJob(rw="randrw", bs="4k", iodepth=8, rwmixread=70), m, "f", "o", fio="/opt/fio")
    assert argv[0] == "/opt/fio"
    assert argv[-4:] == ["--rwmixread=70", "--ss=bw_slope:1.5%", "--ss_dur=4", "--ss_ramp=2"]


@pytest.mark.parametrize("filename", ["", "x\ny", "a\x00b"])
def test_argv_refuses_bad_paths(filename: str) -> None:
    with pytest.raises(ParameterError):
        fio.fio_argv(FioJob(rw="read", bs="1M", iodepth=1), FioMatrix(), filename, "o.json")


def test_argv_escapes_colons_fio_would_split_on() -> None:
    argv = fio.fio_argv(FioJob(rw="read", bs="1M", iodepth=1), FioMatrix(),
                        "/dev/disk/by-path/pci-0000:00:05.0", "o.json")
    assert "--filename=/dev/disk/by-path/pci-0000\\:00\\:05.0" in argv


def test_fill_argv_writes_the_whole_region() -> None:
    argv = fio.fill_argv(FioMatrix(size="2G"), "/dev/vdb", "fill.json")
    assert {"--rw=write", "--bs=1M", "--direct=1", "--size=2G", "--filename=/dev/vdb",
            "--output=fill.json"} <= set(argv)


# -- parsing ------------------------------------------------------------------------------------

def test_parse_randread_json_plus() -> None:
    df = fio.parse(DATA / "fio-randread-4k-qd16.json", rep=2)
    assert list(df.columns) == fio.COLUMNS
    assert len(df) == 1
    r = df.iloc[0]
    block = raw("fio-randread-4k-qd16.json")["jobs"][0]["read"]
    assert (r.side, r.rw, r.op, r.bs, r.iodepth, r.rep) == ("guest", "randread", "read", "4k", 16, 2)
    assert r.iops == pytest.approx(block["iops"])
    assert r.bw_MiBps == pytest.approx(block["bw_bytes"] / 2**20)
    assert r.lat_p50_us == block["lat_ns"]["percentile"]["50.000000"] / 1000
    assert r.lat_p99_us == block["lat_ns"]["percentile"]["99.000000"] / 1000
    assert r.lat_p99_9_us == block["lat_ns"]["percentile"]["99.900000"] / 1000
    assert r.runtime_s == pytest.approx(1.001)
    assert r.ss_attained is None
    assert r.fio_version == "fio-3.33"


@pytest.mark.parametrize(("name", "rw", "op", "bs", "iodepth"), [
    ("fio-randwrite-4k-qd1.json", "randwrite", "write", "4k", 1),
    ("fio-read-1M-qd16.json", "read", "read", "1M", 16),
    ("fio-write-1M-qd16.json", "write", "write", "1M", 16),
])
def test_parse_picks_the_block_of_the_workload(name: str, rw: str, op: str, bs: str, iodepth: int) -> None:
    r = fio.parse(DATA / name, side="host").iloc[0]
    block = raw(name)["jobs"][0][op]
    assert (r.side, r.rw, r.op, r.bs, r.iodepth) == ("host", rw, op, bs, iodepth)
    assert r.iops == pytest.approx(block["iops"]) and r.iops > 0
    assert r.lat_p99_us == block["lat_ns"]["percentile"]["99.000000"] / 1000


def test_parse_mixed_gives_one_row_per_direction() -> None:
    df = fio.parse((DATA / "fio-randrw-4k-qd8.json").read_text())
    assert list(df.op) == ["read", "write"]
    assert set(df.rw) == {"randrw"}
    assert df.iops.iloc[0] > 2 * df.iops.iloc[1]        # rwmixread=70


def test_parse_falls_back_to_clat_without_lat_percentiles() -> None:
    data = raw("fio-read-1M-qd4-clat-only.json")
    assert "percentile" not in data["jobs"][0]["read"]["lat_ns"]
    r = fio.parse(data).iloc[0]
    assert r.lat_p99_us == data["jobs"][0]["read"]["clat_ns"]["percentile"]["99.000000"] / 1000


def test_parse_steady_state() -> None:
    yes = fio.parse(DATA / "fio-randread-4k-qd4-ss-attained.json").iloc[0]
    no = fio.parse(DATA / "fio-randwrite-4k-qd4-ss-not-attained.json").iloc[0]
    assert yes.ss_attained is True and no.ss_attained is False
    assert yes.runtime_s < 4                                  # attained: fio stopped before runtime=4
    both = fio.concat([fio.parse(DATA / "fio-randread-4k-qd16.json"),
                       fio.parse(DATA / "fio-randread-4k-qd4-ss-attained.json")])
    assert list(both.ss_attained) == [None, True]


def test_parse_tolerates_warning_lines_before_the_json() -> None:
    text = (DATA / "fio-randwrite-4k-qd16-stdout-warning.txt").read_text()
    assert text.startswith("note: both iodepth")
    for source in (text, text.encode()):
        df = fio.parse(source)
        assert (df.rw.iloc[0], df.iodepth.iloc[0]) == ("randwrite", 16) and df.iops.iloc[0] > 0


def test_error_job_is_named() -> None:
    message = r"'write-4k-full' failed with error 28 \(No space left on device\)"
    with pytest.raises(FioError, match=message) as e:
        fio.parse(DATA / "fio-error-enospc.json")
    assert (e.value.job, e.value.error) == ("write-4k-full", 28)
    with pytest.raises(FioError, match="write-4k-devfull"):
        fio.parse(DATA / "fio-two-jobs-second-enospc.json")


def test_global_options_apply_to_jobs() -> None:
    data = raw("fio-two-jobs-second-enospc.json")
    data["jobs"] = data["jobs"][:1]           # the job that worked; bs and size came from globals
    r = fio.parse(data).iloc[0]
    assert (r.rw, r.bs, r.iodepth) == ("read", "4k", 1)


@pytest.mark.parametrize("text", ["", "fio: failed to open\n", "{not json", '{"no": "jobs"}'])
def test_garbage_is_a_clear_error(text: str) -> None:
    with pytest.raises(FioError, match=r"no fio JSON|empty"):
        fio.parse(text)


# -- summaries and guest/host ratios ------------------------------------------------------------

def table(side: str = "guest", scale: float = 1.0, lat_scale: float = 1.0,
          noise: tuple[float, ...] = (0.97, 1.0, 1.03)) -> pd.DataFrame:
    """Three repetitions of two points, from a real randread and a real 1M read."""
    frames = []
    for rep, k in enumerate(noise):
        for name in ("fio-randread-4k-qd16.json", "fio-read-1M-qd16.json"):
            df = fio.parse(DATA / name, rep=rep, side=side)  # type: ignore[arg-type]
            df[["iops", "bw_MiBps"]] *= scale * k
            df[["lat_p50_us", "lat_p99_us", "lat_p99_9_us"]] *= lat_scale * k
            frames.append(df)
    return fio.concat(frames)


def test_summarise_spread() -> None:
    s = fio.summarise(table())
    row = s[(s.bs == "4k") & (s.metric == "iops")].iloc[0]
    assert row.n == 3
    assert row.spread_pct == pytest.approx(6.0)


def test_ratios() -> None:
    r = fio.ratios(table("guest", scale=0.1, lat_scale=4), table("host"))
    assert len(r) == 2
    assert r.iops_ratio.tolist() == pytest.approx([0.1, 0.1])
    assert r.bw_ratio.tolist() == pytest.approx([0.1, 0.1])
    assert r.lat_p99_ratio.tolist() == pytest.approx([4, 4])


# -- regression tracking ------------------------------------------------------------------------

FP = Fingerprint(accelerator="tcg", qemu_version="7.2.0", disk_bus="virtio-blk", cache_mode="none",
                 disk_format="raw", fio_version="fio-3.33", guest_memory_mib=1024, guest_vcpus=1)


@pytest.fixture()
def baseline(tmp_path: Path) -> regression.BaselineStore:
    regression.update_baseline(tmp_path / "baseline.json", table(), FP, run_id="r1")
    return regression.load_baseline(tmp_path / "baseline.json")


def test_fingerprint_is_hashable_and_serialisable() -> None:
    assert {FP: 1}[Fingerprint.model_validate_json(FP.model_dump_json())] == 1
    assert FP.key().startswith("accelerator=tcg|qemu_version=7.2.0|")


def test_throttled_run_is_a_regression(baseline: regression.BaselineStore) -> None:
    cmp = regression.compare(table(scale=0.2, lat_scale=5), baseline, FP)
    assert list(cmp.columns) == regression.COMPARE_COLUMNS
    assert len(cmp) == 2 * 5
    assert set(cmp.status) == {"regression"}
    iops = cmp[(cmp.metric == "iops") & (cmp.bs == "4k")].iloc[0]
    assert iops.change_pct == pytest.approx(-80)
    assert iops.direction == "higher-is-better"
    lat = cmp[(cmp.metric == "lat_p99_us") & (cmp.bs == "4k")].iloc[0]
    assert (lat.direction, lat.change_pct) == ("lower-is-better", pytest.approx(400))


def test_noise_within_spread_is_ok(baseline: regression.BaselineStore) -> None:
    # 18 % slower: beyond the 15 % tolerance, but within the repetitions' 25 % spread.
    wide = table(noise=(0.8, 1.0, 1.05))
    cmp = regression.compare(table(scale=0.82, noise=(0.8, 1.0, 1.05)), baseline, FP)
    assert set(cmp[cmp.metric == "iops"].status) == {"ok"}
    assert (cmp[cmp.metric == "iops"].threshold_pct > 20).all()
    assert set(regression.compare(wide, baseline, FP).status) == {"ok"}
    # The same change with tight repetitions is flagged.
    tight = regression.compare(table(scale=0.82, noise=(1.0, 1.0, 1.0)), baseline, FP)
    assert set(tight[tight.metric == "iops"].status) == {"regression"}


def test_improvement(baseline: regression.BaselineStore) -> None:
    cmp = regression.compare(table(scale=2, lat_scale=0.5), baseline, FP)
    assert set(cmp.status) == {"improvement"}


def test_tolerances_are_per_metric(baseline: regression.BaselineStore) -> None:
    cmp = regression.compare(table(scale=0.8), baseline, FP, Tolerances(iops=50))
    assert set(cmp[cmp.metric == "iops"].status) == {"ok"}
    assert set(cmp[cmp.metric == "bw_MiBps"].status) == {"regression"}


def test_other_fingerprint_is_never_compared(baseline: regression.BaselineStore) -> None:
    other = FP.model_copy(update={"qemu_version": "8.0.0", "cache_mode": "writeback"})
    cmp = regression.compare(table(scale=0.2), baseline, other)
    assert set(cmp.status) == {"no-baseline"}
    reason = cmp.reason.iloc[0]
    assert "qemu_version '7.2.0' → '8.0.0'" in reason and "cache_mode 'none' → 'writeback'" in reason
    assert "accelerator" not in reason
    empty = regression.compare(table(), regression.BaselineStore(), FP)
    assert set(empty.reason) == {"no baseline recorded yet"}


def test_new_point_has_no_baseline(baseline: regression.BaselineStore) -> None:
    current = fio.concat([table(), fio.parse(DATA / "fio-randwrite-4k-qd1.json")])
    cmp = regression.compare(current, baseline, FP)
    new = cmp[cmp.rw == "randwrite"]
    assert set(new.status) == {"no-baseline"} and set(new.reason) == {"point not in the baseline"}
    assert set(cmp[cmp.rw != "randwrite"].status) == {"ok"}


def test_update_baseline_keeps_other_fingerprints_and_is_atomic(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "baseline.json"
    other = FP.model_copy(update={"accelerator": "kvm"})
    regression.update_baseline(path, table(), FP)
    regression.update_baseline(path, table(scale=3), other)
    store = regression.load_baseline(path)
    assert {e.fingerprint for e in store.entries.values()} == {FP, other}
    before = path.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        regression.update_baseline(path, table(scale=9), FP)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["baseline.json"]   # no temporary file left


def test_corrupt_baseline_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "b.json").write_text('{"version": 7}')
    with pytest.raises(ParameterError, match=r"b\.json"):
        regression.load_baseline(tmp_path / "b.json")


# -- plots --------------------------------------------------------------------------------------

def legend(ax: Any) -> list[str]:
    found = ax.get_legend()
    assert found is not None, "no legend"
    return [t.get_text() for t in found.get_texts()]


def png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    return buf.getvalue()


def test_plots_one_line_per_workload_and_side() -> None:
    one = table()
    both = fio.concat([table(), table("host", scale=3, lat_scale=0.5)])
    for make, metric_axes in ((plots.iops, 1), (plots.bandwidth, 1), (plots.latency, 3)):
        fig = make(one)
        assert len(fig.axes) == metric_axes
        assert all(len(ax.get_lines()) == 2 for ax in fig.axes)
        assert legend(fig.axes[-1]) == ["randread 4k", "read 1M"]
        fig = make(both)
        assert all(len(ax.get_lines()) == 4 for ax in fig.axes)
        assert legend(fig.axes[-1]) == ["randread 4k, guest", "randread 4k, host", "read 1M, guest",
                                       "read 1M, host"]
        assert fig.axes[0].get_xscale() == "log" and "iodepth" in fig.axes[0].get_xlabel()
        assert png(fig).startswith(b"\x89PNG")
    ax = plots.iops(one).axes[0]
    assert ax.get_ylim()[0] == 0 and "IOPS" in ax.get_ylabel()
    assert "MiB/s" in plots.bandwidth(one).axes[0].get_ylabel()
    assert "µs" in plots.latency(one).axes[0].get_ylabel()
    only = plots.iops(one, bs="4k")
    assert legend(only.axes[0]) == ["randread 4k"]


def test_plot_spread_over_iodepths() -> None:
    frames = [fio.parse(DATA / n, rep=0) for n in ("fio-randwrite-4k-qd1.json", "fio-randrw-4k-qd8.json",
                                                   "fio-randwrite-4k-qd16-stdout-warning.txt")]
    fig = plots.iops(fio.concat(frames))
    ax = fig.axes[0]
    assert legend(ax) == [
        "randrw 4k (read)", "randrw 4k (write)", "randwrite 4k"]
    assert list(ax.get_xticks()) == [1, 8, 16]
    assert png(fig)


# -- the host reference -------------------------------------------------------------------------

def test_run_host_without_fio_says_so(tmp_path: Path) -> None:
    with pytest.raises(InfrastructureError, match="apt-get install fio"):
        fio.run_host(FioMatrix(), tmp_path, fio="ucnb-no-such-fio")


def test_run_host_timeout_names_the_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(argv, kw["timeout"])

    monkeypatch.setattr(fio.shutil, "which", lambda name: "/usr/bin/fio")
    monkeypatch.setattr(fio.subprocess, "run", slow)
    with pytest.raises(FioError, match="fio fill: no result within"):
        fio.run_host(FioMatrix(), tmp_path)


@pytest.mark.requires("fio")
def test_run_host_for_real(tmp_path: Path) -> None:
    matrix = FioMatrix(jobs=(FioJob(rw="randread", bs="4k", iodepth=4),), runtime_s=1, ramp_s=0, size="16M",
                       repetitions=1)
    said: list[str] = []
    df = fio.run_host(matrix, tmp_path, progress=said.append)
    assert len(df) == 1
    r = df.iloc[0]
    assert (r.side, r.rw, r.bs, r.iodepth, r.rep) == ("host", "randread", "4k", 4, 0)
    assert r.iops > 0 and r.lat_p99_us > 0 and not math.isnan(r.lat_p99_9_us)
    assert r.fio_version == fio.fio_version()
    assert not (tmp_path / "ucnb-fio-bench.dat").exists()
    assert (tmp_path / "host-randread-4k-qd4-rep0.json").exists()
    assert said[0].startswith("host fio: filling") and "1/1: randread-4k-qd4 rep 0" in said[-1]
