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


class Transient(LaneFailure):
    """Not (yet) an answer: a store mid-election, a member still starting. Inside a wait it is an
    observation and the wait goes on; anywhere else it fails the lane, saying what was asked."""


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


def error_class(exc: BaseException) -> type[UcnbError]:
    """The taxonomy class of an exception, by type: anything that is not ours is a harness bug."""
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted
    if isinstance(exc, UcnbError):
        return next(c for c in type(exc).__mro__ if c in _CLASSES)
    return HarnessError


# The classes with their own exit code and wording; subclasses (Transient, LabNamespaceError,
# a module's own errors) report as the first of these they derive from.
_CLASSES = (Interrupted, LaneFailure, ParameterError, InfrastructureError, HarnessError, UcnbError)
