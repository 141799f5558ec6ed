"""``mdm demo`` served on a tiny trained checkpoint and driven in headless Chromium through Playwright.

Slow and outside the default run; it needs the demo extra, Playwright and Debian's Chromium::

    apt-get install -y chromium chromium-driver && pip install -e ".[demo]" playwright
    pytest -m slow tests/demo/test_demo_browser.py

``MDM_DEMO_SCREENSHOTS=DIR`` keeps the page's screenshots in DIR (experiments/demo/ holds them).
"""

import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

CHROMIUM = Path("/usr/bin/chromium")
# As root Chromium needs no sandbox; without the background-networking flags it keeps dialling out (refused here).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
UPLOAD_LIMIT_MB = 0.05
MISSING = [what for what, present in [("gradio (pip install -e \".[demo]\")", importlib.util.find_spec("gradio")),
                                      ("playwright (pip install playwright)", importlib.util.find_spec("playwright")),
                                      (f"{CHROMIUM} (apt-get install chromium)", CHROMIUM.is_file())] if not present]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bool(MISSING), reason=f"the browser test needs {', '.join(MISSING)}")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(demo_run, tmp_path_factory):
    """``mdm demo`` in a subprocess, as a person starts it; yields (url, its log file)."""
    port, log = _free_port(), tmp_path_factory.mktemp("server") / "demo.log"
    env = dict(os.environ, OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mdm", "demo", "--checkpoint", str(demo_run), "--port",
                                 str(port), "--max-upload-mb", str(UPLOAD_LIMIT_MB), "--threads", "1"],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, f"mdm demo exited with {proc.returncode}:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, f"mdm demo did not answer in 180 s:\n{log.read_text()}"
            time.sleep(0.5)
        yield url, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1200, "height": 900})
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(server[0], wait_until="networkidle")
        yield page
        context.close()


def _screenshot(page, tmp_path: Path, name: str) -> None:
    """A full-page PNG in ``MDM_DEMO_SCREENSHOTS`` (default: the test's folder), once Gradio's fade-ins end."""
    folder = Path(os.environ.get("MDM_DEMO_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(1500)
    page.screenshot(path=str(folder / name), full_page=True)


def _clear_upload(page, prefix: str) -> None:
    clear = page.locator(f"#{prefix}-upload").get_by_label("Clear")
    if clear.count():
        clear.click()


def test_generate_an_image_from_a_prompt(page, tmp_path):
    assert "text → image, caption an image" in page.locator("#header").inner_text()
    assert "class → image is not available: this checkpoint never trained" in page.locator("#refused").inner_text()
    assert page.get_by_role("tab", name="class → image").count() == 0
    page.fill("#steps input[type=number]", "200")  # long enough to watch the progress bar
    page.press("#steps input[type=number]", "Enter")
    page.fill("#t2i-prompt textarea", "a large red circle on the left")
    page.click("#t2i-run")
    gallery = page.locator("#t2i-gallery")
    gallery.get_by_text(re.compile(r"\d+/200 steps")).first.wait_for()  # progress while sampling
    images = gallery.locator("img")
    images.nth(3).wait_for()
    widths = images.evaluate_all("imgs => imgs.map(im => im.complete ? im.naturalWidth : 0)")
    assert len(widths) == 4 and all(w == 192 for w in widths), widths  # 16 px images shown 12x
    _screenshot(page, tmp_path, "text-to-image.png")


def test_caption_an_uploaded_png(page, tmp_path):
    scene = tmp_path / "red-circle.png"
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse((6, 20, 30, 44), fill=(230, 20, 20))
    image.save(scene)
    page.get_by_role("tab", name="caption an image").click()
    _clear_upload(page, "caption")
    page.set_input_files("#caption-upload input[type=file]", str(scene))
    page.locator("#caption-upload").get_by_text("red-circle").wait_for()  # uploaded
    page.click("#caption-run")
    box = page.locator("#caption-text textarea")
    page.wait_for_function("el => el.value.trim().length > 0", arg=box.element_handle())
    caption = box.input_value()
    assert caption.strip() and "Error" not in caption
    seen = page.locator("#caption-seen img")
    seen.wait_for()
    assert seen.evaluate("im => im.complete ? im.naturalWidth : 0") == 192
    _screenshot(page, tmp_path, "screenshot.png")


def test_a_file_that_is_not_an_image_or_too_large_gets_a_message(page, server, tmp_path):
    page.get_by_role("tab", name="caption an image").click()
    notes = tmp_path / "notes.png"
    notes.write_text("a shopping list, not a picture")
    _clear_upload(page, "caption")
    page.set_input_files("#caption-upload input[type=file]", str(notes))
    page.locator("#caption-upload").get_by_text("notes").wait_for()
    page.click("#caption-run")
    page.get_by_text("notes.png is not an image (PNG, JPEG").wait_for()
    big = tmp_path / "big.png"
    Image.frombytes("RGB", (256, 256), os.urandom(256 * 256 * 3)).save(big)  # noise: ~190 kB
    assert big.stat().st_size > UPLOAD_LIMIT_MB * 2**20
    _clear_upload(page, "caption")
    page.set_input_files("#caption-upload input[type=file]", str(big))
    page.get_by_text(re.compile(r"exceed the maximum allowed size.*big\.png")).wait_for()
    _screenshot(page, tmp_path, "bad-upload.png")
    assert "Traceback" not in page.inner_text("body")
    assert "Traceback" not in server[1].read_text()  # refused inputs are messages in the server's log too

