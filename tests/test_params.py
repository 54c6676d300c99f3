"""One definition of every parameter (slowfast/params.py): the engine, the CLI, the app, the
presets, the traces and the README agree with it."""
import dataclasses
import os
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import app  # noqa: E402
from slowfast.cache import CacheSettings  # noqa: E402
from slowfast.commands.cli import build_parser  # noqa: E402
from slowfast.engine import GenerationSettings, generate  # noqa: E402
from slowfast.params import BY_NAME, DEFAULTS, PARAMETERS, markdown_table  # noqa: E402
from slowfast.samplers import make_policy  # noqa: E402
from slowfast.samplers.slowfast import SlowFastPolicy  # noqa: E402
from slowfast.session import PRESETS_DIR, Controls, load_presets, preset_controls  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OFF = {"max_forwards_per_block": 0, "max_cycles": 0, "slow_confidence_threshold": 0.0, "factor": 0.0,
       "alg_temp": 0.0, "top_p": 1.0, "top_k": 0}  # the app's "unset" values


def test_every_control_is_a_parameter_with_its_default():
    switches = {"sampler", "chat", "cache"}  # the app's choices, not parameters
    assert set(app.CONTROL_NAMES) - switches == set(BY_NAME)
    d = Controls()
    for p in PARAMETERS:
        want = OFF[p.name] if p.default is None else p.default
        assert getattr(d, p.name) == want, p.name


def test_the_engine_samplers_and_cache_default_to_the_definition():
    s = GenerationSettings()
    for name in ("gen_length", "block_length", "steps", "temperature", "seed", "cfg_scale", "max_forwards_per_block"):
        assert getattr(s, name) == DEFAULTS[name], name
    for sampler in ("baseline", "slowfast", "threshold", "dream"):
        params = make_policy(sampler, {}).params()
        for name, value in params.items():
            if name in BY_NAME and BY_NAME[name].default is not None:
                assert value == DEFAULTS[name], (sampler, name)
    cache = CacheSettings.from_params({}).to_dict()
    assert {k: cache[k] for k in ("kp", "kr", "rho", "refresh_first_layer")} == {
        k: DEFAULTS[k] for k in ("kp", "kr", "rho", "refresh_first_layer")}


def test_reference_names_are_accepted_where_the_reference_code_uses_them():
    for p in PARAMETERS:
        if p.reference and p.reference != p.name:
            if p.group == "cache":
                assert CacheSettings.from_params({p.reference: DEFAULTS[p.name]}).to_dict()[p.name] == DEFAULTS[p.name]
            else:
                value = p.default if p.default is not None else p.high
                assert make_policy(p.group, {p.reference: value}).params()[p.name] == value, p.name


def test_the_cli_has_a_flag_for_every_parameter_with_its_default():
    parser = build_parser()
    base = ["generate", "--prompt", "x"]
    args = parser.parse_args(base)
    for p in PARAMETERS:
        if p.name == "refresh_first_layer":
            assert parser.parse_args(base + ["--no-layer0-refresh"]).no_layer0_refresh is True
            continue
        value = [] if p.default is False else [str(p.choices[-1] if p.choices else p.high if p.high is not None
                                                   else p.default)]
        parsed = parser.parse_args(base + [p.flag, *value])
        assert getattr(parsed, p.name) is not None, p.name
        if p.group == "generation" and p.default is not None:  # block and steps follow the length
            value = getattr(args, p.name)
            if p.name in ("block_length", "steps") and value is None:
                value = args.gen_length
            assert value == p.default, p.name


def test_the_app_sliders_carry_the_range_and_the_reference_name(tiny_dir):
    demo = app.build_app(str(tiny_dir))
    for p in PARAMETERS:
        control = demo.controls[p.name]
        if p.low is not None and hasattr(control, "minimum") and p.name != "seed":
            assert (control.minimum, control.maximum) == (p.low, p.high), p.name
        if p.reference:
            assert p.reference in (control.info or ""), p.name
        if p.choices:
            assert [c[1] if isinstance(c, tuple) else c for c in control.choices] == list(p.choices), p.name


def test_the_readme_table_is_the_definition():
    assert markdown_table() in (ROOT / "README.md").read_text()


def test_every_preset_and_trace_setting_loads_back(tiny_model):
    for name, preset in load_presets(PRESETS_DIR).items():
        s = GenerationSettings.from_dict(preset["settings"])
        s.policy()
        Controls(**preset_controls(preset)).settings()
    trace = generate(tiny_model, "Hi", GenerationSettings(sampler="slowfast", gen_length=16, block_length=16))
    again = generate(tiny_model, "Hi", GenerationSettings.from_dict(trace.settings))
    assert again.tokens == trace.tokens and again.settings == trace.settings
    with pytest.raises(ValueError, match="unknown keys"):
        GenerationSettings.from_dict({"gen_lenght": 8})


def test_one_default_changed_in_the_table_changes_the_slider_the_flag_controls_and_the_docs(tiny_dir, monkeypatch):
    changed = tuple(dataclasses.replace(p, default=0.35) if p.name == "horizon_threshold" else p
                    for p in SlowFastPolicy.PARAMS)
    monkeypatch.setattr(SlowFastPolicy, "PARAMS", changed)  # as if the table's 0.3 read 0.35

    assert app.build_app(str(tiny_dir)).controls["horizon_threshold"].value == 0.35
    generate = build_parser()._subparsers._group_actions[0].choices["generate"]
    assert "(default: 0.35;" in generate._option_string_actions["--horizon-threshold"].help
    assert Controls().horizon_threshold == 0.35
    assert "| `cycle_len_confidence_threshold` (tau_min_conf) | 0.35 | 0 .. 1 |" in markdown_table()
    assert make_policy("slowfast", {}).horizon_threshold == 0.35  # and the engine's reference variant
    assert make_policy("slowfast", {"variant": "paper"}).horizon_threshold == 0.1  # the paper's own value stays


def test_unset_is_the_controls_off_value_both_ways():
    for p in PARAMETERS:
        if p.default is None:
            assert p.to_control(None) == p.off == OFF[p.name] and p.from_control(p.off) is None, p.name
            assert p.from_control(None) is None, p.name
        else:
            assert p.to_control(p.default) == p.default and p.from_control(p.default) == p.default, p.name
