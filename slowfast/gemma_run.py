"""A DiffusionGemma run: transformers' ``generate`` decodes, every denoising step becomes a StepRecord.

``DiffusionGemmaRun`` has ``engine.Run``'s interface (iterate it for StepRecords, ``stop``,
``records``, ``trace``), so the app, the CLI and ``drain`` take it as they take ours. Its
``generate`` runs in a thread of its own; the listener hooks of ``models.diffusion_gemma`` turn
each step into a record:

* ``argmax`` / ``confidence``: the current canvas's argmax of the processed (temperature-scaled)
  logits and its softmax probability; ``entropy`` the per-position entropy the sampler bounds;
  earlier canvases keep their last step's values, later ones are the pad id at 0;
* ``canvas``: the canvas after the step (accepted tokens kept, the rest renoised), which the next
  forward reads; ``accepted`` / ``renoised``: the positions of each kind;
* ``span``: the canvas's bounds; ``block``: the canvas's index; ``decoded``: every position of the
  canvas at its last step (a canvas is committed whole);
* ``info``: the temperature, the criterion's mean entropy, ``stable`` (the argmax equals that of
  the previous ``stop_stability`` steps, as the criterion defines it), ``confident`` (mean
  entropy below ``stop_entropy``) and ``stop`` (the criterion's own answer, = stable and
  confident), the steps remaining in the schedule.

``nfe`` counts decoder forwards (as generate's ``tokens_per_forward`` does); ``forwards`` adds
the encoder's (one per canvas); ``tokens_fed`` is the canvas each decoder forward reads plus,
on a canvas's first step, what the encoder read for it. The trace's ``tokens`` are generate's
output as it returns it (pad after the end of text), then pad for the canvases generate never
started because a canvas held the end of text: that canvas's last step commits them too.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import torch

from .engine import GenerationSettings, Run, first_end, read_prompt
from .models.diffusion_gemma import DiffusionGemmaLM, recorded_classes
from .params import shown
from .samplers.entropy_bound import DENOISE, EntropyBoundPolicy
from .trace import StepRecord, Summary, Trace

_END = object()


class StopDecoding(Exception):
    """Raised inside generate (from the sampler hook) to end the run before its next forward."""


def check_settings(model: DiffusionGemmaLM, settings: GenerationSettings) -> EntropyBoundPolicy:
    """The settings a DiffusionGemma run takes (ValueError naming the setting otherwise)."""
    policy = settings.policy()
    if not isinstance(policy, EntropyBoundPolicy):
        raise ValueError(f"sampler: {shown(settings.sampler)} needs a masked diffusion LM; DiffusionGemma "
                         f"({model.name}) denoises with its own sampler; allowed: {EntropyBoundPolicy.name}")
    C = model.canvas_length
    if settings.block_length != C:
        raise ValueError(f"block_length: {settings.block_length}; DiffusionGemma's canvas is {C} tokens "
                         f"(canvas_length in its config.json); allowed: {C}")
    if settings.gen_length % C:
        raise ValueError(f"gen_length: {settings.gen_length} is not a whole number of canvases of {C}; allowed: "
                         f"a multiple of {C}")
    if settings.temperature != 0:
        raise ValueError(f"temperature: {settings.temperature:g}; DiffusionGemma's temperature follows its "
                         "schedule (t_max to t_min); allowed: 0 (set t_min and t_max instead)")
    if settings.cfg_scale != 0:
        raise ValueError("cfg_scale: DiffusionGemma's generate has no classifier-free guidance; allowed: 0")
    if settings.cache is not None:
        raise ValueError("cache: dLLM-Cache needs our transformer's layers; DiffusionGemma caches finished "
                         "canvases in its own KV cache. Allowed: run without the cache")
    return policy


def generate_kwargs(policy: EntropyBoundPolicy, gen_length: int) -> dict[str, Any]:
    """transformers' generate arguments for these parameters (the same for a recorded run and a plain one)."""
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

    return dict(max_new_tokens=int(gen_length), max_denoising_steps=int(policy.denoising_steps),
                sampler_config=EntropyBoundSamplerConfig(entropy_bound=float(policy.entropy_bound)),
                t_min=float(policy.t_min), t_max=float(policy.t_max),
                stability_threshold=int(policy.stop_stability), confidence_threshold=float(policy.stop_entropy))


class _Recorder:
    """The listener of one run: builds a StepRecord per denoising step (see the module's text)."""

    def __init__(self, run: "DiffusionGemmaRun"):
        self.run, self.policy = run, run.policy
        G, C = run.settings.gen_length, run.model.canvas_length
        self.C = C
        self.confidence = np.zeros(G, dtype=np.float32)
        self.argmax = np.full(G, run.model.mask_id, dtype=np.int64)
        self.entropy = np.zeros(G, dtype=np.float32)
        self.canvas = np.full(G, run.model.mask_id, dtype=np.int64)
        self.block, self.nfe, self.forwards = -1, 0, 0
        self.history: list[np.ndarray] = []  # this canvas's argmax per step (for ``stable``)
        self.pending: Optional[StepRecord] = None
        self.step: dict[str, Any] = {}
        self.mark = time.perf_counter()

    def canvas_started(self) -> None:
        self.block += 1
        self.forwards += 1  # the encoder's forward over the prompt or the last canvas
        self.history = []
        self.encoded = len(self.run.prompt_ids) if self.block == 0 else self.C

    def step_started(self) -> None:
        """Before each decoder forward: a stop requested ends the run here."""
        if self.run._stop_requested:
            self.publish()
            raise StopDecoding()

    def accepted(self, canvas: torch.Tensor, logits: torch.Tensor, accepted: torch.Tensor, cur_step: int) -> None:
        lo = self.block * self.C
        logits = logits[0].float()
        entropy = torch.distributions.Categorical(logits=logits).entropy()  # as the sampler computes it
        probs = torch.softmax(logits, dim=-1)
        conf, arg = probs.max(dim=-1)
        self.confidence[lo:lo + self.C] = conf.cpu().numpy()
        self.argmax[lo:lo + self.C] = arg.cpu().numpy()
        self.entropy[lo:lo + self.C] = entropy.cpu().numpy()
        positions = lo + np.flatnonzero(accepted[0].cpu().numpy())
        p = self.policy
        self.step = {"accepted": positions, "cur_step": cur_step,
                     "temperature": p.t_min + (p.t_max - p.t_min) * cur_step / p.denoising_steps,
                     "mean_entropy": float(entropy.mean())}

    def renoised(self, canvas: torch.Tensor) -> None:
        lo = self.block * self.C
        self.canvas[lo:lo + self.C] = canvas[0].cpu().numpy()

    def stopping(self, stop: bool) -> None:
        self.publish()
        lo, hi = self.block * self.C, (self.block + 1) * self.C
        argmax = self.argmax[lo:hi].copy()
        k = self.policy.stop_stability
        stable = k == 0 or (len(self.history) >= k and all((h == argmax).all() for h in self.history[-k:]))
        self.history.append(argmax)
        confident = self.step["mean_entropy"] < self.policy.stop_entropy
        self.nfe += 1
        self.forwards += 1
        fed = self.C + (self.encoded if len(self.history) == 1 else 0)
        accepted = [int(i) for i in self.step["accepted"]]
        taken = set(accepted)
        now = time.perf_counter()
        self.pending = StepRecord(
            step=len(self.run.records), stage=DENOISE, block=self.block, span=(lo, hi), horizons=None,
            horizon_spread=None, confidence=self.confidence.astype(np.float16), argmax=self.argmax.astype(np.int32),
            decoded=[], fed_end=hi, tokens_fed=fed, ms=(now - self.mark) * 1000.0, nfe=self.nfe,
            forwards=self.forwards, flops=0.0,
            info={"temperature": float(self.step["temperature"]), "mean_entropy": self.step["mean_entropy"],
                  "stable": bool(stable), "confident": bool(confident), "stop": bool(stop),
                  "remaining": int(self.step["cur_step"]) - 1, "accepted_count": len(accepted)},
            entropy=self.entropy.astype(np.float16), canvas=self.canvas.astype(np.int32), accepted=accepted,
            renoised=[p for p in range(lo, hi) if p not in taken],
        )
        self.mark = now

    def canvas_written(self, tokens: torch.Tensor) -> None:
        """The canvas as generate wrote it. One holding an end of text is generate's last (its
        end-of-text criterion stops it): the positions after it are pad, as generate pads a
        finished sequence, so this step commits them too (``info['padded']``)."""
        lo = self.block * self.C
        written = [int(t) for t in tokens.tolist()]
        self.run.tokens[lo:lo + self.C] = written
        if self.pending is not None:
            last = any(t in self.run.end_ids for t in written)
            hi = len(self.run.tokens) if last else lo + self.C
            self.pending.decoded = list(range(lo, hi))
            if hi > lo + self.C:
                self.pending.info["padded"] = hi - lo - self.C
        self.publish()

    def publish(self) -> None:
        if self.pending is not None:
            t0 = time.perf_counter()
            self.run._publish(self.pending)
            self.mark += time.perf_counter() - t0  # the consumer's time is not this step's
            self.pending = None


class DiffusionGemmaRun:
    """One DiffusionGemma generation through transformers' generate, recorded step by step."""

    def __init__(self, model: DiffusionGemmaLM, prompt: Union[str, Sequence[int], Sequence[dict]],
                 settings: GenerationSettings):
        self.model, self.settings = model, settings
        self.policy = check_settings(model, settings)
        self.prompt_text, self.prompt_ids = read_prompt(model, prompt, settings)
        self.records: list[StepRecord] = []
        self.tokens = [model.pad_id] * settings.gen_length
        eos = model.net.generation_config.eos_token_id  # what generate's end-of-text criterion stops on
        self.end_ids = frozenset([eos] if isinstance(eos, int) else (eos or []))
        self.error: Optional[str] = None
        self.stopped = self.finished = self._started = self._stop_requested = False
        self._seconds = 0.0
        self._queue: queue.Queue = queue.Queue()
        # generate waits after each record until the consumer asks for the next (as a generator
        # would), so a Stop given while it holds a record lands before the forward after the next
        self._taken = threading.Semaphore(0)
        self._consumer_gone = False
        self._paused = 0.0

    def stop(self) -> None:
        """End the run before its next denoising forward; the trace keeps what was done."""
        self._stop_requested = True

    def _publish(self, record: StepRecord) -> None:
        self.records.append(record)
        self._queue.put(record)
        if not self._consumer_gone:
            t0 = time.perf_counter()
            self._taken.acquire()
            self._paused += time.perf_counter() - t0

    def _generate(self) -> None:
        model, net = self.model, self.model.net
        recorder = _Recorder(self)
        streamer = recorded_classes()["streamer"](recorder)
        ids = torch.tensor([self.prompt_ids], dtype=torch.long, device=model.device)
        devices = [model.device] if model.device.type == "cuda" else []
        t0 = time.perf_counter()
        try:
            net.recorder = recorder
            with torch.random.fork_rng(devices=devices, device_type=model.device.type):
                torch.manual_seed(self.settings.seed)
                net.generate(ids, streamer=streamer, **generate_kwargs(self.policy, self.settings.gen_length))
            self.finished = True
        except StopDecoding:
            self.stopped = True
        except Exception as exc:  # noqa: BLE001 - the consumer re-raises it
            recorder.publish()
            self._queue.put(exc)
        finally:
            net.recorder = None
            self._seconds = time.perf_counter() - t0 - self._paused
            self._queue.put(_END)

    def __iter__(self) -> Iterator[StepRecord]:
        if self._started:
            raise RuntimeError("a Run can be iterated once; start a new Run")
        self._started = True
        worker = self._worker = threading.Thread(target=self._generate, daemon=True)
        worker.start()
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    break
                if isinstance(item, Exception):
                    self.error = f"{type(item).__name__}: {item}"
                    raise item
                yield item
                self._taken.release()  # the consumer asks for the next record: generate goes on
        finally:
            if worker.is_alive():  # the consumer left early: end generate at its next step
                self._stop_requested = True
            self._consumer_gone = True
            self._taken.release()
            worker.join()

    @property
    def trace(self) -> Trace:
        m, s = self.model, self.settings
        tokens = list(self.tokens)
        cut = tokens[: first_end(tokens, m.eos_ids)]
        text = m.decode([t for t in cut if t != m.pad_id])
        summary = Summary.of_run(self.records, s.gen_length, len(cut), self._seconds, finished=self.finished,
                                 stopped=self.stopped, error=self.error, cache_bytes=None).to_dict()
        predicted = np.unique(np.concatenate([r.argmax for r in self.records])) if self.records else []
        seen = sorted({int(t) for t in predicted} | set(tokens) | {m.mask_id})
        strings = m.token_strings(seen)
        return Trace(settings=s.to_dict(self.policy), model=m.name, prompt=self.prompt_text,
                     prompt_ids=list(self.prompt_ids), mask_id=m.mask_id, records=list(self.records),
                     tokens=tokens, text=text, summary=summary,
                     token_strings={str(t): x for t, x in zip(seen, strings)})


def new_run(model: Any, prompt: Union[str, Sequence[int], Sequence[dict]], settings: GenerationSettings):
    """The run of ``prompt`` on ``model``: transformers' generate for DiffusionGemma, our engine otherwise."""
    if isinstance(model, DiffusionGemmaLM):
        return DiffusionGemmaRun(model, prompt, settings)
    return Run(model, prompt, settings)


__all__ = ["DiffusionGemmaRun", "StopDecoding", "check_settings", "generate_kwargs", "new_run"]
