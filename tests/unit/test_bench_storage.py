"""fresh-bench-storage's own logic: parameters, the verdict and its check, disk XML (format, cache,
iotune), the tools disk, and the guest's fio driven through a local shell with the host's fio."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ucnb import lanes
from ucnb.errors import ParameterError
from ucnb.image import tools
from ucnb.lab import domain
from ucnb.lanes import fresh_bench_storage as lane
from ucnb.storage import fio, regression
from ucnb.storage.fio import FioError, FioJob, FioMatrix
from ucnb.storage.guest import GuestBench

from .test_fio import FP, table

LANE = lanes.get("fresh-bench-storage")
needs_fio = pytest.mark.skipif(shutil.which("fio") is None,
                               reason="fio is not installed (apt-get install fio)")


# -- parameters ---------------------------------------------------------------------------------

def test_defaults_are_the_library_s_jobs_with_a_shorter_matrix() -> None:
    params = lane.Parameters()
    matrix = params.matrix()
    assert matrix.jobs == FioMatrix().jobs
    assert (matrix.runtime_s, matrix.ramp_s, matrix.size, matrix.repetitions) == (5, 1, "512M", 3)
    assert params.estimated_matrix_s() == 3 * 10 * 2 * (5 + 1 + lane.JOB_OVERHEAD_S)


@pytest.mark.parametrize(("values", "needle"), [
    ({"steady_state": True, "runtime_s": 3}, "steady state could never be attained"),
    ({"runtime_s": 3600, "repetitions": 20}, "beyond the 120 min"),
    ({"size": "1G; reboot"}, "size"),
    ({"jobs": [{"rw": "randread", "bs": "4k", "iodepth": 1}] * 2}, "jobs repeat"),
    ({"disk_format": "vmdk"}, "disk_format"),
    ({"cache_mode": "fast"}, "cache_mode"),
    ({"throttle_iops": -1}, "throttle_iops"),
    ({"nodes": 9}, "nodes"),
    ({"tolerances": {"iops": 0}}, "tolerances.iops"),
    ({"baseline_file": "a\nb"}, "baseline_file"),
])
def test_bad_parameters_are_named(values: dict[str, Any], needle: str) -> None:
    with pytest.raises(ParameterError, match=needle):
        LANE.validate(values)


def test_baseline_path_is_under_the_work_root_unless_absolute(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    monkeypatch.setenv("ULTRACLOUD_WORK_ROOT", str(tmp_path))
    assert lane.Parameters().baseline_path() == tmp_path / "bench" / "baseline.json"
    assert lane.Parameters(baseline_file="/srv/b.json").baseline_path() == Path("/srv/b.json")


# -- the verdict and its check ------------------------------------------------------------------

@pytest.fixture()
def store(tmp_path: Path) -> regression.BaselineStore:
    regression.update_baseline(tmp_path / "b.json", table(), FP, run_id="r1")
    return regression.load_baseline(tmp_path / "b.json")


def test_verdict_no_baseline() -> None:
    v = regression.verdict(regression.compare(table(), regression.BaselineStore(), FP))
    assert (v.status, v.compared, v.regressions, v.regressed) == ("no-baseline", 0, [], False)
    assert v.reason == "no baseline recorded yet"


def test_verdict_never_across_fingerprints(store: regression.BaselineStore) -> None:
    kvm = FP.model_copy(update={"accelerator": "kvm", "disk_format": "qcow2"})
    v = regression.verdict(regression.compare(table(scale=0.05), store, kvm))
    assert v.status == "no-baseline" and not v.regressed
    assert "accelerator 'tcg' → 'kvm'" in v.reason and "disk_format 'raw' → 'qcow2'" in v.reason


def test_verdict_ok_and_regression(store: regression.BaselineStore) -> None:
    ok = regression.verdict(regression.compare(table(), store, FP))
    assert (ok.status, ok.compared, ok.regressions) == ("ok", 10, [])
    throttled = regression.verdict(regression.compare(table(scale=0.05, lat_scale=20), store, FP))
    assert throttled.status == "regression" and throttled.regressed
    # IOPS, bandwidth, p50 and p99 of both points count; p99.9 is reported apart.
    assert len(throttled.regressions) == 8 and len(throttled.informational) == 2
    assert any(r.startswith("guest randread 4k qd16 iops: -95.0 %") for r in throttled.regressions)
    assert all("lat_p99_9_us" in r for r in throttled.informational)
    assert "8 of 10 metrics regressed" in throttled.reason


def test_p99_9_alone_is_informational(store: regression.BaselineStore) -> None:
    current = table()
    current["lat_p99_9_us"] *= 10
    v = regression.verdict(regression.compare(current, store, FP))
    assert v.status == "ok" and v.regressions == [] and len(v.informational) == 2
    assert "informational (lat_p99_9_us)" in v.reason


def test_new_points_are_named_in_the_reason(store: regression.BaselineStore) -> None:
    current = fio.concat([table(), fio.parse(Path(__file__).parent / "data" / "fio-randwrite-4k-qd1.json")])
    v = regression.verdict(regression.compare(current, store, FP))
    assert v.status == "ok" and "5 metrics had no baseline point" in v.reason


def test_regression_check_is_informational_unless_asked(store: regression.BaselineStore) -> None:
    regressed = regression.verdict(regression.compare(table(scale=0.05), store, FP))
    none = regression.verdict(regression.compare(table(), regression.BaselineStore(), FP))
    told = lane.regression_check(regressed, fail_on_regression=False)
    assert told["ok"] is True and "informational" in told["name"]
    assert told["observed"].startswith(f"{len(regressed.regressions)}: ")
    failing = lane.regression_check(regressed, fail_on_regression=True)
    assert failing["ok"] is False and "informational" not in failing["name"]
    assert lane.regression_check(none, fail_on_regression=True)["ok"] is True   # nothing to compare


# -- notebook helpers ---------------------------------------------------------------------------

def test_small_blocks_and_steady_state_summary() -> None:
    df = table()
    assert lane._small_blocks(df) == ["4k"]
    assert lane._small_blocks(df[df.bs == "1M"]) == ["1M"]
    assert lane._attained(pd.Series([None, None], dtype=object)) == "not asked"
    assert lane._attained(pd.Series([True, False, True], dtype=object)) == "2/3"


# -- disks in the domain XML --------------------------------------------------------------------

def _disks(*disks: domain.DiskSpec) -> list[ET.Element]:
    spec = domain.NodeSpec(name="bench01", memory_mib=256, vcpus=1, kernel=Path("/k"), initrd=Path("/i"),
                           cmdline="", disks=disks, nics=(), serial_log=Path("/tmp/s.log"))
    return ET.fromstring(domain.domain_xml("lab1", spec)).findall("devices/disk")


def test_bench_disk_format_cache_and_iotune() -> None:
    system, bench, throttled, tools_disk = _disks(
        domain.DiskSpec(Path("/sys.qcow2"), "ucnb-system"),
        domain.DiskSpec(Path("/b.raw"), "ucnb-bench", "raw", cache="none"),
        domain.DiskSpec(Path("/t.raw"), "ucnb-bench", "qcow2", cache="none", total_iops_sec=200),
        domain.DiskSpec(Path("/tools.img"), "ucnb-tools", "raw", readonly=True))
    assert system.find("driver").attrib == {"name": "qemu", "type": "qcow2", "cache": "writeback"}  # type: ignore[union-attr]
    assert bench.find("driver").attrib == {"name": "qemu", "type": "raw", "cache": "none"}  # type: ignore[union-attr]
    assert bench.find("iotune") is None and system.find("iotune") is None
    assert throttled.findtext("iotune/total_iops_sec") == "200"
    assert tools_disk.find("readonly") is not None and bench.find("readonly") is None


def test_attach_reads_disk_settings_back() -> None:
    from ucnb.lab.lab import _spec_from_domain

    disks = (domain.DiskSpec(Path("/b.raw"), "ucnb-bench", "raw", cache="none", total_iops_sec=150),
             domain.DiskSpec(Path("/tools.img"), "ucnb-tools", "raw", readonly=True))
    spec = domain.NodeSpec(name="bench01", memory_mib=256, vcpus=1, kernel=Path("/k"), initrd=Path("/i"),
                           cmdline="", disks=disks, nics=(), serial_log=Path("/tmp/s.log"))
    again = _spec_from_domain(domain.domain_xml("lab1", spec), "bench01", Path("/tmp/s.log"), "10.77.1.11")
    assert again.disks == disks


# -- the tools disk -----------------------------------------------------------------------------

def test_mount_command_is_read_only_and_idempotent() -> None:
    cmd = tools.mount_command("/tools")
    assert "-o ro,noload /dev/disk/by-id/virtio-ucnb-tools /tools" in cmd
    assert "grep -qF ' /tools ' /proc/mounts ||" in cmd
    assert "'/x y'" in tools.mount_command("/x y")


def test_tools_disk_runs_its_program_through_its_own_loader(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Built for real (a small program: sqlite3), unpacked with debugfs, run from the copy."""
    program = shutil.which("sqlite3")
    if program is None or shutil.which("debugfs") is None:
        pytest.skip("sqlite3 or debugfs (e2fsprogs) missing")
    monkeypatch.setenv("ULTRACLOUD_WORK_ROOT", str(tmp_path / "work"))
    disk = tools.build_tools_disk([program])
    assert disk.image.exists() and disk.packages["sqlite3"].startswith("sqlite3 ")
    assert tools.build_tools_disk([program]) == disk                 # cached by content
    assert disk.command("sqlite3") == "/tools/bin/sqlite3"
    with pytest.raises(KeyError, match="not fio"):
        disk.command("fio")
    out = tmp_path / "mnt"
    out.mkdir()
    subprocess.run(["debugfs", "-R", f"rdump / {out}", str(disk.image)], check=True, capture_output=True)
    wrapper = out / "bin" / "sqlite3"
    assert "--library-path" in wrapper.read_text() and (out / "libexec" / "sqlite3").exists()
    ran = subprocess.run([str(wrapper), ":memory:", "select 6*7"], capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin"})
    assert ran.stdout.strip() == "42", ran.stderr


# -- the guest's fio, through a local shell -----------------------------------------------------

@dataclass
class Ran:
    exit_status: int | None
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.exit_status}: {self.stderr.strip()[-200:]}"


class LocalShell:
    """Stands in for a guest: runs the guest command line in a local shell (the host's fio)."""

    name = "local"

    def __init__(self) -> None:
        self.commands: list[str] = []

    def run(self, command: str, timeout: float = 30.0, check: bool = False, stdin: str | None = None) -> Ran:
        self.commands.append(command)
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=timeout)
        return Ran(done.returncode, done.stdout, done.stderr)


@needs_fio
def test_guest_bench_fills_runs_and_copies_the_json_back(tmp_path: Path) -> None:
    matrix = FioMatrix(jobs=(FioJob(rw="randread", bs="4k", iodepth=2),), runtime_s=1, ramp_s=0, size="8M",
                       repetitions=1)
    device = tmp_path / "dev with space.img"
    device.write_bytes(b"\0" * 8 * 2**20)
    shell = LocalShell()
    bench = GuestBench(shell, matrix, shutil.which("fio") or "fio", str(device), tmp_path / "fio")
    assert bench.version().startswith("fio-")
    assert bench.fill()["jobs"][0]["write"]["io_bytes"] == 8 * 2**20
    df = bench.job(matrix.jobs[0], rep=0)
    assert (df.side.iloc[0], df.rw.iloc[0], df.iodepth.iloc[0]) == ("guest", "randread", 2)
    assert df.iops.iloc[0] > 0
    saved = tmp_path / "fio" / "guest-local-randread-4k-qd2-rep0.json"
    assert json.loads(saved.read_text())["jobs"][0]["jobname"] == "randread-4k-qd2"
    assert "'--filename=" + str(device) + "'" in " ".join(shell.commands)   # quoted for the shell
    assert (tmp_path / "fio" / "guest-local-fill.json").exists()


@needs_fio
def test_guest_fio_failure_names_the_node_and_job(tmp_path: Path) -> None:
    matrix = FioMatrix(jobs=(FioJob(rw="read", bs="4k", iodepth=1),), runtime_s=1, ramp_s=0, size="8M",
                       repetitions=1)
    (tmp_path / "a-file").write_text("")   # a path under a regular file: ENOTDIR
    bench = GuestBench(LocalShell(), matrix, shutil.which("fio") or "fio", str(tmp_path / "a-file" / "dev"),
                       tmp_path / "fio")
    message = r"^local: fio job 'read-4k-qd1' failed with error 20 \(Not a directory\)"
    with pytest.raises(FioError, match=message) as e:
        bench.job(matrix.jobs[0], rep=0)
    assert e.value.job == "read-4k-qd1"
