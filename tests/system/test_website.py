"""The landing page in website/ renders in a real headless Chromium, on a phone and a laptop.

The page is served from 127.0.0.1 by Python's http.server. Chromium (Debian's `chromium`
and `chromium-driver`) is installed by the test set-up (scripts/setup-env.sh --test).
Content and screenshots come from Chromium's own `--dump-dom` and `--screenshot`; the
layout check talks to chromedriver over its plain W3C WebDriver HTTP API.
"""

from __future__ import annotations

import functools
import html
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image
from ports import free_port

WEBSITE = Path(__file__).resolve().parents[2] / "website"
REPO_URL = "https://github.com/ivelin/zk0"
DOCS = ("NODE-OPERATORS.md", "ARCHITECTURE.md", "RUNNING.md", "INSTALLATION.md")
# Without the background-networking flags Chromium keeps dialing hosts this machine can't reach.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
PHONE = (390, 844)
LAPTOP = (1366, 900)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@pytest.fixture(scope="module")
def site():
    """Base URL of website/ served on a free 127.0.0.1 port."""
    handler = functools.partial(QuietHandler, directory=str(WEBSITE))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """Paths of Debian's chromium and chromedriver (./run-tests.sh's set-up installs them)."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.fail("headless Chromium is missing; run scripts/setup-env.sh --test (or apt-get install -y chromium chromium-driver)")
    return shutil.which("chromium"), shutil.which("chromedriver")


def run_chromium(binary: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )


@pytest.fixture(scope="module")
def dom(site, chromium, tmp_path_factory) -> str:
    """The DOM of the served page after Chromium loaded it and ran its script."""
    return run_chromium(chromium[0], tmp_path_factory.mktemp("dom"), "--dump-dom", site).stdout


def visible_text(markup: str) -> str:
    markup = re.sub(r"<(script|style)\b.*?</\1>", "", markup, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def test_page_shows_title_and_pitch(dom):
    """The title and the pitch render: what zk0 is and that only model updates leave a robot owner's machine."""
    text = visible_text(dom)
    assert re.search(r"<title>zk0 — [^<]+</title>", dom)
    assert "SmolVLA" in text and "Flower" in text and "SO-100" in text
    assert "action expert" in text
    assert "Raw episodes" in text and "normalization statistics" in text


def test_install_line_points_at_this_sites_installer(dom, site):
    """Served over http, every install line is the curl one-liner for this site's own get-zk0bot.sh."""
    text = visible_text(dom)
    line = f"curl -fsSL {site}get-zk0bot.sh | bash"
    assert text.count(line) == 2
    assert "raw.githubusercontent.com" not in text
    assert f'href="{site}get-zk0bot.sh"' in dom


def test_installer_is_served_next_to_the_page(site):
    """The URL in the install line serves the installer script byte for byte."""
    with urllib.request.urlopen(f"{site}get-zk0bot.sh", timeout=30) as response:
        assert response.read() == (WEBSITE / "get-zk0bot.sh").read_bytes()


def test_page_shows_the_zk0bot_commands(dom):
    """Node operator, admin and researcher commands all appear on the page."""
    text = visible_text(dom)
    for command in (
        "zk0bot doctor",
        "zk0bot client start hf:owner/dataset",
        "zk0bot client start local:/path/to/dataset",
        "zk0bot server start",
        "zk0bot server register node.key.pub",
        "zk0bot run",
        "./train-fl-simulation.sh --tiny",
    ):
        assert command in text, command


def test_page_links_the_docs(dom):
    """Each operator and architecture document is linked on the repository."""
    for doc in DOCS:
        assert f'href="{REPO_URL}/blob/main/docs/{doc}"' in dom, doc


def test_page_is_self_contained():
    """No external stylesheet, script, font or image: the page works with only its own file, on any width."""
    page = (WEBSITE / "index.html").read_text()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert not re.search(r"<(script|img|iframe)[^>]*\ssrc=", page)
    assert not re.search(r"<link[^>]*>", page)
    assert "@import" not in page and "url(http" not in page and "@font-face" not in page


@pytest.mark.parametrize("size", [PHONE, LAPTOP], ids=["phone", "laptop"])
def test_screenshot_is_rendered(site, chromium, tmp_path, size):
    """Chromium renders a full-size screenshot with real content (many colours, not a blank page)."""
    shot = tmp_path / "page.png"
    run_chromium(chromium[0], tmp_path, f"--window-size={size[0]},{size[1]}", f"--screenshot={shot}", site)
    with Image.open(shot) as image:
        assert image.size == size
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 50
    background = max(colours)[0]
    assert background < 0.9 * size[0] * size[1]


def _webdriver(base: str, method: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{base}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())["value"]


@pytest.fixture
def webdriver(chromium, tmp_path):
    """A chromedriver session on a headless Chromium; yields a call(method, path, body) function."""
    port = free_port()
    driver = subprocess.Popen(
        [chromium[1], f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _webdriver(base, "GET", "/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        options = {"binary": chromium[0], "args": [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]}
        session = _webdriver(
            base, "POST", "/session", {"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}}
        )["sessionId"]

        def call(method: str, path: str, body: dict | None = None) -> dict:
            return _webdriver(base, method, f"/session/{session}{path}", body)

        yield call
        _webdriver(base, "DELETE", f"/session/{session}")
    finally:
        driver.terminate()
        driver.wait(timeout=30)


@pytest.mark.parametrize("width", [320, PHONE[0], LAPTOP[0]])
def test_layout_fits_the_screen(site, webdriver, width):
    """At phone and laptop widths nothing overflows sideways, and the install line is on the first screen."""
    webdriver("POST", "/window/rect", {"width": width, "height": 844})
    webdriver("POST", "/url", {"url": site})
    layout = webdriver(
        "POST",
        "/execute/sync",
        {
            "script": """
              const line = document.getElementById('install-line').getBoundingClientRect();
              return {scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth,
                      lineTop: line.top, lineLeft: line.left, height: window.innerHeight};
            """,
            "args": [],
        },
    )
    assert layout["scroll"] <= layout["client"], layout
    assert 0 <= layout["lineLeft"] and 0 < layout["lineTop"] < layout["height"], layout
