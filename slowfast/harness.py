"""lm-evaluation-harness model ``slowfast``: score any model ``load_model`` loads, decoded by any
of our samplers, on lm_eval's benchmarks (GSM8K and the rest) or on a local task.

lm_eval (0.4.x) finds a model class only in its registry (``lm_eval.api.registry``), filled
by ``@register_model`` when the class's module is imported; it has no plugin entry point
for models outside its own package, so the plain ``lm_eval`` command cannot see this one.
Run lm_eval's own command line through this module instead, which imports (registers) the
class first::

    python -m slowfast.harness --model slowfast \\
        --model_args pretrained=GSAI-ML/LLaDA-8B-Instruct,sampler=slowfast,gen_length=256,block_length=256 \\
        --tasks gsm8k --num_fewshot 4 --output_path results/

or, from Python, ``import slowfast.harness`` and then ``lm_eval.simple_evaluate(model="slowfast",
model_args=..., tasks=[...])``.

model_args (``key=value``, comma separated):

* ``pretrained`` (``embedded``): anything ``load_model`` takes: ``embedded``, a folder, a hub id.
* ``sampler`` (``slowfast``): baseline, slowfast, threshold, dream.
* ``gen_length`` (96), ``block_length`` (= gen_length), ``steps`` (= gen_length; baseline and
  dream only, refused with the others), ``temperature`` (0), ``seed`` (0), ``cfg_scale`` (0), ``max_forwards_per_block``.
* ``chat`` (default: true when the tokenizer has a chat template): each context is sent as
  one user turn of the template, as ``python -m slowfast generate`` sends a prompt. With
  lm_eval's ``--apply_chat_template`` lm_eval renders the conversation itself (few-shot
  examples as turns) through ``apply_chat_template`` below and the text is encoded as it is.
* ``cache`` (``off``): ``on`` (dLLM-Cache with its defaults) or a preset of
  ``slowfast.cache.CACHE_PRESETS``; ``kp``, ``kr``, ``rho``, ``refresh_first_layer`` (or their
  reference names) override it.
* ``device``, ``dtype`` (``auto``: fp32 on CPU, bf16 on CUDA), ``trust_remote_code`` (false).
* Any parameter of the chosen sampler by our name or the reference code's name
  (``high_confidence_threshold=0.9``, ``threshold=0.9``, ...), validated by the sampler.
* Log-likelihood: ``mc_num`` (32) Monte-Carlo samples per request, ``mc_batch`` (min(mc_num,
  32)) of them per forward, ``check_greedy`` (false).
* ``batch_size`` / ``max_batch_size`` (lm_eval passes them) are accepted and ignored: the
  engine decodes one canvas at a time; ``mc_batch`` batches the log-likelihood samples.

A key that is none of these raises ValueError naming the allowed ones; a bad value raises the
sampler's (or the engine's) own ValueError, before any model is loaded.
"""
from __future__ import annotations

if __name__ == "__main__":  # python -m slowfast.harness is the lm-eval command; it imports this file by its
    import sys  # name (slowfast.harness), which registers the model once

    from slowfast.commands.lmeval import main

    sys.exit(main())

import logging
import math
from dataclasses import fields, replace
from typing import Any, Optional, Sequence

import torch
from tqdm import tqdm

try:
    import lm_eval.models  # noqa: F401  # lm_eval's own models stay listed once ours is registered
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
    from lm_eval.utils import simple_parse_args_string
except ImportError as exc:  # pragma: no cover - the message is what a user without lm_eval sees
    raise ImportError("slowfast.harness needs lm-evaluation-harness: pip install lm_eval") from exc

from .cache import CACHE_PRESETS, CacheSettings
from .engine import MAX_INT, GenerationSettings, Run, drain, first_end
from .models.dllm import DLLM
from .models.loading import default_device, load_model, parse_device
from .params import DEFAULTS
from .samplers import SAMPLERS, STEPS_SAMPLERS

log = logging.getLogger(__name__)

# model_args with their own meaning (everything else must be a sampler or cache parameter)
NAMED_ARGS = (
    "pretrained", "sampler", "gen_length", "block_length", "steps", "temperature", "seed", "cfg_scale",
    "max_forwards_per_block", "chat", "cache", "device", "dtype", "trust_remote_code", "mc_num", "mc_batch",
    "check_greedy", "batch_size", "max_batch_size",
)
CACHE_OFF = (None, False, "off", "none", "false", "no", "0")
CACHE_ON = (True, "on", "default", "true", "yes", "1")


def _int(name: str, value: Any, low: int = 1, high: int = MAX_INT) -> int:
    """An integer model_arg (lm_eval passes ints; a digit string from Python is taken too)."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name}: {value!r} is not allowed; it must be an integer in {low}..{high}")
    return value


def _float(name: str, value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: {value!r} is not allowed; it must be a number")
    return float(value)


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    if not isinstance(value, bool):
        raise ValueError(f"{name}: {value!r} is not allowed; use true or false")
    return value


def _cache_dict(cache: Any) -> Optional[dict[str, Any]]:
    if isinstance(cache, str):
        cache = cache.strip()
    if cache in CACHE_OFF or (isinstance(cache, str) and cache.lower() in CACHE_OFF):
        return None
    if cache in CACHE_ON or (isinstance(cache, str) and cache.lower() in CACHE_ON):
        return {}
    if isinstance(cache, str) and cache in CACHE_PRESETS:
        return dict(CACHE_PRESETS[cache])
    raise ValueError(f"cache: {cache!r} is not allowed; allowed: off, on, {', '.join(sorted(CACHE_PRESETS))}")


def build_settings(sampler: str = "slowfast", gen_length: Any = None, block_length: Any = None, steps: Any = None,
                   temperature: Any = 0.0, seed: Any = 0, cfg_scale: Any = 0.0, max_forwards_per_block: Any = None,
                   cache: Any = "off", chat: bool = False, **extra: Any) -> GenerationSettings:
    """Validated GenerationSettings from model_args; ``extra`` holds sampler and cache
    parameters (our names or the reference code's). Raises ValueError on anything bad."""
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ValueError(f"sampler: {sampler!r} is not allowed; allowed: {', '.join(SAMPLERS)}")
    G = _int("gen_length", DEFAULTS["gen_length"] if gen_length is None else gen_length)
    B = G if block_length is None else _int("block_length", block_length)
    if steps is not None and sampler not in STEPS_SAMPLERS:
        raise ValueError(f"steps: {steps!r} is not allowed with the {sampler} sampler (it stops when the canvas is "
                         f"full); allowed: steps with the {' or '.join(STEPS_SAMPLERS)} sampler")
    S = G if steps is None else _int("steps", steps)
    cache_params = _cache_dict(cache)
    policy_cls = SAMPLERS[sampler]
    sampler_names = set(policy_cls.parameter_names()) | set(policy_cls.ALIASES)
    cache_names = {f.name for f in fields(CacheSettings)} | set(CacheSettings.ALIASES)
    params: dict[str, Any] = {}
    unknown = []
    for key, value in extra.items():
        if key in sampler_names:
            params[key] = value
        elif key in cache_names:
            if cache_params is None:
                raise ValueError(f"{key}: a dLLM-Cache parameter, but cache is off; allowed: cache=on or "
                                 f"cache=<preset> ({', '.join(sorted(CACHE_PRESETS))}) with it")
            cache_params[key] = value
        else:
            unknown.append(key)
    if unknown:
        allowed = sorted(set(NAMED_ARGS) | sampler_names | cache_names)
        raise ValueError(f"model_args: unknown keys {sorted(unknown)} for sampler {sampler!r}; allowed: "
                         f"{', '.join(allowed)}")
    settings = GenerationSettings.from_dict(dict(
        sampler=sampler, gen_length=G, block_length=B, steps=S, temperature=_float("temperature", temperature),
        seed=_int("seed", seed, 0, 2**63 - 1), cfg_scale=_float("cfg_scale", cfg_scale), chat=chat, params=params,
        max_forwards_per_block=None if max_forwards_per_block is None else _int("max_forwards_per_block",
                                                                                max_forwards_per_block),
        cache=cache_params,
    ))
    settings.policy()  # the sampler's, the layout's and the cache's own validation
    return settings


def capped(settings: GenerationSettings, max_gen_toks: Optional[int]) -> GenerationSettings:
    """The settings a request with ``max_gen_toks`` decodes with (the text is then cut to
    ``max_gen_toks`` tokens):

    * ``max_gen_toks`` >= gen_length (or absent): unchanged;
    * block_length <= ``max_gen_toks`` < gen_length: whole blocks, as few as cover
      ``max_gen_toks`` (gen_length = block_length * ceil(max_gen_toks / block_length)), the
      same steps per block;
    * ``max_gen_toks`` < block_length: one block of exactly ``max_gen_toks`` positions, with
      the steps per block scaled by max_gen_toks / block_length (at least one).
    """
    G, B = settings.gen_length, settings.block_length
    if max_gen_toks is None or max_gen_toks >= G:
        return settings
    per_block = settings.steps // settings.layout.num_blocks
    if max_gen_toks >= B:
        blocks = math.ceil(max_gen_toks / B)
        return replace(settings, gen_length=blocks * B, steps=blocks * per_block)
    steps = max(1, min(max_gen_toks, round(per_block * max_gen_toks / B)))
    return replace(settings, gen_length=max_gen_toks, block_length=max_gen_toks, steps=steps)


@register_model("slowfast")
class SlowFastLM(LM):
    """A diffusion LM decoded by our engine, for lm-evaluation-harness (see the module's
    docstring for the model_args and how to run it)."""

    def __init__(self, pretrained: str = "embedded", sampler: str = "slowfast", gen_length: Any = None,
                 block_length: Any = None, steps: Any = None, temperature: Any = 0.0, seed: Any = 0,
                 cfg_scale: Any = 0.0, chat: Any = None, cache: Any = "off", device: Optional[str] = None,
                 dtype: Optional[str] = None, trust_remote_code: Any = False, mc_num: Any = 32,
                 mc_batch: Any = None, check_greedy: Any = False, max_forwards_per_block: Any = None,
                 batch_size: Any = None, max_batch_size: Any = None, **params: Any):
        super().__init__()
        # every argument is checked before the (possibly long) model load
        self.settings = build_settings(sampler, gen_length, block_length, steps, temperature, seed, cfg_scale,
                                       max_forwards_per_block, cache, **params)
        self.mc_num = _int("mc_num", mc_num)
        self.mc_batch = min(self.mc_num, 32) if mc_batch is None else _int("mc_batch", mc_batch)
        self.check_greedy = _bool("check_greedy", check_greedy)
        chat_auto = chat is None or (isinstance(chat, str) and chat.strip().lower() == "auto")
        chat_value = None if chat_auto else _bool("chat", chat)
        if batch_size not in (None, 1, "1"):
            log.info("slowfast: batch_size=%s is ignored (one canvas at a time; mc_batch batches the "
                     "log-likelihood samples)", batch_size)
        self.model: DLLM = load_model(str(pretrained), device=device, dtype=dtype,
                                      trust_remote_code=_bool("trust_remote_code", trust_remote_code))
        self.chat = self.model.has_chat_template if chat_value is None else chat_value
        self.settings.chat = self.chat
        if self.settings.cache is not None and not self.model.supports_cache:
            raise ValueError(f"cache: dLLM-Cache is not available for this model ({self.model.name}, "
                             f"{self.model.family}); allowed: cache=off")
        if self.settings.gen_length >= self.model.max_length:
            raise ValueError(f"gen_length: {self.settings.gen_length} leaves no room for a prompt in the model's "
                             f"context of {self.model.max_length} tokens")
        self._device = self.model.device
        self.policy_params = self.settings.policy().params()
        self._templated = False  # True once lm_eval renders chat templates itself
        self._warned: set[str] = set()
        self.stats = {"requests": 0, "nfe": 0, "forwards": 0, "tokens_fed": 0, "seconds": 0.0, "stalled": 0,
                      "truncated": 0, "loglikelihood_requests": 0, "loglikelihood_forwards": 0}

    # --- how lm_eval builds it, and what it asks besides the three request types ---------------

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any], additional_config: Optional[dict[str, Any]] = None):
        """lm_eval's constructor path. It adds batch_size, max_batch_size and device (its command
        line always passes a device, ``cuda:0`` by default): the model_args' own ``device`` wins,
        and lm_eval's device is used only when this machine has it (else CUDA when present,
        else the CPU, as lm_eval's HF model does)."""
        args = dict(arg_dict or {})
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        device = extra.pop("device", None)
        if "device" not in args and device is not None:
            try:
                parse_device(device)
                args["device"] = device
            except ValueError:
                log.info("slowfast: lm_eval's device %r is not available here; using %s", device, default_device())
        for key, value in extra.items():
            args.setdefault(key, value)
        return cls(**args)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: Optional[dict[str, Any]] = None):
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def tokenizer_name(self) -> str:
        return str(self.model.name).replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> Optional[str]:
        return getattr(self.tokenizer, "chat_template", None) or ""

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """lm_eval's ``--apply_chat_template``: the conversation rendered by the tokenizer's
        template; contexts are then encoded as they are (no second template)."""
        if not self.model.has_chat_template:
            raise ValueError(f"--apply_chat_template: the tokenizer of {self.model.name} has no chat template")
        self._templated = True
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt,
                                                  continue_final_message=not add_generation_prompt)

    def get_model_info(self) -> dict[str, Any]:
        """Added to the results' ``config``: the model, the settings and what decoding cost."""
        n = max(self.stats["requests"], 1)
        return {"slowfast": {
            "pretrained": str(self.model.name), "family": self.model.family, "chat": self.chat,
            "settings": self.settings.to_dict(self.settings.policy()), "mc_num": self.mc_num,
            "mc_batch": self.mc_batch, "check_greedy": self.check_greedy,
            "generate_until": {**self.stats, "nfe_mean": self.stats["nfe"] / n,
                               "tokens_fed_mean": self.stats["tokens_fed"] / n},
        }}

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    # --- encoding ------------------------------------------------------------------------------

    def _encode(self, text: str, special: bool = True) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def encode_context(self, context: str) -> list[int]:
        """A context's token ids: as ``Run`` encodes a prompt (one user turn when ``chat``),
        or as it is when lm_eval has rendered the chat template itself."""
        if self._templated:
            return self._encode(context, special=False)
        return self.model.encode_prompt(context, chat=self.chat)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids). Without a chat template, as LLaDA's evaluation
        does: trailing spaces of the context move to the continuation, the whole text is
        encoded and split after the context's tokens. With ``chat`` the context is a user
        turn and the continuation is encoded on its own."""
        if self.chat and not self._templated:
            return self.model.encode_prompt(context, chat=True), self._encode(continuation, special=False)
        special = not self._templated
        n = len(context) - len(context.rstrip())
        if n:
            context, continuation = context[:-n], context[-n:] + continuation
        whole = self._encode(context + continuation, special)
        ctx = self._encode(context, special) if context else []
        return whole[: len(ctx)], whole[len(ctx):]

    # --- generate_until -------------------------------------------------------------------------

    def generate_until(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[str]:
        """Each ``(context, gen_kwargs)`` decoded by the engine (``Run`` + ``drain``) with the
        model_args' settings; the text is cut at the first end-of-text, then at the first of
        ``gen_kwargs["until"]``. ``max_gen_toks`` smaller than gen_length shortens the canvas
        (see ``capped``: whole blocks, or one block of exactly max_gen_toks) and the text is
        cut to max_gen_toks tokens. Other gen_kwargs (do_sample, temperature, ...) are
        ignored, with one warning: the model_args decide how to decode. A context too long
        for the model's context with the canvas is cut from the left, with a warning."""
        out = []
        for req in tqdm(requests, disable=disable_tqdm or self.rank != 0, desc="slowfast generate_until"):
            context, gen_kwargs = req.args
            text = self.generate_text(context, dict(gen_kwargs or {}))
            out.append(text)
            self.cache_hook.add_partial("generate_until", req.args, text)
        return out

    def generate_text(self, context: str, gen_kwargs: Optional[dict[str, Any]] = None) -> str:
        """One request of ``generate_until``."""
        gen_kwargs = dict(gen_kwargs or {})
        until = gen_kwargs.pop("until", None)
        until = [until] if isinstance(until, str) else list(until or [])
        max_gen = gen_kwargs.pop("max_gen_toks", None)
        if max_gen is not None:
            max_gen = _int("max_gen_toks", max_gen)
        if gen_kwargs:
            self._warn_once("gen_kwargs:" + ",".join(sorted(gen_kwargs)),
                            "slowfast: gen_kwargs %s are ignored; the model_args decide how to decode",
                            sorted(gen_kwargs))
        settings = capped(self.settings, max_gen)
        limit = settings.gen_length if max_gen is None else min(max_gen, settings.gen_length)
        ids = self.encode_context(context)
        room = self.model.max_length - settings.gen_length
        if len(ids) > room:
            self._warn_once("truncate", "slowfast: a context of %d tokens is cut from the left to %d (the model's "
                            "context of %d tokens less gen_length %d); warned once", len(ids), room,
                            self.model.max_length, settings.gen_length)
            ids = ids[-room:]
            self.stats["truncated"] += 1
        run = Run(self.model, ids, settings)
        trace = drain(run)
        summary = trace.summary
        for key in ("nfe", "forwards", "tokens_fed", "seconds"):
            self.stats[key] += summary.get(key) or 0
        self.stats["requests"] += 1
        if summary.get("error"):
            self.stats["stalled"] += 1
            self._warn_once("stalled", "slowfast: a run was ended by the engine (%s); its partial text is scored",
                            summary["error"])
        tokens = trace.tokens[:limit]
        cut = tokens[: first_end(tokens, self.model.eos_ids)]
        text = self.model.decode([t for t in cut if t != self.model.mask_id])
        for term in until:
            if term:
                text = text.split(term)[0]
        return text

    # --- loglikelihood ----------------------------------------------------------------------------

    def loglikelihood(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """LLaDA's Monte-Carlo estimate of log p(continuation | context) (a lower bound, the
        ELBO), as its evaluation code computes it: see ``loglikelihood_tokens``."""
        out = []
        for req in tqdm(requests, disable=disable_tqdm or self.rank != 0, desc="slowfast loglikelihood"):
            context, continuation = req.args
            result = self.loglikelihood_tokens(*self.encode_pair(context, continuation))
            out.append(result)
            self.cache_hook.add_partial("loglikelihood", req.args, result)
        return out

    @torch.inference_mode()
    def loglikelihood_tokens(self, context: Sequence[int], continuation: Sequence[int]) -> tuple[float, bool]:
        """(estimate, is_greedy) for token ids.

        The estimate averages ``mc_num`` samples, ``mc_batch`` per forward. A sample draws l
        in 1..L (L = continuation length), masks l random continuation positions, and scores
        ``L / l * sum over the masked positions of log p(true token)``. As in LLaDA's
        ``eval_llada.py`` the l of one batch are stratified: one uniform draw k, then
        k + i * L / b rounded and wrapped into 1..L for row i (each row's l is uniform). The
        random generator is seeded with ``seed`` for every request, so a request's estimate
        does not depend on the others. With ``cfg_scale`` > 0 the logits are guided as in
        generation (a second row with the context masked).

        ``is_greedy`` is computed only with ``check_greedy=true`` (else False, as LLaDA's
        evaluation recommends): the continuation's positions all masked, then L forwards
        each committing the single most confident masked position's argmax; True when that
        reproduces the continuation.

        A context too long for the model is cut from the left (warned once); a continuation
        that alone fills the model's context raises ValueError."""
        ctx, cont = [int(t) for t in context], [int(t) for t in continuation]
        if not cont:
            return 0.0, True
        self.stats["loglikelihood_requests"] += 1
        max_len = self.model.max_length
        if len(cont) >= max_len:
            raise ValueError(f"continuation: {len(cont)} tokens fill the model's context of {max_len} tokens")
        if len(ctx) + len(cont) > max_len:
            self._warn_once("truncate-ll", "slowfast: a context of %d tokens is cut from the left to %d (the "
                            "model's context of %d tokens less the continuation); warned once", len(ctx),
                            max_len - len(cont), max_len)
            ctx = ctx[len(ctx) + len(cont) - max_len:]
        estimate = self._monte_carlo(ctx, cont)
        greedy = self._suffix_greedy(ctx, cont) if self.check_greedy else False
        return estimate, greedy

    def _logits(self, batch: torch.Tensor, P: int) -> torch.Tensor:
        """Logits of positions P.. of each row (guided when cfg_scale > 0)."""
        cfg = self.settings.cfg_scale
        self.stats["loglikelihood_forwards"] += 1
        if cfg > 0:
            uncond = batch.clone()
            uncond[:, :P] = self.model.mask_id
            both = self.model.forward(torch.cat([batch, uncond]), start=P)
            cond, un = both[: batch.shape[0]], both[batch.shape[0]:]
            return un + (cfg + 1.0) * (cond - un)
        return self.model.forward(batch, start=P)

    def _monte_carlo(self, ctx: list[int], cont: list[int]) -> float:
        P, L = len(ctx), len(cont)
        device = self.model.device
        seq = torch.tensor(ctx + cont, dtype=torch.long, device=device)
        target = seq[P:]
        gen = torch.Generator(device="cpu").manual_seed(self.settings.seed)
        total, done = 0.0, 0
        while done < self.mc_num:
            b = min(self.mc_batch, self.mc_num - done)
            k = int(torch.randint(1, L + 1, (1,), generator=gen))
            counts = torch.round(torch.linspace(k, k + (b - 1) * L / b, b, dtype=torch.float64)).long()
            counts = (counts - 1) % L + 1
            masked = torch.zeros(b, L, dtype=torch.bool)
            for i in range(b):
                masked[i, torch.randperm(L, generator=gen)[: int(counts[i])]] = True
            masked = masked.to(device)
            batch = seq.repeat(b, 1)
            batch[:, P:] = torch.where(masked, torch.full_like(batch[:, P:], self.model.mask_id), batch[:, P:])
            logp = torch.log_softmax(self._logits(batch, P).float(), dim=-1)
            token_logp = logp.gather(-1, target.expand(b, L).unsqueeze(-1)).squeeze(-1)
            per_sample = (token_logp * masked).sum(dim=1) * L / counts.to(device).double()
            total += float(per_sample.sum())
            done += b
        return total / self.mc_num

    def _suffix_greedy(self, ctx: list[int], cont: list[int]) -> bool:
        P, L = len(ctx), len(cont)
        device = self.model.device
        seq = torch.tensor([ctx + [self.model.mask_id] * L], dtype=torch.long, device=device)
        for _ in range(L):
            logits = self._logits(seq, P)[0].float()
            masked = seq[0, P:] == self.model.mask_id
            conf, token = torch.softmax(logits, dim=-1).max(dim=-1)
            conf = torch.where(masked, conf, torch.full_like(conf, -1.0))
            pos = int(conf.argmax())
            seq[0, P + pos] = token[pos]
        return seq[0, P:].tolist() == cont

    def loglikelihood_rolling(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError(
            "slowfast: loglikelihood_rolling (perplexity tasks) is not supported: a masked diffusion LM gives a "
            "Monte-Carlo bound (ELBO) on a text's log-likelihood, not the exact token-by-token value these tasks sum")
