"""ucnb: UltraCloud proof notebooks.

A lane notebook starts a run with `ucnb.start_run(...)`, drives a lab through it, and finishes
with `run.finish()`; everything it records becomes the run's evidence.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["NodeConfig", "attach", "start_run"]


def __getattr__(name: str) -> Any:
    # Lazy: the CLI imports ucnb without paying for libvirt, pandas and matplotlib.
    if name == "start_run":
        from ucnb.kernel.run import start_run
        return start_run
    if name == "attach":  # ucnb.attach(lab_id=None) -> Lab: reattach a kept lab
        from ucnb.lab.lab import Lab
        return Lab.attach
    if name == "NodeConfig":
        from ucnb.lab.lab import NodeConfig
        return NodeConfig
    raise AttributeError(name)
