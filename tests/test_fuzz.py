"""Property-based tests: hostile or careless input ends in a valid trace or one clear error.

The default profile runs a few dozen cases per property so the suite stays fast; the long
one (``SLOWFAST_FUZZ=long``, thousands of cases in all) is what the README reports:

    SLOWFAST_FUZZ=long python -m pytest -q tests/test_fuzz.py
"""
import contextlib
import io
import json
import os
import re

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import app  # noqa: E402
from slowfast.commands import cli  # noqa: E402
from slowfast.engine import GenerationSettings, Run  # noqa: E402
from slowfast.samplers import DecodingStalled  # noqa: E402
from slowfast.session import Controls, run_to_end  # noqa: E402
from slowfast.trace import Trace  # noqa: E402

LONG = os.environ.get("SLOWFAST_FUZZ") == "long"
settings.register_profile("short", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("long", max_examples=600, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PROFILE = settings.get_profile("long" if LONG else "short")

NAMED = re.compile(r"^(prompt|gen_length|block_length|steps|seed|temperature|cfg_scale|max_forwards_per_block|"
                   r"sampler|remasking|variant|exploration_steps|horizon_threshold|stability_window|std_threshold|"
                   r"high_confidence_threshold|max_cycles|stop_when_full|threshold|factor|kp|kr|rho|"
                   r"refresh_first_layer|cache|params|slow_confidence_threshold|alg|alg_temp|eps|top_p|top_k|[a-z_]+ parameter|unknown [a-z ]+|--[a-z-]+)\b")

anything = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
small_len = st.sampled_from([0, 1, 4, 8, 16, 24, 32, -8, 7, 10**6])
texts = st.text(max_size=60)  # any Unicode, control characters and the empty string included


def check_named(exc: BaseException) -> None:
    assert isinstance(exc, ValueError), f"{type(exc).__name__}: {exc}"
    assert NAMED.match(str(exc)), f"the message does not name the parameter: {exc}"


def check_trace(trace: Trace) -> None:
    """A finished or cleanly ended run whose file loads back identically."""
    Trace.from_dict(json.loads(json.dumps(trace.to_dict())))
    assert trace.summary.get("finished") or trace.summary.get("error")


@PROFILE
@given(sampler=st.sampled_from(["baseline", "slowfast", "threshold", "nope", ""]), gen=small_len, block=small_len,
       steps=st.one_of(small_len, anything), seed=st.one_of(st.integers(-5, 2**70), anything),
       temperature=st.one_of(st.floats(0, 2), anything), cfg=st.one_of(st.sampled_from([0.0, 1.0]), anything),
       params=st.dictionaries(st.sampled_from(["exploration_steps", "horizon_threshold", "stability_window",
                                               "std_threshold", "high_confidence_threshold", "max_cycles",
                                               "threshold", "factor", "remasking", "variant", "stop_when_full",
                                               "bogus"]), anything, max_size=3),
       cache=st.one_of(st.none(), st.dictionaries(st.sampled_from(["kp", "kr", "rho", "refresh_first_layer", "x"]),
                                                  anything, max_size=2)),
       cap=st.one_of(st.none(), st.integers(-2, 40), anything))
def test_engine_settings(tiny_model, sampler, gen, block, steps, seed, temperature, cfg, params, cache, cap):
    s = GenerationSettings(sampler=sampler, gen_length=gen, block_length=block, steps=steps, seed=seed,
                           temperature=temperature, cfg_scale=cfg, params=params, cache=cache,
                           max_forwards_per_block=cap)
    try:
        run = Run(tiny_model, "Hi", s)
    except Exception as exc:  # noqa: BLE001 - what we check is the kind and the message
        check_named(exc)
        return
    try:
        for _ in run:
            pass
    except DecodingStalled:
        pass
    check_trace(run.trace)


@PROFILE
@given(prompt=st.one_of(texts, st.lists(st.integers(-3, 600), max_size=8),
                        st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "x"]),
                                                        "content": texts}), max_size=3)),
       chat=st.booleans())
def test_prompts(tiny_model, prompt, chat):
    s = GenerationSettings(sampler="threshold", gen_length=16, block_length=16, chat=chat)
    try:
        run = Run(tiny_model, prompt, s)
    except Exception as exc:  # noqa: BLE001
        check_named(exc)
        return
    for _ in run:
        pass
    check_trace(run.trace)


FLAGS = ["--sampler", "--gen-length", "--block-length", "--steps", "--temperature", "--seed", "--cfg-scale",
         "--param", "--cache", "--kp", "--kr", "--rho", "--threshold", "--factor", "--exploration-steps",
         "--horizon-threshold", "--max-forwards-per-block", "--device", "--dtype", "--trace", "--variant",
         "--stop-when-full", "--no-chat", "--bogus"]
VALUES = st.one_of(st.sampled_from(["slowfast", "baseline", "threshold", "8", "16", "0", "-1", "1e9", "nan",
                                    "true", "factor=true", "x=1", "meta", "cuda", "gpu7", "bf16", "paper",
                                    "/nonexistent/dir/t.json", ".", "1.5", "", "0.9", "llada"]),
                   st.text(max_size=8))


@PROFILE
@given(extra=st.lists(st.tuples(st.sampled_from(FLAGS), VALUES), max_size=4), prompt=texts)
def test_cli_arguments(tiny_dir, tmp_path, monkeypatch, extra, prompt):
    monkeypatch.chdir(tmp_path)  # --trace with a fuzzed name writes here
    argv = ["generate", "--model", str(tiny_dir), "--prompt", prompt, "--gen-length", "16", "--block-length", "16",
            "--steps", "16"]
    for flag, value in extra:
        argv += [flag] if flag in ("--stop-when-full", "--no-chat") else [flag, value]
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse: an unknown flag or a value of the wrong type
            code = exc.code
    assert code in (0, 1, 2), code
    if code:
        message = err.getvalue().strip().split("\n")  # a fuzzed value may hold a \r
        assert message and "Traceback" not in err.getvalue(), err.getvalue()
        assert message[-1].startswith("error:") or "error:" in message[-1], message


control_values = st.fixed_dictionaries({}, optional={
    "sampler": st.sampled_from(["baseline", "slowfast", "threshold", "bogus"]),
    "gen_length": small_len, "block_length": small_len, "steps": st.one_of(small_len, anything),
    "seed": st.one_of(st.integers(-1, 2**65), st.floats(allow_nan=True)),
    "temperature": st.one_of(st.floats(-1, 3), anything), "exploration_steps": st.one_of(st.integers(-1, 20), anything),
    "horizon_threshold": st.floats(allow_nan=True), "stability_window": st.one_of(st.integers(-1, 9), anything),
    "std_threshold": st.floats(allow_nan=True), "high_confidence_threshold": st.floats(allow_nan=True),
    "threshold": st.floats(allow_nan=True), "factor": st.one_of(st.floats(allow_nan=True), anything),
    "cache": st.booleans(), "kp": st.one_of(st.integers(-1, 600), anything), "kr": st.integers(-1, 200),
    "rho": st.floats(allow_nan=True), "variant": st.sampled_from(["reference", "paper", "x"]),
    "remasking": st.sampled_from(["low_confidence", "random", "x"]),
})


@PROFILE
@given(changes=control_values, prompt=texts)
def test_app_controls(tiny_dir, changes, prompt):
    values = Controls(gen_length=16, block_length=16, steps=16, chat=False)
    values = [changes.get(n, getattr(values, n)) for n in app.CONTROL_NAMES]
    assert app.on_check(str(tiny_dir), prompt, *values).startswith(("⚠️", "✓"))
    state = {}
    outputs = None
    for outputs in app.on_run(str(tiny_dir), prompt, state, *values):
        pass
    message = outputs[0]
    if "trace" in state:
        check_trace(state["trace"])
    else:
        assert message.startswith("⚠️") and "Traceback" not in message


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


@pytest.fixture(scope="module")
def good_trace(tiny_model):
    return run_to_end(tiny_model, "Hi", GenerationSettings(sampler="slowfast", gen_length=16, block_length=16)).to_dict()


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(),
                                     st.text(max_size=6)),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                           max_leaves=6)
paths = st.lists(st.one_of(st.sampled_from(["settings", "records", "tokens", "prompt_ids", "summary", "format",
                                            "version", "gen_length", "confidence", "argmax", "decoded", "span",
                                            "b64", "shape", "dtype", "step", "nfe", "fed_end", "mask_id", "text"]),
                           st.integers(0, 40)), min_size=1, max_size=4)


@PROFILE
@given(edits=st.lists(st.tuples(paths, json_values), min_size=1, max_size=3))
def test_malformed_traces(good_trace, edits):
    d = good_trace
    for path, new in edits:
        d = mutate(d, path, new)
    try:
        trace = Trace.from_dict(d)
    except ValueError:
        return
    Trace.from_dict(trace.to_dict())  # what loads is a valid trace that round-trips


# --- numbers and shapes no control produces: a dict from a file, a worker's request, an API call --------------
def huge(exponent: int) -> st.SearchStrategy:
    """+-10**exponent (made lazily: hypothesis's own reprs cannot print an integer of 5000 digits)."""
    return st.sampled_from([1, -1]).map(lambda sign: sign * 10**exponent)


hostile_numbers = st.one_of(st.integers(), st.integers(-2**1100, 2**1100), huge(400), huge(5000), st.floats(),
                            st.sampled_from([2**63, 2**64, -2**63 - 1, 1e308, -0.0]))
hostile_leaves = st.one_of(st.none(), st.booleans(), hostile_numbers, st.text(max_size=8),
                           st.sampled_from(["slowfast", "baseline", "threshold", "dream", "paper", "reference",
                                            "slowfast-gsm8k", "x" * 5000]))
SETTING_NAMES = ["sampler", "gen_length", "block_length", "steps", "temperature", "seed", "cfg_scale", "chat",
                 "params", "max_forwards_per_block", "cache"]
INNER_NAMES = ["exploration_steps", "horizon_threshold", "std_threshold", "stability_window", "max_cycles",
               "high_confidence_threshold", "slow_confidence_threshold", "threshold", "factor", "variant", "alg",
               "alg_temp", "eps", "top_p", "top_k", "kp", "kr", "rho", "refresh_first_layer", "K_max"]
hostile_values = st.recursive(
    hostile_leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.one_of(st.sampled_from(INNER_NAMES), st.text(max_size=4)), inner,
                                            max_size=3)),
    max_leaves=6)
hostile_settings = st.one_of(
    st.dictionaries(st.one_of(st.sampled_from(SETTING_NAMES), st.text(max_size=4)), hostile_values, max_size=6),
    st.fixed_dictionaries({"sampler": st.sampled_from(["slowfast", "threshold", "dream", "baseline"]),
                           "gen_length": st.sampled_from([16, 32]), "block_length": st.just(16)},
                          optional={k: hostile_values for k in SETTING_NAMES[3:]}),
    hostile_values)
KNOWN = re.compile(r"^(settings|params|cache|chat|sampler|gen_length|block_length|steps|temperature|seed|cfg_scale|"
                   r"max_forwards_per_block|[A-Za-z_]+|.+: unknown (cache )?parameter)\b")


@settings(max_examples=600, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(d=hostile_settings)
def test_settings_from_a_dict_are_checked_or_refused_by_name(d):
    """Whatever the dict holds (hypothesis found 47 shapes that raised TypeError, AttributeError or
    OverflowError here), the answer is checked settings or one ValueError: one line naming the
    setting, what it was and what is allowed."""
    try:
        s = GenerationSettings.from_dict(d)
    except ValueError as exc:
        assert type(exc) is ValueError, f"{type(exc).__name__}: {exc}"
        message = str(exc)
        assert "\n" not in message and len(message) < 1000 and KNOWN.match(message), message
        return
    s.policy()  # what from_dict returns, the engine accepts


def number_paths(value, path=()):
    """The path of every number (and true/false) in a trace's dict."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from number_paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:3]):
            yield from number_paths(v, (*path, i))
    elif isinstance(value, (int, float)):
        yield path


@settings(max_examples=600, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_trace_numbers_of_any_size_are_refused_by_the_validator(good_trace, data):
    """Every number in a trace (settings, summary, records, cache counts, info) set to an integer
    beyond a float's range, NaN, inf or any size: the validator's TraceFormatError (hypothesis
    found 33 OverflowErrors here), or a trace that round-trips."""
    import copy

    paths = sorted(number_paths(good_trace), key=str)
    d = copy.deepcopy(good_trace)
    for path in data.draw(st.lists(st.sampled_from(paths), min_size=1, max_size=2)):
        target = d
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = data.draw(hostile_numbers)
    try:
        trace = Trace.from_dict(d)
    except ValueError as exc:
        assert type(exc).__name__ == "TraceFormatError", f"{type(exc).__name__}: {exc}"
        assert "\n" not in str(exc) and len(str(exc)) < 1000, str(exc)
        return
    Trace.from_dict(trace.to_dict())
