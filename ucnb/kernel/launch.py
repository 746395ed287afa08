"""The kernel `ucnb run` starts: ipykernel's own launcher (`python -m ipykernel_launcher`), which
ends without the interpreter's teardown (`ucnb.fastexit`) once the runner has shut it down."""

import sys
from pathlib import Path

if __name__ == "__main__":
    # As ipykernel_launcher: the working directory off sys.path while ipykernel loads (its shell
    # puts it back).
    if sys.path[0] == "" or Path(sys.path[0]) == Path.cwd():
        del sys.path[0]

    from ipykernel import kernelapp

    from ucnb import fastexit

    kernelapp.launch_new_instance()
    fastexit.end(0)
