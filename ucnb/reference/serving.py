"""A reference HTTP server served from a daemon thread, and stopped with its port released."""

from __future__ import annotations

import socketserver
import threading


def serve_in_thread(server: socketserver.BaseServer, name: str) -> threading.Thread:
    """Serve `server` from a daemon thread (polling twice as fast as the default for a quick stop)."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=name,
                              daemon=True)
    thread.start()
    return thread


def stop_serving(server: socketserver.BaseServer, thread: threading.Thread | None) -> None:
    """Stop the serving loop, release the port, and wait (bounded) for the thread to end."""
    server.shutdown()
    server.server_close()
    if thread is not None:
        thread.join(timeout=5)
