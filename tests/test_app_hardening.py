"""Issue 28, the app side, in-process: one stop switch for every device event, prompts sized
before anything else, what a public host exposes, bad input answered with a message, presets
checked at start-up. Each test failed on the code before the fix (see each docstring)."""
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import app  # noqa: E402
from explorer import layout, sessions  # noqa: E402
from explorer.sessions import DeviceWork, begin_work, held  # noqa: E402
from slowfast.session import DECODES, PRESETS_DIR, Controls, check_preset, load_presets  # noqa: E402
from test_load import rss_mib  # noqa: E402

ROOT = Path(app.__file__).resolve().parent


def values(**changes):
    c = Controls(**{**dict(chat=False, gen_length=32, block_length=32, steps=32), **changes})
    return [getattr(c, n) for n in app.CONTROL_NAMES]


def drain(gen):
    out = None
    for out in gen:
        pass
    return out


@pytest.fixture
def slow_forwards(tiny_dir, monkeypatch):
    """The app's tiny model with forwards of 30 ms (a real model's pace), undone after the test."""
    model = app.POOL.get(str(tiny_dir))
    forward = model.net.forward

    def slowed(*args, **kwargs):
        time.sleep(0.03)
        return forward(*args, **kwargs)

    monkeypatch.setattr(model.net, "forward", slowed)
    return model


# --- 1. one stop switch ------------------------------------------------------------------------

def test_the_switch_refuses_work_after_a_stop_and_stops_the_work_under_way():
    class Job:
        def __init__(self):
            self.done, self.stopped = threading.Event(), False

        def stop(self):
            self.stopped = True

    work = DeviceWork("configuration")
    first, second = Job(), Job()
    assert work.hold(first) and work.current is first
    work.stop()
    assert first.stopped and work.stopped
    assert not work.hold(second) and second.stopped  # never started: it decodes nothing
    pulled = []

    def items():
        for i in range(5):
            pulled.append(i)
            yield i

    state = {}
    seen = []
    for i in held(state, items()):
        seen.append(i)
        if i == 1:
            state["work"].stop()  # what /stop does
    assert seen == [0, 1] and pulled == [0, 1] and state["work"].done.is_set()


def test_stop_between_two_configurations_starts_no_further_one(tiny_dir):
    """Before: a Stop that landed after one configuration had decoded and before the next began
    found a finished run ("Nothing is running.") and the compare decoded every configuration left."""
    state = {}
    gen = app.on_compare(str(tiny_dir), "Hi", ["baseline", "slowfast", "threshold"], state, *values())
    for message, table, player in gen:
        if isinstance(player, str) and '"end"' in player:  # the first configuration's last message
            break
    first = state["run"]
    assert first.done.is_set() and first.label == "baseline"
    DECODES.intervals.clear()
    note = app.on_stop(state)
    frames = list(gen)
    assert note == "Stopped between two configurations: the next one does not start."
    assert frames[-1][0].startswith("Stopped: 1 of 3 configurations had run")
    assert state["run"] is first and list(DECODES.intervals) == [] and "compare" not in state


def test_stop_during_forwards_that_decode_nothing_says_what_is_true(tiny_dir, slow_forwards):
    """SlowFast keeps exploring after a block is full (forwards that decode nothing). Before: a
    Stop there said "Stopped: the run had already decoded all its N steps" while it still ran."""
    state = {}
    gen = app.on_run(str(tiny_dir), "Hi", state, *values(sampler="slowfast", high_confidence_threshold=0.0,
                                                          exploration_steps=16))
    next(gen)
    job = state["run"]
    end = time.monotonic() + 30
    while job.steps_done < 3 and time.monotonic() < end:  # the first forward decoded all 32; then idle ones
        time.sleep(0.005)
    note = app.on_stop(state)
    gen.close()
    trace = job.trace()
    assert trace.stats.stopped and trace.stats.finished and len(trace.records) < 16
    assert "had already decoded all" not in note
    assert note.startswith(f"Stopped after {len(trace.records)} forwards: every position was already decoded; "
                           "the forwards left in its schedule, which decode nothing, did not run")
    assert app.on_run_end(state)[3].startswith("finished (stopped in forwards that decode nothing) |")


def test_the_tune_hook_stops_a_sweep_between_two_settings(tiny_model):
    """``held`` around Tune's iterator (the one line Tune needs): after a Stop no further
    setting is scored, and the sweep's generator is closed."""
    from slowfast.sweep import iter_sweep, tune_points

    state = {}
    points = tune_points(2, seed=0)
    sweep = iter_sweep(tiny_model, "copy", points, 2, seed=0)
    scored = []
    for point in held(state, sweep):
        scored.append(point)
        assert app.on_stop(state) == "Stopped: no further setting starts."
    assert len(scored) == 1 < len(points) and sweep.gi_frame is None  # closed
    assert state["work"].done.is_set()


def test_stop_ends_tune_after_the_setting_it_is_scoring(tiny_dir):
    """Tune holds the device for every setting it scores; Stop (an API client's too) must end it
    before the next one, as a compare's configurations."""
    state = {}
    gen = app.on_tune(str(tiny_dir), "copy", 2, 4, 0, state)
    frames = [next(gen), next(gen)]  # the start, the first scored setting

    def scored(frame) -> int:
        found = re.match(r"(\d+) of \d+ settings scored", frame[0])
        return int(found.group(1)) if found else 0

    at_stop = scored(frames[-1])
    note = app.on_stop(state)
    frames += list(gen)
    assert note == "Stopped: no further setting starts."
    assert at_stop >= 1 and max(scored(f) for f in frames) <= at_stop + 1  # + a baseline kept from an earlier sweep


# --- 2. prompts sized first --------------------------------------------------------------------

def test_a_10_mb_prompt_is_refused_before_anything_else(tiny_dir, tmp_path, monkeypatch):
    """Before: a 10 MB prompt was tokenized inside the device's queue (14.5 s of CPU, +540 MB).
    Now its size in bytes is checked first: before the model loads, in every handler."""
    import explorer.compare
    import explorer.run

    def never(*args, **kwargs):
        raise AssertionError("the model was asked for before the prompt's size was checked")

    for module in (explorer.run, explorer.compare):
        monkeypatch.setattr(module, "load", never)
    prompt = "a" * (10 * 2**20)
    name = str(tmp_path / "not-loaded-yet")
    app.release_memory()
    before, t0 = rss_mib(), time.perf_counter()
    outputs = [drain(app.on_run(name, prompt, {}, *values()))[0],
               drain(app.on_compare(name, prompt, ["baseline"], {}, *values()))[0],
               drain(app.on_chat(name, prompt, [{"role": "user", "content": "hi"}], {}, *values()))[0],
               app.on_check(name, prompt, *values())]
    seconds = time.perf_counter() - t0
    grown = rss_mib() - before
    assert seconds < 1.0 and grown < 40, (seconds, grown)
    for message in outputs:
        assert "Prompt: 10,485,7" in message and "bytes is too long; allowed: at most 1,048,576 bytes" in message
    # once the model is loaded, its own bound (16 bytes per token of its context)
    app.POOL.get(str(tiny_dir))
    message = drain(app.on_run(str(tiny_dir), "a" * 9000, {}, *values()))[0]
    assert message == ("⚠️ Prompt: 9,000 bytes is too long; allowed: at most 8,192 bytes (16 bytes per token of "
                       "this model&#x27;s context of 512 tokens). Shorten the prompt (or the conversation).") or \
        message.startswith("⚠️ Prompt: 9,000 bytes is too long; allowed: at most 8,192 bytes")


def test_a_prompt_within_the_bytes_but_over_the_context_is_refused_before_decoding(tiny_dir):
    state = {}
    message = drain(app.on_run(str(tiny_dir), "a " * 2000, state, *values()))[0]
    assert message.startswith("⚠️ prompt: ") and "tokens leave no room in the model&#x27;s context of 512" in message
    assert "run" not in state  # nothing decoded


# --- 4. exposure -------------------------------------------------------------------------------

LOOKUPS = textwrap.dedent("""
    import json, os, socket, sys, time
    hosts = []
    real = socket.getaddrinfo
    def recording(host, *args, **kwargs):
        hosts.append(host if isinstance(host, str) else repr(host))
        return real(host, *args, **kwargs)
    socket.getaddrinfo = recording
    import app
    demo = app.build_app("embedded")
    app.launch(demo, server_name="127.0.0.1", server_port=int(sys.argv[1]), prevent_thread_lock=True, quiet=True)
    time.sleep(3)  # Gradio's version check and telemetry run in threads of their own
    demo.close()
    print(json.dumps({"hosts": sorted(set(hosts)), "analytics": os.environ.get("GRADIO_ANALYTICS_ENABLED")}))
""")


def test_start_up_looks_up_no_host_but_its_own(tmp_path):
    """Before: Blocks() started Gradio's version check (api.gradio.app) and launch its telemetry,
    unless the host set GRADIO_ANALYTICS_ENABLED=False itself."""
    from test_load import free_port

    env = {k: v for k, v in os.environ.items() if k != "GRADIO_ANALYTICS_ENABLED"}
    proc = subprocess.run([sys.executable, "-c", LOOKUPS, str(free_port())], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["analytics"] == "False"
    assert not [h for h in found["hosts"] if h not in ("127.0.0.1", "localhost", "::1", "0.0.0.0")], found


def test_a_space_offers_and_loads_only_the_embedded_model(tiny_dir, monkeypatch):
    monkeypatch.delenv("SLOWFAST_ONLY_MODELS", raising=False)
    monkeypatch.delenv("SLOWFAST_MODEL", raising=False)
    assert sessions.allowed_models() is None  # not a Space: any model
    monkeypatch.setenv("SPACE_ID", "someone/slowfast")
    assert sessions.allowed_models() == ["embedded"]
    assert [v for _, v in app.model_choices("embedded")] == ["embedded"]
    assert sessions.load(str(tiny_dir)) == (None, "This host serves only: embedded.")
    demo = app.build_app("embedded")
    model = next(b for b in demo.blocks.values() if getattr(b, "label", None) == "Model")
    trust = next(b for b in demo.blocks.values() if "trust_remote_code" in str(getattr(b, "label", "")))
    assert [v for _, v in model.choices] == ["embedded"] and not model.allow_custom_value and not trust.visible
    monkeypatch.setenv("SLOWFAST_MODEL", str(tiny_dir))  # the host's own choice is served too
    assert sessions.allowed_models() == ["embedded", str(tiny_dir)]
    monkeypatch.setenv("SLOWFAST_ONLY_MODELS", "*")  # the host says otherwise: any model
    assert sessions.allowed_models() is None
    monkeypatch.setenv("SLOWFAST_ONLY_MODELS", str(tiny_dir))
    assert sessions.allowed_models() == [str(tiny_dir)]


def test_a_typed_server_path_gets_one_sentence_whether_it_exists_or_not(tmp_path):
    """Before: '/etc has no config.json' against "model '/x': no such folder": a visitor could
    map the server's folders."""
    (tmp_path / "empty").mkdir()
    names = ["/etc", str(tmp_path / "empty"), str(tmp_path / "missing"), "/no/such/folder", "./nope", "~/nope"]
    answers = [drain(app.on_run(name, "Hi", {}, *values()))[0] for name in names]
    assert len({a.replace(n, "NAME") for a, n in zip(answers, names)}) == 1, answers
    assert "there is no model this server can use under that name" in answers[0]
    message = drain(app.on_run("~nobody-here-xyz/model", "Hi", {}, *values()))[0]
    assert message.startswith("⚠️ Could not load")  # no such user's home: a message, not a RuntimeError
    # the command line keeps the precise message
    from slowfast.models import ModelLoadError, load_model

    with pytest.raises(ModelLoadError, match="has no config.json"):
        load_model(str(tmp_path / "empty"), device="cpu")


# --- 5. bad input ------------------------------------------------------------------------------

def test_a_100000_character_model_name_is_refused_before_the_file_system(monkeypatch):
    """Before: /run answered an unhandled OSError "File name too long" (errno 36)."""
    name = "a" * 100_000
    import pathlib

    stat = pathlib.Path.stat

    def no_stat(self, *args, **kwargs):
        if len(str(self)) >= 100_000:
            raise AssertionError("the file system was asked about the 100,000-character name")
        return stat(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "stat", no_stat)
    message = drain(app.on_run(name, "Hi", {}, *values()))[0]
    assert message == ("⚠️ Model: a name of 100,000 characters is not a model this server can load; allowed: a hub "
                       "id (owner/name) or a folder path of at most 1024 characters.")
    assert drain(app.on_compare(name, "Hi", ["baseline"], {}, *values()))[0] == message
    assert app.chat_template_of(name) is None and app.loading_note(name) == ""
    app.on_model_change(name)  # the page's own event: no exception


@pytest.mark.parametrize("change, words", [
    (dict(temperature=10**400), "temperature: an integer of 401 digits is too large; it must be a number >= 0"),
    (dict(cfg_scale=float("inf")), "cfg_scale: inf is not allowed; it must be a number >= 0"),
    (dict(cfg_scale=1e309), "cfg_scale: inf is not allowed"),
    (dict(temperature=float("nan")), "temperature: nan is not allowed"),
    (dict(sampler="threshold", threshold="abc"), "threshold: 'abc' is not a number; it must be a number in [0, 1]"),
    (dict(seed=2**70), "seed: 1180591620717411303424 is too large; it must be an integer in 0..9223372036854775807"),
    (dict(kp=10**400), "kp: an integer of 401 digits is too large; it must be an integer >= 1 (at most"),
    (dict(gen_length=[96]), "gen_length: [96] is not a number"),
    (dict(sampler=["baseline"]), "sampler: ['baseline'] is not allowed"),
    (dict(cache="yes"), "cache: 'yes' is not allowed; allowed: true or false"),
    (dict(variant=7), "variant: 7 is not allowed; allowed: reference, paper, dream"),
])
def test_hostile_numbers_get_the_settings_checks_message(tiny_dir, change, words):
    """Before: temperature=10**400 raised OverflowError ('int too large to convert to float')
    out of /run, /compare and the settings check; 'abc' for a threshold was 'outside the allowed
    range [0, 1]'."""
    import html

    v = values(**change)
    run = html.unescape(drain(app.on_run(str(tiny_dir), "Hi", {}, *v))[0])
    compared = html.unescape(drain(app.on_compare(str(tiny_dir), "Hi", ["baseline"], {}, *v))[0])
    checked = app.on_check(str(tiny_dir), "Hi", *v)
    for message in (run, checked):
        assert message.startswith("⚠️") and words in message, message
    assert compared.startswith("⚠️") and "Traceback" not in compared


# --- 6. presets checked at start-up ------------------------------------------------------------

GOOD = {"name": "Good", "description": "fine", "settings": {"sampler": "baseline", "gen_length": 32,
                                                             "block_length": 32, "steps": 32}}
BAD_PRESETS = {  # file text -> words of the reason (before: 9 of these stopped the app, 5 with a bare
    # AttributeError, KeyError or TypeError; "cache": "nosuch" ran with the defaults)
    "{not json": "not valid JSON",
    "": "not valid JSON",
    "[1, 2]": "not a JSON object (it holds a list)",
    '"text"': "not a JSON object (it holds a str)",
    "null": "not a JSON object (it holds a NoneType)",
    "3": "not a JSON object (it holds a int)",
    '{"settings": {}}': 'no "name"',
    '{"name": 5, "settings": {}}': 'no "name"',
    '{"name": "x"}': 'no "settings" object',
    '{"name": "x", "settings": [1]}': 'no "settings" object',
    '{"name": "x", "settings": {"params": [1]}}': "settings.params is not an object",
    '{"name": "x", "settings": {"cache": "nosuch"}}': "settings.cache: 'nosuch' is not a cache preset",
    '{"name": "x", "settings": {"cache": 5}}': "settings.cache is a int",
    '{"name": "x", "settings": {"cache": {"kp": "a"}}}': "kp",
    '{"name": "x", "settings": {"bogus": 1}}': "unknown settings ['bogus']",
    '{"name": "x", "settings": {"gen_length": -8}}': "gen_length: -8",
    '{"name": "x", "settings": {"sampler": "magic"}}': "sampler",
    '{"name": "x", "settings": {"temperature": 1e400}}': "temperature",
    '{"name": "x", "prompt": 5, "settings": {}}': '"prompt" is a int, not text',
    '{"name": "x", "settings": {"sampler": "threshold", "params": {"threshold": 2}}}': "threshold: 2",
    '{"name": "x", "settings": {"sampler": "slowfast", "params": {"threshold": 0.5}}}':
        "settings.params: threshold is not a parameter of the slowfast sampler",
}


@pytest.mark.parametrize("text, why", list(BAD_PRESETS.items()))
def test_a_bad_preset_file_is_skipped_with_a_message_naming_it(tmp_path, text, why, caplog):
    (tmp_path / "1-good.json").write_text(json.dumps(GOOD))
    (tmp_path / "2-bad.json").write_text(text)
    problems = []
    presets = load_presets(tmp_path, problems)
    assert list(presets) == ["Good"]
    assert len(problems) == 1 and problems[0].startswith("preset file 2-bad.json: ") and why in problems[0], problems
    assert problems[0].endswith("; skipped") and problems[0] in caplog.text


def test_bytes_that_are_not_utf8_and_a_second_preset_of_one_name_are_skipped(tmp_path):
    (tmp_path / "1-good.json").write_text(json.dumps(GOOD))
    (tmp_path / "2-latin1.json").write_bytes(b'{"name": "caf\xe9"}')
    (tmp_path / "3-again.json").write_text(json.dumps({**GOOD, "description": "the second"}))
    problems = []
    presets = load_presets(tmp_path, problems)
    assert list(presets) == ["Good"] and presets["Good"]["description"] == "fine"  # the first one stays
    assert problems == ["preset file 2-latin1.json: not UTF-8 text (invalid continuation byte); skipped",
                        "preset file 3-again.json: its name 'Good' is already the name of 1-good.json; skipped"]


def test_every_shipped_preset_passes_the_check():
    problems = []
    assert len(load_presets(PRESETS_DIR, problems)) == len(list(PRESETS_DIR.glob("*.json"))) and problems == []
    for path in PRESETS_DIR.glob("*.json"):
        check_preset(json.loads(path.read_text()))


def test_the_page_starts_without_a_bad_preset_and_says_why(tmp_path, monkeypatch):
    (tmp_path / "1-good.json").write_text(json.dumps(GOOD))
    (tmp_path / "2-bad.json").write_text('{"name": "x", "settings": {"cache": "nosuch"}}')
    problems = []
    monkeypatch.setattr(layout, "PRESETS", load_presets(tmp_path, problems))
    monkeypatch.setattr(layout, "PRESET_PROBLEMS", problems)
    demo = app.build_app("embedded")
    menu = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "preset")
    note = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "preset-problems")
    assert [v for _, v in menu.choices] == ["Good"]
    assert note.visible and "2-bad.json" in note.value and "nosuch" in note.value
