"""A uniform-noise canvas pipeline's run as our trace: diffusers' ``DiffusionGemmaPipeline`` with its
``EntropyBoundScheduler`` (``TraceRecorder`` picks this recorder for a pipeline whose callback gets
``canvas`` and ``logits``).

The trace is the kind ``slowfast.gemma_run`` writes for transformers' own ``generate`` (sampler
``entropy_bound``, stage ``denoise``), so the explorer's DiffusionGemma views show it: per step
the canvas after the step, the positions accepted and renoised, each position's entropy,
argmax and confidence under the scheduler's temperature-scaled logits, and the stopping rule's
numbers; a canvas's last step decodes it whole, with the tokens the pipeline kept.

The callback gives the canvas and the raw logits only, so the recorder also watches the
scheduler's ``step`` (an instance attribute wrapping it, removed by ``close``) for what the
scheduler itself returned: the accepted positions and its temperature-scaled logits.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from ..engine import GenerationSettings, first_end
from ..samplers import Policy, make_policy
from ..samplers.entropy_bound import DENOISE
from ..trace import StepRecord, Summary, Trace

CANVAS_INPUTS = ("canvas", "logits")  # DiffusionGemmaPipeline's names


def pipeline_defaults(pipeline: Any) -> dict:
    """The defaults of the pipeline's ``__call__`` (read off its signature, not written down here)."""
    try:
        params = inspect.signature(type(pipeline).__call__).parameters
    except (TypeError, ValueError):
        return {}
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def fit_diffusion_gemma(model: Any) -> Any:
    """``model`` (transformers' ``DiffusionGemmaForBlockDiffusion``) made callable by diffusers'
    ``DiffusionGemmaPipeline`` where the two disagree: diffusers 0.42 passes ``past_key_values=`` to
    the decoder's ``create_diffusion_decoder_attention_mask``, which transformers 5.x calls
    ``cache``. The renaming is set on this model's decoder only (nothing else changes)."""
    decoder = model.model.decoder
    build = decoder.create_diffusion_decoder_attention_mask
    names = inspect.signature(build).parameters
    if "past_key_values" in names or "cache" not in names:
        return model  # nothing to fit

    def create_diffusion_decoder_attention_mask(*args, past_key_values=None, **kwargs):
        if past_key_values is not None:
            kwargs["cache"] = past_key_values
        return build(*args, **kwargs)

    decoder.create_diffusion_decoder_attention_mask = create_diffusion_decoder_attention_mask
    return model


@dataclass
class CanvasStep:
    """One denoising step of the recorded row."""

    canvas_index: int  # which canvas (block) of the run
    timestep: int  # the step within the canvas
    canvas: np.ndarray  # [C] the canvas after the step
    accepted: np.ndarray  # [C] bool, the scheduler's accepted positions
    argmax: np.ndarray  # [C] argmax of the scheduler's (temperature-scaled) logits
    confidence: np.ndarray  # [C] its probability
    entropy: np.ndarray  # [C] per-position entropy of those logits
    temperature: float  # the scheduler's, as the scaling of the logits shows it
    ms: float


class CanvasRecorder:
    """The recorder of a DiffusionGemmaPipeline run (made by ``TraceRecorder(pipeline)``)."""

    def __init__(self, pipeline: Any, model_name: Optional[str] = None, row: int = 0):
        scheduler = getattr(pipeline, "scheduler", None)
        if type(scheduler).__name__ != "EntropyBoundScheduler":
            raise ValueError(f"TraceRecorder: no sampler of ours describes {type(scheduler).__name__} on a "
                             "uniform-noise canvas; allowed: EntropyBoundScheduler (our entropy_bound sampler)")
        self.pipeline, self.row = pipeline, int(row)
        tok = getattr(pipeline.processor, "tokenizer", pipeline.processor)
        self.tokenizer = tok
        self.mask_id = int(tok.pad_token_id)  # no mask token: the pad id stands for "not written yet"
        model = getattr(pipeline, "model", None)
        self.model_name = model_name or str(getattr(getattr(model, "config", None), "_name_or_path", "")
                                            or type(model).__name__)
        self.tensor_inputs = list(CANVAS_INPUTS)
        self._watched: Optional[Any] = None
        self.reset()

    def reset(self) -> None:
        """Forget the recorded steps, and watch the scheduler's step."""
        self.steps: list[CanvasStep] = []
        self.output: Any = None
        self._clock = time.perf_counter()
        self.close()
        scheduler = self.pipeline.scheduler
        step = scheduler.step

        def watched(*args, **kwargs):
            self.output = step(*args, **kwargs)
            return self.output

        scheduler.step, self._watched = watched, step

    def close(self) -> None:
        """Stop watching the scheduler's step."""
        if self._watched is not None:
            del self.pipeline.scheduler.step  # the class's own again
            self._watched = None

    def __call__(self, pipeline: Any, step: int, timestep: int, callback_kwargs: dict) -> dict:
        now = time.perf_counter()
        ms, self._clock = (now - self._clock) * 1000.0, now
        out, r = self.output, self.row
        if out is None:
            raise ValueError("TraceRecorder: the scheduler's step was not seen; record from the start of a run")
        pred = out.pred_logits[r].float()
        raw = callback_kwargs["logits"][r].float()
        probs = torch.softmax(pred, dim=-1)
        conf, arg = probs.max(dim=-1)
        entropy = torch.distributions.Categorical(logits=pred).entropy()
        temperature = float(raw.norm() / pred.norm()) if float(pred.norm()) > 0 else 1.0
        index = (self.steps[-1].canvas_index + (1 if int(timestep) == 0 else 0)) if self.steps else 0
        self.steps.append(CanvasStep(index, int(timestep), callback_kwargs["canvas"][r].cpu().numpy().copy(),
                                     out.accepted_index[r].cpu().numpy().astype(bool), arg.cpu().numpy(),
                                     conf.cpu().numpy(), entropy.cpu().numpy(), temperature, ms))
        return {}

    def run(self, **call_kwargs: Any) -> Trace:
        """Call the pipeline with this recorder as its callback; the run's trace."""
        if "callback_on_step_end" in call_kwargs or "callback_on_step_end_tensor_inputs" in call_kwargs:
            raise ValueError("TraceRecorder.run: the recorder is the callback; pass the callback by hand instead")
        self.check(call_kwargs)
        self.reset()
        try:
            out = self.pipeline(**{**call_kwargs, "output_type": "seq", "return_dict": True},
                                callback_on_step_end=self, callback_on_step_end_tensor_inputs=self.tensor_inputs)
        finally:
            self.close()
        return self.trace(call_kwargs, out.sequences)

    def check(self, call_kwargs: dict) -> None:
        """Refuse, before a run, what the entropy_bound sampler's settings cannot say."""
        kw = {**pipeline_defaults(self.pipeline), **call_kwargs}
        if kw.get("confidence_threshold") is None:
            raise ValueError("TraceRecorder: confidence_threshold=None (never stop a canvas early) has no "
                             "counterpart in the entropy_bound sampler's settings; allowed: a number > 0")
        if kw.get("prompt") is None and kw.get("messages") is None:
            raise ValueError("TraceRecorder: give the pipeline's prompt or messages (the trace keeps the prompt)")

    # --- the trace ---------------------------------------------------------------------------
    def trace(self, call_kwargs: dict, sequences: torch.Tensor) -> Trace:
        """The recorded run as a Trace: ``call_kwargs`` what the pipeline was called with,
        ``sequences`` its output (the tokens it kept for each canvas)."""
        kw = {**pipeline_defaults(self.pipeline), **call_kwargs}
        self.check(kw)
        if not self.steps:
            raise ValueError("TraceRecorder: nothing recorded yet; run the pipeline with the recorder first")
        C = int(self.pipeline.model.config.canvas_length)
        G = -(-int(kw["gen_length"]) // C) * C  # the pipeline rounds up to whole canvases
        kept = [int(t) for t in sequences[self.row].tolist()]
        tokens = (kept + [self.mask_id] * G)[:G]
        ids, _, _ = self.pipeline._prepare_inputs(prompt=kw.get("prompt"), messages=kw.get("messages"),
                                                  image=kw.get("image"),
                                                  add_generation_prompt=kw.get("add_generation_prompt", True))
        prompt_ids = [int(t) for t in ids[self.row].tolist()]
        settings, policy = self.settings(kw, G, C)
        records = self.records(G, C, len(prompt_ids), tokens, policy)
        eos = kw.get("eos_token_id") if kw.get("eos_token_id") is not None else self.pipeline.eos_token_id
        cut = tokens[: first_end(tokens, frozenset({int(eos)} if eos is not None else ()))]
        summary = Summary.of_run(records, G, len(cut), sum(r.ms for r in records) / 1000.0, finished=True,
                                 stopped=False, error=None, cache_bytes=None).to_dict()
        seen = sorted({int(t) for r in records for t in r.argmax} | set(tokens) | {self.mask_id})
        prompt = kw["prompt"] if isinstance(kw.get("prompt"), str) else self.tokenizer.decode(prompt_ids)
        return Trace(settings=settings, model=self.model_name, prompt=prompt, prompt_ids=prompt_ids,
                     mask_id=self.mask_id, records=records, tokens=tokens,
                     text=self.tokenizer.decode([t for t in cut if t != self.mask_id], skip_special_tokens=True),
                     summary=summary, token_strings={str(t): self.tokenizer.decode([t]) for t in seen})

    def settings(self, kw: dict, G: int, C: int) -> tuple[dict, Policy]:
        """Our entropy_bound sampler with the scheduler's bound and temperatures and the call's
        steps and stopping thresholds (the pipeline keeps at least one step of history, so a
        stability of 0 steps acts as 1 there)."""
        config = self.pipeline.scheduler.config
        policy = make_policy("entropy_bound", {
            "entropy_bound": float(config.entropy_bound), "t_min": float(config.t_min), "t_max": float(config.t_max),
            "denoising_steps": int(kw["num_inference_steps"]), "stop_stability": max(int(kw["stability_threshold"]), 1),
            "stop_entropy": float(kw["confidence_threshold"])})
        settings = GenerationSettings(sampler=policy.name, gen_length=G, block_length=C, steps=G, temperature=0.0,
                                      seed=0, chat=True, params=policy.params())
        settings.policy()  # the check every trace's settings pass
        return settings.to_dict(policy), policy

    def records(self, G: int, C: int, prompt_length: int, tokens: list[int], policy: Policy) -> list[StepRecord]:
        """One StepRecord per decoder forward, as ``slowfast.gemma_run`` writes DiffusionGemma's."""
        arrays = {"confidence": np.zeros(G, np.float32), "argmax": np.full(G, self.mask_id, np.int64),
                  "entropy": np.zeros(G, np.float32), "canvas": np.full(G, self.mask_id, np.int64)}
        k, out, history, canvases = policy.stop_stability, [], [], 0
        for i, s in enumerate(self.steps):
            lo, hi = s.canvas_index * C, (s.canvas_index + 1) * C
            if s.timestep == 0:
                history, canvases = [], canvases + 1
                if lo:  # the canvas before is kept as the pipeline kept it
                    arrays["canvas"][lo - C:lo] = tokens[lo - C:lo]
            for name, values in (("confidence", s.confidence), ("argmax", s.argmax), ("entropy", s.entropy),
                                 ("canvas", s.canvas)):
                arrays[name][lo:hi] = values
            stable = len(history) >= k and all((h == s.argmax).all() for h in history[-k:])
            history.append(s.argmax)
            mean = float(s.entropy.mean())
            last = i + 1 == len(self.steps) or self.steps[i + 1].timestep == 0
            accepted = [lo + int(p) for p in np.flatnonzero(s.accepted)]
            record = StepRecord(
                step=i, stage=DENOISE, block=s.canvas_index, span=(lo, hi), horizons=None, horizon_spread=None,
                confidence=arrays["confidence"].astype(np.float16), argmax=arrays["argmax"].astype(np.int32),
                decoded=list(range(lo, hi)) if last else [], fed_end=hi,
                tokens_fed=C + ((prompt_length if lo == 0 else C) if s.timestep == 0 else 0), ms=s.ms,
                nfe=i + 1, forwards=i + 1 + canvases, flops=0.0,
                info={"temperature": s.temperature, "mean_entropy": mean, "stable": bool(stable),
                      "confident": mean < policy.stop_entropy, "stop": bool(stable and mean < policy.stop_entropy),
                      "remaining": policy.denoising_steps - s.timestep - 1, "accepted_count": len(accepted)},
                entropy=arrays["entropy"].astype(np.float16), canvas=arrays["canvas"].astype(np.int32),
                accepted=accepted, renoised=[lo + int(p) for p in np.flatnonzero(~s.accepted)])
            out.append(record)
        return out
