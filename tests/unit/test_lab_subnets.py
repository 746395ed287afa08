"""A new lab's subnet skips bridges that labs of other work roots (other checkouts) hold in libvirtd."""

from __future__ import annotations

from types import SimpleNamespace

import libvirt

from ucnb.lab.lab import Lab


class Net:
    def __init__(self, bridge: str | None) -> None:
        self.bridge = bridge

    def bridgeName(self) -> str:   # libvirt's name
        if self.bridge is None:
            raise libvirt.libvirtError("network vanished meanwhile")
        return self.bridge


def test_subnets_in_libvirt() -> None:
    conn = SimpleNamespace(listAllNetworks=lambda: [Net("ucnb1n0"), Net("ucnb1n1"), Net("ucnb12n0"),
                                                    Net("virbr0"), Net("ucnbXn0"), Net(None)])
    assert Lab._subnets_in_libvirt(SimpleNamespace(conn=conn)) == {1, 12}  # type: ignore[arg-type]
