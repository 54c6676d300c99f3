"""DiffusionGemma through transformers' own class and generate, recorded step by step.

A tiny random checkpoint in the official layout (slowfast/models/tiny_gemma.py) loads offline;
its recorded run is compared with transformers' plain ``DiffusionGemmaForBlockDiffusion.generate``
(same folder, same seed): the output token for token, and every step's argmax canvas against
the drafts generate hands its own streamer (``put_draft``)."""
import json
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from slowfast.engine import GenerationSettings, Run, drain  # noqa: E402
from slowfast.gemma_run import DiffusionGemmaRun, generate_kwargs, new_run  # noqa: E402
from slowfast.models.diffusion_gemma import FAMILY, DiffusionGemmaLM  # noqa: E402
from slowfast.models.loading import check_memory, load_model, model_info  # noqa: E402
from slowfast.models.tiny_gemma import write_tiny_diffusion_gemma  # noqa: E402
from slowfast.trace import Trace, TraceFormatError  # noqa: E402

G, C = 32, 16  # two canvases


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    return write_tiny_diffusion_gemma(tmp_path_factory.mktemp("tiny-diffusiongemma"), canvas_length=C)


@pytest.fixture(scope="module")
def gemma(gemma_dir):
    return load_model(str(gemma_dir))


@pytest.fixture(scope="module")
def reference(gemma_dir):
    from transformers import DiffusionGemmaForBlockDiffusion

    return DiffusionGemmaForBlockDiffusion.from_pretrained(str(gemma_dir)).eval()


def settings(seed=0, **params):
    return GenerationSettings(sampler="entropy_bound", gen_length=G, block_length=C, seed=seed,
                              params={"denoising_steps": 8, **params})


class Drafts:
    """A streamer for the plain class: generate's own per-step argmax canvases (``put_draft``)."""

    def __init__(self):
        self.drafts, self.canvases = [], []

    def put(self, value):
        self.canvases.append(value[0].tolist())

    def put_draft(self, value):
        self.drafts.append(value[0].tolist())

    def end(self):
        pass


def plain_generate(reference, run, seed):
    streamer = Drafts()
    torch.manual_seed(seed)
    out = reference.generate(torch.tensor([run.prompt_ids]), streamer=streamer,
                             **generate_kwargs(run.policy, run.settings.gen_length))
    return out.sequences[0, len(run.prompt_ids):].tolist(), streamer


def test_the_tiny_checkpoint_is_in_the_official_layout(gemma_dir):
    files = {p.name for p in gemma_dir.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json",
            "tokenizer_config.json"} <= files
    assert sum(name.endswith(".safetensors") for name in files) >= 2  # sharded, with its index
    assert not any(name.endswith(".py") for name in files)  # native in transformers: no remote code
    config = json.loads((gemma_dir / "config.json").read_text())
    assert config["architectures"] == ["DiffusionGemmaForBlockDiffusion"] and config["model_type"] == "diffusion_gemma"
    assert config["canvas_length"] == C and config["text_config"]["num_experts"] == 4 and config["vision_config"]
    generation = json.loads((gemma_dir / "generation_config.json").read_text())
    assert generation["sampler_config"]["entropy_bound"] == 0.1 and generation["stability_threshold"] == 1


def test_it_loads_offline_as_the_diffusion_gemma_family(gemma, gemma_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert isinstance(gemma, DiffusionGemmaLM) and gemma.family == FAMILY and gemma.canvas_length == C
    assert not gemma.supports_cache and gemma.eos_ids == frozenset({1, 6}) and gemma.mask_id == 0
    info = model_info(str(gemma_dir))
    assert info.family == FAMILY and not info.cache and info.chat
    assert check_memory(str(gemma_dir)).fits


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_trace_is_what_transformers_generate_returns(gemma, reference, seed):
    run = new_run(gemma, "Tell me a story.", settings(seed))
    assert isinstance(run, DiffusionGemmaRun)
    trace = drain(run)
    tokens, streamer = plain_generate(reference, run, seed)
    assert trace.tokens[: len(tokens)] == tokens  # token for token
    assert trace.tokens[len(tokens):] == [gemma.pad_id] * (G - len(tokens))
    # every denoising step: our record's argmax over its canvas is generate's draft of that step
    assert len(trace.records) == len(streamer.drafts)
    for record, draft in zip(trace.records, streamer.drafts):
        lo, hi = record.span
        assert record.argmax[lo:hi].tolist() == draft
    ends = [r for r in trace.records if r.decoded]
    assert [p for r in ends for p in r.decoded] == list(range(G))  # each canvas at its last step (pad after an end)
    assert [r.decoded[0] for r in ends] == list(range(0, len(tokens), C))
    assert trace.summary["finished"] and trace.summary["nfe"] == len(trace.records)


def test_a_canvas_with_the_end_of_text_is_the_last_and_the_rest_is_pad(gemma, reference):
    run = new_run(gemma, "Tell me a story.", GenerationSettings(sampler="entropy_bound", gen_length=64,
                                                                block_length=C, seed=1,
                                                                params={"denoising_steps": 8}))
    trace = drain(run)
    tokens, _ = plain_generate(reference, run, 1)
    assert len(tokens) == C and any(t in gemma.eos_ids for t in tokens)  # generate stopped after one canvas
    assert trace.tokens == tokens + [gemma.pad_id] * (64 - C)
    last = trace.records[-1]
    assert last.decoded == list(range(64)) and last.info["padded"] == 64 - C
    assert trace.summary["finished"] and trace.summary["decoded"] == 64
    from visuals.explain import explain_sentences

    assert any("generate stops here and the 48 positions after it are pad" in x for x in explain_sentences(trace))


def test_each_step_records_acceptance_renoising_and_the_stopping_rule(gemma):
    trace = drain(new_run(gemma, "Tell me a story.", settings(3, stop_entropy=0.5, denoising_steps=12, t_min=0.1,
                                                             t_max=0.3)))
    stops = 0
    for r in trace.records:
        lo, hi = r.span
        assert sorted(r.accepted + r.renoised) == list(range(lo, hi)) and r.accepted  # at least one accepted
        info = r.info
        assert info["stop"] == (info["stable"] and info["confident"])  # the criterion's answer, explained
        assert info["confident"] == (info["mean_entropy"] < 0.5)
        assert np.isclose(np.mean(r.entropy[lo:hi].astype(np.float64)), info["mean_entropy"], atol=2e-3)
        entropy_order = np.argsort(r.entropy[lo:hi].astype(np.float64), kind="stable")
        assert set(lo + entropy_order[: len(r.accepted)]) == set(r.accepted) or len(set(r.entropy[lo:hi])) < hi - lo
        assert 0 < float(r.confidence[lo:hi].min()) and float(r.confidence[lo:hi].max()) <= 1
        stops += info["stop"]
        if info["stop"]:
            assert r.decoded == list(range(lo, hi))  # the canvas ended at its stop
    assert stops >= 1  # cool enough for the rule to end a canvas before its 12 steps
    assert len(trace.records) < 2 * 12


def test_export_and_replay(gemma, tmp_path):
    from visuals.explain import explain_sentences
    from visuals.player import whole_run

    trace = drain(new_run(gemma, "Hi", settings(1)))
    path = trace.save(tmp_path / "gemma.json")
    again = Trace.load(path)
    assert again.to_dict() == trace.to_dict()
    r = again.records[2]
    assert r.accepted == trace.records[2].accepted and (r.canvas == trace.records[2].canvas).all()
    message = whole_run(again)
    deltas = message["steps"]
    assert len(deltas) == len(again.records) and all("eb" in d for d in deltas)
    assert message["head"]["stop_entropy"] == 0.005 and message["end"]["state"] == "finished"
    sentences = explain_sentences(again, 0)
    assert any("Entropy bound" in s for s in sentences) and any("Stopping rule" in s for s in sentences)
    data = json.loads(path.read_text())
    data["records"][0]["accepted"] = [G]
    with pytest.raises(TraceFormatError, match="record 0: accepted"):
        Trace.from_dict(data)


def test_stop_ends_the_run_before_its_next_forward(gemma):
    run = new_run(gemma, "Hi", settings(0))
    for record in run:
        if record.step == 2:
            run.stop()
    trace = run.trace
    assert trace.summary["stopped"] and not trace.summary["finished"]
    # record k is handed over once step k + 1 has run (it may end a canvas); Stop then lands before step k + 2
    assert len(trace.records) == 4 and not trace.records[-1].decoded
    assert Trace.from_dict(json.loads(json.dumps(trace.to_dict()))).summary["stopped"]


def test_a_consumer_that_leaves_ends_the_run(gemma):
    run = new_run(gemma, "Hi", settings(0))
    for record in run:
        break
    trace = run.trace
    assert trace.summary["stopped"] and len(trace.records) == 2 and not run._worker.is_alive()


def test_bad_settings_are_refused_with_a_message(gemma):
    with pytest.raises(ValueError, match="allowed: entropy_bound"):
        new_run(gemma, "Hi", GenerationSettings(sampler="slowfast", gen_length=G, block_length=C))
    with pytest.raises(ValueError, match="block_length: 8; DiffusionGemma's canvas is 16"):
        new_run(gemma, "Hi", GenerationSettings(sampler="entropy_bound", gen_length=G, block_length=8))
    with pytest.raises(ValueError, match="temperature"):
        new_run(gemma, "Hi", GenerationSettings(sampler="entropy_bound", gen_length=G, block_length=C,
                                                temperature=0.5))
    with pytest.raises(ValueError, match="t_max"):
        settings(0, t_min=0.9, t_max=0.5).policy()
    with pytest.raises(ValueError, match="entropy_bound sampler and DiffusionGemma go together"):
        Run(load_model("embedded"), "Hi", GenerationSettings(sampler="entropy_bound", gen_length=32, block_length=32))


def test_the_cli_decodes_and_writes_a_trace(gemma_dir, tmp_path, capsys):
    from slowfast.commands.cli import main

    out = tmp_path / "cli.json"
    assert main(["generate", "--model", str(gemma_dir), "--prompt", "Hi", "--sampler", "entropy_bound",
                 "--gen-length", str(G), "--denoising-steps", "6", "--stop-entropy", "0.2", "--trace", str(out)]) == 0
    trace = Trace.load(out)
    assert trace.settings["block_length"] == C and trace.settings["params"]["denoising_steps"] == 6
    assert "NFE" in capsys.readouterr().out and trace.summary["finished"]


def test_the_app_streams_a_run_and_replays_it(gemma_dir, tmp_path):
    import dataclasses

    import app
    from slowfast.session import Controls

    c = dataclasses.replace(Controls(gen_length=G, block_length=C), sampler="entropy_bound", denoising_steps=6)
    state = {}
    frames = list(app.on_run(str(gemma_dir), "Hi", state, *[getattr(c, n) for n in app.CONTROL_NAMES]))
    trace = state["trace"]
    messages = [json.loads(f[2]) for f in frames if isinstance(f[2], str) and f[2]]
    steps = [d["i"] for m in messages for d in m.get("steps", [])]
    assert trace.summary["finished"] and steps == list(range(len(trace.records)))
    assert messages[0]["head"]["sampler"] == "entropy_bound" and frames[-1][1] == trace.text
    message, files = app.on_export(state)
    fresh = {}
    out = app.on_replay(files[0], fresh)
    assert "Replaying" in out[0] and fresh["trace"].to_dict() == trace.to_dict()


def test_compare_and_tune_say_why_they_do_not_run_and_chat_does(gemma_dir):
    import dataclasses

    import app
    from slowfast.session import Controls

    c = dataclasses.replace(Controls(gen_length=G, block_length=C), sampler="entropy_bound", denoising_steps=4)
    values = [getattr(c, n) for n in app.CONTROL_NAMES]
    compare = list(app.on_compare(str(gemma_dir), "Hi", ["baseline", "slowfast"], {}, *values))
    assert "is a DiffusionGemma" in compare[-1][0] and "Compare's configurations" in compare[-1][0]
    tune = list(app.on_tune(str(gemma_dir), "story", 2, 2, 0, {}))
    assert "is a DiffusionGemma" in tune[-1][0] and "Tune's sweep" in tune[-1][0]
    state = {}
    chat = list(app.on_chat(str(gemma_dir), "Hello", [], state, *values))
    history = chat[-1][-2]
    assert history[-1]["role"] == "assistant" and history[-1]["content"] == state["trace"].text
