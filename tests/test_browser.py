"""End to end in a real headless Chromium (Debian's package) driven by Playwright.

Skipped when no Chromium binary or no playwright package is present. Screenshots go to
$SLOWFAST_SCREENSHOTS (default: the test's temporary folder); the README's come from here.
"""
import os
import shutil
import socket
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_dir):
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import app

    model = os.environ.get("SLOWFAST_TEST_MODEL", str(tiny_dir))
    demo = app.build_app(model)
    port = free_port()
    demo.queue(default_concurrency_limit=1).launch(server_name="127.0.0.1", server_port=port,
                                                   prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_run_slowfast_in_the_browser(server, tmp_path):
    shots = Path(os.environ.get("SLOWFAST_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server, wait_until="domcontentloaded")
        page.locator("#run").wait_for(timeout=60_000)
        page.locator("#prompt textarea").fill(os.environ.get("SLOWFAST_TEST_PROMPT", "Story: Mia has three gold pens ."))
        page.locator("#sampler").get_by_label("slowfast").check()
        page.locator("#run").click()
        page.wait_for_function(
            "() => document.querySelector('#status') && document.querySelector('#status').innerText.includes('finished')",
            timeout=120_000)
        text = page.locator("#text textarea").input_value()
        assert text.strip() or page.locator("#canvas").inner_text().strip()
        page.locator("#heatmap .js-plotly-plot").wait_for(timeout=30_000)
        assert page.locator("#heatmap .js-plotly-plot .heatmaplayer, #heatmap .js-plotly-plot .hm").count() >= 1
        page.screenshot(path=str(shots / "explorer-run.png"), full_page=True)
        page.get_by_role("tab", name="Stages").click()
        page.locator("#stages .js-plotly-plot").wait_for(timeout=30_000)
        assert page.locator("#stages .js-plotly-plot .main-svg").count() >= 1
        page.locator("#stages").screenshot(path=str(shots / "explorer-stages.png"))
        browser.close()
    assert (shots / "explorer-run.png").stat().st_size > 10_000
