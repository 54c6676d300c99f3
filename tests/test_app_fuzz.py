"""Hypothesis over the app's API surfaces, against a running app (loopback): /run, /compare and
/tune payloads with hostile values for every control and the model and prompt, /replay of mutated
trace files, and preset files. Each answer is a message: the event completes (never Gradio's
error event, never an HTTP error), and a preset file either loads or is skipped with a message
naming it. A fixed number of cases (about a minute on one thread); SLOWFAST_FUZZ=long runs more.
"""
import json
import os
import random
import uuid

import pytest

hypothesis = pytest.importorskip("hypothesis")
gradio_client = pytest.importorskip("gradio_client")
httpx = pytest.importorskip("httpx")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import app  # noqa: E402
from slowfast.engine import GenerationSettings  # noqa: E402
from slowfast.session import Controls, load_presets, preset_controls, run_to_end  # noqa: E402
from test_load import free_port  # noqa: E402

LONG = os.environ.get("SLOWFAST_FUZZ") == "long"


def profile(examples: int):
    return settings(max_examples=examples * (10 if LONG else 1), deadline=None, derandomize=not LONG,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def server(tiny_dir):
    demo = app.build_app(str(tiny_dir))
    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    demo.url = f"http://127.0.0.1:{port}/"
    yield demo
    demo.close()
    for key in list(app.SESSIONS._states):  # the API calls' sessions (a raw call never says it left)
        app.SESSIONS.drop(key)


hostile = st.one_of(
    st.none(), st.booleans(), st.integers(-10**30, 10**30),
    st.sampled_from([10**400, -10**400, 10**1000, 2**63, 2**31, -1, 0, 1]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=16),
    st.lists(st.one_of(st.integers(-5, 600), st.text(max_size=3)), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(-3, 3), max_size=2),
)
# hostile model names, none of the form owner/name (that would ask the hub)
model_names = st.one_of(
    st.sampled_from(["embedded", "/etc", "/", "~", "~nobody-here", "../..", ".", "/nonexistent/x", "a" * 100_000,
                     "a" * 300, "\x00", "nul\x00byte", "/tmp/" + "b" * 256, "é" * 200]),
    st.text(max_size=24).filter(lambda t: t.count("/") != 1), hostile,
)
prompts = st.one_of(st.text(max_size=40), st.sampled_from(["", " ", "x" * 2_000_000, "\ud800", "é" * 5000]), hostile)
control_values = st.fixed_dictionaries({}, optional={name: hostile for name in app.CONTROL_NAMES})
SMALL = dict(chat=False, sampler="baseline", gen_length=16, block_length=16, steps=16)


def payload(model, prompt, changes: dict, *extra) -> str:
    """The JSON text of an event's data: the model, the prompt, ``extra`` inputs, then every
    control (the small defaults, with ``changes``); NaN, infinities and 10**1000 as JSON literals."""
    c = Controls(**SMALL)
    values = [changes.get(n, getattr(c, n)) for n in app.CONTROL_NAMES]
    return json.dumps([model, prompt, *extra, *values], allow_nan=True)


def call(url: str, api: str, data_json: str) -> tuple[str, list]:
    """POST the raw data to /gradio_api/call/<api>; the last event's kind and data."""
    r = httpx.post(url + f"gradio_api/call/{api}", content='{"data": %s}' % data_json,
                   headers={"content-type": "application/json"}, timeout=120)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    with httpx.stream("GET", url + f"gradio_api/call/{api}/{r.json()['event_id']}", timeout=300) as s:
        body = "".join(s.iter_text())
    events = [line.split(": ", 1)[1] for line in body.splitlines() if line.startswith("event: ")]
    datas = [line.split(": ", 1)[1] for line in body.splitlines() if line.startswith("data: ")]
    return events[-1], json.loads(datas[-1])


def answered(event: str, data, where: str) -> str:
    assert event == "complete", f"{where}: {event}: {str(data)[:400]}"
    message = data[0]
    assert isinstance(message, str) and message.strip() and "Traceback" not in message, (where, data)
    return message


@profile(40)
@given(model=st.one_of(st.just("TINY"), model_names), prompt=prompts, changes=control_values)
def test_run_payloads_get_a_message(server, tiny_dir, model, prompt, changes):
    model = str(tiny_dir) if model == "TINY" else model
    event, data = call(server.url, "run", payload(model, prompt, changes))
    message = answered(event, data, "/run")
    if not message.startswith("⚠️"):  # it ran: the status line says how it ended
        assert isinstance(data[3], str) and data[3].split(" |")[0] in (
            "finished", "stopped", "finished (stopped in forwards that decode nothing)") or \
            data[3].startswith("ended: "), data


@profile(20)
@given(model=st.one_of(st.just("TINY"), model_names),
       task=st.one_of(st.sampled_from(["copy", "arithmetic", "story", "nosuch", ""]), hostile),
       count=st.one_of(st.just(2), hostile), points=st.one_of(st.just(2), hostile), seed=hostile)
def test_tune_payloads_get_a_message(server, tiny_dir, model, task, count, points, seed):
    model = str(tiny_dir) if model == "TINY" else model
    data_json = json.dumps([model, task, count, points, seed], allow_nan=True)
    message = answered(*call(server.url, "tune", data_json), "/tune")
    assert message.startswith(("⚠️", "Scoring", "Stopped")) or " settings scored in " in message, message


@profile(12)
@given(prompt=prompts, configs=st.one_of(st.lists(st.sampled_from(app.COMPARE_CONFIGS), max_size=3), hostile),
       changes=control_values)
def test_compare_payloads_get_a_message(server, tiny_dir, prompt, configs, changes):
    event, data = call(server.url, "compare", payload(str(tiny_dir), prompt, changes, configs))
    answered(event, data, "/compare")


@pytest.fixture(scope="module")
def replay_client(server):
    client = gradio_client.Client(server.url, verbose=False)
    yield client
    client.close()


@pytest.fixture(scope="module")
def good_trace(tiny_model):
    return run_to_end(tiny_model, "Hi", GenerationSettings(sampler="slowfast", gen_length=16, block_length=16)).to_dict()


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                                     st.sampled_from([10**400, float("nan"), float("inf")]), st.floats(),
                                     st.text(max_size=6)),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                           max_leaves=6)
trace_keys = st.sampled_from(["settings", "records", "tokens", "prompt_ids", "summary", "format", "version",
                              "gen_length", "confidence", "argmax", "decoded", "span", "b64", "shape", "dtype", "step",
                              "nfe", "fed_end", "mask_id", "text", "sampler", "params", "cache", "model", "prompt"])
paths = st.lists(st.one_of(trace_keys, st.integers(0, 40)), min_size=1, max_size=4)


def mutate(value, path, new):
    if not path:
        return new
    head, *rest = path
    if isinstance(value, dict):
        return {**value, str(head): mutate(value.get(str(head)), rest, new)}
    if isinstance(value, list) and value and isinstance(head, int):
        i = head % len(value)
        return [*value[:i], mutate(value[i], rest, new), *value[i + 1:]]
    return new


@profile(25)
@given(edits=st.lists(st.tuples(paths, json_values), min_size=1, max_size=3),
       damage=st.sampled_from(["none", "none", "none", "truncate", "bytes", "nest", "empty"]),
       seed=st.integers(0, 2**16))
def test_replayed_trace_files_get_a_message(replay_client, good_trace, tmp_path_factory, edits, damage, seed):
    d = good_trace
    for path, new in edits:
        d = mutate(d, path, new)
    text = json.dumps(d, allow_nan=True).encode()
    rnd = random.Random(seed)
    if damage == "truncate":
        text = text[: rnd.randrange(len(text))]
    elif damage == "bytes":
        i = rnd.randrange(len(text))
        text = text[:i] + bytes([rnd.randrange(256)]) * 3 + text[i + 3:]
    elif damage == "nest":
        text = b"[" * 100_000 + b"]" * 100_000
    elif damage == "empty":
        text = b""
    path = tmp_path_factory.mktemp("replay") / f"{uuid.uuid4().hex}.json"
    path.write_bytes(text)
    out = replay_client.predict(trace_file=gradio_client.handle_file(str(path)), api_name="/replay")
    message = out[0]
    assert isinstance(message, str) and message.startswith(("Replaying", "⚠️ Not a trace file: ")), message
    assert "Traceback" not in message


preset_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                                       st.sampled_from([10**400, "nosuch", "slowfast-headline", "baseline", "slowfast",
                                                        "threshold", 96, 32, 0.9]),
                                       st.text(max_size=6)),
                             lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                             max_leaves=8)
preset_settings = st.fixed_dictionaries({}, optional={
    "sampler": preset_values, "gen_length": preset_values, "block_length": preset_values, "steps": preset_values,
    "temperature": preset_values, "params": st.one_of(preset_values, st.dictionaries(
        st.sampled_from(["threshold", "exploration_steps", "variant", "remasking", "bogus"]), preset_values,
        max_size=2)),
    "cache": st.one_of(preset_values, st.dictionaries(st.sampled_from(["kp", "kr", "rho", "x"]), preset_values,
                                                      max_size=2)),
})
preset_files = st.one_of(
    preset_values,
    st.fixed_dictionaries({"name": st.one_of(st.text(max_size=8), preset_values), "settings": preset_settings},
                          optional={"description": preset_values, "prompt": preset_values,
                                    "explanation": preset_values, "checks": preset_values}),
)


@profile(60)
@given(preset=preset_files, raw=st.one_of(st.none(), st.binary(max_size=40)))
def test_preset_files_load_or_are_skipped_with_a_message(tmp_path_factory, preset, raw):
    folder = tmp_path_factory.mktemp("presets")
    (folder / "1-good.json").write_text(json.dumps({"name": "Good", "settings": {"sampler": "baseline"}}))
    (folder / "2-fuzzed.json").write_bytes(raw if raw is not None else json.dumps(preset, allow_nan=True).encode())
    problems = []
    presets = load_presets(folder, problems)
    assert "Good" in presets
    if len(presets) == 2:  # it loaded: the app can use it
        (other,) = [p for name, p in presets.items() if name != "Good"]
        Controls(**preset_controls(other)).settings()
        assert problems == []
    else:
        assert len(problems) == 1 and problems[0].startswith("preset file 2-fuzzed.json: "), problems
        assert problems[0].endswith("; skipped") and "\n" not in problems[0]
