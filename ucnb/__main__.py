"""The `ucnb` program (`python -m ucnb`, and the `ucnb` script), before the command line's imports.

`ucnb run` starts its lane's kernel loading now, on another core (`ucnb.runner.prestart`), while
the command line imports (typer, rich, pydantic, the lanes' parameter models), validates and
makes the proof root: about 0.3 s that the kernel's own start-up no longer waits for. A run that
is refused, planned or asks for help discards it on exit.
"""

import sys


def main() -> None:
    if sys.argv[1:2] == ["run"] and not {"--plan", "--help"} & set(sys.argv):
        from ucnb import paths
        from ucnb.runner import prestart

        prestart.spawn(paths.project_root())
    from ucnb.cli.main import app

    app()


if __name__ == "__main__":
    main()
