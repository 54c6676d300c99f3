"""Our models in a diffusers pipeline (``PipelineModel``) and a pipeline's run as our trace (``TraceRecorder``).

Neither needs diffusers at import time: the recorder is a plain ``callback_on_step_end``
callable and the model adapter a torch module, so they are tested against the pipelines
without this module importing them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np
import torch

from ..engine import GenerationSettings, first_end
from ..models.dllm import DLLM
from ..samplers import Policy, make_policy
from ..samplers.base import Decision
from ..samplers.llada2 import EDIT as LLADA2_EDIT
from ..samplers.llada2 import UNMASK as LLADA2_UNMASK
from ..trace import StepRecord, Summary, Trace
from .canvas import CANVAS_INPUTS, CanvasRecorder, pipeline_defaults


class PipelineModel(torch.nn.Module):
    """A model our loader reads (``slowfast.models.load_model``), called the way
    ``LLaDA2Pipeline`` calls its ``model``: ``model(ids, attention_mask=..., position_ids=...)``
    returning an object with ``.logits`` over every position.

    A block-causal network (LLaDA2) attends in the pipeline's blocks, counted from position 0
    as the published code and the pipeline count them: pass the pipeline's ``block_length``.
    Our networks take no padding mask, so the attention mask must be all ones (a batch of
    one, with prompt + gen_length a multiple of the block length) and the positions 0..T-1."""

    def __init__(self, model: DLLM, block_length: Optional[int] = None):
        super().__init__()
        if model.block_causal and block_length is None:
            raise ValueError(f"block_length: {model.name} attends block-causally; give the pipeline's block_length")
        self.dllm = model
        self.net = model.net  # a submodule, so the pipeline finds the device
        self.block_length = block_length

    @property
    def device(self) -> torch.device:  # what diffusers reads off a pipeline's modules
        return self.dllm.device

    @property
    def dtype(self) -> torch.dtype:
        return self.dllm.dtype

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None, **_: Any) -> SimpleNamespace:
        T = input_ids.shape[1]
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise ValueError("PipelineModel: our networks take no padding mask; use a batch of one and "
                             "prompt + gen_length a multiple of block_length (so the pipeline masks nothing)")
        if position_ids is not None and not torch.equal(
                position_ids.cpu(), torch.arange(T).expand_as(position_ids.cpu())):
            raise ValueError("PipelineModel: positions must be 0..T-1 (our networks place tokens by index)")
        blocks = self.dllm.block_context(self.block_length, 0) if self.dllm.block_causal else None
        return SimpleNamespace(logits=self.dllm.forward(input_ids, start=0, blocks=blocks))


# --- a pipeline's run as our trace -----------------------------------------------------------

MASK_INPUTS = ("block_x", "active_block", "sampled_tokens", "sampled_probs")  # LLaDA2Pipeline's names


@dataclass
class PipelineStep:
    """One callback of a mask-based block pipeline, in generated positions (0 = first generated token)."""

    lo: int  # the block's first generated position
    hi: int  # the window's end: positions fed to the forward, after the prompt
    confidence: np.ndarray  # [hi - lo] probability of each position's sampled token
    tokens: np.ndarray  # [hi - lo] the sampled tokens
    canvas: np.ndarray  # [hi] the canvas after the step
    decoded: list[int]  # masked before the step, a token after it
    edited: list[int]  # a token before the step, another one after it
    had_masks: bool  # the block had masks when the forward ran
    decision: Optional[Decision]  # the policy's, when the scheduler is our SlowFastScheduler
    ms: float  # wall time since the previous callback (the forward and the step)


class TraceRecorder:
    """A ``callback_on_step_end`` that records a diffusers mask-based block pipeline's run
    (``LLaDA2Pipeline`` with any scheduler) as our ``Trace``, which the explorer replays::

        recorder = TraceRecorder(pipe, model_name="inclusionAI/LLaDA2.1-mini")
        trace = recorder.run(prompt="Why is the sky blue?", gen_length=256, block_length=32)
        trace.save("run.json")

    ``run`` calls the pipeline with the recorder as its callback (and keeps the call's
    arguments for the trace's settings); a recorder passed by hand
    (``callback_on_step_end=recorder, callback_on_step_end_tensor_inputs=recorder.tensor_inputs``)
    gives the same records, and ``trace(call_kwargs)`` the trace. Per step it keeps the canvas
    (what the pipeline committed and edited), each position's sampled token and its
    probability, and the block; with our ``SlowFastScheduler`` also the policy's own decision
    (stage, span, horizons, cycle), and the settings are that sampler's. With diffusers'
    ``BlockRefinementScheduler`` the settings name our ``llada2`` sampler (its rule: commit
    above a threshold, at least the scheduled count; edit above the editing threshold) with the
    call's thresholds. ``row`` picks the batch row.

    A pipeline whose callback gets ``canvas`` and ``logits`` (``DiffusionGemmaPipeline``) gets a
    ``slowfast.integrations.canvas.CanvasRecorder`` instead, with the same ``run``; passed by
    hand, it also watches the scheduler's ``step`` until ``close()``, and its
    ``trace(call_kwargs, sequences)`` needs the pipeline's output sequences."""

    def __new__(cls, pipeline: Any, model_name: Optional[str] = None, row: int = 0, mask_id: Optional[int] = None):
        names = set(getattr(pipeline, "_callback_tensor_inputs", ()) or ())
        if all(n in names for n in CANVAS_INPUTS) and not all(n in names for n in MASK_INPUTS):
            return CanvasRecorder(pipeline, model_name, row)  # a uniform-noise canvas (DiffusionGemmaPipeline)
        return super().__new__(cls)

    def __init__(self, pipeline: Any, model_name: Optional[str] = None, row: int = 0, mask_id: Optional[int] = None):
        names = set(getattr(pipeline, "_callback_tensor_inputs", ()) or ())
        missing = [n for n in MASK_INPUTS if n not in names]
        if missing:
            raise ValueError(f"TraceRecorder: {type(pipeline).__name__} does not pass {', '.join(missing)} to its "
                             "callback; allowed: a mask-based block pipeline such as LLaDA2Pipeline, or a "
                             "canvas pipeline (canvas, logits) such as DiffusionGemmaPipeline")
        self.pipeline, self.row = pipeline, int(row)
        self.mask_id = mask_id if mask_id is not None else getattr(pipeline, "mask_token_id", None)
        self.model_name = model_name or str(getattr(getattr(pipeline, "model", None), "name_or_path", "")
                                            or type(getattr(pipeline, "model", None)).__name__)
        self.tensor_inputs = list(MASK_INPUTS)
        self.reset()

    def reset(self) -> None:
        """Forget the recorded steps (a new run)."""
        self.steps: list[PipelineStep] = []
        self.prompt_ids: Optional[list[int]] = None
        self.block_length: Optional[int] = None
        self.canvas = np.zeros(0, dtype=np.int64)
        self.ever = np.zeros(0, dtype=bool)  # positions decoded so far
        self._clock = time.perf_counter()

    @property
    def prompt_length(self) -> int:
        return len(self.prompt_ids or [])

    def __call__(self, pipeline: Any, step: int, timestep: int, callback_kwargs: dict) -> dict:
        now = time.perf_counter()
        ms, self._clock = (now - self._clock) * 1000.0, now
        window = callback_kwargs["block_x"][self.row].cpu().numpy().astype(np.int64)
        active = callback_kwargs["active_block"][self.row].cpu().numpy().astype(bool)
        if self.prompt_ids is None:
            self._start(window, active)
        decision = self._decision(pipeline)
        if decision is False:
            return {}  # this row was done: the forward was another row's
        P, W, bl = self.prompt_length, window.size, active.size
        lo, hi = max(W - bl, P) - P, W - P
        before = np.full(hi, self.mask_id, dtype=np.int64)
        before[: min(self.canvas.size, hi)] = self.canvas[:hi]
        after = window[P:]
        fresh = np.ones(hi, dtype=bool)  # never decoded so far (an edit to the mask token stays an edit)
        fresh[: min(self.ever.size, hi)] = ~self.ever[:hi]
        decoded = np.flatnonzero(fresh & (after != self.mask_id))
        edited = np.flatnonzero(~fresh & (after != before))
        self.ever = ~fresh
        self.ever[decoded] = True
        first = lo + P - (W - bl)  # the block's first generated position within the block
        probs = callback_kwargs["sampled_probs"][self.row, first:].float().cpu().numpy()
        tokens = callback_kwargs["sampled_tokens"][self.row, first:].cpu().numpy()
        self.canvas = after.copy()
        self.steps.append(PipelineStep(lo, hi, probs, tokens, after.copy(), decoded.tolist(), edited.tolist(),
                                       bool(active[first:].any()), decision, ms))
        return {}

    def _start(self, window: np.ndarray, active: np.ndarray) -> None:
        """The first step: the prompt is what precedes the first masked position of the first block."""
        if self.mask_id is None:
            raise ValueError("TraceRecorder: the pipeline has no mask token; give mask_id")
        masked = np.flatnonzero(active)
        if masked.size == 0:
            raise ValueError("TraceRecorder: the first recorded step had no masked position; record from the start "
                             "of a run (a new recorder, or reset())")
        self.block_length = int(active.size)
        P = window.size - active.size + int(masked[0])
        self.prompt_ids = [int(t) for t in window[:P]]

    def _decision(self, pipeline: Any) -> Optional[Decision] | bool:
        """Our scheduler's decision for the row (False: the row decided nothing this step), or None."""
        decisions = getattr(pipeline.scheduler, "decisions", None)
        if not callable(decisions):
            return None
        rows = decisions()
        return rows[self.row] if self.row < len(rows) and rows[self.row] is not None else False

    # --- the trace ---------------------------------------------------------------------------
    def run(self, **call_kwargs: Any) -> Trace:
        """Call the pipeline with this recorder as its callback; the run's trace."""
        if "callback_on_step_end" in call_kwargs or "callback_on_step_end_tensor_inputs" in call_kwargs:
            raise ValueError("TraceRecorder.run: the recorder is the callback; pass the callback by hand instead")
        self.reset()
        self.pipeline(**call_kwargs, callback_on_step_end=self, callback_on_step_end_tensor_inputs=self.tensor_inputs)
        return self.trace(call_kwargs)

    def layout(self) -> tuple[int, int]:
        """(gen_length, block_length) of the trace: the positions the pipeline decoded (its last
        window), in its blocks when the prompt fills whole blocks, else as one block."""
        if not self.steps:
            raise ValueError("TraceRecorder: nothing recorded yet; run the pipeline with the recorder first")
        G = max(s.hi for s in self.steps)
        bl = self.block_length if self.prompt_length % self.block_length == 0 else G
        return G, bl

    def trace(self, call_kwargs: Optional[dict] = None) -> Trace:
        """The recorded run as a Trace (``call_kwargs``: what the pipeline was called with)."""
        kw = {**pipeline_defaults(self.pipeline), **(call_kwargs or {})}
        G, bl = self.layout()
        settings, policy = self.settings(kw, G, bl)
        records = self.records(G, bl, getattr(policy, "EDITS", False))
        tokens = np.full(G, self.mask_id, dtype=np.int64)
        tokens[: self.canvas.size] = self.canvas[:G]
        tokens = [int(t) for t in tokens]
        tok = getattr(self.pipeline, "tokenizer", None)
        eos = {int(kw["eos_token_id"] if kw.get("eos_token_id") is not None else getattr(tok, "eos_token_id", -1))}
        cut = tokens[: first_end(tokens, frozenset(eos))]
        seconds = sum(r.ms for r in records) / 1000.0
        summary = Summary.of_run(records, G, len(cut), seconds, finished=self.mask_id not in tokens, stopped=False,
                                 error=None, cache_bytes=None).to_dict()
        seen = sorted({int(t) for r in records for t in r.argmax} | set(tokens) | {int(self.mask_id)})
        decode = (lambda ids: tok.decode(ids, skip_special_tokens=True)) if tok is not None else (
            lambda ids: " ".join(str(i) for i in ids))
        prompt = kw.get("prompt") if isinstance(kw.get("prompt"), str) else decode(self.prompt_ids)
        return Trace(settings=settings, model=self.model_name, prompt=prompt, prompt_ids=list(self.prompt_ids),
                     mask_id=int(self.mask_id), records=records, tokens=tokens,
                     text=decode([t for t in cut if t != self.mask_id]), summary=summary,
                     token_strings={str(t): (tok.decode([t]) if tok is not None else str(t)) for t in seen})

    def settings(self, kw: dict, G: int, bl: int) -> tuple[dict, Policy]:
        """The trace's settings: our scheduler's sampler, or the sampler of ours whose rule the
        diffusers scheduler follows (checked as any trace's settings are)."""
        scheduler = self.pipeline.scheduler
        temperature = 0.0 if kw.get("sampling_method") == "greedy" else float(kw.get("temperature") or 0.0)
        if callable(getattr(scheduler, "make_policy", None)):  # our SlowFastScheduler
            policy = scheduler.make_policy()
            steps = G
            if policy.USES_STEPS:  # the baseline: the scheduler's steps per block, at most the block
                steps = min(scheduler.num_inference_steps, bl) * (G // bl)
            cap = scheduler.config.max_forwards_per_block
        elif type(scheduler).__name__ == "BlockRefinementScheduler":
            policy, steps, cap = self._llada2_policy(kw, bl), G, None
        else:
            raise ValueError(f"TraceRecorder: no sampler of ours describes {type(scheduler).__name__}; allowed: "
                             "SlowFastScheduler or BlockRefinementScheduler")
        settings = GenerationSettings(sampler=policy.name, gen_length=G, block_length=bl, steps=steps,
                                      temperature=temperature, seed=0, chat=bool(self._chat(kw)),
                                      params=policy.params(), max_forwards_per_block=cap)
        settings.policy()  # the check every trace's settings pass
        return settings.to_dict(policy), policy

    def _llada2_policy(self, kw: dict, bl: int) -> Policy:
        """BlockRefinementScheduler's rule as our llada2 sampler: commit above ``threshold`` (at
        least the scheduled count: the block over ``num_inference_steps``), edit above
        ``editing_threshold`` (None or <= 0: never, our 1.0), ``max_post_steps``."""
        steps = max(1, int(kw.get("num_inference_steps") or 1))
        threshold = float(kw.get("threshold", 0.7))
        editing = kw.get("editing_threshold")
        return make_policy("llada2", {
            "m2t_threshold": min(max(threshold, 0.0), 1.0),  # above 1 commits only the schedule, as 1.0 does here
            "edit_threshold": 1.0 if editing is None or editing <= 0 else min(float(editing), 1.0),
            "max_post_steps": int(kw.get("max_post_steps", 16)), "min_transfer": max(1, bl // steps)})

    def _chat(self, kw: dict) -> bool:
        tok = getattr(self.pipeline, "tokenizer", None)
        return (kw.get("input_ids") is None and (kw.get("messages") is not None or (
            kw.get("use_chat_template", True) and bool(getattr(tok, "chat_template", None)))))

    def records(self, G: int, bl: int, edits: bool) -> list[StepRecord]:
        """One StepRecord per recorded forward, in the trace's positions; a position's
        confidence and token stay those of the last forward that saw it (as our engine's)."""
        confidence = np.zeros(G, dtype=np.float32)
        argmax = np.full(G, self.mask_id, dtype=np.int64)
        out: list[StepRecord] = []
        for i, s in enumerate(self.steps):
            confidence[s.lo:s.hi] = s.confidence[: s.hi - s.lo]
            argmax[s.lo:s.hi] = s.tokens[: s.hi - s.lo]
            record = StepRecord(
                step=i, stage="", block=s.lo // bl, span=(s.lo, s.hi), horizons=None, horizon_spread=None,
                confidence=confidence.astype(np.float16), argmax=argmax.astype(np.int32), decoded=list(s.decoded),
                fed_end=s.hi, tokens_fed=self.prompt_length + s.hi, ms=s.ms, nfe=i + 1, forwards=i + 1,
                info={"pipeline_block": (self.prompt_length + s.lo) // self.block_length})
            self._describe(record, s, edits)
            if edits:
                canvas = np.full(G, self.mask_id, dtype=np.int64)
                canvas[: s.hi] = s.canvas[:G]
                record.edited, record.canvas = list(s.edited), canvas.astype(np.int32)
            out.append(record)
        return out

    def _describe(self, record: StepRecord, s: PipelineStep, edits: bool) -> None:
        """Stage, span, horizons and extras: the policy's decision (its positions moved to the
        trace's), or the llada2 sampler's stages for a BlockRefinementScheduler step."""
        d = s.decision
        if d is None:
            record.stage = LLADA2_UNMASK if s.had_masks else LLADA2_EDIT
            record.info["edits"] = len(s.edited)
            return
        off = s.lo
        record.stage = d.stage
        if d.span is not None:
            record.span = (int(d.span[0]) + off, int(d.span[1]) + off)
        if d.horizons is not None:
            record.horizons = [int(h) + off for h in d.horizons]
        if d.horizon_spread is not None:
            record.horizon_spread = float(d.horizon_spread)
        info = dict(d.info)
        if "estimate" in info:  # a generated position (SlowFast's horizon estimate)
            info["estimate"] = int(info["estimate"]) + off
        record.info.update(info)
