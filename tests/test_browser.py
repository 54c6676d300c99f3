"""End to end in a real headless Chromium (Debian's package) driven by Playwright.

Skipped when no Chromium binary or no playwright package is present. Screenshots go to
$SLOWFAST_SCREENSHOTS (default: the test's temporary folder); the README's come from here,
with SLOWFAST_TEST_MODEL=embedded (the default is the tiny random checkpoint). The player's
figures (every step drawn, scrubbing time, no server event while scrubbing) are printed with
``-s`` and asserted with room for a loaded machine.
"""
import os
import shutil
import socket
import statistics
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MODEL = os.environ.get("SLOWFAST_TEST_MODEL")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_dir):
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import app

    demo = app.build_app(MODEL or str(tiny_dir))
    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


STATUS = "#player .sfp-status"
STATUS_HAS = f"(w) => (document.querySelector('{STATUS}') || {{}}).innerText?.includes(w)"
# every step the player puts on screen, with the time (its heading says "step k of n")
RECORD_STEPS = """() => { window.__seen = []; if (window.__watching) return; window.__watching = true;
  const h = document.querySelector('#player .sfp-explain-head');
  new MutationObserver(() => { const m = h.textContent.match(/step (\\d+) of/);
    if (m) window.__seen.push([+m[1], performance.now()]); }).observe(h, {childList: true, characterData: true,
    subtree: true}); }"""
# the time from an event to the page showing it: synchronous drawing, then two frames (painted)
TIMED = """async ([selector, how, value]) => { const t0 = performance.now(); const e = document.querySelector(selector);
  if (how === 'click') e.click(); else { e.value = value; e.dispatchEvent(new Event('input', {bubbles: true})); }
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const shown = +document.querySelector('#player .sfp-slider').value;
  const decoded = document.querySelectorAll('#player .sfp-slots .sf-cell:not(.sf-masked)').length;
  return [performance.now() - t0, shown, [SlowFastPlayer.players[0].slots[0].marked, decoded]]; }"""


def open_page(browser, server, width=1400, height=900):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(server, wait_until="domcontentloaded")
    page.locator("#run").wait_for(timeout=60_000)
    page.locator("#player .sfp-status").wait_for(timeout=60_000)
    return page


def run_visible_and_tokens_whole(page) -> None:
    """The Run button is on screen without scrolling, and no canvas cell cuts its text."""
    box = page.locator("#run").bounding_box()
    assert box is not None and box["y"] + box["height"] <= page.viewport_size["height"], box
    clipped = page.evaluate(
        "() => [...document.querySelectorAll('#player .sf-cell')].filter(c => c.scrollWidth > c.clientWidth + 1)"
        ".map(c => c.textContent)")
    assert clipped == [], clipped


def session_trace(prompt: str):
    import app

    runs = [st["trace"] for st, _ in list(app.SESSIONS._states.values())
            if "trace" in st and st["trace"].prompt == prompt]
    assert len(runs) == 1, [t.prompt for t in runs]  # this browser's run, kept by the server
    return runs[0]


def test_run_slowfast_in_the_browser(server, tmp_path):
    shots = Path(os.environ.get("SLOWFAST_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = open_page(browser, server)
        prompt = os.environ.get("SLOWFAST_TEST_PROMPT", "Story: Ivy has three blue keys .")
        page.locator("#prompt textarea").fill(prompt)
        page.locator("#sampler").get_by_label("slowfast").check()
        page.evaluate(RECORD_STEPS)
        page.locator("#run").click()
        page.wait_for_function(STATUS_HAS, arg="finished", timeout=120_000)
        trace = session_trace(prompt)
        last = len(trace.records) - 1
        seen = page.evaluate("() => window.__seen")
        steps = [s for s, _ in seen]
        assert steps == list(range(last + 1)), steps  # every step drawn, in order, once
        ended = page.evaluate("() => SlowFastPlayer.players[0].run.endAt")
        after = seen[-1][1] - ended  # the last step drawn this long after the run's end arrived
        print(f"\nlive: {last + 1} steps drawn in order; the last {max(after, 0):.0f} ms after the end arrived")
        assert after < 3000, after
        assert page.locator("#player .sfp-text").inner_text() == trace.text
        cells = page.locator("#player .sfp-slots .sf-cell").all_inner_texts()
        assert len(cells) == trace.gen_length and "▒" not in "".join(cells)  # every position decoded
        assert page.locator("#player .sfp-heat canvas").count() == 2
        run_visible_and_tokens_whole(page)
        page.screenshot(path=str(shots / "explorer-run.png"), full_page=True)

        # Scrubbing in the browser: slider moves and ◀/▶ clicks, timed, with no request to the server
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        times = []
        decoded_by = [sum(len(r.decoded) for r in trace.records[: s + 1]) for s in range(last + 1)]
        for k in range(10):
            ms, shown, drawn = page.evaluate(TIMED, ["#player .sfp-slider", "input", (k * 7) % (last + 1)])
            assert shown == (k * 7) % (last + 1) and drawn == [shown, decoded_by[shown]]  # marker and canvas
            times.append(ms)
        for k in range(10):
            button = "#player .sfp-prev" if k % 2 else "#player .sfp-next"
            before = int(page.locator("#player .sfp-slider").input_value())
            ms, shown, drawn = page.evaluate(TIMED, [button, "click", None])
            assert shown == min(max(before + (-1 if k % 2 else 1), 0), last) and drawn == [shown, decoded_by[shown]]
            times.append(ms)
        page.wait_for_timeout(300)
        print(f"scrubbing: median {statistics.median(times):.1f} ms, max {max(times):.1f} ms over 20 jumps; "
              f"{len(requests)} requests")
        assert requests == [] and statistics.median(times) < 250, (requests, times)
        status = page.locator(STATUS).inner_text()
        assert "replaying step" in status or "finished" in status

        # Play at a chosen speed shows every step; Pause stops it at once
        page.locator("#player .sfp-speed").select_option("60")
        page.evaluate("() => { const s = document.querySelector('#player .sfp-slider'); s.value = 0;"
                      " s.dispatchEvent(new Event('input')); }")
        page.evaluate(RECORD_STEPS)
        page.locator("#player .sfp-play").click()
        page.wait_for_function(STATUS_HAS, arg="finished", timeout=60_000)
        played = [s for s, _ in page.evaluate("() => window.__seen")]
        assert played == list(range(1, last + 1)), played
        page.locator("#player .sfp-speed").select_option("5")
        page.locator("#player .sfp-play").click()  # from the start again
        page.wait_for_timeout(500)
        page.locator("#player .sfp-play").click()  # pause
        paused = int(page.locator("#player .sfp-slider").input_value())
        page.wait_for_timeout(700)
        assert int(page.locator("#player .sfp-slider").input_value()) == paused < last

        for tab, name in (("Stages", "stages"), ("Convergence", "convergence")):
            page.locator("#player .sfp-tab", has_text=tab).click()
            page.locator(f"#player .sfp-panel-{name} .main-svg").first.wait_for(timeout=30_000)
        page.locator("#player .sfp-panels").screenshot(path=str(shots / "explorer-stages.png"))
        page.locator("#player .sfp-tab", has_text="Certainty").click()

        # Compare: the runs side by side, each heatmap as tall as its forwards
        page.get_by_role("tab", name="Compare").click()
        page.locator("#compare").click()
        page.wait_for_function("() => document.querySelector('#compare-table') && "
                               "document.querySelector('#compare-table').innerText.includes('slowfast + cache')",
                               timeout=120_000)
        table = page.locator("#compare-table").inner_text()
        assert "1.00x" in table
        page.wait_for_function("() => SlowFastPlayer.players[1].runs.length === 3 && "
                               "SlowFastPlayer.players[1].runs.every(r => r.end)", timeout=30_000)
        heights = page.evaluate("() => [...document.querySelectorAll('#compare-player .sfp-heat')]"
                                ".map(h => h.getBoundingClientRect().height)")
        forwards = page.evaluate("() => SlowFastPlayer.players[1].runs.map(r => r.steps.length)")
        assert len(heights) == 3 and all(h > 0 for h in heights)
        per = [h / n for h, n in zip(heights, forwards)]  # one height per forward for every run
        assert max(per) - min(per) < 1.5, (heights, forwards)
        page.locator("#compare-table").scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "explorer-compare.png"), full_page=False)

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
        page.locator("#tune-table").screenshot(path=str(shots / "explorer-tune.png"))

        # Replay in a fresh page: prompt, controls and the run come back, no model needed
        trace_path = tmp_path / "trace.json"
        trace.save(trace_path)
        fresh = open_page(browser, server, 1024, 768)
        run_visible_and_tokens_whole(fresh)
        fresh.locator("#prompt textarea").fill("something else")
        fresh.get_by_role("tab", name="Export / replay").click()
        fresh.locator("#upload input[type=file]").set_input_files(str(trace_path))
        fresh.wait_for_function("() => document.querySelector('#message').innerText.includes('Replaying')",
                                timeout=60_000)
        assert fresh.locator("#prompt textarea").input_value() == trace.prompt
        assert fresh.locator("#sampler input[value=slowfast]").is_checked()
        fresh.get_by_role("tab", name="Run").click()
        fresh.wait_for_function(f"() => (document.querySelector('{STATUS}') || {{}}).innerText.startsWith('finished')",
                                timeout=30_000)
        fresh.evaluate("() => window.scrollTo(0, 0)")
        run_visible_and_tokens_whole(fresh)
        fresh.screenshot(path=str(shots / "explorer-1024.png"))

        phone = open_page(browser, server, 414, 896)
        phone.locator("#run").click()
        phone.wait_for_function(STATUS_HAS, arg="finished", timeout=120_000)
        phone.locator("#player").screenshot(path=str(shots / "explorer-phone.png"))
        browser.close()
    assert (shots / "explorer-run.png").stat().st_size > 10_000


def test_stop_in_the_browser_pauses_at_once_and_leaves_run_enabled(server):
    """Stop while a long run decodes or plays: the player stays on the step it shows (at once,
    in the browser), the message says what stopped, Run is enabled, and the run can be walked."""
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = open_page(browser, server)
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
            box = page.locator(f"input[type=number][aria-label='number input for {label}']")
            box.fill("192")
            box.press("Enter")
        page.wait_for_function("() => document.querySelector('#check').innerText.includes('valid')", timeout=30_000)
        page.locator("#run").click()
        page.wait_for_function("() => +document.querySelector('#player .sfp-slider').value >= 2", timeout=60_000)
        page.locator("#player .sfp-speed").select_option("2")
        page.locator("#player .sfp-play").click()  # a slow playback (or the live run): Stop lands in it
        page.locator("#stop").click(timeout=60_000)
        at_stop = int(page.locator("#player .sfp-slider").input_value())
        page.wait_for_function("() => document.querySelector('#message').innerText.startsWith('Stopped')",
                               timeout=60_000)
        page.wait_for_function("() => !document.querySelector('#run').disabled", timeout=30_000)
        shown = int(page.locator("#player .sfp-slider").input_value())
        page.wait_for_timeout(800)  # paused: nothing moves any more
        assert int(page.locator("#player .sfp-slider").input_value()) == shown
        # at most a step or two (2 steps a second) between reading the slider and the click landing
        assert 0 <= shown - at_stop <= 2 and "Error" not in page.locator("body").inner_text()
        last = int(page.locator("#player .sfp-slider").get_attribute("max"))
        assert shown < last or last < 191
        page.locator("#player .sfp-prev").click()  # the stopped run can be walked through
        assert int(page.locator("#player .sfp-slider").input_value()) == max(shown - 1, 0)
        browser.close()
