"""The kernel side: what a lane notebook imports (the run, its recorder, waits, plots)."""
