"""Bare metal: the installer harness on lab machines and the hardware bring-up pack."""
