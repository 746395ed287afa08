"""The one wait primitive (the NixOS test driver's `retry`): poll, record, and explain a timeout."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from ucnb.errors import LaneFailure, Transient, UcnbError
from ucnb.kernel.live import WaitProgress
from ucnb.kernel.record import Recorder

T = TypeVar("T")


def wait_until(probe: Callable[[], T], *, timeout: float, what: str, node: str = "",
               interval: float = 0.25, recorder: Recorder | None = None) -> T:
    """Call `probe` until it returns something truthy and return that.

    A falsy result, a `Transient` error or an ordinary exception is the latest observation; any
    other ucnb error (a failure marker, a lab namespace violation) ends the wait at once. On
    timeout, LaneFailure names the node, the condition and the last observation. Every wait is a timeline row.
    """
    recorder = recorder or Recorder()
    with recorder.step(f"wait: {what}", node, kind="wait") as row, \
            WaitProgress(what, node, timeout) as progress:
        deadline = time.monotonic() + timeout
        observation = "nothing observed yet"
        tries = 0
        while True:
            tries += 1
            try:
                result = probe()
                if result:
                    row.detail = f"after {tries} tries"
                    return result
                observation = str(result) or repr(result)
            except Transient as exc:  # not an answer yet: the wait goes on
                observation = str(exc)
            except UcnbError:
                raise
            except Exception as exc:  # a probe failing is an observation, not the end of the wait
                observation = f"{type(exc).__name__}: {exc}"
            progress.observe(observation)
            if time.monotonic() >= deadline:
                where = f"{node}: " if node else ""
                row.detail = f"timeout after {tries} tries; last: {observation}"
                raise LaneFailure(f"{where}timed out after {timeout:g}s waiting for {what}; "
                                  f"last observation: {observation}")
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
