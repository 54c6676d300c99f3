"""The figures drawn by Plotly.js in a real headless Chromium, on a 414 px phone and a 1366 px
laptop: no title runs under the toolbar (modebar) or off the figure, and no two labels (title,
toolbar, legend, annotations, axis titles, colour-bar labels) overlap.

Skipped without Debian's Chromium or the playwright package (as tests/test_browser.py).
"""
import dataclasses
import json
import shutil

import pytest

import visuals
from slowfast.session import Controls, run_to_end

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium)")

# every label Plotly drew, as [kind, [left, top, right, bottom], text]
BOXES = r"""(fig) => {
  const div = document.getElementById('f');
  Plotly.purge(div);
  return Plotly.newPlot(div, fig.data, fig.layout, {displayModeBar: true, displaylogo: false}).then(() => {
    const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
    const items = [], all = s => [...div.querySelectorAll(s)];
    all('.gtitle').forEach(e => items.push(['title', box(e), e.textContent]));
    all('.modebar').forEach(e => items.push(['toolbar', box(e), '']));
    all('.legend .bg').forEach(e => items.push(['legend', box(e), '']));
    all('.annotation').forEach(e => items.push(['annotation', box(e), e.textContent]));
    all('[class^="g-x"][class$="title"], [class^="g-y"][class$="title"]').forEach(e => {
      if (e.textContent) items.push(['axis title', box(e), e.textContent]); });
    all('.colorbar text').forEach(e => { if (e.textContent) items.push(['colour bar', box(e), e.textContent]); });
    return {items, width: div.getBoundingClientRect().width};
  });
}"""


def problems(items, width) -> list[str]:
    out = []
    for i, (kind, (left, top, right, bottom), text) in enumerate(items):
        if right - left <= 0:
            continue
        if left < -1 or right > width + 1:
            out.append(f"{kind} {text[:50]!r} runs off the figure ({left:.0f}..{right:.0f} of {width:.0f} px)")
        for other, (l2, t2, r2, b2), text2 in items[i + 1:]:
            w, h = min(right, r2) - max(left, l2), min(bottom, b2) - max(top, t2)
            if w > 1 and h > 1:
                out.append(f"{kind} {text[:40]!r} overlaps {other} {text2[:40]!r} ({w:.0f} x {h:.0f} px)")
    return out


@pytest.fixture(scope="module")
def runs(tiny_model):
    out = {}
    for name, kw in {"baseline": dict(sampler="baseline", steps=32),
                     "threshold": dict(sampler="threshold", threshold=0.97),  # a label next to the bar's "1"
                     "slowfast + cache": dict(sampler="slowfast", cache=True, horizon_threshold=0.86)}.items():
        c = Controls(**{**dataclasses.asdict(Controls()), "chat": False, "gen_length": 32, "block_length": 16, **kw})
        out[name] = run_to_end(tiny_model, "Copy: a b c. A:", c.settings())
    return out


def test_no_label_overlaps_another_on_a_phone_or_a_laptop(runs, tmp_path):
    from visuals.player import plotly_path

    figs = {f"{name} of {run}": fn(trace) for run, trace in runs.items() for name, fn in visuals.ALL_FIGURES.items()}
    figs["compare"] = visuals.compare_heatmaps(list(runs.values()), list(runs))
    figs["pareto"] = visuals.pareto_figure([
        dict(sampler=s, cache=c, accuracy=a, nfe=n, label=s, settings={})
        for s, c, a, n in (("baseline", None, 0.9, 32), ("slowfast", None, 0.8, 12), ("slowfast", {"kp": 5}, 0.7, 10),
                           ("threshold", None, 0.85, 6))])
    page_file = tmp_path / "figures.html"
    page_file.write_text(f"<html><head><script src='file://{plotly_path()}'></script></head>"
                         "<body style='margin:0'><div id='f'></div></body></html>")
    found = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            for width in (414, 1366):
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.goto(page_file.as_uri())
                for name, fig in figs.items():
                    drawn = page.evaluate(BOXES, json.loads(fig.to_json()))
                    assert any(kind == "toolbar" for kind, _, _ in drawn["items"]), name
                    found += [f"{name} at {width} px: {p}" for p in problems(drawn["items"], drawn["width"])]
                page.close()
        finally:
            browser.close()
    assert not found, "\n".join(found)
