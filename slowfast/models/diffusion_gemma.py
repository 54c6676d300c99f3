"""DiffusionGemma (``google/diffusiongemma-26B-A4B-it``) through transformers' own class.

transformers (5.x) has the model natively: ``DiffusionGemmaForBlockDiffusion``, whose
``generate`` encodes the prompt and each finished canvas into a KV cache with a causal
encoder, and denoises a canvas of uniformly random tokens (no mask token) with a bidirectional
decoder: ``EntropyBoundSampler`` accepts the lowest-entropy tokens and renoises the rest,
``StableAndConfidentStoppingCriteria`` ends the canvas. We never copy that code: the network,
the loop, the sampler and the stopping rule are transformers'. To see every denoising step we
use two hooks its generation offers, and nothing else:

* ``_prepare_sampler`` and ``_prepare_diffusion_stopping_criteria``, the model's methods that
  build the sampler and the stopping criterion, are overridden in ``RecordedDiffusionGemma`` to
  return transformers' own classes, subclassed so that each call first runs the parent's method
  and then tells a ``StepListener`` what it saw (the canvas, the processed logits, the accepted
  positions, the renoised canvas, the criterion's answer). They draw no random numbers, so a
  recorded run decodes exactly what ``generate`` decodes for the same seed.
* ``forward``, the decoder forward generate calls each step, tells the listener first (so a
  stop lands before the next forward);
* a streamer (``generate(streamer=...)``): ``put`` receives each finished canvas as written
  into the output (after the end-of-text padding), which closes that canvas's last step.

Without a listener (``recorder is None``) ``RecordedDiffusionGemma`` is the plain class.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol

import torch

from .dllm import DLLM

FAMILY = "diffusion-gemma"
MODEL_TYPE = "diffusion_gemma"


def is_diffusion_gemma_config(raw: dict[str, Any]) -> bool:
    return raw.get("model_type") == MODEL_TYPE


class StepListener(Protocol):
    """What a recorded ``generate`` tells its listener, in the order it happens."""

    def canvas_started(self) -> None: ...  # a new canvas (the stopping criterion was reset)

    def step_started(self) -> None: ...  # before a decoder forward (may raise to stop the run)

    def accepted(self, canvas: torch.Tensor, logits: torch.Tensor, accepted: torch.Tensor,
                 cur_step: int) -> None: ...

    def renoised(self, canvas: torch.Tensor) -> None: ...

    def stopping(self, stop: bool) -> None: ...

    def canvas_written(self, tokens: torch.Tensor) -> None: ...  # the canvas as generate wrote it


def _classes():
    """transformers' DiffusionGemma classes (imported when first needed: transformers is large)."""
    from transformers import DiffusionGemmaForBlockDiffusion
    from transformers.generation.streamers import BaseStreamer
    from transformers.models.diffusion_gemma import generation_diffusion_gemma as gen

    return DiffusionGemmaForBlockDiffusion, BaseStreamer, gen


_RECORDED: dict[str, type] = {}


def recorded_classes() -> dict[str, type]:
    """``model``, ``sampler``, ``stopping`` and ``streamer``: transformers' classes with the
    listener calls added (built once)."""
    if _RECORDED:
        return _RECORDED
    Model, BaseStreamer, gen = _classes()
    sampler, stopping = _recording_sampler(gen), _recording_stopping(gen)
    _RECORDED.update(model=_recorded_model(Model, sampler, stopping), sampler=sampler, stopping=stopping,
                     streamer=_canvas_streamer(BaseStreamer))
    return _RECORDED


def _recording_sampler(gen: Any) -> type:
    """transformers' EntropyBoundSampler telling its listener what each step accepted and renoised."""

    class RecordingSampler(gen.EntropyBoundSampler):
        listener: StepListener

        def accept_canvas(self, current_canvas, denoiser_canvas, logits, cur_step):
            out = super().accept_canvas(current_canvas, denoiser_canvas, logits, cur_step)
            self.listener.accepted(current_canvas, logits, self.accepted_token_mask, int(cur_step))
            return out

        def renoise_canvas(self, accepted_canvas, cur_step):
            out = super().renoise_canvas(accepted_canvas, cur_step)
            self.listener.renoised(out)
            return out

    return RecordingSampler


def _recording_stopping(gen: Any) -> type:
    """transformers' StableAndConfidentStoppingCriteria telling its listener each verdict and each new canvas."""

    class RecordingStopping(gen.StableAndConfidentStoppingCriteria):
        listener: StepListener

        def __call__(self, argmax_canvas, logits, **kwargs):
            stop = super().__call__(argmax_canvas, logits, **kwargs)
            self.listener.stopping(bool(stop[0]))
            return stop

        def reset(self):
            super().reset()
            self.listener.canvas_started()

    return RecordingStopping


def _canvas_streamer(BaseStreamer: type) -> type:
    """A streamer handing each finished canvas to its listener."""

    class CanvasStreamer(BaseStreamer):
        """generate's first ``put`` is the prompt; each later one a finished canvas."""

        def __init__(self, listener: StepListener):
            self.listener, self.puts = listener, 0

        def put(self, value):
            self.puts += 1
            if self.puts > 1:
                self.listener.canvas_written(value[0])

        def end(self):
            pass

    return CanvasStreamer


def _recorded_model(Model: type, RecordingSampler: type, RecordingStopping: type) -> type:
    """DiffusionGemmaForBlockDiffusion preparing the recording sampler and stopping criterion while it
    has a recorder."""

    class RecordedDiffusionGemma(Model):
        """``DiffusionGemmaForBlockDiffusion`` whose sampler and stopping criterion tell
        ``self.recorder`` what they do (the plain class while it is None)."""

        recorder: Optional[StepListener] = None

        def forward(self, *args, **kwargs):  # generate's decoder forward (the encoder is called apart)
            if self.recorder is not None:
                self.recorder.step_started()
            return super().forward(*args, **kwargs)

        def _prepare_sampler(self, generation_config):
            sampler = super()._prepare_sampler(generation_config)
            if self.recorder is None:
                return sampler
            recording = RecordingSampler.__new__(RecordingSampler)
            recording.__dict__.update(sampler.__dict__)
            recording.listener = self.recorder
            return recording

        def _prepare_diffusion_stopping_criteria(self, generation_config):
            criteria = super()._prepare_diffusion_stopping_criteria(generation_config)
            if self.recorder is None or criteria is None:
                return criteria
            recording = RecordingStopping.__new__(RecordingStopping)
            recording.__dict__.update(criteria.__dict__)
            recording.listener = self.recorder
            return recording

    return RecordedDiffusionGemma


@dataclass
class DiffusionGemmaLM(DLLM):
    """A loaded DiffusionGemma: transformers' network (``RecordedDiffusionGemma``) and tokenizer.

    It has no mask token; ``mask_id`` is the pad id, which traces show for positions no canvas
    has written yet. Decoding goes through ``generate`` (``slowfast.gemma_run``), never through
    the engine's ``forward``."""

    canvas_length: int = 256
    pad_id: int = 0
    generation_defaults: Optional[dict] = None  # generation_config.json's sampler settings

    OWN_GENERATION = True

    @property
    def text_config(self):
        return self.net.config.get_text_config()

    @property
    def supports_cache(self) -> bool:
        return False

    @property
    def n_layers(self) -> int:
        return int(self.text_config.num_hidden_layers)

    @property
    def vocab_size(self) -> int:
        return int(self.text_config.vocab_size)

    @property
    def max_length(self) -> int:
        return int(self.text_config.max_position_embeddings)

    def forward_flops(self, batch: int, length: int, cache=None, logits_from: int = 0) -> float:
        return 0.0  # not estimated for this network

    def forward(self, tokens: torch.Tensor, cache=None, start: int = 0) -> torch.Tensor:
        raise ValueError(f"{self.name}: DiffusionGemma decodes through transformers' generate "
                         "(its entropy_bound sampler); the engine's samplers need a masked diffusion LM")


def load_diffusion_gemma(name: str, folder: Path, raw: dict[str, Any], device: torch.device, dtype: torch.dtype,
                         tokenizer: Any) -> DiffusionGemmaLM:
    """The checkpoint in ``folder`` (its config.json says ``diffusion_gemma``) through
    ``DiffusionGemmaForBlockDiffusion.from_pretrained`` (safetensors only), with ``tokenizer``
    (loaded by the caller, which checks its files). Raises ValueError naming the file for a
    config transformers' class cannot use."""
    from transformers.utils import logging as hf_logging

    Model = recorded_classes()["model"]
    canvas = raw.get("canvas_length")
    if not (isinstance(canvas, int) and not isinstance(canvas, bool) and canvas > 0):
        raise ValueError(f"{folder / 'config.json'}: canvas_length must be a whole number above 0, not {canvas!r}")
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        net = Model.from_pretrained(str(folder), dtype=dtype, use_safetensors=True)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    net = net.to(device).eval()
    gen = net.generation_config
    pad = gen.pad_token_id if gen.pad_token_id is not None else net.config.get_text_config().pad_token_id
    pad = int(pad if pad is not None else getattr(tokenizer, "pad_token_id", 0) or 0)
    eos = gen.eos_token_id if gen.eos_token_id is not None else net.config.get_text_config().eos_token_id
    eos_ids = {int(e) for e in ([eos] if isinstance(eos, int) else (eos or []))}
    if getattr(tokenizer, "eos_token_id", None) is not None:
        eos_ids.add(int(tokenizer.eos_token_id))
    eos_ids.discard(pad)
    defaults = {k: getattr(gen, k, None) for k in ("max_denoising_steps", "t_min", "t_max", "stability_threshold",
                                                   "confidence_threshold")}
    bound = getattr(gen, "sampler_config", None)
    defaults["entropy_bound"] = getattr(bound, "entropy_bound", None)
    return DiffusionGemmaLM(name=name, net=net, tokenizer=tokenizer, mask_id=pad, eos_ids=frozenset(eos_ids),
                            folder=folder, family=FAMILY, canvas_length=int(canvas), pad_id=pad,
                            generation_defaults=defaults)
