"""The Gradio app built in-process and driven through its Python functions."""
import dataclasses
import json
import os
import time

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import app  # noqa: E402
from explorer import sessions  # noqa: E402
import gradio as gr  # noqa: E402
from slowfast.session import (  # noqa: E402
    DECODES, PRESETS_DIR, BackgroundRun, Controls, DeviceEvents, load_presets, preset_controls,
)
from slowfast.tasks import example_for  # noqa: E402
from slowfast.trace import Trace  # noqa: E402


def values(**changes):
    c = dataclasses.replace(Controls(gen_length=64, block_length=32, steps=64), **changes)
    return [getattr(c, n) for n in app.CONTROL_NAMES]


def sent(frames, index: int = 2) -> list[dict]:
    """The player's messages among ``frames`` (each a handler's outputs; ``index``: the player's)."""
    return [json.loads(f[index]) for f in frames if isinstance(f[index], str) and f[index]]


def steps_sent(messages: list[dict]) -> list[int]:
    return [d["i"] for m in messages for d in m.get("steps", [])]


def drain(gen):
    outputs = None
    for outputs in gen:
        pass
    return outputs


@pytest.fixture(scope="module")
def demo(tiny_dir):
    return app.build_app(str(tiny_dir))


def test_app_builds_with_every_control(demo):
    """Every setting is a control of the built page, reachable by its own name in the API."""
    endpoints = demo.get_api_info()["named_endpoints"]
    assert set(endpoints) == {"/run", "/chat", "/compare", "/stop", "/tune", "/replay"}
    run = [p["parameter_name"] for p in endpoints["/run"]["parameters"]]
    assert run == ["model", "prompt", *app.CONTROL_NAMES]
    compare = [p["parameter_name"] for p in endpoints["/compare"]["parameters"]]
    assert compare == ["model", "prompt", "configs", *app.CONTROL_NAMES]
    assert {f.name for f in dataclasses.fields(Controls)} == set(app.CONTROL_NAMES)


def test_a_busy_device_tells_a_queued_browser_how_long_it_will_wait():
    events = DeviceEvents()
    assert events.note(0) == ""  # free: nothing to say
    key = events.start()
    assert events.note(2).startswith("⏳ 3 runs are ahead")  # no history yet: no time promised
    assert "about" not in events.note(0)
    events.end(key)
    events.end(key)  # an event ends once, however many ways it is ended
    assert len(events.durations) == 1 and events.note(0) == ""
    events.durations.clear()
    for seconds in (4.0, 8.0, 9.0):
        events.durations.append(seconds)
    key = events.start()
    note = events.note(1)  # one running (about 8 s left of the median 8 s) and one waiting
    events.end(key)
    assert "2 runs are ahead" in note and "about 8 s each (median of the last 3)" in note
    assert "start in about 16 s" in note


class FakeEvent:
    def __init__(self, session_hash):
        self.session_hash = session_hash


def test_the_wait_counts_other_browsers_events_in_gradios_device_queue(demo):
    demo.queue(default_concurrency_limit=1)
    queues = demo._queue.event_queue_per_concurrency_id
    assert isinstance(queues, dict)  # the attribute device_waiting reads: fails if Gradio renames it

    class Fake:
        queue = [FakeEvent("a"), FakeEvent("b"), FakeEvent("a")]

    queues["device"] = Fake()
    try:
        assert app.device_waiting(demo, "a") == 1 and app.device_waiting(demo, "c") == 3
    finally:
        del queues["device"]
    assert app.device_waiting(demo, "a") == 0


def test_run_streams_to_completion(tiny_dir):
    state = {}
    frames = list(app.on_run(str(tiny_dir), "What is 2+2?", state, *values(sampler="slowfast", cache=True)))
    message, text, player, status, run_button = frames[-1]
    trace = state["trace"]
    assert text == trace.text and status.startswith("finished | step") and f"NFE {trace.summary['nfe']}" in status
    messages = sent(frames)
    n = len(trace.records)
    assert trace.summary["finished"] and run_button.interactive
    assert steps_sent(messages) == list(range(n))  # every step once, in order
    end = messages[-1]["end"]
    assert end["state"] == "finished" and end["text"] == trace.text and end["n"] == n
    assert messages[0]["head"]["sampler"] == "slowfast" and messages[0]["head"]["cache"] is not None
    deltas = [d for m in messages for d in m.get("steps", [])]
    assert sorted(p for d in deltas for p in d["dec"]) == list(range(64))  # each position decoded once
    assert f"NFE {trace.summary['nfe']}" in deltas[-1]["line"] and {d["stage"] for d in deltas} >= {"slow", "fast"}
    assert deltas[1]["cache"] is not None and len(deltas[1]["cache"]["layers"]) == len(trace.records[1].cache["response_reused"])


def test_a_live_run_shows_every_step_in_order(tiny_dir):
    state = {}
    frames = list(app.on_run(str(tiny_dir), "Hi", state, *values(sampler="slowfast", gen_length=32,
                                                                 block_length=32)))
    n = len(state["trace"].records)
    assert steps_sent(sent(frames)) == list(range(n))
    assert all(f[-1].interactive is False for f in frames[:-1]) and frames[-1][-1].interactive
    assert all(u == {"__type__": "update"} for u in app.on_run_end(state))  # the last message sent it all


def test_stop_ends_a_run_within_one_step(tiny_model):
    # 480 forwards in full (one token each); stopped while it decodes
    job = BackgroundRun(tiny_model, "Hi", Controls(sampler="baseline", gen_length=512 - 32, block_length=16,
                                                   steps=480).settings())
    job.start()
    deadline = time.monotonic() + 30
    while job.steps_done < 1 and not job.done.is_set() and time.monotonic() < deadline:
        time.sleep(0.001)
    done_at_stop = job.steps_done
    job.stop()
    assert done_at_stop >= 1, "the run never started decoding"
    assert job.wait(30)
    trace = job.trace()
    assert trace.summary["stopped"] and not trace.summary["finished"]
    # the forward under way when stop came (and at most one that began as it was called) ends it
    assert done_at_stop <= len(trace.records) <= done_at_stop + 2 < 480


def test_on_stop_with_nothing_running():
    assert app.on_stop({}) == "Nothing is running."
    assert all(u == {"__type__": "update"} for u in app.on_run_end({}))  # a finished run: nothing to redraw


def test_stop_shows_the_run_as_far_as_it_got(tiny_dir):
    """Stop, then the stream's end (the page runs on_run_end once Gradio has cancelled the
    stream), in either order: the same note, every decoded step sent (the browser's player
    stays at the step on screen), Run enabled."""
    for stop_first in (True, False):
        state = {}
        gen = app.on_run(str(tiny_dir), "Hi", state, *values(sampler="baseline", gen_length=480, block_length=16,
                                                              steps=480))
        frames = [next(gen)]  # the first steps sent, the decoder going on
        gen.close()  # Gradio cancels the stream
        first = app.on_stop(state) if stop_first else None
        end = app.on_run_end(state)
        message, text, player, status, run_button = end
        assert status.startswith("stopped |")
        assert (first or app.on_stop(state)) == message and run_button.interactive
        n = len(state["trace"].records)
        messages = sent([*frames, end])
        assert steps_sent(messages) == list(range(n)) and messages[-1]["end"]["state"] == "stopped"
        assert state["trace"].summary["stopped"] and n < 479
        if n > 1:
            assert message == ("Stopped: decoding ended after "
                               f"{n} forwards; the slider, ◀ Step ▶ and ▶ Play show every step.")
        else:
            assert message == "Stopped: decoding ended after 1 forward."
        assert app.on_run_end(state)[0] == message  # sent again if asked again: the page may ask twice


def test_stop_during_the_browsers_playback_says_where_it_paused(tiny_dir):
    """A decoded run plays in the browser; Stop pauses it there and says so (the page's Stop
    sends what it paused; nothing decodes, so nothing else changes)."""
    state = {}
    drain(app.on_run(str(tiny_dir), "Hi", state, *values(sampler="baseline", gen_length=16, block_length=16,
                                                          steps=16)))
    assert app.on_stop(state, "5/15") == ("Stopped the playback at step 5 of 15; ◀ Step ▶, the slider and ▶ Play "
                                          "go on from there.")
    assert app.on_stop(state, "") == "Nothing is running." and app.on_stop(state, "garbage") == "Nothing is running."


def test_a_model_that_cannot_load_is_reported_and_nothing_breaks(tmp_path, tiny_dir):
    state = {}
    message, *_ = drain(app.on_run(str(tmp_path / "missing"), "Hi", state, *values()))
    assert "Could not load" in message and "no model this server can use" in message and "trace" not in state
    drain(app.on_run(str(tiny_dir), "Hi", state, *values()))  # still works afterwards
    assert state["trace"].summary["finished"]


def test_invalid_settings_are_explained_before_a_run(tiny_dir):
    message = app.on_check(str(tiny_dir), "Hi", *values(gen_length=60, block_length=32))
    assert "gen_length: 60 is not divisible by block_length 32" in message
    assert "valid" in app.on_check(str(tiny_dir), "Hi", *values())
    state = {}
    first, *_ = drain(app.on_run(str(tiny_dir), "Hi", state, *values(horizon_threshold=1.5)))
    assert "horizon_threshold: 1.5" in first


def test_compare_runs_configurations_side_by_side(tiny_dir):
    state = {}
    frames = list(app.on_compare(str(tiny_dir), "Hi", ["baseline", "slowfast", "slowfast + cache"],
                                 state, *values()))
    message, table, _ = frames[-1]
    assert [row[0] for row in table] == ["baseline", "slowfast", "slowfast + cache"]
    assert [row[1] for row in table] == ["—"] * 3  # "Hi" is no task's prompt: nothing to score
    assert table[0][2] == 64 and table[0][3] == table[0][5] == table[0][7] == "1.00x"
    nfe = [row[2] for row in table]
    fed = [row[4] for row in table]
    for row, trace in zip(table, state["compare"]):  # exact ratios of the traces' own counts
        assert row[3] == f"{nfe[0] / trace.summary['nfe']:.2f}x" and row[2] == trace.summary["nfe"]
        assert row[5] == f"{fed[0] / trace.summary['tokens_fed']:.2f}x"
        assert row[8] == ("yes" if trace.text == state["compare"][0].text else "no") and row[9] == trace.text
    assert len(state["compare"]) == 3 and state["compare"][2].settings["cache"] is not None
    messages = sent(frames, 2)  # each configuration streamed into its own slot of the compare player
    for slot, trace in enumerate(state["compare"]):
        mine = [m for m in messages if m["slot"] == slot]
        assert steps_sent(mine) == list(range(len(trace.records))) and mine[-1]["end"]["state"] == "finished"
        assert mine[0]["head"]["label"] == ["baseline", "slowfast", "slowfast + cache"][slot]


def test_compare_scores_a_task_prompt(tiny_dir):
    """On a prompt in a task's format, each run's text is scored by the task's own scorer."""
    from slowfast.tasks import example_for

    state = {}
    prompt = "Q: 2+7+2-3-2+6=? A:"
    message, table, _ = drain(app.on_compare("embedded", prompt, ["baseline", "threshold"], state,
                                             *values(gen_length=64, block_length=64, steps=64, chat=False)))
    task, example = example_for(prompt)
    assert "**arithmetic** problem" in message
    verdicts = ["yes" if task.correct(example, t.text) else "no" for t in state["compare"]]
    assert [row[1] for row in table] == verdicts
    assert verdicts[0] == "yes"  # the embedded model answers this one at one token per forward


def test_export_then_replay_without_a_model(tiny_dir, tmp_path):
    state = {}
    drain(app.on_run(str(tiny_dir), "Hi", state, *values(sampler="threshold")))
    message, files = app.on_export(state)
    assert len(files) == 2 and files[0].endswith("trace.json") and files[1].endswith(".html")
    fresh = {}
    out = app.on_replay(files[0], fresh)
    message, text, player, status, prompt, model = out[:6]
    assert "Replaying" in message and fresh["trace"].to_dict() == Trace.load(files[0]).to_dict()
    (whole,) = sent([out])
    n = len(fresh["trace"].records)
    assert steps_sent([whole]) == list(range(n)) and whole["end"]["text"] == state["trace"].text
    assert prompt["value"] == "Hi" and model["value"] == str(tiny_dir)
    html = open(files[1]).read()  # the same player, the run and Plotly inlined: it works offline
    assert "SlowFastPlayer.mount" in html and html.count("plotly.js v") == 1 and '"i":' + str(n - 1) in html


def test_replay_restores_every_control_and_reproduces_the_run(tiny_dir, tmp_path):
    state = {}
    drain(app.on_run(str(tiny_dir), "Tell me", state, *values(sampler="slowfast", exploration_steps=3,
                                                               horizon_threshold=0.2, cache=True, kr=3,
                                                               max_cycles=40, max_forwards_per_block=90, seed=7)))
    original = state["trace"]
    path = original.save(tmp_path / "t.json")
    out = app.on_replay(str(path), {})
    prompt, model, controls = out[4], out[5], out[6:]
    d = Controls()  # controls the trace does not mention (another sampler's) keep their values
    restored = [c.get("value", getattr(d, n)) for c, n in zip(controls, app.CONTROL_NAMES)]
    assert sum("value" in c for c in controls) >= 18
    assert dict(zip(app.CONTROL_NAMES, restored))["exploration_steps"] == 3
    again = {}
    drain(app.on_run(model["value"], prompt["value"], again, *restored))
    assert again["trace"].tokens == original.tokens and again["trace"].settings == original.settings


def test_the_space_branch_returns_json_and_shows_the_finished_run(tiny_dir, monkeypatch):
    spaces = pytest.importorskip("spaces")
    crossed = []

    def worker(model_name, prompt, settings):
        out = app.decode_for_space(model_name, prompt, settings)
        crossed.append(out)
        return out

    monkeypatch.setattr(sessions, "decode_on_gpu", spaces.GPU(duration=app.gpu_seconds)(worker))
    state = {}
    outputs = drain(app.on_run(str(tiny_dir), "Hi", state, *values(sampler="slowfast")))
    (whole,) = sent([outputs])
    assert whole["end"]["state"] == "finished" and whole["end"]["text"] == state["trace"].text
    import json
    assert json.loads(json.dumps(crossed[-1])) == crossed[-1]  # only JSON crosses back
    msg, table, fig = drain(app.on_compare(str(tiny_dir), "Hi", ["baseline", "threshold"], {}, *values()))
    assert [row[0] for row in table] == ["baseline", "threshold"] and len(crossed) == 3
    first = drain(app.on_chat(str(tiny_dir), "Hello", [], state, *values(sampler="threshold")))
    assert first[-2][-1]["role"] == "assistant" and len(crossed) == 4


def test_chat_follows_the_model(tiny_dir, plain_dir):
    checkbox, box = app.on_model_change(str(plain_dir))  # no chat template
    assert checkbox.interactive is False and box.visible is False
    for chats in (str(tiny_dir), "embedded"):  # the tiny checkpoint has one, and so has the embedded model
        checkbox, box = app.on_model_change(chats)
        assert checkbox.interactive is True and box.visible is True


def test_replay_rejects_a_bad_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    message, *_ = app.on_replay(str(bad), {})
    assert "Not a trace file" in message


def test_every_preset_fills_valid_controls():
    presets = load_presets(PRESETS_DIR)
    assert len(presets) >= 6 and any(p.get("explanation") for p in presets.values())
    for name, preset in presets.items():
        Controls(**preset_controls(preset)).settings()
        updates = app.on_preset(name)
        assert len(updates) == len(app.CONTROL_NAMES) + 2 and name in updates[-1]


def test_variant_fills_its_defaults():
    assert app.on_variant("paper") == [8, 0.1, 2, 1.0, 0.85, 0, 0]
    assert app.on_variant("dream")[5:] == [0.8, 4096]


def test_chat_turns_carry_the_conversation(tiny_dir, tiny_model):
    state = {}
    first = drain(app.on_chat(str(tiny_dir), "Hello there", [], state, *values(sampler="threshold")))
    history = first[-2]
    assert [m["role"] for m in history] == ["user", "assistant"] and history[1]["content"] == state["trace"].text
    as_sent = gr.Chatbot().preprocess(gr.Chatbot().postprocess(history))  # what the browser sends back
    drain(app.on_chat(str(tiny_dir), "And now?", as_sent, state, *values(sampler="threshold")))
    expected = tiny_model.encode_chat(history + [{"role": "user", "content": "And now?"}])
    assert state["trace"].prompt_ids == expected and state["trace"].prompt == "And now?"
    assert tiny_model.tokenizer.decode(expected).count("<|start_header_id|>user") == 2


def test_a_closed_run_stops_decoding_within_one_forward(tiny_dir):
    """Gradio closes a run's generator when its client cancels or disconnects."""
    state = {}
    gen = app.on_run(str(tiny_dir), "Hi", state, *values(sampler="baseline", gen_length=480, block_length=16,
                                                          steps=480))
    next(gen)  # the first frame: the run is decoding in its thread
    job = state["run"]
    gen.close()
    assert job.wait(30)
    assert job.trace().summary["stopped"] and len(job.trace().records) < 480


def test_a_closed_compare_stops_its_current_run(tiny_dir):
    state = {}
    gen = app.on_compare(str(tiny_dir), "Hi", ["baseline", "slowfast"], state,
                         *values(gen_length=480, block_length=16, steps=480))
    message, *_ = next(gen)
    assert "Running **baseline** (1 of 2)" in message
    gen.close()
    assert "compare" not in state
    assert DECODES.lock.acquire(timeout=30)  # nothing is left decoding
    DECODES.lock.release()
    message, table, player = app.on_compare_end(state)  # the page's next event says what happened
    assert message.startswith("Stopped: 0 of 2 configurations had run") and table == {"__type__": "update"}
    assert app.on_compare_end(state)[0] == message  # the same words however often the page asks


def test_stop_from_an_api_client_ends_the_whole_compare(tiny_dir):
    state = {}
    gen = app.on_compare(str(tiny_dir), "Hi", ["baseline", "slowfast"], state,
                         *values(gen_length=480, block_length=16, steps=480))
    assert "(1 of 2)" in next(gen)[0]
    assert app.on_stop(state).startswith("Stopped: decoding ended after")
    message, *_ = next(gen)
    assert message.startswith("Stopped: 1 of 2 configurations had run") and next(gen, None) is None
    assert state["run"].trace().summary["stopped"] and "compare" not in state


def test_a_closed_chat_turn_stops_its_run(tiny_dir):
    state = {}
    gen = app.on_chat(str(tiny_dir), "Hello", [], state, *values(sampler="baseline", gen_length=480,
                                                                 block_length=16, steps=480))
    next(gen)
    job = state["run"]
    gen.close()
    assert job.wait(30) and job.trace().summary["stopped"]


def test_sessions_are_bounded_and_released():
    from slowfast.session import SessionStore

    released = []
    store = SessionStore(released.append, max_sessions=2, ttl=1000)
    a, b = store.get("a"), store.get("b")
    a["trace"] = "A"
    assert store.get("a") is a and len(store) == 2
    store.get("c")  # b is the least recently used: dropped for the room
    assert released == [b] and len(store) == 2
    store.drop("a")
    assert released[-1] is a and len(store) == 1
    store.ttl = 0
    store.get("d")  # c expired
    assert len(store) == 1 and len(released) == 3


def test_end_session_stops_the_run_and_frees_the_state(tiny_dir):
    state = {}
    gen = app.on_run(str(tiny_dir), "Hi", state, *values(sampler="baseline", gen_length=480, block_length=16,
                                                          steps=480))
    next(gen)
    job = state["run"]
    app.end_session(state)
    assert job.wait(30) and job.trace().summary["stopped"] and state == {}
    gen.close()


def test_the_api_has_named_endpoints_and_parameters(demo):
    info = demo.get_api_info()
    endpoints = info["named_endpoints"]
    assert {"/run", "/stop", "/compare", "/replay", "/chat"} <= set(endpoints)
    run_params = [p["parameter_name"] for p in endpoints["/run"]["parameters"]]
    assert run_params == ["model", "prompt", *app.CONTROL_NAMES]
    assert [p["parameter_name"] for p in endpoints["/replay"]["parameters"]] == ["trace_file"]
    assert not [name for name in endpoints if "param_" in str(endpoints[name])]


def test_a_public_host_can_pin_its_models(tiny_dir, monkeypatch):
    monkeypatch.setenv("SLOWFAST_ONLY_MODELS", "embedded")
    message, *_ = drain(app.on_run(str(tiny_dir), "Hi", {}, *values()))
    assert message == "⚠️ This host serves only: embedded."


def test_model_load_messages_show_names_as_text(tmp_path):
    message, *_ = drain(app.on_run("<img src=x onerror=alert(1)>", "Hi", {}, *values()))
    assert "Could not load" in message and "<img" not in message


def test_tune_scores_settings_live_and_a_clicked_row_loads_them(tiny_dir):
    from types import SimpleNamespace

    from slowfast.sweep import INFORMATIVE_POINTS

    state = {}
    frames = list(app.on_tune(str(tiny_dir), "copy", 2, 2, 0, state))
    n = len(INFORMATIVE_POINTS) + 2 + 1  # the fixed settings, the random ones, the baseline
    message, fig, table = frames[-1]
    assert f"{n} of {n} settings scored in " in message and table
    points = [t for t in fig.data if t.mode == "markers"]
    assert sum(len(t.x) for t in points) == n  # one point per scored setting
    baseline = next(t for t in points if t.name == "baseline")
    assert list(baseline.x) == [16.0]  # copy's 16 tokens at one token per forward
    line = next(t for t in fig.data if t.name == "Pareto front")
    drawn = sorted(zip(line.x, line.y))
    assert [x for x, _ in drawn] == pytest.approx(sorted(row[1] for row in table), abs=0.05)  # the table's front
    assert [y for _, y in drawn] == pytest.approx(sorted(row[0] for row in table), abs=0.0005)
    assert (fig.layout.xaxis.title.text, fig.layout.yaxis.title.text) == ("mean NFE (forwards per prompt)", "accuracy")
    assert len(frames) == 1 + n  # the start, then one frame per scored setting
    front = state["tune"]
    assert [row[-1] for row in table] == [p["label"] for p in front]
    session = app.SESSIONS.get("tune-test")
    session["tune"] = front
    evt = gr.SelectData(None, {"index": [len(front) - 1, 0], "value": table[-1][-1]})
    session["tune_task"] = "copy"
    message, prompt, *updates = app.on_tune_select("Hi", evt, SimpleNamespace(session_hash="tune-test"))
    values = dict(zip(app.CONTROL_NAMES, updates))
    assert "Loaded" in message and values["sampler"]["value"] == front[-1]["settings"]["sampler"]
    # "Hi" is no copy prompt: the row brings one of the task's (its generation length is the task's)
    assert "held-out **copy** prompt" in message and example_for(prompt["value"])[0].name == "copy"
    message, prompt, *_ = app.on_tune_select(prompt["value"], evt, SimpleNamespace(session_hash="tune-test"))
    assert prompt == {"__type__": "update"} and "prompt" not in message  # a copy prompt stays
    app.SESSIONS.drop("tune-test")


def test_tune_streams_informative_settings_first_and_the_baseline_last_and_reuses_it(tiny_dir, monkeypatch):
    import slowfast.sweep
    from explorer import tune

    monkeypatch.setattr(tune, "BASELINES", {}, raising=False)  # none kept yet
    state, swept = {}, []
    real = slowfast.sweep.iter_sweep

    def recording(model, task, points, *args, **kwargs):
        swept.append([p["sampler"] for p in points])
        yield from real(model, task, points, *args, **kwargs)

    monkeypatch.setattr(slowfast.sweep, "iter_sweep", recording)
    first_scored = None
    for message, fig, table in app.on_tune(str(tiny_dir), "copy", 2, 2, 7, state):
        if first_scored is None and isinstance(table, list):
            first_scored = fig
    (only,) = [t for t in first_scored.data if t.mode == "markers"]  # the first point streamed alone
    assert only.name == "slowfast" and json.loads(only.customdata[0])["params"]["exploration_steps"] == 1
    assert swept[0][-1] == "baseline" and "baseline" not in swept[0][:-1]
    frames = list(app.on_tune(str(tiny_dir), "copy", 2, 2, 7, state))  # the same prompts and seed again
    assert "baseline" not in swept[1] and len(swept[1]) == len(swept[0]) - 1  # its baseline is reused...
    last = [t for t in frames[-1][1].data if t.mode == "markers"]
    assert len(frames) == 1 + len(swept[0]) and list(next(t for t in last if t.name == "baseline").x) == [16.0]
    list(app.on_tune(str(tiny_dir), "copy", 2, 2, 8, state))  # ...but not for another seed
    assert swept[2][-1] == "baseline"


def test_tune_lists_the_front_most_accurate_first_without_zero_scores(tiny_dir, monkeypatch):
    import slowfast.sweep
    from explorer import tune

    def fake(model, task, points, *args, **kwargs):
        for i, (acc, nfe) in enumerate([(0.0, 4.0), (0.5, 10.0), (1.0, 30.0), (0.5, 20.0)]):
            settings = {"sampler": "threshold", "params": {"threshold": i / 10}, "cache": None}
            yield {**settings, "settings": settings, "label": f"setting {i}", "accuracy": acc, "nfe": nfe,
                   "tokens_fed": 10 * nfe, "seconds_per_prompt": 0.1, "metric": "exact_match"}

    monkeypatch.setattr(slowfast.sweep, "iter_sweep", fake)
    monkeypatch.setattr(tune, "BASELINES", {}, raising=False)  # none kept yet
    frames = list(app.on_tune(str(tiny_dir), "copy", 2, 2, 0, {}))
    assert frames[1][2] == [[0.0, 4.0, 40, "setting 0"]]  # nothing above 0 yet: the 0% point is the front
    assert frames[-1][2] == [[1.0, 30.0, 300, "setting 2"], [0.5, 10.0, 100, "setting 1"]]


@pytest.mark.parametrize("count, points, word", [(999, 4, "Prompts per setting: 999"), (4, 1, "Random settings: 1"),
                                                 (2.5, 4, "Prompts per setting: 2.5")])
def test_tune_refuses_numbers_outside_its_sliders(count, points, word):
    (message, plot, table), = app.on_tune("embedded", "copy", count, points, 0, {})
    assert message.startswith(f"⚠️ {word} is not allowed") and plot is None and table is None


@pytest.mark.parametrize("task, count, seed, word", [
    ("copy", "3", 0, "Prompts per setting: '3'"),  # issue 28: a TypeError
    ("copy", 2, -5, "Seed: -5"), ("copy", 2, 2**80, "Seed: 1208925819614629174706176"),  # a ValueError outside
    ("copy", 2, 1.5, "Seed: 1.5"), ("copy", 2, "x", "Seed: 'x'"), (["copy"], 2, 0, "Task: ['copy']"),
    ("nosuch", 2, 0, "Task: 'nosuch'")])
def test_tune_refuses_hostile_api_values_with_a_message(task, count, seed, word):
    (message, plot, table), = app.on_tune("embedded", task, count, 2, seed, {})
    import visuals

    assert message.startswith(f"⚠️ {visuals.esc(word)} is not allowed") and plot is None and table is None, message


def test_a_number_typed_outside_a_slider_reaches_the_settings_check():
    # Gradio's own bounds check answers a bare "Error"; ours says what is allowed
    assert gr.Slider(0, 1, 0.3).preprocess(5) == 5
    assert gr.Slider(1, 16, 6, step=1, precision=0).preprocess(3.4) == 3
    message = app.on_check("embedded", "Hi", *values(horizon_threshold=5.0))
    assert message == "⚠️ horizon_threshold: 5.0 is outside the allowed range [0, 1]"


def test_a_big_model_says_what_it_needs_before_loading(monkeypatch):
    from slowfast.models.loading import check_memory

    note = app.loading_note("GSAI-ML/LLaDA-8B-Instruct")
    need = check_memory("GSAI-ML/LLaDA-8B-Instruct")
    if need.fits is False:  # this machine cannot hold it: refused before any download
        message, *_ = drain(app.on_run("GSAI-ML/LLaDA-8B-Instruct", "Hi", {}, *values()))
        assert message.startswith("⚠️ Not loaded") and "GB" in message and note == ""
    else:
        assert "GB" in note and "8.02B" in note
    assert app.loading_note("embedded") == ""


def test_an_event_cancelled_between_two_frames_stops_its_run(tiny_dir):
    """Gradio wraps every handler in its own async generator; cancelling an event between two
    frames closes that wrapper, not the handler's generator, which is left to the garbage
    collector (a reference cycle can keep it for minutes). The run must stop anyway: the
    end of the event's task stops it."""
    import asyncio
    from types import SimpleNamespace

    from gradio.utils import function_wrapper

    session = "cancelled-between-frames"
    state = app.SESSIONS.get(session)
    handler = function_wrapper(app.named(app.on_run, "model", "prompt", "state", *app.CONTROL_NAMES, device=True))
    held = {}

    async def event():
        outer = handler(str(tiny_dir), "Hi", *values(gen_length=448, block_length=16, steps=448),
                        request=SimpleNamespace(session_hash=session))
        held["outer"] = outer
        await outer.__anext__()  # the first frame
        held["inner"] = outer.ag_frame.f_locals["iterator"]  # a reference the collector has not freed
        await asyncio.sleep(3600)  # the queue is sending that frame when the cancel lands

    async def main():
        task = asyncio.create_task(event(), name=f"{session}_0{app.GRADIO_EVENT_TASK}event")
        while "inner" not in held:
            await asyncio.sleep(0.01)
        job = state["run"]
        task.cancel()  # what Gradio's /cancel does, then it closes its wrapper
        await asyncio.gather(task, return_exceptions=True)
        await held["outer"].aclose()
        for _ in range(200):
            if job.done.is_set():
                break
            await asyncio.sleep(0.01)
        return job

    try:
        job = asyncio.run(main())
        assert job.done.is_set() and job.trace().summary["stopped"]
        assert len(job.trace().records) < 448
    finally:
        app.SESSIONS.drop(session)


def test_live_batches_keep_within_their_share_of_the_decoders_time(tiny_model):
    """stream_batches yields every record once, in order, and while the run decodes the caller's
    work between yields stays within ``budget`` of the time since the start, give or take the
    one batch that crossed it (however long a batch takes on a loaded machine)."""
    from slowfast.session import stream_batches

    settings = Controls(chat=False, sampler="baseline", gen_length=192, block_length=32, steps=192).settings()
    job = BackgroundRun(tiny_model, "Hi", settings).start()
    start, spent, seen, longest = time.perf_counter(), 0.0, 0, 0.0
    for trace, done in stream_batches(job, interval=0.0, budget=0.05):
        t0 = time.perf_counter()
        assert len(trace.records) >= seen
        seen = len(trace.records)
        if done:
            break
        while time.perf_counter() - t0 < 0.02:  # a heavy batch: 20 ms of the interpreter
            pass
        if not job.done.is_set():
            took = time.perf_counter() - t0
            spent, longest = spent + took, max(longest, took)
            assert spent <= 0.05 * (time.perf_counter() - start) + longest + 0.005
    assert seen == 192 and trace.stats.finished
