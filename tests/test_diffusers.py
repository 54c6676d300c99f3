"""diffusers (the optional extra): our policies as a scheduler in LLaDA2Pipeline, and a pipeline's
run recorded into a trace that the explorer replays.

The model is the tiny random LLaDA2 checkpoint in the official layout (``slowfast.models.tiny``),
loaded by our loader and handed to the pipeline through ``PipelineModel``; the prompt fills one
block (16 tokens), so the pipeline's blocks (counted from position 0) are our engine's (counted
from the first generated token).
"""
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from slowfast.engine import GenerationSettings, Run, generate  # noqa: E402
from slowfast.integrations.diffusers import PipelineModel, SlowFastScheduler, TraceRecorder  # noqa: E402
from slowfast.models import load_model  # noqa: E402
from slowfast.models.dllm import DLLM  # noqa: E402
from slowfast.models.tiny import write_tiny_llada2_checkpoint  # noqa: E402
from slowfast.samplers import DecodingStalled  # noqa: E402
from slowfast.trace import Trace  # noqa: E402

BLOCK, GEN = 16, 32


@pytest.fixture(scope="module", params=[0, 1])
def model(request, tmp_path_factory):
    folder = write_tiny_llada2_checkpoint(tmp_path_factory.mktemp(f"llada2-{request.param}"), seed=request.param)
    return load_model(str(folder), device="cpu")


def prompt_ids(model) -> torch.Tensor:
    ids = model.encode_prompt("What is 7+5? Think it over.", chat=False)[:BLOCK]
    assert len(ids) == BLOCK
    return torch.tensor([ids])


def pipeline(model, scheduler):
    pipe = diffusers.LLaDA2Pipeline(model=PipelineModel(model, BLOCK), scheduler=scheduler, tokenizer=model.tokenizer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_pipeline(model, scheduler, **kw):
    """The pipeline's run: per forward, the generated positions committed and the policy's stage."""
    steps = []

    def callback(pipe, step, timestep, tensors):
        window = tensors["block_x"].shape[1]
        committed = tensors["transfer_index"][0].nonzero()[:, 0] + window - BLOCK - BLOCK  # generated positions
        steps.append((sorted(committed.tolist()), [d.stage for d in pipe.scheduler.decisions()]))
        return {}

    out = pipeline(model, scheduler)(input_ids=prompt_ids(model), gen_length=GEN, block_length=BLOCK,
                                     eos_early_stop=False, output_type="seq", callback_on_step_end=callback,
                                     callback_on_step_end_tensor_inputs=["block_x", "transfer_index"], **kw)
    return steps, out.sequences[0].tolist()


@pytest.mark.parametrize("sampler, params", [
    ("slowfast", {"exploration_steps": 1}),  # short slow stages: fast stages decoding in parallel
    ("threshold", {}),
    ("baseline", {}),
])
def test_the_scheduler_in_llada2pipeline_decides_as_our_engine(model, sampler, params):
    """Same model, same prompt: the same positions committed at every forward, the same text.
    Exact where our engine feeds whole blocks, as here (asserted): after the first forward of a
    fast stage our engine feeds the canvas only up to the span's end, while the pipeline always
    feeds its whole window, so a span that ends inside a block makes the two forwards see
    different canvases (the next test compares the decisions on the same logits instead)."""
    scheduler = SlowFastScheduler(sampler=sampler, sampler_params=params, block_length=BLOCK, num_inference_steps=BLOCK)
    steps, sequence = run_pipeline(model, scheduler, num_inference_steps=BLOCK)
    settings = GenerationSettings(sampler=sampler, gen_length=GEN, block_length=BLOCK, steps=GEN, chat=False,
                                  params=params)
    run = Run(model, prompt_ids(model)[0].tolist(), settings)
    records = list(run)
    # forward for forward: the same positions committed, in the same stage
    assert [(sorted(r.decoded), [r.stage]) for r in records] == steps
    assert run.trace.tokens == sequence
    # the engine fed whole blocks only (a truncated forward inside a block would see less than the
    # pipeline's window); the later block is invisible to the block-causal model either way
    assert all(r.fed_end % BLOCK == 0 for r in records)
    if params.get("exploration_steps") == 1:
        assert any(r.stage == "fast" and len(r.decoded) >= 2 for r in records)  # a parallel fast step


class Tape(torch.nn.Module):
    """A network that answers our engine's forwards with the logits the pipeline's model gave,
    forward for forward, after checking that the engine's canvas is the pipeline's."""

    def __init__(self, calls, vocab: int, prompt: int):
        super().__init__()
        self.calls, self.prompt, self.used = calls, prompt, 0
        self.cfg = SimpleNamespace(vocab_size=vocab, max_sequence_length=4096, n_layers=1)
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # where the DLLM reads the device from

    def forward(self, tokens, cache=None, logits_from=0):
        window, logits = self.calls[self.used]
        self.used += 1
        W, T = window.shape[1], tokens.shape[1]
        assert torch.equal(tokens[:, :min(W, T)], window[:, :min(W, T)])  # the same canvas in
        out = torch.zeros(1, T, self.cfg.vocab_size)
        out[:, W - BLOCK:min(W, T)] = logits[:, W - BLOCK:min(W, T)]  # the current block's logits
        return out[:, logits_from:]

    def forward_flops(self, *args, **kwargs) -> float:
        return 0.0


class Taped(PipelineModel):
    """The pipeline's model, keeping what each call was given and returned."""

    def __init__(self, model):
        super().__init__(model, BLOCK)
        self.calls = []

    def forward(self, input_ids, **kwargs):
        out = super().forward(input_ids, **kwargs)
        self.calls.append((input_ids.clone(), out.logits.clone()))
        return out


def test_on_the_same_logits_the_scheduler_decides_as_our_engine(model):
    """Every forward of the pipeline taped (its canvas and logits) and played to our engine: the
    same canvas at every forward (the tape checks it), the same positions committed, the same
    stage and span, the same number of forwards, whatever the span (truncated forwards too)."""
    truncated = 0
    for params in ({}, {"exploration_steps": 2, "high_confidence_threshold": 0.8},
                   {"exploration_steps": 1, "horizon_threshold": 0.1}):
        taped = Taped(model)
        pipe = diffusers.LLaDA2Pipeline(model=taped, tokenizer=model.tokenizer,
                                        scheduler=SlowFastScheduler(sampler_params=params, block_length=BLOCK))
        pipe.set_progress_bar_config(disable=True)
        trace = TraceRecorder(pipe).run(input_ids=prompt_ids(model), gen_length=GEN, block_length=BLOCK,
                                        eos_early_stop=False, output_type="seq")
        tape = Tape(taped.calls, taped.calls[0][1].shape[-1], BLOCK)
        dllm = DLLM(name="tape", net=tape, tokenizer=model.tokenizer, mask_id=model.mask_id, eos_ids=model.eos_ids)
        ours = generate(dllm, prompt_ids(model)[0].tolist(),
                        GenerationSettings(gen_length=GEN, block_length=BLOCK, steps=GEN, chat=False, params=params))
        assert tape.used == len(taped.calls) == len(ours.records)
        assert [(r.stage, r.span, r.decoded) for r in ours.records] == [
            (r.stage, r.span, r.decoded) for r in trace.records]
        assert ours.tokens == trace.tokens
        truncated += sum(1 for r in ours.records if r.fed_end % BLOCK)
    assert truncated  # forwards our engine truncated inside a block were among them


def test_a_scheduler_run_recorded_is_our_engines_trace(model, tmp_path):
    """The recorder's trace of a SlowFastScheduler run: our sampler's settings, and the same
    records (stage, span, horizons, cycle, decoded, tokens) as the engine's trace of that run."""
    params = {"exploration_steps": 1}
    pipe = pipeline(model, SlowFastScheduler(sampler_params=params, block_length=BLOCK))
    recorder = TraceRecorder(pipe, model_name="tiny-llada2")
    trace = recorder.run(input_ids=prompt_ids(model), gen_length=GEN, block_length=BLOCK, eos_early_stop=False,
                         output_type="seq")
    settings = GenerationSettings(gen_length=GEN, block_length=BLOCK, steps=GEN, chat=False, params=params)
    ours = generate(model, prompt_ids(model)[0].tolist(), settings)
    assert all(r.fed_end % BLOCK == 0 for r in ours.records)  # see the first test
    assert trace.settings == ours.settings and trace.tokens == ours.tokens and trace.text == ours.text
    fields = ("stage", "block", "span", "horizons", "horizon_spread", "decoded", "info")

    def view(r):
        info = {k: v for k, v in r.info.items() if k != "pipeline_block"}
        return [getattr(r, f) for f in fields[:-1]] + [info]

    assert [view(r) for r in trace.records] == [view(r) for r in ours.records]
    # the current block's tokens and confidences at each step (elsewhere each trace keeps what it
    # last computed: the pipeline feeds no later block, our engine caches the finished ones)
    for mine, theirs in zip(trace.records, ours.records):
        block = slice(mine.block * BLOCK, (mine.block + 1) * BLOCK)
        assert mine.argmax[block].tolist() == theirs.argmax[block].tolist()
        # equal up to float rounding: our engine reuses the finished blocks' keys and values (its KV
        # cache), the pipeline recomputes them
        assert np.allclose(mine.confidence[block], theirs.confidence[block], atol=1e-3)
    loaded = Trace.load(trace.save(tmp_path / "recorded.json"))  # the file format's check
    assert loaded.to_dict() == trace.to_dict()


def replay(path):
    import app  # here: building the page is needed by the replay tests only

    state = {}
    out = app.on_replay(str(path), state)
    return out, state


def test_a_recorded_diffusers_run_replays_in_the_explorer(model, tmp_path):
    """A stock BlockRefinementScheduler run (commit above a threshold, edit above another),
    recorded through callback_on_step_end, saved, and replayed by the app without a model."""
    pipe = pipeline(model, diffusers.BlockRefinementScheduler(block_length=BLOCK))
    recorder = TraceRecorder(pipe, model_name="tiny-llada2")
    out = pipe(input_ids=prompt_ids(model), gen_length=GEN, block_length=BLOCK, eos_early_stop=False,
               output_type="seq", callback_on_step_end=recorder, callback_on_step_end_tensor_inputs=recorder.tensor_inputs)
    trace = recorder.trace({"gen_length": GEN, "block_length": BLOCK, "eos_early_stop": False})
    assert trace.settings["sampler"] == "llada2"
    assert trace.settings["params"]["m2t_threshold"] == 0.7 and trace.settings["params"]["edit_threshold"] == 0.5
    assert trace.tokens == out.sequences[0].tolist()  # the pipeline's output, edits included
    assert trace.records[-1].canvas.tolist() == trace.tokens
    assert sum(len(r.decoded) for r in trace.records) == GEN and any(r.edited for r in trace.records)
    path = trace.save(tmp_path / "diffusers.json")
    (message, text, player, *_), state = replay(path)
    assert message.startswith("Replaying a trace of **tiny-llada2** (llada2,")
    assert state["trace"].to_dict() == Trace.load(path).to_dict()
    whole = json.loads(player)
    assert [s["i"] for s in whole["steps"]] == list(range(len(trace.records)))
    # the text shows once no position holds the mask token (a random model may edit a token into it)
    assert whole["end"]["text"] == (trace.text if trace.summary["finished"] else None)


def test_without_editing_a_recorded_run_decodes_again_token_for_token(model):
    """The recorded settings are our llada2 sampler with the call's thresholds: without editing
    it is BlockRefinementScheduler's rule, and our engine repeats the run step for step."""
    pipe = pipeline(model, diffusers.BlockRefinementScheduler(block_length=BLOCK))
    trace = TraceRecorder(pipe).run(input_ids=prompt_ids(model), gen_length=GEN, block_length=BLOCK,
                                    eos_early_stop=False, output_type="seq", editing_threshold=None, threshold=0.8)
    assert trace.settings["params"]["edit_threshold"] == 1.0 and trace.settings["params"]["m2t_threshold"] == 0.8
    again = generate(model, list(trace.prompt_ids), GenerationSettings.from_dict(trace.settings))
    assert [r.decoded for r in again.records] == [r.decoded for r in trace.records]
    assert again.tokens == trace.tokens


def test_bad_input_is_refused_with_a_message(model):
    with pytest.raises(ValueError, match="exploration_steps"):
        SlowFastScheduler(sampler_params={"exploration_steps": 0})
    with pytest.raises(ValueError, match="sampler"):
        SlowFastScheduler(sampler="nope")
    scheduler = SlowFastScheduler(block_length=BLOCK)
    scheduler.set_timesteps(BLOCK, block_length=BLOCK)
    logits, sample = torch.zeros(1, BLOCK, 8), torch.full((1, BLOCK), 2)
    with pytest.raises(ValueError, match="mask token"):
        scheduler.step(logits, 0, sample, mask_token_id=None)
    with pytest.raises(ValueError, match="top_p"):
        scheduler.step(logits, 0, sample, mask_token_id=2, top_p=0.9)
    with pytest.raises(ValueError, match="LLaDA2Pipeline"):
        TraceRecorder(type("ImagePipeline", (), {"_callback_tensor_inputs": ["latents", "prompt_embeds"]})())
    with pytest.raises(ValueError, match="padding mask"):
        PipelineModel(model, BLOCK)(prompt_ids(model), attention_mask=torch.zeros(1, BLOCK, dtype=torch.long))


def test_a_block_that_needs_too_many_forwards_ends_the_run(model):
    scheduler = SlowFastScheduler(sampler="baseline", block_length=BLOCK, num_inference_steps=BLOCK,
                                  max_forwards_per_block=3)
    with pytest.raises(DecodingStalled, match="max_forwards_per_block"):
        run_pipeline(model, scheduler, num_inference_steps=BLOCK)


def test_the_scheduler_saves_and_loads_as_a_diffusers_config(tmp_path):
    scheduler = SlowFastScheduler(sampler="threshold", sampler_params={"threshold": 0.8}, block_length=8)
    scheduler.save_config(tmp_path)
    loaded = SlowFastScheduler.from_config(SlowFastScheduler.load_config(tmp_path))
    assert loaded.config.sampler == "threshold" and loaded.config.sampler_params == {"threshold": 0.8}
    assert loaded.make_policy().threshold == 0.8 and loaded.config.block_length == 8
    assert np.array_equal(loaded.timesteps.numpy(), scheduler.timesteps.numpy())


# --- a uniform-noise canvas pipeline: DiffusionGemmaPipeline with its EntropyBoundScheduler ------------

@pytest.fixture(scope="module")
def gemma_pipeline(tmp_path_factory):
    from transformers import AutoTokenizer, DiffusionGemmaForBlockDiffusion

    from slowfast.integrations.diffusers import fit_diffusion_gemma
    from slowfast.models.tiny_gemma import write_tiny_diffusion_gemma

    folder = write_tiny_diffusion_gemma(tmp_path_factory.mktemp("tiny-gemma"), seed=0)
    net = fit_diffusion_gemma(DiffusionGemmaForBlockDiffusion.from_pretrained(str(folder)).eval())
    pipe = diffusers.DiffusionGemmaPipeline(model=net, scheduler=diffusers.EntropyBoundScheduler(),
                                           processor=AutoTokenizer.from_pretrained(str(folder)))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("cool", [False, True])  # the defaults; a cooler run that the stopping rule ends early
def test_a_diffusion_gemma_pipeline_run_recorded_replays_in_the_explorer(gemma_pipeline, cool, tmp_path):
    pipe = gemma_pipeline
    confidence_threshold, steps = (0.5, 12) if cool else (0.005, 8)
    scheduler = diffusers.EntropyBoundScheduler(t_min=0.1, t_max=0.3) if cool else diffusers.EntropyBoundScheduler()
    pipe = diffusers.DiffusionGemmaPipeline(model=pipe.model, processor=pipe.processor, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    forwards = []
    hook = pipe.model.model.decoder.register_forward_hook(lambda *_: forwards.append(1))
    try:
        recorder = TraceRecorder(pipe, model_name="tiny-gemma")
        trace = recorder.run(prompt="Tell me a story.", gen_length=40, num_inference_steps=steps, eos_early_stop=False,
                             confidence_threshold=confidence_threshold, generator=torch.Generator().manual_seed(0))
    finally:
        hook.remove()
    assert "step" not in vars(pipe.scheduler)  # the scheduler's step is its own again
    C = pipe.model.config.canvas_length
    assert trace.settings["sampler"] == "entropy_bound" and trace.settings["gen_length"] == 3 * C
    assert trace.settings["params"]["stop_entropy"] == confidence_threshold
    assert len(trace.records) == len(forwards)  # one record per decoder forward
    for canvas in range(3):
        steps = [r for r in trace.records if r.block == canvas]
        lo, hi = canvas * C, (canvas + 1) * C
        assert all(sorted(r.accepted + r.renoised) == list(range(lo, hi)) for r in steps)
        last = steps[-1]
        # the stopping rule as recorded is what ended the pipeline's canvas: only at its last step,
        # or the schedule ran out; a stopped canvas keeps the argmax, else the canvas as it is
        assert not any(r.info["stop"] for r in steps[:-1])
        assert last.info["stop"] or last.info["remaining"] == 0
        kept = last.argmax if last.info["stop"] else last.canvas
        assert trace.tokens[lo:hi] == kept[lo:hi].tolist() and last.decoded == list(range(lo, hi))
    if cool:
        assert any(r.info["stop"] and r.info["remaining"] > 0 for r in trace.records)  # a canvas stopped early
    path = trace.save(tmp_path / "gemma.json")
    (message, text, player, *_), state = replay(path)
    assert message.startswith("Replaying a trace of **tiny-gemma** (entropy_bound,")
    whole = json.loads(player)
    assert [s["i"] for s in whole["steps"]] == list(range(len(trace.records)))
    assert whole["end"]["text"] == trace.text


def test_a_canvas_pipeline_with_another_scheduler_is_refused(gemma_pipeline):
    other = diffusers.DiffusionGemmaPipeline(model=gemma_pipeline.model, processor=gemma_pipeline.processor,
                                             scheduler=diffusers.DiscreteDDIMScheduler())
    with pytest.raises(ValueError, match="DiscreteDDIMScheduler"):
        TraceRecorder(other)
    with pytest.raises(ValueError, match="confidence_threshold"):
        TraceRecorder(gemma_pipeline).run(prompt="Hi", gen_length=16, confidence_threshold=None)


def test_a_batch_gets_one_policy_per_row(model):
    """Two prompts in one call: each row decodes as it does alone (its own policy and forward count)."""
    ids = torch.cat([prompt_ids(model), torch.tensor([model.encode_prompt("Name three colours, please!!", chat=False)[
        :BLOCK]])])
    assert ids.shape == (2, BLOCK)
    params = {"exploration_steps": 1}

    def decode(batch):
        pipe = pipeline(model, SlowFastScheduler(sampler_params=params, block_length=BLOCK))
        return pipe(input_ids=batch, gen_length=GEN, block_length=BLOCK, eos_early_stop=False,
                    output_type="seq").sequences.tolist()

    together = decode(ids)
    assert together == [decode(ids[:1])[0], decode(ids[1:])[0]]
    assert together[0] != together[1]
