"""The vm layer: real guests through the ucnb library, in this process. Needs root and the lab
host (`make setup` / `ucnb host up`). A test that creates a lab or a run requests `own_runs`."""

from ..lab_fixtures import accelerator, lab_host, lab_image, own_runs

__all__ = ["accelerator", "lab_host", "lab_image", "own_runs"]
