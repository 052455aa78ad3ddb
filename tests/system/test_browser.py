"""Flower in a real browser: headless Chromium logs in with basic auth, finds both
workers and the finished task, and saves screenshots.

Uses Debian's ``chromium`` and ``chromium-driver`` (``make browser-deps``) through
the W3C WebDriver protocol that chromedriver speaks over HTTP, so no pip package
and no browser download is involved. Screenshots go to the test's tmp_path and
to var/test-artifacts/browser/.
"""
from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from celeryapp.dev.localflower import FlowerProcess
from celeryapp.dev.localredis import free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_BINARY = Path("/usr/lib/chromium/chromium")  # what the /usr/bin wrapper runs
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "var" / "test-artifacts" / "browser"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                  "--window-size=1400,900", "--hide-scrollbars"]

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="chromium not installed: run `make browser-deps`"),
    pytest.mark.skipif(not CHROMEDRIVER.exists(),
                       reason="chromium-driver not installed: run `make browser-deps`"),
]


class WebDriverError(RuntimeError):
    pass


class Browser:
    """Just enough of the W3C WebDriver protocol: navigate, run a script, screenshot."""

    def __init__(self, driver_url: str, session_id: str):
        self.driver_url, self.session_id = driver_url, session_id

    @staticmethod
    def call(url: str, method: str = "GET", payload: dict | None = None, timeout: float = 60):
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(url, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                answer = json.load(reply)
        except urllib.error.HTTPError as exc:
            raise WebDriverError(f"{method} {url}: {exc.code} {exc.read()[:500]!r}") from None
        return answer.get("value")

    @classmethod
    def open(cls, driver_url: str, profile_dir: Path) -> Browser:
        binary = CHROMIUM_BINARY if CHROMIUM_BINARY.exists() else CHROMIUM
        capabilities = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": str(binary),
                                   "args": CHROMIUM_FLAGS + [f"--user-data-dir={profile_dir}"]},
        }}}
        value = cls.call(f"{driver_url}/session", "POST", capabilities)
        return cls(driver_url, value["sessionId"])

    def _session(self, path: str, method: str = "GET", payload: dict | None = None):
        return self.call(f"{self.driver_url}/session/{self.session_id}{path}", method, payload)

    def get(self, url: str) -> None:
        self._session("/url", "POST", {"url": url})

    def script(self, source: str, *args):
        return self._session("/execute/sync", "POST", {"script": source, "args": list(args)})

    def text(self) -> str:
        """The page's text (textContent: table cells may wrap a long name in innerText)."""
        return self.script("return document.body ? document.body.textContent : '';") or ""

    def title(self) -> str:
        return self._session("/title") or ""

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self._session("/screenshot")))
        return path

    def wait_text(self, *needles: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.text()
            if all(needle in text for needle in needles):
                return text
            time.sleep(0.25)
        raise AssertionError(f"page never showed {needles}; it shows:\n{text[:2000]}")

    def quit(self) -> None:
        try:
            self.call(f"{self.driver_url}/session/{self.session_id}", "DELETE", timeout=20)
        except (OSError, WebDriverError):
            pass


@pytest.fixture
def browser(tmp_path, base_dir):
    port = free_port()
    log = base_dir / "logs" / "chromedriver.log"
    log.parent.mkdir(exist_ok=True)
    driver = subprocess.Popen([str(CHROMEDRIVER), f"--port={port}", f"--log-path={log}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if Browser.call(f"{url}/status", timeout=2).get("ready"):
                    break
            except OSError:
                pass
            if driver.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chromedriver did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        browser = Browser.open(url, tmp_path / "chromium-profile")
        yield browser
        browser.quit()
    finally:
        driver.terminate()
        try:
            driver.wait(10)
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait(5)


def save(browser: Browser, tmp_path: Path, name: str) -> Path:
    shot = browser.screenshot(tmp_path / name)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / name)
    assert shot.stat().st_size > 5000, "an empty screenshot"
    return shot


def wait_flower_state(flower: FlowerProcess, task_id: str, state: str, timeout: float = 30):
    """Pages do not refresh themselves: open a task's page once Flower has its end state."""
    deadline = time.monotonic() + timeout
    info = {}
    while time.monotonic() < deadline:
        status, body = flower.get(f"/api/task/info/{task_id}")
        info = json.loads(body) if status == 200 else {}
        if info.get("state") == state:
            return info
        time.sleep(0.2)
    raise AssertionError(f"Flower never saw {task_id} {state}: {info}")


def test_flower_in_chromium(browser, start_worker, celery_app, base_dir, tmp_path):
    from tasks.query import run_query

    suffix = uuid.uuid4().hex[:4]
    alpha = start_worker(f"alpha-{suffix}", queues=f"queries,agents,default,host.alpha-{suffix}")
    beta = start_worker(f"beta-{suffix}", queues=f"queries,agents,default,host.beta-{suffix}")
    password = secrets.token_urlsafe(12)
    flower = FlowerProcess(port=free_port(), user="ops", password=password,
                           env={"TURBO_FLOWER_DB": str(tmp_path / "flower" / "flower.db")},
                           logfile=base_dir / "logs" / f"flower-browser-{suffix}.log").start()
    try:
        # events sent before Flower listens are lost to it: wait for both heartbeats
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, body = flower.get("/workers?json=1")
            names = {w.get("hostname") for w in json.loads(body)["data"]} if status == 200 else ()
            if {alpha.name, beta.name} <= set(names):
                break
            time.sleep(0.2)
        result = run_query.delay("SELECT day, sum(amount) AS total FROM orders GROUP BY day "
                                 "ORDER BY day LIMIT 3", host=f"alpha-{suffix}")
        answer = result.get(timeout=60)
        assert answer["worker"] == alpha.name
        wait_flower_state(flower, result.id, "SUCCESS")

        # no login: Flower answers 401 and the browser shows no dashboard
        browser.get(f"{flower.url}/workers")
        assert alpha.name not in browser.text()  # an empty page: Chromium got a 401

        # log in with basic auth (credentials in the URL; Chromium keeps them for the origin)
        base = f"http://ops:{password}@127.0.0.1:{flower.port}"
        browser.get(f"{base}/workers")
        browser.wait_text(alpha.name, beta.name)
        save(browser, tmp_path, "flower-workers.png")

        browser.get(f"{flower.url}/tasks")  # the same login, remembered for the origin
        text = browser.wait_text(result.id, "turbo.query", "SUCCESS")
        assert alpha.name in text
        save(browser, tmp_path, "flower-tasks.png")

        browser.get(f"{flower.url}/task/{result.id}")
        text = browser.wait_text(result.id, "SUCCESS", "FROM orders")
        save(browser, tmp_path, "flower-task.png")
        assert password not in browser.text()

        # a secret in the SQL (and so in the result) shows masked
        secret = run_query.delay("SELECT 'password=hunter2' AS note, "
                                 "'dapi0123456789abcdef0123456789abcdef' AS tok",
                                 host=f"beta-{suffix}")
        secret.get(timeout=60)
        wait_flower_state(flower, secret.id, "SUCCESS")
        browser.get(f"{flower.url}/task/{secret.id}")
        text = browser.wait_text(secret.id, "SUCCESS", "password=***", "dapi***")
        assert "hunter2" not in text and "dapi0123456789abcdef" not in text
        save(browser, tmp_path, "flower-task-redacted.png")
    finally:
        flower.stop()
    print(f"screenshots: {tmp_path} and {ARTIFACTS}")
    assert os.path.exists(ARTIFACTS / "flower-tasks.png")
