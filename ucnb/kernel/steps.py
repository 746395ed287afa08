"""The one way a lane's steps are written: `lane.<step>(run, subject)`, one call per notebook cell.

A lane's first step (`@boots`) builds the subject the later steps take (a node, a cluster, a
bare-metal lab) on the lab profile; on a profile that delegates to the product it runs the
product's own commands instead and returns None. Every later step (`@lab_step`) then records
itself as skipped with the delegation's reason and returns that as a table, so notebooks hold
no profile branches and steps never guard against a missing subject.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    from ucnb.kernel.run import Run

F = TypeVar("F", bound=Callable[..., Any])


def lab_step(title: str) -> Callable[[F], F]:
    """A step the lab runs and the product covers itself: skipped, with why, when delegated."""
    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(run: Run, *args: Any, **kwargs: Any) -> Any:
            if run.delegated:
                return run.skip(title, run.delegated, delegated=True)
            return fn(run, *args, **kwargs)
        return cast(F, wrapper)
    return decorate


def boots(fn: F) -> F:
    """The lane's first step: on the lab it returns the subject; delegated, the product runs."""
    @functools.wraps(fn)
    def wrapper(run: Run, *args: Any, **kwargs: Any) -> Any:
        if run.delegated:
            run.run_product()
            return None
        return fn(run, *args, **kwargs)
    return cast(F, wrapper)
