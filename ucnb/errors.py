"""The error taxonomy (LAVA's lesson): each class of failure has its own type and exit code.

A notebook cell raises one of these; the runner maps the exception name papermill reports back
to the exit code, so a CI job can tell "the product misbehaved" from "this host cannot run VMs".
"""

from __future__ import annotations


class UcnbError(Exception):
    """Base class. `exit_code` is what `ucnb run` exits with; `kind` is the word in result.json."""

    exit_code = 4
    kind = "harness-error"


class LaneFailure(UcnbError):
    """The system under test misbehaved: a check failed, a service never became healthy."""

    exit_code = 1
    kind = "lane-failed"


class ParameterError(UcnbError):
    """Bad input: unknown lane/profile/parameter, wrong type, unreadable parameter file."""

    exit_code = 2
    kind = "bad-parameters"


class InfrastructureError(UcnbError):
    """The host cannot run the lab: libvirtd down, no QEMU, image build failed, no namespace."""

    exit_code = 3
    kind = "infrastructure"


class LabNamespaceError(InfrastructureError):
    """A guest connection was attempted from outside the lab's network namespace."""


class HarnessError(UcnbError):
    """A bug in ucnb itself."""

    exit_code = 4
    kind = "harness-error"


class Interrupted(UcnbError):
    exit_code = 130
    kind = "interrupted"


ERRORS_BY_NAME: dict[str, type[UcnbError]] = {
    cls.__name__: cls
    for cls in (UcnbError, LaneFailure, ParameterError, InfrastructureError, LabNamespaceError,
                HarnessError, Interrupted)
}


def classify(exception_name: str | None) -> type[UcnbError]:
    """Map an exception class name (as papermill reports it) to its error class."""
    if exception_name in ("KeyboardInterrupt", "Interrupted"):
        return Interrupted
    return ERRORS_BY_NAME.get(exception_name or "", HarnessError)
