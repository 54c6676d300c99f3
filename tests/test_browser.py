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
    import explorer.run

    model = os.environ.get("SLOWFAST_TEST_MODEL", str(tiny_dir))
    demo = app.build_app(model)
    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


STATUS_HAS = "(w) => document.querySelector('#status') && document.querySelector('#status').innerText.includes(w)"


def run_visible_and_tokens_whole(page) -> None:
    """The Run button is on screen without scrolling, and no canvas cell cuts its text."""
    box = page.locator("#run").bounding_box()
    assert box is not None and box["y"] + box["height"] <= page.viewport_size["height"], box
    clipped = page.evaluate(
        "() => [...document.querySelectorAll('#canvas .sf-cell')].filter(c => c.scrollWidth > c.clientWidth + 1)"
        ".map(c => c.textContent)")
    assert clipped == [], clipped


def test_run_slowfast_in_the_browser(server, tmp_path):
    shots = Path(os.environ.get("SLOWFAST_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(server, wait_until="domcontentloaded")
        page.locator("#run").wait_for(timeout=60_000)
        page.locator("#prompt textarea").fill(os.environ.get("SLOWFAST_TEST_PROMPT", "Story: Ivy has three blue keys ."))
        page.locator("#sampler").get_by_label("slowfast").check()
        seen = page.evaluate_handle("() => { const s = new Set(); const o = new MutationObserver(() => {"
                                    " const m = (document.querySelector('#explain') || {}).innerText || '';"
                                    " const k = m.match(/step (\\d+) of/); if (k) s.add(+k[1]); });"
                                    " o.observe(document.body, {subtree: true, childList: true, characterData: true});"
                                    " return s; }")
        page.locator("#run").click()
        page.wait_for_function(STATUS_HAS, arg="finished", timeout=120_000)
        steps = page.evaluate("(s) => [...s].sort((a, b) => a - b)", seen)
        last = int(page.locator("#scrubber input[type=number]").input_value())
        assert steps == list(range(last + 1)), steps  # every step was on screen, in the live view
        text = page.locator("#text textarea").input_value()
        import app as app_module
        prompt = page.locator("#prompt textarea").input_value()
        runs = [st["trace"] for st, _ in list(app_module.SESSIONS._states.values())
                if "trace" in st and st["trace"].prompt == prompt]
        assert len(runs) == 1, [t.prompt for t in runs]  # this browser's run, kept by the server
        assert runs[0].summary["finished"] and text.strip() and text == runs[0].text
        cells = page.locator("#canvas .sf-cell").all_inner_texts()  # the canvas's tokens, not its legend
        assert len(cells) == runs[0].gen_length and "▒" not in "".join(cells)  # every position decoded
        page.locator("#heatmap .js-plotly-plot").wait_for(timeout=30_000)
        assert page.locator("#heatmap .js-plotly-plot .heatmaplayer, #heatmap .js-plotly-plot .hm").count() >= 1
        run_visible_and_tokens_whole(page)
        page.screenshot(path=str(shots / "explorer-run.png"), full_page=True)
        page.get_by_role("tab", name="Stages").click()
        page.locator("#stages .js-plotly-plot").wait_for(timeout=30_000)
        assert page.locator("#stages .js-plotly-plot .main-svg").count() >= 1
        page.locator("#stages").screenshot(path=str(shots / "explorer-stages.png"))

        # Step back, then Play to the end
        page.locator("#prev").click()
        page.wait_for_function(STATUS_HAS, arg=f"replaying step {last - 1}", timeout=30_000)
        page.locator("#play").click()
        page.wait_for_function(STATUS_HAS, arg="finished", timeout=60_000)

        # Compare: speedups by NFE, exact
        page.get_by_role("tab", name="Compare").click()
        page.locator("#compare").click()
        page.wait_for_function("() => document.querySelector('#compare-table') && "
                               "document.querySelector('#compare-table').innerText.includes('slowfast + cache')",
                               timeout=120_000)
        table = page.locator("#compare-table").inner_text()
        assert "speedup by NFE" in table and "1.00x" in table
        page.locator("#compare-table").screenshot(path=str(shots / "explorer-compare.png"))

        # Tune: a small sweep, then a clicked row of its front loads that setting's controls
        page.get_by_role("tab", name="Tune").click()
        page.locator("#tune-count input[type=number]").fill("2")
        page.locator("#tune-count input[type=number]").press("Enter")
        page.locator("#tune-points input[type=number]").fill("2")
        page.locator("#tune-points input[type=number]").press("Enter")
        page.locator("#tune").click()
        page.wait_for_function("() => /(\\d+) of \\1 settings scored/.test("
                               "(document.querySelector('#tune-msg') || {}).innerText || '')", timeout=180_000)
        rows = page.locator("#tune-table [role=row]:has([role=gridcell])")  # Gradio's grid: data rows
        labels = [rows.nth(i).locator("[role=gridcell]").last.inner_text().strip() for i in range(rows.count())]
        assert labels, "the sweep's front has no rows"
        pick = next((i for i, label in enumerate(labels) if label.startswith("slowfast")), 0)
        rows.nth(pick).locator("[role=gridcell]").last.click()
        page.wait_for_function("() => document.querySelector('#tune-msg').innerText.includes('Loaded')",
                               timeout=30_000)
        sampler = labels[pick].split(" ")[0].rstrip(",")
        assert page.locator(f"#sampler input[value={sampler}]").is_checked(), labels[pick]
        if sampler == "slowfast":  # the row's exploration steps are now the slider's
            steps = labels[pick].split("exploration_steps=")[1].split(" ")[0]
            assert page.locator("#exploration-steps input[type=number]").input_value() == steps
        page.locator("#tune-table").screenshot(path=str(shots / "explorer-tune.png"))

        # Export, then replay in a fresh page: prompt and controls come back
        trace_path = tmp_path / "trace.json"
        import app as app_module
        session_trace = next(st["trace"] for st, _ in app_module.SESSIONS._states.values() if "trace" in st)
        session_trace.save(trace_path)
        fresh = browser.new_page(viewport={"width": 1024, "height": 768})
        fresh.goto(server, wait_until="domcontentloaded")
        fresh.locator("#run").wait_for(timeout=60_000)
        run_visible_and_tokens_whole(fresh)
        fresh.locator("#prompt textarea").fill("something else")
        fresh.get_by_role("tab", name="Export / replay").click()
        fresh.locator("#upload input[type=file]").set_input_files(str(trace_path))
        fresh.wait_for_function("() => document.querySelector('#message').innerText.includes('Replaying')",
                                timeout=60_000)
        assert fresh.locator("#prompt textarea").input_value() == session_trace.prompt
        assert fresh.locator("#sampler input[value=slowfast]").is_checked()
        fresh.locator("#heatmap .js-plotly-plot").wait_for(timeout=30_000)
        fresh.evaluate("() => window.scrollTo(0, 0)")
        run_visible_and_tokens_whole(fresh)
        fresh.screenshot(path=str(shots / "explorer-1024.png"))
        browser.close()
    assert (shots / "explorer-run.png").stat().st_size > 10_000


def set_number(page, label: str, value) -> None:
    box = page.locator(f"input[type=number][aria-label='number input for {label}']")
    box.fill(str(value))
    box.press("Enter")


def test_stop_in_the_browser_leaves_the_run_on_screen_and_run_enabled(server, monkeypatch):
    """Stop while a run plays back (a small model decodes its 192 steps long before the page has
    shown them, one frame at least every FRAME_SECONDS): Gradio cancels the stream, and the page's next event draws the
    run where it was (before, late frames left Run disabled and the views showing "Error")."""
    import app
    import explorer.run

    monkeypatch.setattr(explorer.run, "FRAME_SECONDS", 0.2)  # a 38 s playback: Stop lands in it on a busy machine too
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(server, wait_until="domcontentloaded")
        page.locator("#run").wait_for(timeout=60_000)
        page.locator("#sampler").get_by_label("baseline").check()
        lengths = page.locator("input[type=number][aria-label='number input for Generation length']")
        for _ in range(5):  # open the accordion with the lengths (a click before the page is ready is lost)
            page.get_by_text("Generation", exact=True).click()
            try:
                lengths.wait_for(state="visible", timeout=5_000)
                break
            except playwright.Error:
                pass
        for label in ("Generation length", "Block length", "Steps (baseline)"):
            set_number(page, label, 192)
        page.wait_for_function("() => document.querySelector('#check').innerText.includes('valid')", timeout=30_000)
        page.locator("#run").click()
        page.wait_for_function("() => /running|playing back/.test((document.querySelector('#status') || {}).innerText)",
                               timeout=60_000)
        page.locator("#stop").click(timeout=60_000)
        page.wait_for_function("() => document.querySelector('#message').innerText.startsWith('Stopped')",
                               timeout=60_000)
        page.wait_for_function("() => !document.querySelector('#run').disabled", timeout=30_000)
        status = page.locator("#status").inner_text()
        assert "replaying step" in status or "stopped" in status, status
        assert "Error" not in page.locator("body").inner_text()
        shown = int(page.locator("#scrubber input[type=number]").input_value())
        assert f"step {shown} " in status and shown < 191
        page.locator("#next").click()  # the stopped run can be walked through
        page.wait_for_function(STATUS_HAS, arg=f"step {shown + 1} ", timeout=30_000)
        browser.close()
