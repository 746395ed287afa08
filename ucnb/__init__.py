"""ucnb: UltraCloud proof notebooks.

A lane notebook starts a run with `ucnb.start_run(...)`, drives a lab through it, and finishes
with `run.finish()`; everything it records becomes the run's evidence.
"""

__version__ = "0.1.0"
