"""Adding a sampler is one class (its own file) and one registry line: this file's toy sampler,
registered here, runs through the engine, the trace file and its check, ``Controls``, the app,
the CLI and the README's table, with no other module edited. It unregisters itself."""
import json
import os

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import app  # noqa: E402
from slowfast.commands.cli import build_parser, main  # noqa: E402
from slowfast.engine import GenerationSettings, generate  # noqa: E402
from slowfast.params import BY_NAME, Param, dataclass_of_params, markdown_table  # noqa: E402
from slowfast.samplers import (  # noqa: E402
    SAMPLERS, Decision, Layout, Observation, Policy, make_policy, register, unregister,
)
from slowfast.session import Controls, check_controls  # noqa: E402
from slowfast.trace import Trace, TraceFormatError  # noqa: E402


@dataclass_of_params
class LeftmostPolicy(Policy):
    """Each forward decodes the ``width`` leftmost masked positions of the current block."""

    name = "leftmost"
    TITLE = "Leftmost (a toy)"
    STAGES = ("leftmost",)
    PARAMS = (
        Param("width", "leftmost", 1, 1, 8, "masked positions decoded each forward, leftmost first",
              reference="tokens_per_forward", minimum=1, step=1, label="Positions per forward"),
    )

    def reset(self, layout: Layout, rng: np.random.Generator) -> None:
        self.layout = layout

    def decide(self, obs: Observation) -> Decision:
        block = int(np.flatnonzero(obs.mask)[0]) // self.layout.block_length
        start, end = self.layout.block_bounds(block)
        decode = start + np.flatnonzero(obs.mask[start:end])[: self.width]
        return Decision(decode=decode, stage="leftmost", block=block, span=(start, end))


def generate_help() -> str:
    return build_parser()._subparsers._group_actions[0].choices["generate"].format_help()


@pytest.fixture
def leftmost():
    register(LeftmostPolicy)  # the registry line (in slowfast/samplers/__init__.py for a real sampler)
    try:
        yield LeftmostPolicy
    finally:
        unregister("leftmost")


def test_the_engine_and_trace_files_take_a_registered_sampler(leftmost, tiny_model, tmp_path):
    settings = GenerationSettings(sampler="leftmost", gen_length=16, block_length=8, chat=False, params={"width": 3})
    trace = generate(tiny_model, "Hi", settings)
    assert [r.decoded for r in trace.records] == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9, 10], [11, 12, 13], [14, 15]]
    assert {r.stage for r in trace.records} == {"leftmost"} and trace.settings["params"] == {"width": 3}
    assert make_policy("leftmost", {}).width == 1  # its default
    assert make_policy("leftmost", {"tokens_per_forward": 2}).width == 2  # its reference name
    with pytest.raises(ValueError, match="width: 0 is not allowed; it must be an integer >= 1"):
        make_policy("leftmost", {"width": 0})

    path = trace.save(tmp_path / "leftmost.json")  # the trace check knows its stage and its parameter
    assert Trace.load(path).records[0].stage == "leftmost"
    d = json.loads(path.read_text())
    d["settings"]["params"]["width"] = 0
    with pytest.raises(TraceFormatError, match="settings: width: 0 is not allowed"):
        Trace.from_dict(d)


def test_controls_and_the_app_take_a_registered_sampler(leftmost, tiny_dir):
    assert Controls().width == 1
    settings = Controls(sampler="leftmost", width=4.0, gen_length=16, block_length=16, chat=False).settings()
    assert settings.params == {"width": 4}
    assert check_controls(Controls(sampler="leftmost", width=0)).startswith("width: 0 is not allowed")

    demo = app.build_app(str(tiny_dir))
    assert "leftmost" in [c[1] for c in demo.controls["sampler"].choices]
    width = demo.controls["width"]
    assert (width.minimum, width.maximum, width.step, width.value) == (1, 8, 1, 1)
    assert width.label == "Positions per forward" and "tokens_per_forward" in width.info


def test_the_cli_and_the_docs_take_a_registered_sampler(leftmost, tiny_dir, tmp_path, capsys):
    text = generate_help()
    assert "--width WIDTH, --tokens-per-forward WIDTH" in text
    assert "leftmost: masked positions decoded each forward" in " ".join(text.split())
    out = tmp_path / "cli.json"
    assert main(["generate", "--model", str(tiny_dir), "--prompt", "Hi", "--sampler", "leftmost", "--gen-length", "16",
                 "--width", "4", "--no-chat", "--trace", str(out)]) == 0
    assert Trace.load(out).settings["params"] == {"width": 4} and len(Trace.load(out).records) == 4
    assert main(["generate", "--model", str(tiny_dir), "--prompt", "Hi", "--sampler", "leftmost", "--width", "0"]) == 2
    assert "width: 0 is not allowed" in capsys.readouterr().err
    assert "| leftmost | `width` | `tokens_per_forward` | 1 | 1 .. 8 | an integer >= 1 |" in markdown_table()


def test_a_name_taken_is_refused(leftmost):
    @dataclass_of_params
    class Clash(LeftmostPolicy):
        name = "clash"
        PARAMS = (Param("threshold", "clash", 0.5, 0, 1, "taken by the threshold sampler", minimum=0, maximum=1),)

    with pytest.raises(ValueError, match="parameter 'threshold' is threshold's already"):
        register(Clash)
    with pytest.raises(ValueError, match="'leftmost' is registered already"):
        register(LeftmostPolicy)


def test_unregistering_leaves_nothing_behind():
    assert "leftmost" not in SAMPLERS and "width" not in BY_NAME
    assert "width" not in Controls.__dataclass_fields__ and "width" not in vars(Controls())
    assert "leftmost" not in markdown_table() and "--width" not in generate_help()
