"""Run the app on a real ASGI server in a background thread (tests, notebooks, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any


class ServerThread:
    """``uvicorn`` serving ``app`` on ``host`` (port 0: a free one) until :meth:`stop`.

    Use as a context manager; ``url`` is the ``/v1`` base URL."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        if port == 0:
            with socket.socket() as sock:
                sock.bind((host, 0))
                port = sock.getsockname()[1]
        self.url = f"http://{host}:{port}/v1"
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, name="reason-http", daemon=True)

    def start(self, timeout: float = 30.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server at {self.url} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> ServerThread:  # noqa: PYI034 -- not subclassed
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
