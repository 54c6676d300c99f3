"""The step loop: ``_forward`` (the model, with CFG) -> ``_observe`` (confidences, the
policy's decision) -> ``_commit`` (tokens into the ``Canvas``) -> ``_record`` (a StepRecord).

The engine owns the loop, the random generators (seeded: the same settings and seed give
the same trace), timing and NFE accounting. ``Run`` is an iterator of ``StepRecord`` so a
UI can render while it runs and a benchmark can just drain it; ``run.trace`` holds the
result, also after a stop or an error.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import torch

from .cache import CacheSettings, FeatureCache
from .models.dllm import DLLM
from .params import DEFAULTS, GENERATION, LIMITS, MAX_INT, MAX_SEED  # noqa: F401 (MAX_*: their old home)
from .params import shown, shown_name
from .samplers import DEFAULT_SAMPLER, DecodingStalled, Layout, Observation, Policy, make_policy
from .samplers.base import Decision, Scoring
from .samplers.scoring import score_logits
from .trace import StepRecord, Summary, Trace


@dataclass
class GenerationSettings:
    """Everything that determines a run (with the model and the prompt)."""

    sampler: str = DEFAULT_SAMPLER
    gen_length: int = DEFAULTS["gen_length"]
    block_length: int = DEFAULTS["block_length"]
    steps: int = DEFAULTS["steps"]  # used by the baseline and dream only; the others stop when the canvas is full
    temperature: float = DEFAULTS["temperature"]
    seed: int = DEFAULTS["seed"]
    cfg_scale: float = DEFAULTS["cfg_scale"]
    chat: bool = True  # apply the tokenizer's chat template when it has one
    params: dict[str, Any] = field(default_factory=dict)  # sampler parameters
    max_forwards_per_block: Optional[int] = DEFAULTS["max_forwards_per_block"]  # hard cap; None: 2 * block_length + 16
    cache: Optional[dict[str, Any]] = None  # dLLM-Cache parameters ({} = defaults); None = off

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GenerationSettings":
        """The settings of any trace (``trace.settings``), preset (its ``settings``; ``cache``
        may name a preset such as ``"paper-llada"``) or worker request, checked: whatever the
        dict holds (unknown keys, a list for ``params``, an integer too large for a float),
        the answer is these settings or one ValueError naming the setting, what it was and
        what is allowed (``policy()``'s check, which they pass)."""
        if not isinstance(d, dict):
            raise ValueError(f"settings: {shown(d)} is not allowed; it must be an object")
        names = {f.name for f in fields(cls)}
        unknown = [k for k in d if k not in names]
        if unknown:
            raise ValueError(f"settings: unknown keys {', '.join(shown_name(k) for k in unknown[:4])}"
                             f"{', ...' if len(unknown) > 4 else ''}; allowed: {', '.join(sorted(names))}")
        d = dict(d)
        if isinstance(d.get("cache"), str):
            from .cache import CACHE_PRESETS

            if d["cache"] not in CACHE_PRESETS:
                raise ValueError(f"cache: {shown(d['cache'])} is not a cache preset; allowed: "
                                 f"{', '.join(sorted(CACHE_PRESETS))}")
            d["cache"] = dict(CACHE_PRESETS[d["cache"]])
        if d.get("params") is not None and not isinstance(d["params"], dict):
            raise ValueError(f"params: {shown(d['params'])} is not allowed; it must be an object of sampler "
                             "parameters (name: value)")
        d["params"] = dict(d.get("params") or {})
        if "chat" in d and not isinstance(d["chat"], (bool, np.bool_)):
            raise ValueError(f"chat: {shown(d['chat'])} is not allowed; it must be true or false")
        settings = cls(**d)
        settings.policy()
        return settings

    def policy(self) -> Policy:
        """The validated policy for these settings (raises ValueError on bad input). This is
        the one check of a run's settings: each parameter against its definition in
        ``slowfast.params`` (the sampler's and the cache's in their own classes), then how they
        fit together. Trace files are checked with it too (``trace_format._check_settings``)."""
        for p in (*GENERATION, *LIMITS):
            p.check(getattr(self, p.name))
        if not isinstance(self.params, dict):
            raise ValueError(f"params: {shown(self.params)} is not allowed; it must be an object of sampler "
                             "parameters (name: value)")
        if self.cache is not None and not isinstance(self.cache, dict):
            raise ValueError(f"cache: {shown(self.cache)} is not allowed; it must be an object of cache "
                             "parameters (name: value), or null (off)")
        if self.gen_length % self.block_length:
            raise ValueError(
                f"gen_length: {self.gen_length} is not divisible by block_length {self.block_length}; "
                "allowed: a multiple of block_length"
            )
        policy = make_policy(self.sampler, self.params)
        policy.check_layout(self.layout)
        self.cache_settings()
        return policy

    def cache_settings(self) -> Optional[CacheSettings]:
        return None if self.cache is None else CacheSettings.from_params(self.cache)

    @property
    def layout(self) -> Layout:
        return Layout(self.gen_length, self.block_length, self.steps)

    @property
    def forward_cap(self) -> int:
        return self.max_forwards_per_block or 2 * self.block_length + 16

    def to_dict(self, policy: Optional[Policy] = None) -> dict[str, Any]:
        d = asdict(self)
        if policy is not None:
            d["params"] = policy.params()  # resolved names and defaults, for replay
        if self.cache is not None:
            d["cache"] = self.cache_settings().to_dict()
        return d


def confidences(logits: torch.Tensor, temperature: float, generator: Optional[torch.Generator]):
    """Argmax token and its confidence per row, as LLaDA's reference computes them.

    With temperature > 0 the token is the argmax of Gumbel-perturbed logits, drawn in
    float64 (``exp(logits) / (-log u) ** temperature``); the confidence is the softmax
    probability of that token under the unperturbed logits.
    """
    if temperature > 0:
        l64 = logits.double()
        u = torch.rand(l64.shape, generator=generator, device=l64.device, dtype=torch.float64)
        token = (l64.exp() / (-torch.log(u)) ** temperature).argmax(-1)
        probs = torch.softmax(l64, dim=-1)
    else:
        token = logits.argmax(-1)
        probs = torch.softmax(logits.float(), dim=-1)
    return probs.gather(-1, token.unsqueeze(-1)).squeeze(-1), token


def check_prompt_length(model: DLLM, prompt_tokens: int, gen_length: int) -> None:
    """The prompt's tokens against the model's context, after tokenizing (before it,
    ``model.check_prompt_size`` bounds the text's bytes): ValueError when the prompt leaves
    no room, or no room for ``gen_length`` positions."""
    if prompt_tokens >= model.max_length:
        raise ValueError(
            f"prompt: {prompt_tokens} tokens leave no room in the model's context of "
            f"{model.max_length} tokens; allowed: a prompt shorter than the context minus gen_length"
        )
    total = prompt_tokens + gen_length
    if total > model.max_length:
        raise ValueError(
            f"gen_length: prompt ({prompt_tokens} tokens) + gen_length {gen_length} = "
            f"{total} exceeds the model's context of {model.max_length} tokens; allowed: gen_length <= "
            f"{model.max_length - prompt_tokens} for this prompt"
        )


def first_end(ids: Sequence[int], end_ids: frozenset[int]) -> int:
    """Index of the first end-of-text token (len(ids) if none)."""
    for i, t in enumerate(ids):
        if t in end_ids:
            return i
    return len(ids)


@dataclass
class Canvas:
    """A run's decoding state between forwards: the token ids (prompt, then the generation),
    which generated positions are still masked, and what the last forward(s) saw."""

    ids: torch.Tensor  # [1, P + G] token ids
    prompt_length: int
    mask: np.ndarray  # bool [G], True = still masked
    confidence: np.ndarray  # float32 [G], from the last forward that saw each position
    argmax: np.ndarray  # int64 [G]
    score: Optional[np.ndarray]  # float32 [G] when the policy asked for a Scoring
    scoring: Optional[Scoring]
    extent: int  # generated positions the next forward is fed
    generator: torch.Generator  # the run's seeded sampler of tokens
    nfe: int = 0
    forwards: int = 0
    per_block: dict[int, int] = field(default_factory=dict)  # forwards spent in each block


def read_prompt(model: DLLM, prompt: Union[str, Sequence[int], list[dict]],
                settings: "GenerationSettings") -> tuple[str, list[int]]:
    """A run's prompt (text, token ids, or a conversation) as (text, token ids), checked: its
    size before anything reads it whole, text that encodes, ids within the vocabulary, at least
    one token, and room for the generation in the model's context."""
    text, ids = prompt_parts(model, prompt, settings)
    if not ids:
        raise ValueError("prompt: it encodes to no tokens; allowed: any non-empty text")
    check_prompt_length(model, len(ids), settings.gen_length)
    return text, ids


def prompt_parts(model: DLLM, prompt: Union[str, Sequence[int], list[dict]],
                 settings: "GenerationSettings") -> tuple[str, list[int]]:
    if isinstance(prompt, str):
        model.check_prompt_size(prompt)  # before anything reads the whole text
        if not prompt.strip():
            raise ValueError("prompt: empty; allowed: any non-empty text")
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as exc:  # e.g. undecodable bytes from a terminal (surrogates)
            raise ValueError(f"prompt: not valid text (undecodable character at {exc.start}); "
                             "allowed: UTF-8 text") from None
        return prompt, model.encode_prompt(prompt, chat=settings.chat)
    elif prompt and isinstance(prompt[0], dict):
        model.check_prompt_size(prompt)
        if not str(prompt[-1].get("content", "")).strip():
            raise ValueError("prompt: the last message is empty; allowed: any non-empty text")
        return str(prompt[-1]["content"]), model.encode_chat(prompt)
    else:
        vocab = model.vocab_size
        ids = list(prompt)
        if len(ids) >= model.max_length:  # before the ids are read one by one
            check_prompt_length(model, len(ids), settings.gen_length)
        bad = [t for t in ids if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompt: token id {shown(bad[0])} is outside the vocabulary; allowed: integers "
                             f"0..{vocab - 1}")
        prompt_ids = [int(t) for t in ids]
        return model.decode(prompt_ids), prompt_ids


class Run:
    """One generation: iterate it for StepRecords; ``trace`` holds the result so far."""

    def __init__(self, model: DLLM, prompt: Union[str, Sequence[int], Sequence[dict]], settings: GenerationSettings):
        """``prompt``: text, token ids, or a conversation ``[{"role", "content"}, ...]``."""
        self.model, self.settings = model, settings
        self.policy = settings.policy()
        if getattr(self.policy, "OWN_GENERATION", False) or getattr(model, "OWN_GENERATION", False):
            raise ValueError(f"sampler: {settings.sampler} on {model.name} ({model.family}): the entropy_bound sampler "
                             "and DiffusionGemma go together, through transformers' generate "
                             "(slowfast.gemma_run.new_run); allowed here: a masked diffusion LM with "
                             "another sampler")
        if settings.cache is not None and not model.supports_cache:
            raise ValueError(f"cache: dLLM-Cache is not available for this model ({model.name}, {model.family}); "
                             "it needs our transformer's layers. Allowed: run without the cache")
        self.prompt_text, self.prompt_ids = read_prompt(model, prompt, settings)
        self.records: list[StepRecord] = []
        self.error: Optional[str] = None
        self.stopped = False
        self.finished = False
        self._stop_requested = False
        self._seconds = 0.0
        self._canvas: Optional[Canvas] = None  # the decoding state, once the run started
        self._started = False
        self.cache_bytes = 0
        self.cache: Optional[FeatureCache] = None
        self.blocks: Any = None  # a block-causal model's run context: its KV cache of finished blocks

    def stop(self) -> None:
        """Ask the loop to end before its next forward; the trace keeps what was done."""
        self._stop_requested = True

    def __iter__(self) -> Iterator[StepRecord]:
        if self._started:
            raise RuntimeError("a Run can be iterated once; start a new Run")
        self._started = True
        cache_settings = self.settings.cache_settings()
        cache = None
        if cache_settings is not None:
            cache = FeatureCache(cache_settings, len(self.prompt_ids), self.settings.gen_length,
                                 self.model.n_layers)
        self.cache = cache
        if getattr(self.model, "block_causal", False):
            self.blocks = self.model.block_context(self.settings.block_length, len(self.prompt_ids))
        try:
            yield from self._loop(cache)
        except DecodingStalled as exc:
            self.error = str(exc)
            raise
        finally:
            if cache is not None:
                self.cache_bytes = cache.nbytes()
                cache.clear()  # no state leaks into the next run; memory is freed
            if self.blocks is not None:
                self.blocks.clear()

    def _loop(self, cache: Optional[FeatureCache]) -> Iterator[StepRecord]:
        """forward -> observe -> commit -> record, until the policy is done (or a stop)."""
        canvas = self._canvas = self._start()
        t_run, paused = time.perf_counter(), 0.0  # the consumer's time between records is not the run's
        while not self.policy.done(canvas.mask):
            if self._stop_requested:
                self.stopped = True
                break
            t0 = time.perf_counter()
            logits, flops = self._forward(canvas, cache)
            decision = self._observe(canvas, logits)
            decode = self._commit(canvas, decision)
            record = self._record(canvas, decision, decode, flops, cache, (time.perf_counter() - t0) * 1000.0)
            self._check_cap(canvas, decision)
            canvas.extent = self._next_extent(decision)
            self._seconds = time.perf_counter() - t_run - paused
            t_yield = time.perf_counter()
            yield record
            paused += time.perf_counter() - t_yield
        self._seconds = time.perf_counter() - t_run - paused
        self.finished = not canvas.mask.any()

    def _start(self) -> "Canvas":
        """The canvas of a new run (prompt, then all masks), the seeded generators, the policy reset."""
        s, model = self.settings, self.model
        P, G = len(self.prompt_ids), s.gen_length
        ids = torch.full((1, P + G), model.mask_id, dtype=torch.long, device=model.device)
        ids[0, :P] = torch.tensor(self.prompt_ids, dtype=torch.long, device=model.device)
        self.policy.reset(s.layout, np.random.default_rng(s.seed))
        scoring = self.policy.scoring()  # None: LLaDA's rule; else Dream's, with a second statistic
        return Canvas(
            ids=ids, prompt_length=P, mask=np.ones(G, dtype=bool), confidence=np.zeros(G, dtype=np.float32),
            argmax=np.full(G, model.mask_id, dtype=np.int64), scoring=scoring,
            score=np.zeros(G, dtype=np.float32) if scoring is not None else None, extent=G,
            generator=torch.Generator(device=model.device).manual_seed(s.seed),
        )

    def _forward(self, canvas: "Canvas", cache: Optional[FeatureCache]) -> tuple[torch.Tensor, float]:
        """One forward (a pair with classifier-free guidance) over the prompt and the first
        ``extent`` generated positions: the guided logits of those positions and its FLOPs."""
        s, model, P = self.settings, self.model, canvas.prompt_length
        fed = canvas.ids[:, : P + canvas.extent]
        if cache is not None:
            cache.begin_forward()
        extra = {}
        if self.blocks is not None:  # the blocks before the one this forward works on are final: a KV cache
            self.blocks.frozen = P + self._finished_prefix(canvas)
            extra = {"blocks": self.blocks}
        if s.cfg_scale > 0:  # the unconditional pass is batch row 1: its own cache rows
            uncond = fed.clone()
            uncond[:, :P] = model.mask_id
            both = model.forward(torch.cat([fed, uncond]), cache=cache, start=P, **extra)
            cond, un = both[:1], both[1:]
            logits = un + (s.cfg_scale + 1.0) * (cond - un)
            canvas.forwards += 2
        else:
            logits = model.forward(fed, cache=cache, start=P, **extra)
            canvas.forwards += 1
        canvas.nfe += 1
        return logits, model.forward_flops(self.batch, P + canvas.extent, cache, logits_from=P)

    def _finished_prefix(self, canvas: "Canvas") -> int:
        """Generated positions before the block the next forward works on (the policy's current
        block, or the first with a mask): no later step changes them."""
        layout = self.settings.layout
        masked = np.flatnonzero(canvas.mask)
        block = int(masked[0]) // layout.block_length if masked.size else layout.num_blocks
        current = self.policy.current_block()
        if current is not None:
            block = min(block, current)
        return min(block * layout.block_length, layout.gen_length)

    def _observe(self, canvas: "Canvas", logits: torch.Tensor) -> Decision:
        """Tokens and confidences (and the policy's score) from the logits, then the
        policy's decision on what it was shown."""
        extent = canvas.extent
        temperature = float(self.settings.temperature)  # an integer temperature would overflow torch's int
        if canvas.scoring is None:
            c, t = confidences(logits[0], temperature, canvas.generator)
        else:
            c, t, sc = score_logits(logits[0], temperature, canvas.generator, canvas.scoring)
            canvas.score[:extent] = sc.float().cpu().numpy()
        canvas.confidence[:extent] = c.float().cpu().numpy()
        canvas.argmax[:extent] = t.cpu().numpy()
        changed = None
        if self.policy.EDITS:  # decoded positions the model now predicts otherwise
            tokens = canvas.ids[0, canvas.prompt_length:].cpu().numpy()
            changed = ~canvas.mask & (tokens != canvas.argmax)
        return self.policy.decide(Observation(
            mask=canvas.mask.copy(), confidence=canvas.confidence.copy(),
            score=None if canvas.score is None else canvas.score.copy(), changed=changed))

    def _commit(self, canvas: "Canvas", decision: Decision) -> np.ndarray:
        """Write the decided positions' tokens into the canvas (after checking them)."""
        decode = np.asarray(decision.decode, dtype=np.int64)
        self._check(decode, canvas.mask, canvas.extent)
        edit = np.asarray(decision.edit if decision.edit is not None else [], dtype=np.int64)
        if edit.size:  # decoded positions that take their new prediction (a policy that EDITS)
            self._check(edit, ~canvas.mask, canvas.extent, what="edit", edits=self.policy.EDITS)
        both = np.concatenate([decode, edit])
        if both.size:
            device = canvas.ids.device
            canvas.ids[0, canvas.prompt_length + torch.from_numpy(both).to(device)] = \
                torch.from_numpy(canvas.argmax[both]).to(device)
            canvas.mask[decode] = False
        return decode

    def _record(self, canvas: "Canvas", decision: Decision, decode: np.ndarray, flops: float,
                cache: Optional[FeatureCache], ms: float) -> StepRecord:
        record = StepRecord(
            step=len(self.records), stage=decision.stage, block=decision.block,
            span=tuple(int(v) for v in decision.span) if decision.span is not None else None,
            horizons=[int(h) for h in decision.horizons] if decision.horizons is not None else None,
            horizon_spread=None if decision.horizon_spread is None else float(decision.horizon_spread),
            confidence=canvas.confidence.astype(np.float16), argmax=canvas.argmax.astype(np.int32),
            decoded=[int(i) for i in decode], fed_end=canvas.extent,
            tokens_fed=(canvas.prompt_length + canvas.extent) * self.batch, ms=ms, nfe=canvas.nfe,
            forwards=canvas.forwards, info=dict(decision.info), flops=flops,
            cache=cache.summary() if cache is not None else None,
        )
        if self.policy.EDITS:  # the positions re-decoded, and the canvas after the step (views draw it)
            record.edited = [int(i) for i in (decision.edit if decision.edit is not None else [])]
            record.canvas = canvas.ids[0, canvas.prompt_length:].cpu().numpy().astype(np.int32)
        self.records.append(record)
        return record

    def _check_cap(self, canvas: "Canvas", decision: Decision) -> None:
        """End the run when a block used its last allowed forward and would need another:
        it still has masks, or it is full but the policy would spend more forwards on it (the
        published SlowFast code runs the rest of its slow stage on a full block). Every
        forward of a block counts, those that decode nothing too."""
        s, block = self.settings, decision.block
        canvas.per_block[block] = used = canvas.per_block.get(block, 0) + 1
        if used < s.forward_cap:
            return
        block_start, block_end = s.layout.block_bounds(block)
        if canvas.mask[block_start:block_end].any():
            raise DecodingStalled(  # the cap'th forward was the last one this block may use
                f"{s.sampler}: block {block} used {s.forward_cap} forwards "
                "(max_forwards_per_block) and still has masks; the run was ended"
            )
        if not self.policy.done(canvas.mask) and self.policy.current_block() == block:
            raise DecodingStalled(
                f"{s.sampler}: block {block} used {s.forward_cap} forwards (max_forwards_per_block) and is full, "
                "but the sampler would run more forwards on it (they decode nothing; they count too); "
                "the run was ended"
            )
        if used > s.forward_cap:  # a policy that spent forwards on a full block without saying so
            raise DecodingStalled(f"{s.sampler}: block {block} used {used} forwards, more than "
                                  f"max_forwards_per_block ({s.forward_cap}); the run was ended")

    def _next_extent(self, decision: Decision) -> int:
        G = self.settings.gen_length
        extent = G if decision.next_extent is None else int(decision.next_extent)
        if not 1 <= extent <= G:
            raise RuntimeError(f"{self.settings.sampler}: policy asked for a forward over {extent} positions")
        return extent

    @property
    def batch(self) -> int:
        """Rows per forward: 2 with classifier-free guidance (conditional and unconditional)."""
        return 2 if self.settings.cfg_scale > 0 else 1

    def _check(self, decode: np.ndarray, mask: np.ndarray, extent: int, what: str = "decode",
               edits: bool = True) -> None:
        """A policy may only unmask distinct, still-masked positions this forward saw (and edit
        distinct decoded ones, if it is one that EDITS)."""
        if decode.size and (not edits or decode.min() < 0 or decode.max() >= extent or not mask[decode].all()
                            or np.unique(decode).size != decode.size):
            raise RuntimeError(f"{self.settings.sampler}: invalid positions to {what}: {decode.tolist()}")

    @property
    def trace(self) -> Trace:
        """The run as a Trace (final once the iteration has ended)."""
        m, s = self.model, self.settings
        P = len(self.prompt_ids)
        tokens = self._canvas.ids[0, P:].tolist() if self._canvas is not None else [m.mask_id] * s.gen_length
        cut = tokens[: first_end(tokens, m.eos_ids)]
        text = m.decode([t for t in cut if t != m.mask_id])
        summary = Summary.of_run(self.records, s.gen_length, len(cut), self._seconds, finished=self.finished,
                                 stopped=self.stopped, error=self.error,
                                 cache_bytes=self.cache_bytes if s.cache is not None else None).to_dict()
        predicted = np.unique(np.concatenate([r.argmax for r in self.records])) if self.records else []
        seen = sorted({int(t) for t in predicted} | set(tokens) | {m.mask_id})
        strings = m.token_strings(seen)
        return Trace(
            settings=s.to_dict(self.policy), model=m.name, prompt=self.prompt_text,
            prompt_ids=list(self.prompt_ids), mask_id=m.mask_id, records=list(self.records),
            tokens=tokens, text=text, summary=summary,
            token_strings={str(t): x for t, x in zip(seen, strings)},
        )


def drain(run: Run) -> Trace:
    """Run ``run`` to its end and return its trace: the one way every caller (``generate``,
    the app, the CLI) finishes a run. A run the engine had to end (``DecodingStalled``: the
    forward or cycle cap) keeps its partial trace, with the reason in ``summary["error"]``."""
    try:
        for _ in run:
            pass
    except DecodingStalled:
        pass
    return run.trace


def generate(model: DLLM, prompt: Union[str, Sequence[int], Sequence[dict]], settings: GenerationSettings) -> Trace:
    """Decode ``prompt`` to the end and return its Trace (see ``drain`` for a stalled run)."""
    return drain(Run(model, prompt, settings))
