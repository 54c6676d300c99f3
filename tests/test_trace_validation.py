"""Trace files are checked in full before anything is returned (uploads are replayed in public).

Each malformed file raises TraceFormatError naming the field (and the record), fast, without
echoing the file's text; real traces of the tiny checkpoint still round-trip bit for bit.
"""
import copy
import json
import re
import time

import numpy as np
import pytest

import slowfast.trace_format as trace_format  # the limits live with the validator
from slowfast.engine import GenerationSettings, Run, generate
from slowfast.samplers import DecodingStalled
from slowfast.trace import MAX_FILE_BYTES, MAX_GEN_LENGTH, Trace, TraceFormatError, encode_array

PROMPT = "What is 2+2?"
G = 32
EVIL = "![x](http://evil.example/img.png)<img src=http://evil.example/a.png><script>alert(1)</script>"


@pytest.fixture(scope="module")
def real(tiny_model):
    """A slowfast run with the feature cache (every record field filled), as a Trace."""
    return generate(tiny_model, PROMPT, GenerationSettings(sampler="slowfast", gen_length=G, block_length=16,
                                                             cache={"kp": 5, "kr": 2}))


@pytest.fixture
def good(real):
    """The real trace as it is in a file (plain JSON types), a fresh copy per test."""
    return json.loads(json.dumps(real.to_dict()))


def refused(tmp_path, content, match):
    """Write ``content`` as a trace file, load it: TraceFormatError matching ``match``, in well under 1 s."""
    path = tmp_path / "trace.json"
    if isinstance(content, (dict, list)):
        content = json.dumps(content)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    t0 = time.perf_counter()
    with pytest.raises(TraceFormatError, match=match) as info:
        Trace.load(path)
    assert time.perf_counter() - t0 < 1.0
    return str(info.value)


# --- the file as a whole ------------------------------------------------------------------------------------
def test_an_empty_list_is_not_a_trace(tmp_path):
    assert "a list" in refused(tmp_path, "[]", "trace: the file holds a list")


@pytest.mark.parametrize("content,match", [
    ("{}", "no 'format' field"),
    ('{"format": "other"}', "format 'other' is not a 'slowfast-trace' file"),
    ('{"format": "slowfast-trace"}', "version null is not supported"),
    ('{"format": "slowfast-trace", "version": 2}', "version 2 is not supported"),
    ('{"format": "slowfast-trace", "version": true}', "version true is not supported"),
    ("42", "trace: the file holds a number"),
    ("", "not valid JSON"),
    ('{"format": ', "not valid JSON"),
])
def test_other_files_are_refused(tmp_path, content, match):
    refused(tmp_path, content, match)


def test_a_100k_deep_nesting_is_refused_not_a_recursion_error(tmp_path):
    refused(tmp_path, "[" * 100_000 + "]" * 100_000, "nested too deeply")
    refused(tmp_path, '{"format": "slowfast-trace", "version": 1, "x": ' + "{\"a\": " * 100_000 + "1" + "}" * 100_001,
            "nested too deeply")


def test_bytes_that_are_not_utf8_are_refused(tmp_path):
    refused(tmp_path, b'{"format": "slowfast-trace\xff\xfe"}', "not UTF-8 text")


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.json"
    with open(path, "wb") as f:  # sparse: no disk used; reading and parsing it would take seconds
        f.truncate(MAX_FILE_BYTES + 1)
    t0 = time.perf_counter()
    with pytest.raises(TraceFormatError, match=f"{MAX_FILE_BYTES + 1} bytes; allowed: at most {MAX_FILE_BYTES}"):
        Trace.load(path)
    assert time.perf_counter() - t0 < 0.2


def test_the_size_limit_holds_for_a_real_trace_too(tmp_path, monkeypatch, real):
    path = real.save(tmp_path / "t.json")
    monkeypatch.setattr(trace_format, "MAX_FILE_BYTES", path.stat().st_size - 1)
    with pytest.raises(TraceFormatError, match="allowed: at most"):
        Trace.load(path)


def test_too_many_json_values_are_refused_before_parsing(tmp_path, monkeypatch):
    monkeypatch.setattr(trace_format, "MAX_JSON_ITEMS", 1000)
    refused(tmp_path, "[" + "0," * 2000 + "0]", "2001 JSON values; allowed: at most 1000")


def test_nan_infinity_and_endless_integers_are_refused(tmp_path, good):
    text = json.dumps(good)

    def with_value(key, literal):  # the first ``"key": number`` in the file set to ``literal``
        return re.sub(rf'"{key}": [-0-9.e+]+', f'"{key}": {literal}', text, count=1)

    for literal, shown in (("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf"), ("1e999", "inf")):
        refused(tmp_path, with_value("ms", literal), rf"record 0: ms: {shown} is not a finite number")
    refused(tmp_path, with_value("seconds", "NaN"), r"summary\.seconds: nan is not a finite number")
    refused(tmp_path, with_value("temperature", "NaN"), r"settings\.temperature: nan is not a finite number")
    refused(tmp_path, with_value("mask_id", "9" * 5000), "number too long")


def test_an_integer_beyond_a_floats_range_is_refused_by_name(tmp_path, good):
    """A number JSON holds but a float cannot (10**400): the validator's message, never OverflowError."""
    for where, path, match in (("records", (0, "ms"), r"record 0: ms: an integer of 401 digits is not a finite"),
                               ("settings", ("temperature",), r"settings\.temperature: an integer of 401 digits"),
                               ("settings", ("cfg_scale",), r"settings\.cfg_scale: an integer of 401 digits"),
                               ("summary", ("seconds",), r"summary\.seconds: an integer of 401 digits"),
                               ("records", (0, "fed_end"), r"record 0: fed_end: an integer of 401 digits outside")):
        d = copy.deepcopy(good)
        target = d[where]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = 10**400
        refused(tmp_path, d, match)
        with pytest.raises(TraceFormatError, match=match):
            Trace.from_dict(d)
    d = copy.deepcopy(good)
    d["records"][0]["decoded"] = [10**5000]  # more digits than Python prints
    with pytest.raises(TraceFormatError, match="decoded position an integer of 5001 digits outside"):
        Trace.from_dict(d)


# --- field by field -----------------------------------------------------------------------------------------
def set_gen_length(value):
    def mutate(d):
        d["settings"]["gen_length"] = value
        d["records"] = []
    return mutate


def set_record(i, key, value):
    def mutate(d):
        d["records"][i][key] = value
    return mutate


def set_array(i, name, **changes):
    def mutate(d):
        d["records"][i][name].update(changes)
    return mutate


def short_confidence(d):
    d["records"][0]["confidence"] = encode_array(np.zeros(G - 1, np.float16))


def wrong_dtype(d):
    d["records"][0]["confidence"] = encode_array(np.zeros(G, np.float32))


def bad_base64(d):
    b64 = d["records"][0]["argmax"]["b64"]
    d["records"][0]["argmax"]["b64"] = "!" + b64[1:]


def argmax_values(values):
    def mutate(d):
        d["records"][0]["argmax"] = encode_array(np.asarray(values, np.int32))
    return mutate


def confidence_value(value):
    def mutate(d):
        conf = np.zeros(G, np.float16)
        conf[5] = value
        d["records"][0]["confidence"] = encode_array(conf)
    return mutate


def decoded_twice(d):
    first = next(r for r in d["records"] if r["decoded"])
    d["records"][-1]["decoded"].append(first["decoded"][0])


def steps_swapped(d):
    d["records"][1]["step"], d["records"][2]["step"] = 2, 1


def nfe_back(d):
    d["records"][2]["nfe"] = 0


def drop(*path):
    def mutate(d):
        target = d
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return mutate


def add(*path, value=1):
    def mutate(d):
        target = d
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


CASES = {
    "gen_length 200000, no records": (set_gen_length(200000),
                                      rf"settings\.gen_length: 200000 outside 1\.\.{MAX_GEN_LENGTH}"),
    # the settings' values are checked by the engine's own check (``GenerationSettings.policy``)
    "gen_length 0": (set_gen_length(0), r"settings: gen_length: 0 is not allowed; it must be an integer in 1\.\."),
    "gen_length negative": (set_gen_length(-64), r"settings: gen_length: -64 is not allowed"),
    "gen_length a string": (set_gen_length("64"), r"settings: gen_length: '64' is not allowed; it must be an integer"),
    "gen_length a float": (set_gen_length(32.0), r"settings: gen_length: 32\.0 is not allowed; it must be an integer"),
    "gen_length true": (set_gen_length(True), r"settings: gen_length: True is not allowed; it must be an integer"),
    "gen_length not a multiple of block_length": (add("settings", "block_length", value=24),
                                                  r"settings: gen_length: 32 is not divisible by block_length 24"),
    "settings missing a key": (drop("settings", "seed"), r"settings: missing field 'seed'"),
    "settings unknown key": (add("settings", "extra"), r"settings: unknown field 'extra'"),
    "unknown sampler": (add("settings", "sampler", value="turbo"), r"settings: sampler: 'turbo' is not allowed"),
    "sampler parameter out of range": (add("settings", "params", "horizon_threshold", value=7.0),
                                       r"settings: horizon_threshold: 7\.0 is outside the allowed range"),
    "sampler parameter a list": (add("settings", "params", "std_threshold", value=[1]),
                                 r"settings\.params\.std_threshold: expected a number, a string"),
    "cache setting a string": (add("settings", "cache", "kp", value="5"),
                               r"settings: kp: '5' is not allowed; it must be an integer >= 1"),
    "cache setting a list": (add("settings", "cache", "kp", value=[5]), r"settings\.cache\.kp: expected a number"),
    "temperature negative": (add("settings", "temperature", value=-1.0),
                             r"settings: temperature: -1\.0 is not allowed; it must be a number >= 0"),
    "seed a long text": (add("settings", "seed", value="x" * 65), r"settings\.seed: 65 characters"),
    "unknown top-level field": (add("extra"), r"trace: unknown field 'extra'"),
    "missing records": (drop("records"), r"trace: missing field 'records'"),
    "records not a list": (add("records", value={}), r"records: expected a list, got an object"),
    "tokens of the wrong length": (add("tokens", value=[1, 2, 3]), r"tokens: 3 tokens; expected gen_length = 32"),
    "a negative token": (lambda d: d["tokens"].__setitem__(4, -1), r"tokens\[4\]: -1 outside 0\.\."),
    "prompt_ids not a list": (add("prompt_ids", value="1 2 3"), r"prompt_ids: expected a list"),
    "model not a string": (add("model", value=7), r"model: expected a string, got 7"),
    "summary missing a key": (drop("summary", "nfe"), r"summary: missing field 'nfe'"),
    "summary seconds a string": (add("summary", "seconds", value="1.0"), r"summary\.seconds: expected a number"),
    "token_strings key not an id": (add("token_strings", "abc", value="x"),
                                    r"token_strings: key 'abc' is not a token id"),
    "token_strings value not a string": (add("token_strings", "7", value=7), r"token_strings\[7\]: expected a string"),
    "array of the wrong length": (short_confidence, r"record 0: confidence: shape \[31\]; expected \[32\]"),
    "array shape says right, data short": (set_array(0, "confidence", b64="AAAA"),
                                           r"record 0: confidence: b64: 4 characters; expected 88"),
    "array of the wrong dtype": (wrong_dtype, r"record 0: confidence: dtype '<f4'; expected '<f2'"),
    "array with a shape of two axes": (set_array(0, "argmax", shape=[4, 8]),
                                       r"record 0: argmax: shape \[4, 8\]; expected \[32\]"),
    "bad base64": (bad_base64, r"record 0: argmax: b64: not valid base64"),
    "negative token id in argmax": (argmax_values([0] * 7 + [-3] + [0] * (G - 8)),
                                    r"record 0: argmax: token id -3 at position 7 is negative"),
    "confidence above 1": (confidence_value(1.5), r"record 0: confidence: value 1\.5 at position 5 outside 0\.\.1"),
    "confidence NaN": (confidence_value(np.nan), r"record 0: confidence: value nan at position 5 outside 0\.\.1"),
    "decoded position out of range": (set_record(3, "decoded", [G + 2]),
                                      rf"record 3: decoded position {G + 2} outside 0\.\.{G - 1}"),
    "decoded position negative": (set_record(1, "decoded", [-1]), r"record 1: decoded position -1 outside"),
    "decoded position a string": (set_record(1, "decoded", ["3"]), r"record 1: decoded position '3' is not an integer"),
    "decoded twice": (decoded_twice, r"record \d+: decoded position \d+ was already decoded by record \d+"),
    "span end past gen_length": (set_record(0, "span", [0, G + 1]), r"record 0: span: \[0, 33\) is not within"),
    "span start after end": (set_record(0, "span", [9, 4]), r"record 0: span: \[9, 4\) is not within"),
    "span of three": (set_record(0, "span", [0, 4, 8]), r"record 0: span: expected null or two integers"),
    "fed_end past gen_length": (set_record(1, "fed_end", G + 1), rf"record 1: fed_end: {G + 1} outside 0\.\.{G}"),
    "steps out of order": (steps_swapped, r"record 1: step 2; expected 1"),
    "nfe decreases": (nfe_back, r"record 2: nfe 0 is less than the previous record's 2"),
    "block past the canvas": (set_record(0, "block", 2), r"record 0: block: 2 outside 0\.\.1"),
    "unknown stage": (set_record(0, "stage", "warp"), r"record 0: stage: 'warp' is not one of baseline, slow"),
    "record missing a field": (drop("records", 0, "stage"), r"record 0: missing field 'stage'"),
    "record unknown field": (add("records", 0, "extra"), r"record 0: unknown field 'extra'"),
    "record a list": (add("records", 1, value=[]), r"record 1: expected an object, got a list"),
    "ms NaN": (set_record(2, "ms", float("nan")), r"record 2: ms: nan is not a finite number"),
    "flops infinite": (set_record(2, "flops", float("inf")), r"record 2: flops: inf is not a finite"),
    "info value an object": (add("records", 0, "info", "cycle", value={"a": 1}), r"record 0: info\.cycle: expected"),
    "cache layers of unequal length": (lambda d: d["records"][1]["cache"]["prompt_reused"].append(0),
                                       r"record 1: cache\.prompt_reused: \d+ layers; response_reused has"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_malformed_trace_is_refused_naming_the_problem(tmp_path, good, name):
    mutate, match = CASES[name]
    mutate(good)
    refused(tmp_path, json.dumps(good), match)
    t0 = time.perf_counter()
    with pytest.raises(TraceFormatError, match=match):  # the same from a dict (the GPU worker's path)
        Trace.from_dict(copy.deepcopy(good))
    assert time.perf_counter() - t0 < 1.0


def test_every_case_is_also_a_value_error(good):
    set_gen_length(200000)(good)
    with pytest.raises(ValueError):
        Trace.from_dict(good)


def test_the_record_limit(tmp_path, monkeypatch, good):
    monkeypatch.setattr(trace_format, "MAX_RECORDS", 3)
    refused(tmp_path, good, r"records: \d+ entries; allowed: at most 3")


def test_messages_never_echo_the_files_text(tmp_path, good):
    """Messages are shown as Markdown in the app: a file's text is described, not quoted."""
    for mutate in (add("format", value=EVIL), add("settings", "sampler", value=EVIL),
                   add("records", 0, "stage", value=EVIL), add("settings", "params", "variant", value=EVIL),
                   add("settings", "params", EVIL, value=1), add(EVIL), add("token_strings", EVIL, value="x"),
                   add("records", 0, "confidence", "dtype", value=EVIL)):
        d = copy.deepcopy(good)
        mutate(d)
        message = refused(tmp_path, d, ".")
        assert not any(bad in message for bad in ("<img", "<script", "](", "evil")), message


# --- real traces still round-trip ---------------------------------------------------------------------------
def stopped_run(model):
    run = Run(model, PROMPT, GenerationSettings(sampler="baseline", gen_length=G, block_length=G, steps=G))
    for record in run:
        if record.step == 2:
            run.stop()
    return run.trace


def capped_run(model):
    run = Run(model, PROMPT, GenerationSettings(sampler="baseline", gen_length=G, block_length=G, steps=G,
                                                max_forwards_per_block=5))
    with pytest.raises(DecodingStalled):
        for _ in run:
            pass
    return run.trace


RUNS = {
    "slowfast + cache": lambda m: generate(m, PROMPT, GenerationSettings(sampler="slowfast", gen_length=64,
                                                                         block_length=32, cache={})),
    "slowfast paper, sampled": lambda m: generate(m, PROMPT, GenerationSettings(
        sampler="slowfast", gen_length=G, block_length=16, params={"variant": "paper"}, temperature=0.8, seed=3)),
    "baseline": lambda m: generate(m, PROMPT, GenerationSettings(sampler="baseline", gen_length=G, block_length=16,
                                                                 steps=16)),
    "threshold + cfg": lambda m: generate(m, PROMPT, GenerationSettings(sampler="threshold", gen_length=G,
                                                                        block_length=16, cfg_scale=1.5)),
    "stopped": stopped_run,
    "stalled": capped_run,
    "not started": lambda m: Run(m, PROMPT, GenerationSettings(gen_length=G, block_length=G)).trace,
}


@pytest.mark.parametrize("name", list(RUNS))
def test_real_traces_round_trip_bit_for_bit(tiny_model, tmp_path, name):
    trace = RUNS[name](tiny_model)
    path = trace.save(tmp_path / "t.json")
    t0 = time.perf_counter()
    loaded = Trace.load(path)
    assert time.perf_counter() - t0 < 1.0
    assert loaded.to_dict() == trace.to_dict()
    assert loaded.save(tmp_path / "again.json").read_bytes() == path.read_bytes()
    for a, b in zip(loaded.records, trace.records):
        assert a.confidence.dtype == np.float16 and a.argmax.dtype == np.int32
        assert a.confidence.tobytes() == b.confidence.tobytes() and a.argmax.tobytes() == b.argmax.tobytes()
    assert Trace.from_dict(trace.to_dict()).to_dict() == trace.to_dict()  # without JSON in between


def test_the_largest_empty_canvas_loads_and_renders_quickly(good):
    """The replay that held the app for 99 s, at the largest gen_length allowed: a fraction of a second."""
    import visuals

    d = good
    d["settings"].update(gen_length=MAX_GEN_LENGTH, block_length=MAX_GEN_LENGTH, cache=None)
    d.update(records=[], tokens=[d["mask_id"]] * MAX_GEN_LENGTH)
    t0 = time.perf_counter()
    trace = Trace.from_dict(d)
    html = visuals.canvas_html(trace)
    for fn in visuals.ALL_FIGURES.values():
        fn(trace)
    assert html.count('class="sf-cell"') == MAX_GEN_LENGTH
    assert time.perf_counter() - t0 < 5.0
