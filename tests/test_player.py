"""The browser player's data (visuals/player.py): per-step deltas that rebuild the trace, small
enough to stream, computed once per step; the browser side is tests/test_browser.py's."""
import base64
import copy
import json

import numpy as np
import pytest

import visuals.player as player
from slowfast.engine import GenerationSettings
from slowfast.models import load_model
from slowfast.session import Controls, load_presets, PRESETS_DIR, preset_controls, run_to_end


@pytest.fixture(scope="module")
def cached_run(tiny_model):
    settings = Controls(sampler="slowfast", gen_length=64, block_length=32, cache=True, chat=False).settings()
    return run_to_end(tiny_model, "Hi there", settings)


def rebuild(trace, messages):
    """What the browser rebuilds from the messages: per step the decoded positions and tokens,
    the confidence row and every position's prediction."""
    deltas = [d for m in messages for d in m.get("steps", [])]
    assert [d["i"] for d in deltas] == list(range(len(trace.records)))
    argmax = None
    for d, r in zip(deltas, trace.records):
        conf = np.frombuffer(base64.b64decode(d["conf"]), dtype="<u2") / 65535
        assert np.abs(conf - r.confidence.astype(np.float64)).max() <= 0.5 / 65535 + 1e-9
        if "arg" in d:
            argmax = np.frombuffer(base64.b64decode(d["arg"]), dtype="<i4").astype(np.int64)
        elif "arg16" in d:  # every id fits two bytes (the embedded model's vocabulary)
            argmax = np.frombuffer(base64.b64decode(d["arg16"]), dtype="<u2").astype(np.int64)
        else:
            argmax = argmax.copy()
            argmax[d["chg"]] = d["chg_tok"]
        assert argmax.tolist() == r.argmax.tolist()
        assert d["dec"] == list(r.decoded) and d["tok"] == [int(r.argmax[p]) for p in r.decoded]
        assert d["stage"] == r.stage and d["nfe"] == r.nfe and d["span"] == (list(r.span) if r.span else None)
    return deltas


def test_the_deltas_rebuild_every_step(cached_run):
    stream = player.PlayerStream("run-1")
    first = stream.update(cached_run)
    assert first["head"]["gen"] == 64 and first["head"]["cache"] is not None and first["seq"] == 1
    assert stream.update(cached_run) is None  # nothing new
    end = stream.end(cached_run)
    deltas = rebuild(cached_run, [first, end])
    assert end["end"]["state"] == "finished" and end["end"]["text"] == cached_run.text and end["seq"] == 2
    layers = len(cached_run.records[0].cache["response_reused"])
    assert all(len(d["cache"]["layers"]) == layers for d in deltas if "cache" in d)
    names = {}
    for d in deltas:
        names.update(d["strs"])
    assert all(str(t) in names for d in deltas for t in d["tok"])  # every token's text was sent once


def test_a_live_run_sends_each_step_once_and_corrects_what_it_could_not_know(cached_run):
    """Records arrive a few at a time; each goes out once. At the end, the explanations that read
    differently now that the whole run is known are sent again, and only those."""
    class Partial:  # the trace as a live run has it: the first k records, not finished
        def __init__(self, k):
            self.__dict__.update({n: getattr(cached_run, n) for n in ("gen_length", "settings", "mask_id", "model",
                                                                       "prompt", "token_strings", "text")})
            self.records = cached_run.records[:k]
            self.stats = type(cached_run.stats)(**{**cached_run.stats.__dict__, "finished": False})

    stream = player.PlayerStream("live")
    messages = [m for k in (1, 3, 3, 7) if (m := stream.update(Partial(k))) is not None]
    messages.append(stream.end(cached_run))
    rebuild(cached_run, messages)
    resent = messages[-1]["end"]["explain"]
    for i, html in resent.items():
        assert html == player.explain_html(cached_run, int(i))
    live_sent = {d["i"]: d["explain"] for m in messages for d in m.get("steps", []) if d["i"] < 7}
    assert {str(i) for i, h in live_sent.items() if h != player.explain_html(cached_run, i)} <= set(resent)


def test_on_the_story_preset_every_delta_is_at_most_2_kb():
    """The acceptance figure: a step costs the network at most 2 KB (the trace file is larger)."""
    preset = load_presets(PRESETS_DIR)["Teaching: a story, slow then fast"]
    trace = run_to_end(load_model("embedded"), preset["prompt"], Controls(**preset_controls(preset)).settings())
    message = player.PlayerStream("story").end(trace)
    sizes = [len(player.dumps(d).encode()) for d in message["steps"]]
    assert len(sizes) == len(trace.records) and max(sizes) <= 2048, sizes


def test_text_from_the_trace_is_escaped_once(cached_run):
    """Token text reaches the browser raw (the player writes it as text); the explanation's HTML
    escapes it once: a token written <|endoftext|> shows as itself, never as &amp;lt;."""
    trace = cached_run
    tok = int(trace.records[0].argmax[trace.records[0].decoded[0]])
    trace.token_strings[str(tok)] = "<|endoftext|>"
    try:
        delta = player.step_delta(trace, 0, set())
        assert delta["strs"][str(tok)] == ["<|endoftext|>", "∎", 1]
        assert "&lt;|endoftext|&gt;" in delta["explain"] and "&amp;" not in delta["explain"]
        assert "<|endoftext|>" not in delta["explain"]
    finally:
        trace.token_strings.pop(str(tok))


def test_the_exported_page_inlines_the_player_and_the_run(cached_run):
    page = player.player_html([player.whole_run(cached_run, "export")], "a run </script><b>", plotly_js="/*plotly*/")
    data = page.split("for (const m of ")[1].split(") p.receive(m);")[0]
    messages = json.loads(data.replace("<\\/", "</"))
    rebuild(cached_run, messages)
    assert "</script><b>" not in page and "SlowFastPlayer" in page and "/*plotly*/" in page


def test_markdown_subset():
    html = player.markdown_html("### Head\n\n**bold** and `code` and [paper](https://arxiv.org/abs/2506.10848)\n\n"
                                "<details><summary>More</summary>\n\ntext *it*\n\n</details>")
    assert "<h4>Head</h4>" in html and "<b>bold</b>" in html and "<code>code</code>" in html
    assert '<a href="https://arxiv.org/abs/2506.10848"' in html and "<i>it</i>" in html
    assert player.markdown_html("&#91;x&#93;(http://evil)") == "<p>&#91;x&#93;(http://evil)</p>"  # esc'd: inert


def test_the_first_delta_sends_two_bytes_per_prediction_where_ids_fit_and_four_where_not(cached_run):
    """A vocabulary under 65536 ids (the embedded model's 484) needs two bytes per position;
    LLaDA's 126464 four: both rebuild to the same predictions."""
    small = player.step_delta(cached_run, 0, set())
    assert "arg16" in small and "arg" not in small
    big = copy.deepcopy(cached_run)
    big.records[0].argmax = np.asarray(big.records[0].argmax, dtype=np.int64) + 126000
    wide = player.step_delta(big, 0, set())
    assert "arg" in wide and "arg16" not in wide
    assert (np.frombuffer(base64.b64decode(wide["arg"]), dtype="<i4") - 126000).tolist() == \
        np.frombuffer(base64.b64decode(small["arg16"]), dtype="<u2").tolist()
