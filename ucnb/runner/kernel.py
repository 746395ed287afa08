"""The lane's kernel as the runner holds it: its manager and client (jupyter_client's, over IPC,
launched by ucnb's launcher or handed over as the spare `ucnb.runner.prestart` started), tuned
where jupyter_client's fixed waits were most of a quick lane's kernel start and end.

Imported when the kernel is launched, not before (jupyter_client and ZMQ load meanwhile).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from queue import Empty
from typing import Any

import zmq
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

from ucnb.runner import prestart

KERNEL_SHUTDOWN_S = 10.0   # a graceful kernel exit (its labs torn down by itself), then a kill
UNIX_PATH_MAX = 104        # a Unix socket's path, with room to spare (Linux allows 107 bytes)
# The kernel's command line: no history file (as nbclient does). ucnb's kernel side is imported by
# the kernel's launcher (`ucnb.kernel.launch`) while this process connects and sends the first cells.
KERNEL_ARGUMENTS = ["--HistoryManager.hist_file=:memory:"]
# jupyter_client polls a kernel's exit every 0.1 s and ZMQ retries a connection to sockets not yet
# bound every 0.1 s, where the kernel exits, and binds, within milliseconds of being asked.
POLL_S = 0.01
# jupyter_client's readiness waits 0.2 s of IOPub silence after the kernel's first reply (every
# run, idle): here a silence of QUIET_S. nbclient reads only the replies to its own requests, so a
# status message arriving later than that is ignored as it would be anyway.
QUIET_S = 0.02


class Client(AsyncKernelClient):
    """jupyter_client's asynchronous client, ready as soon as the kernel answers on both channels."""

    def start_channels(self, *args: Any, **kwargs: Any) -> None:
        self.context.setsockopt(zmq.RECONNECT_IVL, int(POLL_S * 1000))   # before its sockets exist
        super().start_channels(*args, **kwargs)

    async def wait_for_ready(self, timeout: float | None = None) -> None:
        """jupyter_client's `wait_for_ready` (a kernel_info reply on the shell channel, then any
        message on IOPub, which proves it connected; then IOPub drained), with QUIET_S silences."""
        deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
        while True:
            self.kernel_info()
            try:
                reply = await self.shell_channel.get_msg(timeout=1)
            except Empty:
                pass
            else:
                if reply["msg_type"] == "kernel_info_reply" and await self._iopub_message():
                    self._handle_kernel_info_reply(reply)
                    break
            if not await self._async_is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")
        while await self._iopub_message():
            pass

    async def _iopub_message(self) -> bool:
        try:
            await self.iopub_channel.get_msg(timeout=QUIET_S)
        except Empty:
            return False
        return True


class Manager(AsyncKernelManager):
    """jupyter_client's asynchronous manager, polling its kernel's exit every POLL_S
    (`kernel_manager` gives it `Client` for its clients)."""

    async def _async_finish_shutdown(self, waittime: float | None = None, pollinterval: float = POLL_S,
                                     restart: bool = False) -> None:
        await super()._async_finish_shutdown(waittime, pollinterval, restart)


class Specs(KernelSpecManager):
    """The installed kernel specs, the ucnb kernel's launched by ucnb's launcher."""

    def get_kernel_spec(self, kernel_name: str) -> Any:
        spec = super().get_kernel_spec(kernel_name)
        spec.argv = prestart.with_ucnb_launcher(spec.argv)
        return spec


def kernel_manager(folder: Path) -> Manager:
    """The lane's kernel manager: its connection file and sockets in `folder` (private, leased),
    over IPC rather than TCP, so nothing listens on the network and no other process can talk to
    the kernel (TCP only when the socket paths would be too long for a Unix socket). It launches
    ucnb's kernel launcher (`ucnb.kernel.launch`), handing the launch to the spare kernel this
    process started early when there is one (`ucnb.runner.prestart`)."""
    ipc = len(str(folder / "kernel-ipc-00")) < UNIX_PATH_MAX
    km = Manager(kernel_name=prestart.KERNEL_NAME, connection_file=str(folder / "kernel.json"),
                 transport="ipc" if ipc else "tcp", kernel_spec_manager=Specs(), client_factory=Client)
    km.shutdown_wait_time = KERNEL_SHUTDOWN_S
    km.kernel_id = str(uuid.uuid4())
    km.provisioner = prestart.provisioner_class()(kernel_id=km.kernel_id, kernel_spec=km.kernel_spec,
                                                  parent=km)
    return km
