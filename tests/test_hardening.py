"""Issue 28, the library side: what the engine and the loader refused to count or to notice.

* the forward cap counts every forward of a block, also the idle ones SlowFast's reference
  variant runs after its block is full;
* settings of any shape and size end in one ValueError naming the setting (the hypothesis
  properties are in ``test_fuzz.py`` and ``test_trace_validation.py``);
* a prompt far larger than the model's context is refused before it is tokenized;
* weights that are not floats, or hold NaN or inf, are refused at load time.
"""
import dataclasses
import math
import shutil
import time
from pathlib import Path

import pytest
import torch

from slowfast.commands.cli import main
from slowfast.engine import GenerationSettings, Run, generate
from slowfast.models import ModelLoadError, load_model
from slowfast.samplers import DecodingStalled
from slowfast.trace import Trace

PROMPT = "What is 2+2?"


# --- 1. the forward cap counts every forward of a block -------------------------------------------------------
def idle_settings(**more):
    """One block of 8 that fills in at most 8 forwards, and a slow stage of 200 (idle after that)."""
    return GenerationSettings(sampler="slowfast", gen_length=8, block_length=8,
                              params={"exploration_steps": 200}, **more)


def test_idle_forwards_count_against_the_cap(tiny_model):
    run = Run(tiny_model, PROMPT, idle_settings(max_forwards_per_block=10))
    with pytest.raises(DecodingStalled, match=r"slowfast: block 0 used 10 forwards \(max_forwards_per_block\)"):
        for _ in run:
            pass
    trace = run.trace
    assert len(trace.records) == 10 and trace.summary["nfe"] == 10  # not 200
    assert "used 10 forwards" in trace.summary["error"] and not trace.summary["finished"]
    assert trace.tokens.count(tiny_model.mask_id) == 0  # the block is full: the cap ended idle forwards
    assert not trace.records[-1].decoded


def test_the_default_cap_ends_an_endless_slow_stage(tiny_model):
    """The app's ``exploration_steps=100000`` on one block of 8: 2 x 8 + 16 = 32 forwards, not 100000."""
    s = GenerationSettings(sampler="slowfast", gen_length=8, block_length=8, params={"exploration_steps": 100000})
    t0 = time.perf_counter()
    trace = generate(tiny_model, PROMPT, s)  # the partial trace, the cap's message in it
    assert time.perf_counter() - t0 < 10
    assert len(trace.records) == 32 and "used 32 forwards (max_forwards_per_block)" in trace.summary["error"]
    Trace.from_dict(trace.to_dict())  # and it is a valid trace


def test_a_run_within_the_cap_is_unchanged(tiny_model):
    """Idle forwards inside the cap still run, as the published code runs them."""
    s = idle_settings(max_forwards_per_block=200)
    trace = generate(tiny_model, PROMPT, s)
    assert trace.summary["finished"] and trace.summary["error"] is None and len(trace.records) == 200


def test_cli_ends_at_the_cap_with_status_1_and_the_partial_trace(tiny_dir, tmp_path, capsys):
    out = tmp_path / "t.json"
    code = main(["generate", "--model", str(tiny_dir), "--prompt", "Hi", "--exploration-steps", "200",
                 "--max-forwards-per-block", "10", "--gen-length", "8", "--device", "cpu", "--trace", str(out)])
    err = capsys.readouterr().err
    trace = Trace.load(out)
    assert code == 1 and "used 10 forwards" in err
    assert len(trace.records) == 10 and trace.summary["nfe"] == 10


def test_a_policy_that_idles_without_saying_where_is_still_capped(tiny_model):
    """A policy that spends forwards on a full block without ``current_block``: the forward
    after the cap ends the run (the engine counts what each decision says)."""
    import numpy as np

    from slowfast.params import dataclass_of_params
    from slowfast.samplers.base import Decision, Policy, Stage

    @dataclass_of_params
    class Idler(Policy):
        name = "idler"
        STAGES = (Stage.BASELINE,)

        def reset(self, layout, rng):
            self.n = 0

        def decide(self, obs):
            self.n += 1
            decode = np.flatnonzero(obs.mask) if self.n == 1 else np.zeros(0, dtype=np.int64)
            return Decision(decode=decode, stage=Stage.BASELINE, block=0)

        def done(self, mask):
            return self.n >= 50

    run = Run(tiny_model, PROMPT, GenerationSettings(sampler="threshold", gen_length=8, block_length=8,
                                                     max_forwards_per_block=5))
    run.policy = Idler()
    with pytest.raises(DecodingStalled, match=r"block 0 used 6 forwards, more than max_forwards_per_block \(5\)"):
        for _ in run:
            pass
    assert len(run.trace.records) == 6


# --- 2. settings of any shape: a ValueError naming the setting ------------------------------------------------
HOSTILE = [
    ({"params": [96]}, "params: [96] is not allowed"),
    ({"params": 3}, "params: 3 is not allowed"),
    ({"cache": [1.0]}, "cache: [1.0] is not allowed"),
    ({"cache": True}, "cache: True is not allowed"),
    ({"sampler": ["slowfast"]}, "sampler: ['slowfast'] is not allowed"),
    ({"sampler": {"a": 1}}, "sampler: {'a': 1} is not allowed"),
    ({"temperature": 10**400}, "temperature: an integer of 401 digits is not allowed; it must be a number >= 0"),
    ({"cfg_scale": 10**400}, "cfg_scale: an integer of 401 digits is not allowed"),
    ({"cfg_scale": -10**400}, "cfg_scale: an integer of 401 digits is not allowed"),
    ({"gen_length": 10**5000}, "gen_length: an integer of 5001 digits is not allowed"),
    ({"sampler": "threshold", "params": {"threshold": 10**400}}, "threshold: an integer of 401 digits is outside"),
    ({"params": {"horizon_threshold": 10**400}}, "horizon_threshold: an integer of 401 digits is outside"),
    ({"params": {"std_threshold": 10**400}}, "std_threshold: an integer of 401 digits is not allowed"),
    ({"cache": {"rho": 10**400}}, "rho: an integer of 401 digits is outside"),
    ({"cache": {"kp": 1.5}}, "kp: 1.5 is not allowed"),
    ({"chat": "yes"}, "chat: 'yes' is not allowed; it must be true or false"),
    ({"params": {1: 2}}, "1: unknown parameter"),
    ({1: 2, "x": 3}, "settings: unknown keys"),
    ({"temperature": "x" * 10_000}, "temperature: a string of 10000 characters is not allowed"),
]


@pytest.mark.parametrize("d, message", HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_hostile_settings_are_one_value_error_naming_the_setting(d, message):
    with pytest.raises(ValueError) as info:
        GenerationSettings.from_dict(d)
    text = str(info.value)
    assert type(info.value) is ValueError and message in text, text
    assert "\n" not in text and len(text) < 600, text  # one line (the allowed names may be many)


def test_from_dict_returns_checked_settings():
    """What from_dict accepts is a run's settings: ``policy()`` has nothing left to refuse."""
    s = GenerationSettings.from_dict({"sampler": "slowfast", "gen_length": 32, "block_length": 16,
                                      "cache": "slowfast-gsm8k", "params": {"K_max": 3}})
    assert s.cache == {"kp": 15, "kr": 1, "rho": 0.0} and s.policy().exploration_steps == 3
    with pytest.raises(ValueError, match="gen_length: 32 is not divisible by block_length 24"):
        GenerationSettings.from_dict({"gen_length": 32, "block_length": 24})


# --- 3. a prompt's size before it is tokenized ----------------------------------------------------------------
class NoTokenizer:
    """A tokenizer that must not be called (the check comes before it)."""

    def __init__(self, real):
        self.real = real
        self.chat_template = getattr(real, "chat_template", None)

    def __call__(self, *args, **kwargs):
        raise AssertionError("the prompt was tokenized")

    def apply_chat_template(self, *args, **kwargs):
        raise AssertionError("the prompt was rendered")


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("shape", ["text", "conversation"])
def test_a_10_mb_prompt_is_refused_before_tokenizing(tiny_model, chat, shape):
    model = dataclasses.replace(tiny_model, tokenizer=NoTokenizer(tiny_model.tokenizer))
    big = "x" * 10_000_000
    prompt = big if shape == "text" else [{"role": "user", "content": "Hi"}, {"role": "user", "content": big}]
    s = GenerationSettings(sampler="threshold", gen_length=16, block_length=16, chat=chat)
    limit = tiny_model.max_length * 16
    for start in (lambda: Run(model, prompt, s), lambda: generate(model, prompt, s)):
        t0 = time.perf_counter()
        with pytest.raises(ValueError) as info:
            start()
        assert time.perf_counter() - t0 < 1.0
        text = str(info.value)
        assert text.startswith("prompt: ") and f"at most {limit} bytes" in text and "\n" not in text, text
        assert "512 tokens" in text, text  # the model's context, which the bound comes from


def test_multibyte_text_is_measured_in_utf8_bytes(tiny_model):
    limit = tiny_model.max_length * 16
    s = GenerationSettings(sampler="threshold", gen_length=16, block_length=16)
    with pytest.raises(ValueError, match=f"prompt: {limit + 3} bytes of UTF-8 text"):
        Run(tiny_model, "é" * (limit // 2) + "€", s)  # fewer characters than the limit, more bytes


def test_a_prompt_under_the_size_bound_is_still_counted_in_tokens(tiny_model):
    s = GenerationSettings(sampler="threshold", gen_length=16, block_length=16, chat=False)
    with pytest.raises(ValueError, match=r"prompt: \d+ tokens leave no room in the model's context of 512"):
        Run(tiny_model, "a" * 600, s)  # 600 bytes is under 8192, but 600 characters are 600 tokens
    assert tiny_model.check_prompt_size("Hi") is None  # the check itself, for the app's own callers


# --- 4. weights the model would silently get wrong --------------------------------------------------------------
WTE = "model.transformer.wte.weight"


@pytest.fixture
def folder(tiny_dir, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_dir, tmp_path / "model"))


def change_tensor(folder: Path, key: str, change) -> Path:
    """Rewrite the shard holding ``key`` with ``change(tensor)`` in its place; returns the shard."""
    import json

    from safetensors.torch import load_file, save_file

    shard = folder / json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"][key]
    tensors = load_file(str(shard))
    tensors[key] = change(tensors[key]).contiguous()
    save_file(tensors, str(shard), metadata={"format": "pt"})
    return shard


@pytest.mark.parametrize("dtype", [torch.int8, torch.int32, torch.uint8, torch.bool])
def test_non_float_weights_are_refused_naming_the_tensor_and_dtype(folder, dtype):
    shard = change_tensor(folder, WTE, lambda t: (t * 10).to(dtype))
    with pytest.raises(ModelLoadError) as info:
        load_model(str(folder), device="cpu")
    text = str(info.value)
    assert shard.name in text and WTE in text and str(dtype).replace("torch.", "") in text, text
    assert "floating point" in text and "\n" not in text


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_or_inf_weights_are_refused_naming_the_first_tensor(folder, bad):
    shard = change_tensor(folder, WTE, lambda t: t.index_fill(0, torch.tensor([5]), bad))
    with pytest.raises(ModelLoadError) as info:
        load_model(str(folder), device="cpu")
    text = str(info.value)
    assert shard.name in text and WTE in text and "NaN or infinite" in text and "\n" not in text, text


def test_all_nan_weights_are_refused(folder):
    import json

    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    for key in weight_map:
        change_tensor(folder, key, lambda t: torch.full_like(t, math.nan))
    with pytest.raises(ModelLoadError, match="NaN or infinite"):
        load_model(str(folder), device="cpu")


def test_weights_beyond_the_loading_dtypes_range_are_refused(folder):
    change_tensor(folder, WTE, lambda t: t.index_fill(0, torch.tensor([3]), 1e6))  # finite in fp32
    assert load_model(str(folder), device="cpu", dtype="float32")  # fine as it is
    with pytest.raises(ModelLoadError, match=f"{WTE} .*beyond float16's range"):
        load_model(str(folder), device="cpu", dtype="float16")


def test_float_weights_of_another_precision_still_load(folder):
    change_tensor(folder, WTE, lambda t: t.to(torch.bfloat16))
    model = load_model(str(folder), device="cpu")
    assert model.dtype == torch.float32


def test_a_masked_lm_with_nan_weights_is_refused(tmp_path):
    """transformers reads a masked LM's weights; NaN there is refused all the same."""
    from safetensors.torch import load_file, save_file

    from slowfast.models.tiny import write_tiny_masked_lm

    folder = write_tiny_masked_lm(tmp_path / "mlm")
    assert load_model(str(folder), device="cpu")  # it loads as written
    tensors = load_file(str(folder / "model.safetensors"))
    key = next(k for k in sorted(tensors) if tensors[k].is_floating_point() and tensors[k].dim() == 2)
    tensors[key] = torch.full_like(tensors[key], math.nan)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="model.safetensors: tensor .* holds NaN or infinite values"):
        load_model(str(folder), device="cpu")


def test_a_dream_checkpoint_with_int8_weights_is_refused(tmp_path):
    import json

    from slowfast.models.tiny import write_tiny_dream_checkpoint

    folder = write_tiny_dream_checkpoint(tmp_path / "dream")
    key = next(iter(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]))
    change_tensor(folder, key, lambda t: t.to(torch.int8))
    with pytest.raises(ModelLoadError, match=f"tensor {key} holds int8 values"):
        load_model(str(folder), device="cpu")
