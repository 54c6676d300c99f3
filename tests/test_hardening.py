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

from slowfast.cli import main
from slowfast.engine import GenerationSettings, Run, generate
from slowfast.models import ModelLoadError, load_model
from slowfast.samplers import DecodingStalled
from slowfast.trace import Trace

PROMPT = "What is 2+2?"


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
