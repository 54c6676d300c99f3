"""visuals/: each figure holds the trace's data, as of the requested step.

Synthetic traces are built from StepRecords by hand (no model), so every expected value is
known; one test draws every figure of a real run of the tiny checkpoint.
"""
import math

import numpy as np
import plotly.graph_objects as go
import pytest

import visuals
from slowfast.trace import StepRecord, Trace
from visuals.view import MASK_GLYPH, STAGE_COLORS

G, MASK = 8, 99
SF_PARAMS = dict(variant="reference", exploration_steps=3, horizon_threshold=0.3, stability_window=2,
                 std_threshold=1.0, high_confidence_threshold=0.9, max_cycles=256)
# step, stage, span, horizons, spread, decoded, info
SF_STEPS = [
    (0, "slow", (0, 4), [4], 0.0, [0], dict(cycle=1, estimate=4, frozen=False)),
    (1, "slow", (0, 4), [4, 4], 0.0, [2], dict(cycle=1, estimate=4, frozen=True)),
    (2, "fast", (0, 4), None, None, [1, 3], dict(cycle=1)),
    (3, "slow", (4, 8), [8], 0.0, [4], dict(cycle=2, estimate=8, frozen=False)),
    (4, "slow", (4, 6), [8, 6], 1.0, [5], dict(cycle=2, estimate=6, frozen=False)),
    (5, "slow", (4, 7), [6, 7], 1.5, [6], dict(cycle=2, estimate=7, frozen=True)),  # forced by the cap
    (6, "fast", (4, 7), None, None, [7], dict(cycle=2)),
]
STARTS = [s[2][0] for s in SF_STEPS]
ENDS = [s[2][1] for s in SF_STEPS]
TOKENS = [10, 11, 12, 13, 14, 15, 16, 17]
STRINGS = {"10": "a", "11": "b", "12": " c", "13": "<|eot_id|>", "14": "e", "15": "f", "16": "g", "17": "h",
           str(MASK): "<|mdm_mask|>", "20": "x"}


def conf_at(step: int) -> np.ndarray:
    return ((step * G + np.arange(G)) / 64.0).astype(np.float16)


def record(step, stage, span, horizons, spread, decoded, info, argmax=None, cache=None, block=0, fed_end=G):
    return StepRecord(step=step, stage=stage, block=block, span=span, horizons=horizons, horizon_spread=spread,
                      confidence=conf_at(step), argmax=np.asarray(TOKENS if argmax is None else argmax, np.int32),
                      decoded=list(decoded), fed_end=fed_end, tokens_fed=10 + fed_end, ms=2.0 * (step + 1),
                      nfe=step + 1, forwards=step + 1, info=dict(info), flops=1000.0 * (step + 1), cache=cache)


def make_trace(records, sampler="slowfast", params=None, cache=None, summary=None, tokens=None, text="abc"):
    settings = dict(sampler=sampler, gen_length=G, block_length=G, steps=G, params=dict(params or SF_PARAMS),
                    cache=cache)
    return Trace(settings=settings, model="synthetic", prompt="p", prompt_ids=[1, 2], mask_id=MASK,
                 records=records, tokens=list(TOKENS if tokens is None else tokens), text=text,
                 summary=dict(summary or {}), token_strings=dict(STRINGS))


@pytest.fixture
def sf():
    return make_trace([record(*s) for s in SF_STEPS],
                      summary=dict(nfe=7, forwards=7, tokens_fed=126, seconds=0.5, tokens_per_second=16.0,
                                   finished=True))


def by_name(fig, name):
    found = [t for t in fig.data if t.name == name]
    assert len(found) == 1, f"{name}: {[t.name for t in fig.data]}"
    return found[0]


def decoded_before(step):
    return {p for s in SF_STEPS[:step] for p in s[5]}


# --- certainty heatmap --------------------------------------------------------------------------------------
def test_heatmap_is_confidence_at_masked_positions_blank_once_decoded(sf):
    fig = visuals.certainty_heatmap(sf)
    z = np.asarray(by_name(fig, "confidence").z, dtype=float)
    assert z.shape == (len(SF_STEPS), G)
    for i in range(len(SF_STEPS)):
        gone = decoded_before(i)
        assert {int(p) for p in np.flatnonzero(np.isnan(z[i]))} == gone
        keep = [p for p in range(G) if p not in gone]
        np.testing.assert_allclose(z[i, keep], conf_at(i)[keep].astype(float))


def test_heatmap_marks_the_decodes_and_draws_span_staircases(sf):
    fig = visuals.certainty_heatmap(sf)
    marks = by_name(fig, "decoded")
    assert sorted(zip(marks.y, marks.x)) == sorted((s[0], p) for s in SF_STEPS for p in s[5])
    start, end = by_name(fig, "span start"), by_name(fig, "span end")
    # two points per step: the step's row from y - 0.5 to y + 0.5, at the cell edge (position - 0.5)
    np.testing.assert_array_equal(np.asarray(start.x)[::2] + 0.5, STARTS)
    np.testing.assert_array_equal(np.asarray(end.x)[::2] + 0.5, ENDS)
    np.testing.assert_array_equal(np.asarray(start.y)[::2], np.arange(len(SF_STEPS)) - 0.5)
    strip = by_name(fig, "stage")
    assert [row[0] for row in strip.hovertext] == [s[1] for s in SF_STEPS]


def test_heatmap_colour_scale_breaks_at_the_sampler_thresholds(sf):
    heat = by_name(visuals.certainty_heatmap(sf), "confidence")
    stops = [s[0] for s in heat.colorscale]
    assert stops.count(0.3) == 2 and stops.count(0.9) == 2  # a hard break at each threshold
    assert "horizon 0.3" in heat.colorbar.ticktext and "high 0.9" in heat.colorbar.ticktext
    th = make_trace([record(*SF_STEPS[0][:6], {})], sampler="threshold", params=dict(threshold=0.8))
    heat = by_name(visuals.certainty_heatmap(th), "confidence")
    assert [s[0] for s in heat.colorscale].count(0.8) == 2 and "threshold 0.8" in heat.colorbar.ticktext


def test_step_cuts_every_figure_as_of_that_step(sf):
    fig = visuals.certainty_heatmap(sf, step=2)
    z = np.asarray(by_name(fig, "confidence").z, dtype=float)
    assert z.shape == (3, G)
    assert sorted(by_name(fig, "decoded").x) == [0, 1, 2, 3]
    assert list(fig.layout.yaxis.range) == [len(SF_STEPS) - 0.5, -0.5]  # the axis stays put while scrubbing
    assert list(by_name(visuals.speed(sf, step=2), "tokens decoded").y) == [1, 1, 2]
    assert list(by_name(visuals.stage_timeline(sf, step=2), "fast").x) == [2]
    # a step past the end or negative is clamped / counted from the end, like the scrubber would
    assert np.asarray(by_name(visuals.certainty_heatmap(sf, step=99), "confidence").z).shape == (7, G)
    assert np.asarray(by_name(visuals.certainty_heatmap(sf, step=-1), "confidence").z).shape == (7, G)


# --- stage timeline -----------------------------------------------------------------------------------------
def test_stage_timeline_bands_spans_and_blocks(sf):
    fig = visuals.stage_timeline(sf)
    slow, fast = by_name(fig, "slow"), by_name(fig, "fast")
    assert list(slow.x) == [0, 1, 3, 4, 5] and list(fast.x) == [2, 6]
    assert slow.marker.color == STAGE_COLORS["slow"] and fast.marker.color == STAGE_COLORS["fast"]
    assert set(slow.y) == {G} and set(slow.base if np.ndim(slow.base) else [slow.base]) == {0}
    np.testing.assert_array_equal(np.asarray(by_name(fig, "span start").y)[::2], STARTS)
    np.testing.assert_array_equal(np.asarray(by_name(fig, "span end").y)[::2], ENDS)
    np.testing.assert_array_equal(by_name(fig, "this forward's horizon estimate").y, [4, 4, np.nan, 8, 6, 7, np.nan])
    assert "fed up to" not in [t.name for t in fig.data]  # every forward was full
    truncated = make_trace(sf.records[:2] + [record(2, "fast", (0, 4), None, None, [1], {}, fed_end=4)])
    np.testing.assert_array_equal(np.asarray(by_name(visuals.stage_timeline(truncated), "fed up to").y)[::2], [8, 8, 4])
    # two blocks of 4: a boundary line at position 4 and at the step where the block changes
    two = make_trace([record(0, "slow", (0, 4), [4], 0.0, [0, 1, 2, 3], {}, block=0),
                      record(1, "slow", (4, 8), [8], 0.0, [4, 5, 6, 7], {}, block=1)])
    two.settings["block_length"] = 4
    shapes = visuals.stage_timeline(two).layout.shapes
    assert any(s.y0 == 4 and s.y1 == 4 for s in shapes) and any(s.x0 == 0.5 and s.x1 == 0.5 for s in shapes)


# --- convergence --------------------------------------------------------------------------------------------
def test_convergence_shows_horizons_spread_threshold_and_freezes(sf):
    fig = visuals.convergence(sf)
    h = by_name(fig, "the window's horizon estimates")
    assert list(zip(h.x, h.y)) == [(s[0], v) for s in SF_STEPS if s[3] for v in s[3]]
    np.testing.assert_array_equal(by_name(fig, "spread (std)").y, [0, 0, np.nan, 0, 1, 1.5, np.nan])
    assert list(by_name(fig, "std threshold 1").y) == [1.0, 1.0]
    froze = by_name(fig, "span froze")
    assert list(froze.x) == [1, 5]  # the first frozen record of each cycle
    assert list(froze.y) == [4, 7]
    assert list(froze.text) == ["converged", "forced (exploration cap)"]  # spread 0 < 1, then 1.5 >= 1
    assert list(by_name(visuals.convergence(sf, step=4), "span froze").x) == [1]
    assert [t.name for t in visuals.convergence(sf, step=0).data].count("span froze") == 0
    paper = make_trace(sf.records, params=dict(SF_PARAMS, variant="paper"))
    assert "spread (variance)" in [t.name for t in visuals.convergence(paper).data]


def test_argmax_stability_counts_on_a_hand_made_example():
    argmax = [[1, 2, 3, 4], [1, 2, 5, 4], [1, 7, 5, 4]]
    recs = [record(i, "baseline", None, None, None, dec, {}, argmax=a + [0] * 4)
            for i, (a, dec) in enumerate(zip(argmax, [[0], [3], []]))]
    tr = make_trace(recs, sampler="baseline", params={})
    assert list(visuals.argmax_stability(visuals.TraceView(tr, 0))[:4]) == [1, 1, 1, 1]
    assert list(visuals.argmax_stability(visuals.TraceView(tr, 1))[:4]) == [2, 2, 1, 2]
    assert list(visuals.argmax_stability(visuals.TraceView(tr))[:4]) == [3, 1, 2, 3]
    fig = visuals.convergence(tr)
    masked = np.asarray(by_name(fig, "masked").y, dtype=float)
    np.testing.assert_array_equal(masked[:4], [np.nan, 1, 2, np.nan])  # 0 and 3 were decoded earlier
    assert list(by_name(fig, "decoded earlier").x) == [0, 3]
    fig1 = visuals.convergence(tr, step=1)
    now = np.asarray(by_name(fig1, "decoded this step").y, dtype=float)
    assert now[3] == 2 and np.isnan(now[[0, 1, 2]]).all()
    assert "the baseline sampler estimates no horizon" in fig.layout.title.text


# --- dLLM-Cache ---------------------------------------------------------------------------------------------
def cache_stats(prompt_reused, prompt_recomputed, response_reused, response_recomputed):
    return dict(prompt_reused=prompt_reused, prompt_recomputed=prompt_recomputed, response_reused=response_reused,
                response_recomputed=response_recomputed, similarity_threshold=[None] * len(response_reused))


def test_cache_hit_rates_layer_heatmap_and_flops():
    full = cache_stats([0] * 4, [5] * 4, [0] * 4, [8] * 4)
    partial = cache_stats([0, 0, 5, 5], [5, 5, 0, 0], [0, 8, 8, 8], [8, 0, 0, 0])  # 3 of 4 layers reuse
    recs = [record(i, "slow", (0, 8), [8], 0.0, [i], {}, cache=c) for i, c in enumerate([full, partial, partial])]
    tr = make_trace(recs, cache=dict(kp=5, kr=2, rho=0.25))
    fig = visuals.cache_hits(tr)
    np.testing.assert_allclose(by_name(fig, "response rows reused").y, [0.0, 0.75, 0.75])
    np.testing.assert_allclose(by_name(fig, "prompt rows reused").y, [0.0, 0.5, 0.5])
    layer = np.asarray(by_name(fig, "response hit rate").z, dtype=float)
    assert layer.shape == (4, 3)
    np.testing.assert_allclose(layer[:, 1], [0, 1, 1, 1])
    assert list(by_name(fig, "FLOPs").y) == [1000.0, 2000.0, 3000.0]
    assert "kp 5" in fig.layout.title.text
    assert np.asarray(by_name(visuals.cache_hits(tr, step=1), "response hit rate").z).shape == (4, 2)


def test_cache_off_still_shows_flops(sf):
    fig = visuals.cache_hits(sf)
    assert list(by_name(fig, "FLOPs").y) == [1000.0 * (i + 1) for i in range(len(SF_STEPS))]
    assert "cache off: every forward computes every row" in fig.layout.title.text  # in the title, not on the bars


# --- speed --------------------------------------------------------------------------------------------------
def test_speed_per_step_series_and_tokens_per_second(sf):
    fig = visuals.speed(sf)
    assert list(by_name(fig, "tokens decoded").y) == [len(s[5]) for s in SF_STEPS]
    assert list(by_name(fig, "cumulative NFE").y) == list(range(1, 8))
    assert list(by_name(fig, "tokens fed").y) == [18] * 7
    assert list(by_name(fig, "wall ms").y) == [2.0 * (i + 1) for i in range(7)]
    assert "16.0 tokens/s (run)" in fig.layout.title.text
    # a partial (still running) trace: decoded so far / the steps' time: 4 tokens in 12 ms
    partial = make_trace(sf.records[:3], summary=dict(finished=False, tokens_per_second=999.0))
    assert "333.3 tokens/s (so far)" in visuals.speed(partial).layout.title.text


# --- canvas -------------------------------------------------------------------------------------------------
def test_token_canvas_colours_texts_and_outlines(sf):
    fig = visuals.token_canvas(sf, step=2, width=4)
    heat = fig.data[0]
    z = np.asarray(heat.z, dtype=float)
    assert z.shape == (2, 4)
    np.testing.assert_array_equal(z.ravel(), [0, 2, 1, 2, -1, -1, -1, -1])  # decode step; -1 = masked
    text = np.asarray(heat.text).ravel()
    assert list(text[:4]) == ["a", "b", "␣c", "∎"]  # visible spaces; end of text as one glyph
    assert list(text[4:]) == [MASK_GLYPH] * 4
    hover = np.asarray(heat.hovertext).ravel()
    assert "decoded at step 1 (slow)" in hover[2] and f"{float(conf_at(1)[2]):.3f}" in hover[2]
    assert "&lt;|eot_id|&gt;" in hover[3] and "masked" in hover[5]
    shapes = {s.name: s for s in fig.layout.shapes}
    assert shapes["span"].path == "M-0.5,-0.5H3.5V0.5H-0.5Z"  # span [0, 4): the first row
    assert shapes["decoded this step"].path.count("M") == 2  # positions 1 and 3
    stage = np.asarray(visuals.token_canvas(sf, step=2, width=4, color_by="stage").data[0].z, dtype=float).ravel()
    assert stage[0] == stage[2] != stage[1] == stage[3]  # slow vs fast
    assert stage[4] == stage[7] and stage[4] not in stage[:4]  # masked
    wrapped = visuals.token_canvas(make_trace([record(0, "slow", (2, 7), [7], 0.0, [], {})]), width=4)
    assert wrapped.layout.shapes[0].path == "M1.5,-0.5H3.5V0.5H2.5V1.5H-0.5V0.5H1.5Z"  # [2, 7) over two rows


def test_canvas_html_escapes_and_marks_cells(sf):
    out = visuals.canvas_html(sf, step=2)
    assert out.count('class="sf-cell"') == G
    assert out.count(f">{MASK_GLYPH}</span>") == 4
    assert ">∎</span>" in out and "<|eot" not in out  # end of text as a glyph, its name escaped in the tip
    assert 'title="position 3: &lt;|eot_id|&gt;' in out
    assert out.count("outline:2px solid") == 2 + 1  # two decoded this step, plus the legend key
    assert "step 2/6 · fast · span [0, 4) · 4/8 decoded" in out



# --- text from a shared trace renders as text -----------------------------------------------------------------
EVIL_IMAGE = "![x](http://evil.example/img.png)"
EVIL_HTML = "<img src=http://evil.example/a.png onerror=alert(1)>"
EVIL_SCRIPT = "<script>alert(1)</script>"
EVIL_ATTR = '" onmouseover="alert(1)'
EVIL_LINK = "[click](javascript:alert(1))"
EVIL_TEMPLATE = "%{meta}"
EVIL = [EVIL_IMAGE, EVIL_HTML, EVIL_SCRIPT, EVIL_ATTR, EVIL_LINK, EVIL_TEMPLATE]
# what would render as markup, load a remote image, run script or fill a Plotly template
FORBIDDEN = ("<img", "<script", "](http", "](javascript", 'onmouseover="', "%{meta}")


def evil_trace():
    """Tokens, a stage, the sampler, cache settings, model, prompt and text all carry payloads."""
    ids = [30, 31, 32, 33, 34, 35, 30, 31]
    strings = {str(30 + i): text for i, text in enumerate(EVIL)} | {str(MASK): EVIL_HTML}
    stats = cache_stats([1] * 2, [1] * 2, [3] * 2, [5] * 2)
    recs = [record(0, EVIL_HTML, (0, 4), None, None, [0, 1, 2], {}, argmax=ids, cache=stats),
            record(1, EVIL_IMAGE, (0, 8), None, None, [3, 4, 5], {}, argmax=ids, cache=stats),
            record(2, "fast", (4, 8), None, None, [6], {}, argmax=ids, cache=stats)]
    tr = make_trace(recs, sampler=EVIL_SCRIPT, params={}, cache=dict(kp=EVIL_IMAGE, kr=EVIL_HTML, rho=EVIL_LINK),
                    tokens=ids, text=EVIL_IMAGE + EVIL_HTML)
    tr.token_strings = strings
    tr.model, tr.prompt = EVIL_IMAGE, EVIL_SCRIPT
    return tr


def figure_strings(obj):
    """Every string in a figure's JSON, wherever it is (titles, names, text, hover, templates)."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from figure_strings(v)
    elif isinstance(obj, (list, tuple, np.ndarray)):
        for v in obj:
            yield from figure_strings(v)


def assert_inert(text, where):
    low = text.lower()
    for bad in FORBIDDEN:
        assert bad not in low, (where, bad, text[:300])


def test_canvas_html_shows_markup_and_markdown_in_tokens_as_text():
    tr = evil_trace()
    for step in (None, 0, 1):
        for color_by in ("step", "stage"):
            out = visuals.canvas_html(tr, step, color_by=color_by)
            assert_inert(out, (step, color_by))
    out = visuals.canvas_html(tr)
    # the text is all there, as text: tooltips carry it whole, escaped
    assert 'title="position 0: !&#91;x&#93;(http://evil.example/img.png)' in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert "&quot;␣onmouseover=&quot;alert(1)" in out  # spaces shown, quotes cannot end the attribute
    assert out.count('class="sf-cell"') == G
    stage = visuals.canvas_html(tr, 1, color_by="stage")
    assert "!&#91;x&#93;(http://evil.example/img.png)" in stage  # the stage in the legend and the step label


def test_every_figure_escapes_trace_text_in_titles_names_and_hovers():
    tr = evil_trace()
    figs = {name: fn(tr, step) for name, fn in visuals.ALL_FIGURES.items() for step in (None, 0)}
    figs["compare"] = visuals.compare_heatmaps([tr, tr], [EVIL_IMAGE, EVIL_HTML])
    for name, fig in figs.items():
        for text in figure_strings(fig.to_plotly_json()):
            assert_inert(text, name)
    canvas = visuals.token_canvas(tr)
    hover = list(np.asarray(canvas.data[0].hovertext).ravel())
    assert any("&lt;img src=http://evil.example/a.png onerror=alert(1)&gt;" in h for h in hover)
    assert any("&#37;{meta}" in h for h in hover)  # shows as %{meta}, filled by nothing
    assert "&lt;img" in visuals.certainty_heatmap(tr, 0).layout.title.text  # the stage in the step label
    timeline = visuals.stage_timeline(tr)
    assert {t.name for t in timeline.data if t.type == "bar"} >= {"&lt;img src=http://evil.example/a.png "
                                                                   "onerror=alert(1)&gt;"}
    assert "&lt;script&gt;" in visuals.convergence(tr).layout.title.text  # the sampler's name
    # the exported page holds the figures' JSON; none of the payloads appears raw in it
    page = visuals.figures_html({"canvas": canvas, "timeline": timeline})
    for payload in (EVIL_IMAGE, EVIL_HTML, EVIL_SCRIPT, EVIL_LINK):
        assert payload not in page


def test_esc_leaves_plain_text_and_is_undone_by_an_html_parser():
    import html as html_lib

    assert visuals.esc("hello world") == "hello world"
    for text in EVIL + ["<|eot_id|>", "a & b", "it's"]:
        assert html_lib.unescape(visuals.esc(text)) == text  # the reader sees exactly the token
        assert_inert(visuals.esc(text), text)

# --- compare and export -------------------------------------------------------------------------------------
def test_compare_table_speedups_and_same_text(sf):
    slow = make_trace(sf.records, summary=dict(nfe=7, forwards=7, tokens_fed=126, seconds=2.0, tokens_per_second=4.0))
    fast = make_trace(sf.records[:3], summary=dict(nfe=3, forwards=6, tokens_fed=54, seconds=0.5,
                                                   tokens_per_second=16.0))
    other = make_trace(sf.records, text="different", summary=dict(seconds=1.0))
    rows = visuals.compare_table([slow, fast, other], ["baseline", "slowfast", "threshold"])
    assert [r["label"] for r in rows] == ["baseline", "slowfast", "threshold"]
    assert [r["speedup"] for r in rows] == [1.0, 4.0, 2.0]
    assert [r["same_text"] for r in rows] == [True, True, False]
    assert rows[1]["nfe"] == 3 and rows[1]["forwards"] == 6 and rows[1]["tokens_fed"] == 54
    assert rows[2]["tokens_per_second"] == G / 1.0 and rows[2]["nfe"] == 7  # filled from the records
    assert set(rows[0]) == {"label", "sampler", "nfe", "forwards", "tokens_fed", "seconds", "tokens_per_second",
                            "speedup_nfe", "speedup_tokens", "speedup", "same_text", "task", "correct", "text"}
    assert rows[0]["task"] is None and rows[0]["correct"] is None  # not a task's prompt: nothing to score
    assert [r["speedup_nfe"] for r in rows] == [1.0, 7 / 3, 1.0] and rows[1]["speedup_tokens"] == 126 / 54
    with pytest.raises(ValueError, match="labels"):
        visuals.compare_table([slow], ["a", "b"])


def test_compare_table_scores_a_task_prompt_with_its_scorer(sf):
    prompt = "Q: 7+5-3=? A:"
    right = make_trace(sf.records, text=" 7+5=12, 12-3=9. The answer is 9.", summary=dict(seconds=1.0))
    wrong = make_trace(sf.records, text=" 7+5=12, 12-3=8. The answer is 8.", summary=dict(seconds=1.0))
    story = make_trace(sf.records, text=" At the beach Mia finds two more red apples . Now Mia has four red apples .",
                       summary=dict(seconds=1.0))
    for t in (right, wrong):
        t.prompt = prompt
    story.prompt = "Story: Mia has two red apples ."
    rows = visuals.compare_table([right, wrong, story], ["a", "b", "c"])
    assert [(r["task"], r["correct"]) for r in rows] == [("arithmetic", True), ("arithmetic", False), ("story", True)]


def test_compare_heatmaps_side_by_side_on_one_position_axis(sf):
    short = make_trace(sf.records[:3])
    fig = visuals.compare_heatmaps([sf, short], ["a", "b"])
    heats = [t for t in fig.data if t.name == "confidence"]
    assert [np.asarray(h.z).shape for h in heats] == [(7, G), (3, G)]
    assert [h.xaxis for h in heats] == ["x", "x2"] and all(h.coloraxis == "coloraxis" for h in heats)
    assert fig.layout.xaxis2.matches == "x"
    assert fig.layout.xaxis.title.text == "a<br>7 steps"


def test_figures_html_inlines_plotly_once_with_a_div_per_figure(sf):
    figs = {name: fn(sf) for name, fn in visuals.ALL_FIGURES.items()}
    out = visuals.figures_html(figs)
    assert out.startswith("<!DOCTYPE html>") and out.rstrip().endswith("</html>")
    assert out.count("plotly.js v") == 1  # the bundle's header, inlined once
    assert len(out) > 1_000_000  # the bundle itself, so the file works offline
    assert out.count("Plotly.newPlot(") == len(figs)
    for name in figs:
        assert f'id="fig-{name}"' in out


# --- robustness ---------------------------------------------------------------------------------------------
def test_a_trace_without_records_gives_figures_with_a_note():
    empty = make_trace([], tokens=[MASK] * G, text="")
    for name, fn in visuals.ALL_FIGURES.items():
        for step in (None, 0, 3):
            fig = fn(empty, step)
            assert isinstance(fig, go.Figure)
            assert any("no steps" in (a.text or "") for a in fig.layout.annotations), name
    assert visuals.canvas_html(empty).count(f">{MASK_GLYPH}</span>") == G
    assert math.isnan(visuals.compare_table([empty], ["x"])[0]["speedup"])  # no time: no ratio
    both = visuals.compare_heatmaps([empty, empty], ["a", "b"])
    assert "confidence" not in [t.name for t in both.data]  # no heatmap: a placeholder per subplot
    assert [(a.text, a.xref) for a in both.layout.annotations] == [("no steps", "x domain"), ("no steps", "x2 domain")]
    assert (both.layout.xaxis.title.text, both.layout.xaxis2.title.text) == ("a<br>0 steps", "b<br>0 steps")
    assert "no runs" in visuals.compare_heatmaps([], []).layout.annotations[0].text


def test_a_partial_trace_draws_what_was_done(sf):
    partial = make_trace(sf.records[:4], tokens=[10, 11, 12, 13, 14] + [MASK] * 3,
                         summary=dict(finished=False, stopped=True))
    # the first four steps of SF_STEPS: slow, slow, fast, slow, decoding 0, 2, {1, 3}, 4
    for name, fn in visuals.ALL_FIGURES.items():
        assert "step 3/3 · slow · span [4, 8) · 5/8 decoded" in fn(partial).layout.title.text, name
    heat = visuals.certainty_heatmap(partial)
    assert np.asarray(by_name(heat, "confidence").z).shape == (4, G)  # one row per step done, no more
    marks = by_name(heat, "decoded")
    assert sorted(zip(marks.y, marks.x)) == [(0, 0), (1, 2), (2, 1), (2, 3), (3, 4)]
    timeline = visuals.stage_timeline(partial)
    assert list(by_name(timeline, "slow").x) == [0, 1, 3] and list(by_name(timeline, "fast").x) == [2]
    np.testing.assert_array_equal(np.asarray(by_name(timeline, "span end").y)[::2], [4, 4, 4, 8])
    conv = visuals.convergence(partial)
    h = by_name(conv, "the window's horizon estimates")
    assert list(zip(h.x, h.y)) == [(0, 4), (1, 4), (1, 4), (3, 8)]
    assert list(by_name(conv, "span froze").x) == [1]  # the second cycle had not frozen yet
    fast = visuals.speed(partial)
    assert list(by_name(fast, "tokens decoded").y) == [1, 1, 2, 1]
    assert list(by_name(fast, "cumulative NFE").y) == [1, 2, 3, 4]
    assert "250.0 tokens/s (so far)" in fast.layout.title.text  # 5 tokens in 2 + 4 + 6 + 8 = 20 ms
    assert list(by_name(visuals.cache_hits(partial), "FLOPs").y) == [1000.0, 2000.0, 3000.0, 4000.0]
    z = np.asarray(visuals.token_canvas(partial, width=4).data[0].z, dtype=float).ravel()
    assert list(z) == [0, 2, 1, 2, 3, -1, -1, -1]  # the step each position was decoded at; -1 still masked


def test_a_256_by_256_trace_draws_every_figure():
    n = 256
    rng = np.random.default_rng(0)
    order = rng.permutation(n)
    stats = cache_stats([0] + [32] * 7, [32] + [0] * 7, [0] + [n] * 7, [n] + [0] * 7)
    recs = [StepRecord(step=i, stage="slow" if i % 10 < 3 else "fast", block=0, span=(0, min(n, i + 8)),
                       horizons=[i, i + 1], horizon_spread=0.5, confidence=rng.random(n).astype(np.float16),
                       argmax=rng.integers(0, 50, n).astype(np.int32), decoded=[int(order[i])], fed_end=n,
                       tokens_fed=n + 32, ms=1.0, nfe=i + 1, forwards=i + 1,
                       info=dict(cycle=i // 10, frozen=i % 10 == 1, estimate=i), flops=1e9, cache=stats)
            for i in range(n)]
    tr = Trace(settings=dict(sampler="slowfast", gen_length=n, block_length=n, params=SF_PARAMS,
                             cache=dict(kp=5, kr=2)),
               model="m", prompt="p", prompt_ids=[1], mask_id=MASK, records=recs, tokens=[1] * n,
               token_strings={str(i): chr(65 + i % 26) for i in range(50)})
    for name, fn in visuals.ALL_FIGURES.items():
        fig = fn(tr, 200)
        assert fig.data, name
    assert visuals.canvas_html(tr, 200).count("title=") >= n


# --- a real run ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler,cache", [("slowfast", {"kp": 5, "kr": 2}), ("threshold", None)])
def test_every_figure_builds_for_a_real_tiny_run(tiny_model, sampler, cache):
    from slowfast.engine import GenerationSettings, generate

    trace = generate(tiny_model, "What is 2+2?",
                     GenerationSettings(sampler=sampler, gen_length=32, block_length=16, cache=cache))
    n = len(trace.records)
    for step in (None, 0, n // 2):
        for name, fn in visuals.ALL_FIGURES.items():
            fig = fn(trace, step)
            assert isinstance(fig, go.Figure) and fig.data, (name, step)
        assert visuals.canvas_html(trace, step).count('class="sf-cell"') == 32
    heat = by_name(visuals.certainty_heatmap(trace), "confidence")
    assert np.asarray(heat.z).shape == (n, 32)
    da = trace.decoded_at()  # a position is blank on every row after the step that decoded it
    assert np.isnan(np.asarray(heat.z, dtype=float)).sum() == int(sum(n - 1 - d for d in da if d >= 0))
    # the canvas shows exactly the final tokens once the run is over
    cs = visuals.TraceView(trace)
    assert list(cs.tokens) == trace.tokens
    if cache is not None:
        assert "cache off" not in visuals.cache_hits(trace).layout.title.text


def test_explain_step_says_what_the_decoder_did(sf):
    first = visuals.explain_step(sf, 0)
    assert "Slow stage" in first and "exploration forward 1" in first and "Horizon estimate" in first
    text = visuals.explain_step(sf)
    assert "What you are seeing" in text and "arxiv.org/abs/2506.10848" in text
    assert "No steps yet" in visuals.explain_step(make_trace([]))
    assert "Run something" in visuals.explain_step(None)
    assert "**Converged:**" in visuals.explain_step(sf, 1) and "earlier" not in visuals.explain_step(sf, 1)


def test_explain_step_after_the_span_froze_earlier_in_the_slow_stage():
    # the reference code runs every exploration forward: after the freeze, estimates no longer move the span
    steps = [(0, "slow", (0, 4), [4], 0.0, [0], dict(cycle=1, estimate=4, frozen=False)),
             (1, "slow", (0, 4), [4, 4], 0.0, [2], dict(cycle=1, estimate=4, frozen=True)),
             (2, "slow", (0, 4), [4, 4], 0.0, [5], dict(cycle=1, estimate=7, frozen=True))]
    text = visuals.explain_step(make_trace([record(*s) for s in steps]), 2)
    assert "Horizon estimate: position 7" in text and "still masked when this forward ran" in text
    assert "Converged earlier in this slow stage" in text and "frozen at 4" in text and "[4, 4]" in text
    assert "**Converged:**" not in text


def test_explain_step_on_every_stage_of_a_real_run(tiny_model):
    from slowfast.engine import GenerationSettings, generate

    for sampler, word in (("baseline", "Baseline"), ("threshold", "Threshold"), ("slowfast", "stage")):
        trace = generate(tiny_model, "Hi", GenerationSettings(sampler=sampler, gen_length=32, block_length=32,
                                                              steps=32))
        for step in range(len(trace.records)):
            text = visuals.explain_step(trace, step)
            assert word in text and f"step {step} of" in text
            if trace.records[step].stage == "fast":
                assert "frozen span" in text


def test_special_tokens_show_as_glyphs():
    from visuals.canvas import _short

    assert _short("<|endoftext|>") == "∎" and _short("<|mdm_mask|>") == "◆" and _short("word") == "word"


def test_text_at_forms_as_the_canvas_does(sf):
    # committed tokens in order, each masked position a glyph (a masked tail as one), cut at the end of text
    assert visuals.text_at(sf, 0) == f"a{MASK_GLYPH}"
    assert visuals.text_at(sf, 1) == f"a{MASK_GLYPH} c{MASK_GLYPH}"
    assert visuals.text_at(sf, 2) == "ab c"  # position 3 is <|eot_id|>: the text ends there
    assert visuals.text_at(sf) == visuals.text_at(sf, 6) == sf.text  # the finished run: its own decoded text
    unfinished = make_trace(sf.records, summary=dict(stopped=True), text="stale")
    assert visuals.text_at(unfinished) == "ab c"  # a stopped run's last step is built like any other


def test_compare_legend_names_every_runs_stages_once(sf):
    base = make_trace([record(i, "baseline", None, None, None, [i], {}) for i in range(G)], sampler="baseline")
    fig = visuals.compare_heatmaps([base, sf], ["baseline", "slowfast"])
    shown = [t.name for t in fig.data if t.showlegend]
    assert sorted(shown) == sorted(set(shown)) and {"baseline", "slow", "fast", "decoded", "span end"} <= set(shown)


def test_convergence_says_when_no_position_is_left_to_watch(sf):
    texts = lambda fig: " | ".join(a.text for a in fig.layout.annotations)  # noqa: E731
    assert "(b) every position is decoded: no argmax left to watch" in texts(visuals.convergence(sf))
    assert "every position is decoded" not in texts(visuals.convergence(sf, 3))


# --- only what applies, and room for every label (a 414 px phone) -----------------------------------------
def baseline_trace(steps=4, sampler="baseline", params=None):
    """A baseline-like run: one position decoded per step, no horizons."""
    return make_trace([record(i, sampler, None, None, None, [i], {}) for i in range(steps)], sampler=sampler,
                      params=params or {}, tokens=TOKENS[:steps] + [MASK] * (G - steps))


def axes_of(fig):
    return {k for k in fig.layout.to_plotly_json() if k.startswith(("xaxis", "yaxis"))}


@pytest.mark.parametrize("sampler,params", [("baseline", {}), ("threshold", dict(threshold=0.9, factor=None))])
def test_convergence_of_a_sampler_without_horizons_is_one_panel_that_says_so(sampler, params):
    fig = visuals.convergence(baseline_trace(sampler=sampler, params=params))
    assert axes_of(fig) == {"xaxis", "yaxis"}  # no empty horizon panel above it
    assert {(t.xaxis or "x", t.yaxis or "y") for t in fig.data} == {("x", "y")}
    assert f"the {sampler} sampler estimates no horizon" in fig.layout.title.text
    assert [a.text for a in fig.layout.annotations] == ["steps each masked position's argmax has held"]
    assert fig.layout.xaxis.title.text == "position" and fig.layout.yaxis.title.text == "steps"
    assert fig.layout.yaxis.dtick >= 1 and fig.layout.yaxis.tickformat == "d"  # whole steps: no "1, 1" ticks


def test_convergence_of_slowfast_keeps_both_panels_with_room_for_their_captions(sf):
    from visuals.common import legend_names, legend_px

    fig = visuals.convergence(sf, 3)
    lay = fig.layout
    assert axes_of(fig) == {"xaxis", "yaxis", "yaxis2", "xaxis2", "yaxis3"}
    captions = [a.text for a in lay.annotations]
    assert captions == ["(a) horizon estimates in the window, their std",
                        "(b) steps each masked position's argmax has held"]
    plots_px = lay.height - lay.margin.t - lay.margin.b - legend_px(legend_names(fig))
    gap_px = (lay.yaxis.domain[0] - lay.yaxis3.domain[1]) * plots_px
    assert gap_px >= 60  # (a)'s ticks and "step", then (b)'s caption: nothing overlaps
    assert lay.margin.t >= 28 + 17 * 2 + 18  # the toolbar's band, the title's two lines, (a)'s caption
    assert all(a.yanchor == "bottom" and a.yref == "paper" for a in lay.annotations)
    assert [a.y for a in lay.annotations] == [lay.yaxis.domain[1], lay.yaxis3.domain[1]]


def title_lines(fig) -> list[str]:
    import html as html_lib
    import re

    return [html_lib.unescape(re.sub(r"<[^>]+>", "", line)) for line in fig.layout.title.text.split("<br>")]


def every_figure(sf):
    cached = make_trace([record(i, "slow", (0, 8), [8], 0.0, [i], {}, cache=cache_stats([0, 5], [5, 0], [0, 8],
                                                                                          [8, 0])) for i in range(3)],
                        cache=dict(kp=100, kr=5, rho=0.25))
    long = make_trace([record(i, "slow", (128, 256), [256], 0.0, [i], {}) for i in range(3)])
    long.settings["gen_length"] = 256
    figs = {}
    for tname, tr in (("slowfast", sf), ("baseline", baseline_trace()), ("cache", cached)):
        for name, fn in visuals.ALL_FIGURES.items():
            figs[f"{name} {tname}"] = fn(tr)
    figs["compare"] = visuals.compare_heatmaps([sf, baseline_trace()], ["slowfast + cache", "baseline"])
    figs["pareto"] = visuals.pareto_figure([dict(sampler="slowfast", accuracy=0.5, nfe=3, label="x", settings={}),
                                            dict(sampler="baseline", accuracy=0.9, nfe=8, label="y", settings={})])
    figs["empty"] = visuals.speed(make_trace([]))
    return figs


def test_every_title_fits_a_phone_below_the_toolbar(sf):
    from visuals.common import TITLE_CHARS, TITLE_LINE_PX, TOOLBAR_PX

    for name, fig in every_figure(sf).items():
        lay = fig.layout
        lines = title_lines(fig)
        assert max(len(line) for line in lines) <= TITLE_CHARS, (name, lines)
        # the toolbar (modebar) has the top band to itself: the title starts below it, the plots below the title
        assert lay.title.yref == "container" and lay.title.y == 1 and lay.title.yanchor == "top", name
        assert lay.title.pad.t >= TOOLBAR_PX, name
        assert lay.margin.t >= TOOLBAR_PX + TITLE_LINE_PX * len(lines), name
        assert lay.modebar.orientation == "h", name
        # the legend sits under the plots (Plotly makes room for its rows), never over the title
        assert (lay.legend.yref, lay.legend.y, lay.legend.yanchor) == ("container", 0, "bottom"), name


def test_a_legend_gets_the_height_its_rows_take_on_a_phone(sf):
    from visuals.common import legend_names, legend_px

    fig = visuals.convergence(sf)
    names = legend_names(fig)
    assert "the window's horizon estimates" in names and len(names) == 8
    assert legend_px(names) >= 8 * 19  # one entry a row at a phone's width
    assert legend_px(["a", "b"], width=1366) < legend_px(["a", "b"] * 10, width=280)
    assert legend_names(visuals.convergence(make_trace([]))) == []


def test_colour_bar_labels_keep_apart():
    from visuals.common import COLORBAR_GAP, confidence_colorscale, spaced_ticks

    for breaks in ([(0.97, "threshold")], [(0.02, "horizon"), (0.9, "high")], [(0.86, "horizon"), (0.9, "high")],
                   [(0.3, "horizon"), (0.9, "high")], []):
        _, bar = confidence_colorscale(breaks)
        vals = bar["tickvals"]
        assert all(b - a >= COLORBAR_GAP for a, b in zip(vals, vals[1:])), (breaks, vals)
        for value, label in breaks:  # every threshold is still named
            assert any(f"{label} {value:g}" in t for t in bar["ticktext"]), (breaks, bar["ticktext"])
    assert spaced_ticks([(0.0, "0", True), (0.97, "threshold 0.97", False), (1.0, "1", True)]) == \
        [(0.0, "0"), (0.97, "threshold 0.97")]
    assert spaced_ticks([(0.0, "0", True), (0.86, "horizon 0.86", False), (0.9, "high 0.9", False), (1.0, "1", True)]) \
        == [(0.0, "0"), (0.86, "horizon 0.86 · high 0.9"), (1.0, "1")]
    th = make_trace([record(*s) for s in SF_STEPS], sampler="threshold",
                    params=dict(threshold=0.97, factor=None))
    bar = visuals.compare_heatmaps([th, th], ["a", "b"]).layout.coloraxis.colorbar
    assert list(bar.tickvals) == [0.0, 0.97] and list(bar.ticktext) == ["0", "threshold 0.97"]


def test_compare_labels_wrap_under_narrow_panels():
    from visuals.compare import wrap_words

    assert wrap_words("slowfast + cache") == "slowfast<br>+ cache"
    assert wrap_words("baseline") == "baseline" and wrap_words("threshold + cache") == "threshold<br>+ cache"
