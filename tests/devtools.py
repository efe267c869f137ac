"""
A headless Chromium for the end-to-end tests, driven over the Chrome
DevTools Protocol with the standard library only: L{Chromium}.

The protocol runs over C{--remote-debugging-pipe} (JSON messages ended by a
NUL byte on the browser's file descriptors 3 and 4), so the browser listens
on no port. It reaches no address but 127.0.0.1 (C{--host-resolver-rules}): an asset
from anywhere else fails, and shows as a failed request. Background traffic of its own
(updates, safe browsing, metrics) is switched off for the same reason.

    browser = Chromium(executable).start()
    try:
        page = browser.page()
        page.navigate("http://127.0.0.1:9100/")
        polls = page.evaluate("document.body.dataset.polls")
    finally:
        browser.stop()
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["Chromium", "DevToolsError", "Page", "find_chromium"]

#: Debian's name first; the others are what other systems call it.
_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

_FLAGS = (
    "--headless",
    # Tests run as root in a container: Chromium's sandbox needs user
    # namespaces it may not get there, and refuses root without this.
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--metrics-recording-only",
    "--no-pings",
    "--no-proxy-server",
    "--password-store=basic",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--lang=en-US",
    "--remote-debugging-pipe",
)


class DevToolsError(Exception):
    """
    The browser answered a command with an error, or stopped answering.
    """


def find_chromium() -> str | None:
    """
    The Chromium to run: C{$TXROUTER_CHROMIUM}, else the first of its usual
    names on C{PATH}, else L{None}.
    """
    named = os.environ.get("TXROUTER_CHROMIUM")
    if named:
        return named
    for name in _NAMES:
        found = shutil.which(name)
        if found is not None:
            return found
    return None


class Chromium:
    """
    One headless Chromium process with a profile of its own, stopped (and
    its profile removed) by L{stop}.

    @ivar events: every event the browser sent, in order, each a dict with
        C{method}, C{params} and, for a page's events, C{sessionId}.
    """

    def __init__(self, executable: str) -> None:
        self.executable = executable
        self.profile = Path(tempfile.mkdtemp(prefix="txrouter-chromium-"))
        self.log = self.profile.parent / (self.profile.name + ".log")
        self.events: list[dict[str, Any]] = []
        self.process: subprocess.Popen[bytes] | None = None
        self._answers: dict[int, dict[str, Any]] = {}
        self._incoming: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._next_id = 0
        self._to_browser = -1
        self._lock = threading.Lock()

    def start(self) -> Chromium:
        """
        Start the browser and wait until it answers.
        """
        to_browser, self._to_browser = os.pipe()
        from_browser, browser_writes = os.pipe()
        # The browser reads commands on fd 3 and writes on fd 4: the shell
        # puts the pipes there, then becomes the browser (same PID).
        command = [
            "/bin/sh",
            "-c",
            'exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null',
            self.executable,
            *_FLAGS,
            f"--user-data-dir={self.profile}",
            "about:blank",
        ]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                stdin=to_browser,
                stdout=browser_writes,
                stderr=log,
                start_new_session=True,
            )
        os.close(to_browser)
        os.close(browser_writes)
        threading.Thread(
            target=self._read, args=(from_browser,), daemon=True, name="devtools"
        ).start()
        self.call("Browser.getVersion", timeout=60)
        return self

    def _read(self, fd: int) -> None:
        pending = b""
        try:
            while chunk := os.read(fd, 65536):
                pending += chunk
                *messages, pending = pending.split(b"\0")
                for message in messages:
                    self._incoming.put(json.loads(message))
        finally:
            os.close(fd)
            self._incoming.put(None)

    def _pump(self, timeout: float) -> None:
        """
        File the messages that arrive within C{timeout} seconds (at least
        one, unless none comes).
        """
        try:
            message = self._incoming.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            if message is None:
                raise DevToolsError(f"the browser went away; its log: {self.log}")
            if "id" in message:
                self._answers[message["id"]] = message
            else:
                self.events.append(message)
            try:
                message = self._incoming.get_nowait()
            except queue.Empty:
                return

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
    ) -> int:
        """
        Send one command without waiting; return its id.
        """
        with self._lock:
            self._next_id += 1
            ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method}
        if params:
            message["params"] = params
        if session is not None:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._to_browser, data) :]
        return ident

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """
        Send one command and return its result.

        @raise DevToolsError: the browser answered with an error, or not
            within C{timeout} seconds.
        """
        ident = self.send(method, params, session)
        deadline = time.monotonic() + timeout
        while ident not in self._answers:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DevToolsError(f"{method}: no answer within {timeout}s")
            self._pump(left)
        answer = self._answers.pop(ident)
        if "error" in answer:
            raise DevToolsError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    def drain(self) -> None:
        """
        File the events that have arrived so far.
        """
        self._pump(0.001)

    def page(self, width: int = 1360, height: int = 900) -> Page:
        """
        A new tab of C{width} x C{height} CSS pixels, with its console,
        network and page events on.
        """
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call(
            "Target.attachToTarget", {"targetId": target, "flatten": True}
        )["sessionId"]
        page = Page(self, session)
        for domain in ("Runtime", "Log", "Network", "Page"):
            page.call(f"{domain}.enable")
        page.call(
            "Emulation.setDeviceMetricsOverride",
            {
                "width": width,
                "height": height,
                "deviceScaleFactor": 1,
                "mobile": False,
            },
        )
        page.call("Emulation.setLocaleOverride", {"locale": "en-US"})
        return page

    def stop(self) -> None:
        """
        Close the browser (killed, with all its processes, if it does not
        close in time) and remove its profile.
        """
        process = self.process
        try:
            if process is not None and process.poll() is None:
                with contextlib.suppress(OSError):
                    self.send("Browser.close")
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    # Its own session: the group is the browser and its
                    # helpers, started by it and by nothing else.
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
            if process is not None:
                _end_group(process.pid)
        finally:
            if self._to_browser >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._to_browser)
                self._to_browser = -1
            shutil.rmtree(self.profile, ignore_errors=True)


def _end_group(group: int, timeout: float = 10.0) -> None:
    """
    Kill what is left of process group C{group} (the browser's helpers, the
    renderer and zygote, in the session it was started in) and wait until
    it is gone.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            raise DevToolsError(f"process group {group} still alive")
        time.sleep(0.02)


class Page:
    """
    One tab of a L{Chromium}.
    """

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser = browser
        self.session = session

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """
        Send one command to this tab; return its result.
        """
        return self.browser.call(method, params, self.session)

    def events(self, *methods: str) -> list[dict[str, Any]]:
        """
        This tab's events so far, those named C{methods}.
        """
        self.browser.drain()
        return [
            event
            for event in self.browser.events
            if event.get("sessionId") == self.session and event["method"] in methods
        ]

    def navigate(self, url: str, timeout: float = 30.0) -> None:
        """
        Load C{url} and wait for its C{load} event.
        """
        loaded = len(self.events("Page.loadEventFired"))
        result = self.call("Page.navigate", {"url": url})
        if "errorText" in result:
            raise DevToolsError(f"{url}: {result['errorText']}")
        deadline = time.monotonic() + timeout
        while len(self.events("Page.loadEventFired")) == loaded:
            if time.monotonic() > deadline:
                raise DevToolsError(f"{url}: not loaded within {timeout}s")
            self.browser._pump(0.05)

    def evaluate(self, expression: str) -> Any:
        """
        The value of a JavaScript expression in the page (as JSON).
        """
        result = self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}
        )
        if "exceptionDetails" in result:
            raise DevToolsError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def color_scheme(self, scheme: str) -> None:
        """
        Make the page see C{prefers-color-scheme: scheme}.
        """
        self.call(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
        )

    def screenshot(self, path: Path) -> Path:
        """
        Save a PNG of the whole page (beyond the window's height) at
        C{path}.
        """
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        data = self.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {
                    "x": 0,
                    "y": 0,
                    "width": size["width"],
                    "height": size["height"],
                    "scale": 1,
                },
            },
        )["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
