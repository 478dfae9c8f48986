"""A local headless chromium driven over its DevTools pipe: open a page, run script in it, record
every request it makes, take screenshots.

Used by the viewer's browser tests and by ``benchmarks/viewer.py`` (screenshots and the opening time
of large trees). It needs only the ``chromium`` binary (Debian's package): the DevTools protocol
runs over two pipes (``--remote-debugging-pipe``, messages ended by a NUL byte), so no port is
opened and no client library is needed.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from reason.core.errors import ReasonError

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
         "--disable-extensions", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", "--remote-debugging-pipe")


def find_chromium() -> str | None:
    """The path of a chromium-like browser on PATH (``$REASON_CHROMIUM`` first), or None."""
    for name in (os.environ.get("REASON_CHROMIUM"), *BROWSERS):
        if name and (path := shutil.which(name)):
            return path
    return None


class Page:
    """One tab: script evaluation, the requests it made, the errors it logged, screenshots."""

    def __init__(self, browser: Chromium, session: str, target: str) -> None:
        self.browser = browser
        self.session = session
        self.target = target
        self.requests: list[str] = []  # URLs of every request the page made (Network.requestWillBeSent)
        self.errors: list[str] = []  # uncaught exceptions and console/log errors (CSP violations among them)

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        """Send a DevTools command to this tab and return its result."""
        return self.browser.call(method, params, self.session, timeout)

    def evaluate(self, expression: str, timeout: float = 30.0) -> Any:
        """The value of a script expression in the page (promises awaited); a script error raises."""
        out = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True},
                        timeout)
        if "exceptionDetails" in out:
            detail = out["exceptionDetails"]
            raise RuntimeError(f"page script failed: {detail.get('exception', {}).get('description') or detail.get('text')}")
        return out["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        end = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > end:
                raise TimeoutError(f"page: {expression} still false after {timeout}s (errors: {self.errors[:3]})")
            time.sleep(0.02)

    def screenshot(self, path: str | Path) -> Path:
        """Save the visible page as PNG."""
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        out = Path(path)
        out.write_bytes(base64.b64decode(data))
        return out

    def close(self) -> None:
        """Close the tab."""
        self.browser.call("Target.closeTarget", {"targetId": self.target})
        self.browser._pages.pop(self.session, None)

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Runtime.exceptionThrown":
            detail = params["exceptionDetails"]
            self.errors.append(detail.get("exception", {}).get("description") or detail.get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.errors.append(params["entry"].get("text", ""))


class Chromium:
    """A headless chromium process (a context manager); :meth:`open` loads a URL in a fresh tab."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise ReasonError("chromium", "no chromium on PATH", "install it (apt-get install chromium) or set REASON_CHROMIUM")
        self.profile = tempfile.TemporaryDirectory(prefix="reason-chromium-")
        to_browser_r, self._write = os.pipe()
        self._read, from_browser_w = os.pipe()

        def pipes() -> None:  # in the child: DevTools reads commands on fd 3 and writes replies on fd 4
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.process = subprocess.Popen([self.binary, *FLAGS, f"--user-data-dir={self.profile.name}", "about:blank"],
                                        pass_fds=(3, 4), preexec_fn=pipes, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._ids = 0
        self._pages: dict[str, Page] = {}

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the browser process and remove its profile."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for fd in (self._write, self._read):
            try:
                os.close(fd)
            except OSError:
                pass
        self.profile.cleanup()

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        """Send one DevTools command and wait for its reply; events that arrive meanwhile go to their tab."""
        self._ids += 1
        message: dict[str, Any] = {"id": self._ids, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        end = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, _, self._buffer = self._buffer.partition(b"\0")
                reply = json.loads(raw)
                if reply.get("id") == self._ids:
                    if "error" in reply:
                        raise RuntimeError(f"chromium: {method}: {reply['error'].get('message')}")
                    return reply.get("result", {})
                page = self._pages.get(reply.get("sessionId", ""))
                if page is not None and "method" in reply:
                    page._event(reply["method"], reply.get("params", {}))
            left = end - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                raise TimeoutError(f"chromium: no reply to {method} within {timeout}s")
            ready, _, _ = select.select([self._read], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium: the DevTools pipe closed")
                self._buffer += chunk

    def open(self, url: str, width: int = 1400, height: int = 900, ready: str | None = None,
             timeout: float = 30.0) -> Page:
        """A new tab at ``width`` x ``height`` with requests and errors recorded from the start, showing
        ``url``; waits for the load event, then for the script expression ``ready`` when given."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = self._pages[session] = Page(self, session, target)
        for domain in ("Network", "Page", "Runtime", "Log"):
            page.call(f"{domain}.enable")
        page.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        page.call("Page.navigate", {"url": url})
        page.wait_for("location.href !== 'about:blank' && document.readyState === 'complete'", timeout)
        if ready:
            page.wait_for(ready, timeout)
        return page
