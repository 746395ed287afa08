from ucnb import markers

NOISY = (b"[    1.2] virtio_blk virtio1: [vda] 1048576 512-byte logical blocks\r\n"
         b"ULTRACLOUD_MARKER pre-install.boot.node01\r\n"
         b"[    1.3] random: crng init done ULTRACLOUD_MARKER pre-install.phone-home.complete.node01\r\n"
         b"ULTRACLOUD_MARKER install.disko.fail")


def test_parse_finds_markers_among_kernel_noise_and_keeps_partial_line() -> None:
    found, consumed = markers.parse(NOISY)
    assert [m.name for m in found] == ["pre-install.boot.node01", "pre-install.phone-home.complete.node01"]
    assert NOISY[consumed:] == b"ULTRACLOUD_MARKER install.disko.fail"


def test_marker_split_across_reads_is_seen_once() -> None:
    first, used = markers.parse(NOISY[:60])
    rest, _ = markers.parse(NOISY[used:] + b"ed.no-disk\n", base_offset=used)
    names = [m.name for m in first + rest]
    assert names.count("pre-install.boot.node01") == 1
    assert names[-1] == "install.disko.failed.no-disk"
    assert (first + rest)[-1].failed


def test_failure_detection_is_on_dot_boundaries() -> None:
    assert markers.is_failure("install.failed.no-disk")
    assert markers.is_failure("lab.service.failed")
    assert not markers.is_failure("install.unfailedish")


def test_check_sequence_reports_order_and_absence() -> None:
    seen = markers.parse_text("ULTRACLOUD_MARKER a.x\nULTRACLOUD_MARKER c.x\nULTRACLOUD_MARKER b.x\n")
    result = {r.expected: r for r in markers.check_sequence(["a", "b", "c", "d"], seen)}
    assert result["a"].ok and result["b"].ok
    assert result["c"].seen is not None and not result["c"].in_order
    assert result["d"].seen is None and not result["d"].ok


def test_prefix_match_needs_a_dot_boundary() -> None:
    m = markers.parse_text("ULTRACLOUD_MARKER reboot.node01")[0]
    assert m.matches("reboot") and m.matches("reboot.node01")
    assert not m.matches("reb")
