"""The `ultracloud` profile's foundation: the product's own commands, run for real.

- `commands`: `Command` (argv from the flake root, never a shell), `run()` (process group,
  streamed output, timeouts, failure markers), nix detection and flags.
- `contract`: the contract as data (`commands:` in profiles/ultracloud.yaml), `plan()`,
  `format_plan()`.
- `ingest`: what the product wrote under `<work root>/<lane>/latest`, copied, checksummed, and
  its verdict held against the exit status.
"""
