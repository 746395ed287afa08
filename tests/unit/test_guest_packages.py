"""The guest image's package versions, as environment.txt records them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ucnb.image.build import GuestImage
from ucnb.image.packages import CACHE_NAME, guest_packages


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian host")
def test_versions_come_from_dpkg_and_the_unpacked_debs_and_are_kept(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ULTRACLOUD_WORK_ROOT", str(tmp_path / "work"))
    runit = tmp_path / "work" / "cache" / "debs" / "runit"
    runit.mkdir(parents=True)
    (runit / ".unpacked").write_text("runit_2.1.2-54_amd64.deb\n")
    image = GuestImage("k", tmp_path / "image", "6.1.0-57-cloud-amd64")
    image.directory.mkdir()
    line = guest_packages(image)
    assert "runit=2.1.2-54" in line and line.endswith("linux-image=6.1.0-57-cloud-amd64")
    if shutil.which("busybox"):
        assert "busybox" in line   # the host package the image copies busybox from
    assert (image.directory / CACHE_NAME).read_text().strip() == line
    (image.directory / CACHE_NAME).write_text("cached\n")
    assert guest_packages(image) == "cached"   # fixed per image: looked up once
