"""
End to end, in a real headless Chromium (Debian's C{chromium}, driven over
the DevTools protocol by L{tests.devtools}): the status page of a real,
daemonized C{twistd txrouter}, loaded from its admin endpoint on
127.0.0.1, with an in-process WSGI route, the same app in a worker
process, a static route, a proxy route with one live and one dead
upstream, and a second host:

  - it loads and polls with no console message and no failed request, and
    asks nothing but its own origin;
  - its p50 / p99 arithmetic, run in the browser, is Prometheus'
    C{histogram_quantile};
  - under load, its numbers change: rate, latency, 5xx share, requests
    served, the worker's PID, the dead upstream marked down, the reload
    made through the admin endpoint; once the load stops, it shows the
    router's own count;
  - in both colour schemes; and when the router stops, it says so in a
    banner and keeps the last numbers.

Screenshots are kept in C{$TXROUTER_ARTIFACTS} (default: the folder
C{txrouter-artifacts} in the temporary folder; the test prints it). With
C{TXROUTER_UPDATE_DOCS=1} the test lets the sparklines fill for longer and
copies its screenshots to C{docs/} for the README.

Skipped when no Chromium is found, except in CI (C{CI} set), where it
fails instead: C{.ci/run} installs C{chromium}.
"""

from __future__ import annotations

import http.server
import json
import math
import os
import shutil
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any
from unittest import SkipTest

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.devtools import Chromium, Page, find_chromium
from tests.support import (
    REPO,
    Txrouter,
    free_port,
    listening,
    request,
    stop_daemon,
    wait_until,
)

pytestmark = pytest.mark.e2e

_APP = """
import time
from urllib.parse import parse_qs


def application(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    time.sleep(min(float(query.get("ms", ["0"])[0]), 200.0) / 1000)
    if environ["PATH_INFO"].startswith("/fail"):
        status, body = "500 Internal Server Error", b"failed on purpose\\n"
    else:
        status, body = "200 OK", b"status page test app\\n"
    start_response(status, [("Content-Type", "text/plain"),
                            ("Content-Length", str(len(body)))])
    return [body]
"""

#: What the load sends, in turn: (Host header or None, path).
_PLAN = (
    (None, "/app/"),
    (None, "/app/?ms=8"),
    (None, "/files/index.html"),
    (None, "/w/"),
    (None, "/app/?ms=30"),
    (None, "/api/"),
    ("shop.example.com", "/"),
    (None, "/app/"),
    (None, "/w/?ms=4"),
    (None, "/nowhere"),
    (None, "/app/fail"),
)

#: The JavaScript that reads one route's row: each field's text and value,
#: and the chips (workers, upstreams) under it.
_ROW = """
(() => {
  const row = [...document.querySelectorAll("tr.route")].find(
    (r) => r.dataset.host === %s && r.dataset.prefix === %s);
  if (!row) return null;
  const out = {};
  for (const el of row.querySelectorAll("[data-field]")) {
    out[el.dataset.field] = {text: el.textContent, value: el.dataset.value};
  }
  const details = row.nextElementSibling;
  out.chips = details && !details.hidden
    ? [...details.querySelectorAll(".chip")].map((c) => c.textContent) : [];
  out.points = (row.querySelector("svg.rate .line").getAttribute("d")
    .match(/[ML]/g) || []).length;
  return out;
})()
"""


#: Duration bucket bounds (seconds) as C{/stats} gives them.
_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]

#: Requests per bucket (the last: over 60 s), for the quantile checks.
_HISTOGRAMS = (
    [10] + [0] * 13,
    [0, 10] + [0] * 12,
    [50, 0, 50] + [0] * 11,
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14],
    [0] * 7 + [997, 0, 0, 0, 0, 2, 1],
    [0] * 13 + [5],
    [3] + [0] * 12 + [1],
    [0] * 14,
)


def histogram_quantile(q: float, bounds: list[float], counts: list[int]) -> Any:
    """
    Prometheus' C{histogram_quantile} (its C{bucketQuantile}) over one
    histogram: C{counts} per bucket, the last for C{+Inf}; L{None} for no
    observation.
    """
    cumulative = []
    total = 0
    for n in counts:
        total += n
        cumulative.append(total)
    if total == 0:
        return None
    rank = q * total
    b = next(i for i, c in enumerate(cumulative) if c >= rank)
    if b == len(counts) - 1:
        return bounds[-1]
    start = 0.0 if b == 0 else bounds[b - 1]
    count = cumulative[b] - (cumulative[b - 1] if b else 0)
    below = cumulative[b - 1] if b else 0
    return start + (bounds[b] - start) * ((rank - below) / count)


def _artifacts() -> Path:
    folder = os.environ.get("TXROUTER_ARTIFACTS")
    return (
        Path(folder) if folder else Path(tempfile.gettempdir()) / "txrouter-artifacts"
    )


class _Upstream(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"upstream\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Load(threading.Thread):
    """
    Requests to the router, in the order of L{_PLAN}, at a rate that rises
    and falls, until stopped (and at most C{limit} requests or
    C{seconds}).
    """

    def __init__(self, port: int, limit: int = 30000, seconds: float = 180) -> None:
        super().__init__(daemon=True, name="load")
        self.port = port
        self.limit = limit
        self.seconds = seconds
        self.sent = 0
        self.errors: list[str] = []
        self._done = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self._done.is_set() and self.sent < self.limit:
            elapsed = time.monotonic() - start
            if elapsed > self.seconds:
                return
            host, path = _PLAN[self.sent % len(_PLAN)]
            try:
                request(self.port, "GET", path, headers={"Host": host} if host else {})
            except OSError as e:
                self.errors.append(f"{path}: {e}")
            self.sent += 1
            # Pacing, not waiting: a rate that varies draws a sparkline.
            self._done.wait(0.003 * (1 + math.sin(elapsed / 5)))

    def stop(self) -> None:
        self._done.set()
        if self.is_alive():
            self.join(timeout=30)


def console_problems(page: Page) -> list[str]:
    """
    Every error and warning the page's console got: uncaught exceptions,
    C{console.error} / C{console.warn}, and the browser's own (a resource
    that failed, a Content-Security-Policy violation).
    """
    problems = []
    for event in page.events("Runtime.exceptionThrown"):
        details = event["params"]["exceptionDetails"]
        problems.append(
            "exception: "
            + str(details.get("exception", {}).get("description", details["text"]))
        )
    for event in page.events("Runtime.consoleAPICalled"):
        kind = event["params"]["type"]
        if kind in ("error", "warning", "assert"):
            texts = [
                str(a.get("value", a.get("description")))
                for a in event["params"]["args"]
            ]
            problems.append(f"console.{kind}: {' '.join(texts)}")
    for event in page.events("Log.entryAdded"):
        entry = event["params"]["entry"]
        if entry["level"] in ("error", "warning"):
            problems.append(
                f"{entry['level']}: {entry['text']} ({entry.get('url', '')})"
            )
    return problems


def request_problems(page: Page, origin: str) -> tuple[int, list[str]]:
    """
    How many requests the page made, and each one that failed, was
    answered with an error status, or went anywhere but C{origin}.
    """
    urls = {}
    problems = []
    for event in page.events("Network.requestWillBeSent"):
        url = event["params"]["request"]["url"]
        urls[event["params"]["requestId"]] = url
        if not url.startswith(origin) and not url.startswith("data:"):
            problems.append(f"foreign request: {url}")
    for event in page.events("Network.loadingFailed"):
        url = urls.get(event["params"]["requestId"], "?")
        problems.append(f"failed: {url}: {event['params']['errorText']}")
    for event in page.events("Network.responseReceived"):
        response = event["params"]["response"]
        if response["status"] >= 400:
            problems.append(f"HTTP {response['status']}: {response['url']}")
    return len(urls), problems


class StatusPageInChromiumTests(SynchronousTestCase):
    """
    The admin endpoint's status page, in a real browser, against a real
    router.
    """

    def setUp(self) -> None:
        executable = find_chromium()
        if executable is None:
            if os.environ.get("CI"):
                self.fail(
                    "no chromium found: CI must run this test (.ci/run installs it)"
                )
            raise SkipTest("no chromium found (apt-get install chromium)")
        self.executable = executable
        self.artifacts = _artifacts()
        self.artifacts.mkdir(parents=True, exist_ok=True)
        print(f"status page screenshots: {self.artifacts}")

        self.folder = Path(tempfile.mkdtemp(prefix="txrouter-statuspage-"))
        self.addCleanup(shutil.rmtree, self.folder, True)
        (self.folder / "apps").mkdir()
        (self.folder / "apps" / "pageapp.py").write_text(_APP)
        (self.folder / "pub").mkdir()
        (self.folder / "pub" / "index.html").write_text("<p>static</p>\n")

        self.upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
        threading.Thread(target=self.upstream.serve_forever, daemon=True).start()
        self.addCleanup(self.upstream.server_close)
        self.addCleanup(self.upstream.shutdown)
        self.live_upstream = f"http://127.0.0.1:{self.upstream.server_address[1]}/"
        self.dead_upstream = f"http://127.0.0.1:{free_port()}/"

        self.admin_port = free_port()
        self.server = Txrouter(
            textwrap.dedent(
                f"""
                listen: tcp:{{port}}:interface=127.0.0.1
                admin: tcp:{self.admin_port}:interface=127.0.0.1
                drain_timeout: 5
                routes:
                  /app/: {{wsgi: "pageapp:application", path: {self.folder / "apps"}}}
                  /w/:
                    wsgi: "pageapp:application"
                    path: {self.folder / "apps"}
                    workers: 1
                  /files/: {{static: {self.folder / "pub"}}}
                  /api/: {{proxy: ["{self.live_upstream}", "{self.dead_upstream}"]}}
                hosts:
                  shop.example.com: {{routes: {{/: {{static: {self.folder / "pub"}}}}}}}
                """
            )
        )
        self.pids: set[int] = set()
        self.addCleanup(lambda: stop_daemon(self.server, self.pids, self.folder))

    def admin(self, method: str, path: str) -> Any:
        status, _, body = request(self.admin_port, method, path)
        self.assertEqual(status, 200, body)
        return json.loads(body)

    def row(self, page: Page, host: str, prefix: str) -> Any:
        return page.evaluate(_ROW % (json.dumps(host), json.dumps(prefix)))

    def polls(self, page: Page) -> int:
        return int(page.evaluate("Number(document.body.dataset.polls)"))

    def test_page(self) -> None:
        """
        The page loads with no console message and no failed request, its
        numbers follow the load, it follows the colour scheme, and it shows
        a banner with the last numbers when the router stops.
        """
        self.server.start()
        wait_until(lambda: listening(self.admin_port), "the admin endpoint")
        wait_until(
            lambda: request(self.admin_port, "GET", "/readyz")[0] == 200,
            "the worker to be ready",
        )
        status, headers, _ = request(self.admin_port, "GET", "/")
        self.assertEqual(
            (status, headers.get("content-type")),
            (200, "text/html; charset=utf-8"),
            "the admin endpoint does not serve the status page at / "
            '(txrouter/admin.py: root.putChild(b"", StatusPage()))',
        )
        self.assertTrue(self.admin("POST", "/reload")["ok"])
        stats = self.admin("GET", "/stats")
        [worker_route] = [r for r in stats["routes"] if r["prefix"] == "/w/"]
        [worker] = worker_route["workers"]
        self.pids.add(worker["pid"])

        browser = Chromium(self.executable)
        self.addCleanup(browser.stop)
        browser.start()
        page = browser.page()
        page.color_scheme("light")
        origin = f"http://127.0.0.1:{self.admin_port}/"
        try:
            self._check_page(page, origin, worker["pid"])
        except BaseException:
            page.screenshot(self.artifacts / "status-page-failure.png")
            raise

    def _check_page(self, page: Page, origin: str, worker_pid: int) -> None:
        page.navigate(origin)
        wait_until(lambda: self.polls(page) >= 2, "the page's first two answers")
        self.assertEqual(page.evaluate("document.body.dataset.state"), "live")
        self.assertEqual(
            page.evaluate("document.getElementById('generation').textContent"), "2"
        )
        self.assertEqual(
            page.evaluate("document.getElementById('reload-result').textContent"), "ok"
        )
        self._check_quantiles(page)
        before = self.row(page, "", "/app/")
        self.assertEqual(before["requests"]["value"], "0")
        self.assertIn(f"pid {worker_pid}", " ".join(self.row(page, "", "/w/")["chips"]))

        load = _Load(self.server.port)
        self.addCleanup(load.stop)
        load.start()

        def busy() -> bool:
            app = self.row(page, "", "/app/")
            api = self.row(page, "", "/api/")
            return (
                int(app["requests"]["value"] or 0) >= 100
                and float(app["rate"]["value"] or 0) > 0
                and app["p50"]["value"] != ""
                and float(app["errors"]["value"] or 0) > 0
                and any(chip.startswith("down") for chip in api["chips"])
                and app["points"]
                >= (40 if os.environ.get("TXROUTER_UPDATE_DOCS") else 6)
            )

        wait_until(busy, "the page's numbers to follow the load", timeout=150)
        app = self.row(page, "", "/app/")
        self.assertLessEqual(float(app["p50"]["value"]), float(app["p99"]["value"]))
        self.assertRegex(app["rate"]["text"], r"^[0-9][0-9,.]*$")
        shop = self.row(page, "shop.example.com", "/")
        self.assertGreater(int(shop["requests"]["value"]), 0)

        messages = console_problems(page)
        count, failures = request_problems(page, origin)
        print(
            f"console check: {len(messages)} errors or warnings; {count} requests, "
            f"all to {origin}: {len(failures)} failed or foreign"
        )
        self.assertEqual(messages, [])
        self.assertEqual(failures, [])
        self.assertGreater(count, 2)

        light = page.screenshot(self.artifacts / "status-page.png")
        background = "getComputedStyle(document.documentElement).backgroundColor"
        light_background = page.evaluate(background)
        page.color_scheme("dark")
        wait_until(
            lambda: page.evaluate(background) != light_background, "the dark scheme"
        )
        dark = page.screenshot(self.artifacts / "status-page-dark.png")
        page.color_scheme("light")
        wait_until(
            lambda: page.evaluate(background) == light_background, "the light scheme"
        )

        load.stop()
        self.assertEqual(load.errors, [])
        served = self._served(self.admin("GET", "/stats"))
        wait_until(
            lambda: int(self.row(page, "", "/app/")["requests"]["value"]) == served,
            f"the page to show the router's count ({served})",
        )

        self.server.stop()
        wait_until(
            lambda: page.evaluate("document.getElementById('banner').hidden") is False,
            "the 'not answering' banner",
        )
        self.assertEqual(page.evaluate("document.body.dataset.state"), "stale")
        self.assertEqual(
            page.evaluate("document.getElementById('live').textContent"),
            "not answering",
        )
        self.assertEqual(int(self.row(page, "", "/app/")["requests"]["value"]), served)
        down = page.screenshot(self.artifacts / "status-page-not-answering.png")

        if os.environ.get("TXROUTER_UPDATE_DOCS"):
            docs = REPO / "docs"
            docs.mkdir(exist_ok=True)
            for shot in (light, dark, down):
                shutil.copyfile(shot, docs / shot.name)

    def _check_quantiles(self, page: Page) -> None:
        """
        The page's p50 and p99, computed by its own script in the browser,
        are Prometheus' C{histogram_quantile} of the same counts.
        """
        for counts in _HISTOGRAMS:
            for q in (0.5, 0.9, 0.99):
                found = page.evaluate(
                    "window.txrouterStatusPage.quantile("
                    f"{q}, {json.dumps(_BUCKETS)}, {json.dumps(counts)})"
                )
                expected = histogram_quantile(q, _BUCKETS, counts)
                if expected is None:
                    self.assertIsNone(found, (q, counts))
                else:
                    self.assertAlmostEqual(found, expected, 12, (q, counts))
                beyond = page.evaluate(
                    f"window.txrouterStatusPage.beyond({q}, {json.dumps(counts)})"
                )
                self.assertEqual(
                    beyond,
                    sum(counts) > 0 and sum(counts[:-1]) < q * sum(counts),
                    (q, counts),
                )

    def _served(self, stats: Any) -> int:
        [app] = [
            r for r in stats["routes"] if r["host"] == "" and r["prefix"] == "/app/"
        ]
        return sum(app["requests"].values())
