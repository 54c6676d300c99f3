"""``SlowFastScheduler``: our policies behind diffusers' ``BlockRefinementScheduler`` contract.

``LLaDA2Pipeline`` refines a sequence block by block: per forward it hands the scheduler the
current block's logits and tokens (``step``), writes back the positions the scheduler
committed (``transfer_index``), and asks it whether the block needs another forward
(``check_block_should_continue``). This scheduler answers with one of our policies
(``slowfast/samplers/``, SlowFast by default): the policy sees exactly what our engine shows it
(the block's mask map and each position's confidence, computed by the engine's own rule) and
its decision is the committed positions; the policy never sees the model, and nothing of
SlowFast is implemented here a second time.

Each pipeline block is one block of the policy: at the block's first step (``timestep == 0``)
the policy is reset on a layout of one block made of the block's non-prompt positions, which
is what our engine does at a block boundary (SlowFast starts a block afresh; the threshold
sampler and the baseline work block by block). A block ends when the policy is done with it,
so SlowFast's own forward count is kept (its slow stage may run forwards on a full block, as
the published code does). A batch gets one policy per row.

What differs from ``BlockRefinementScheduler`` (said in the README's diffusers section):

* the pipeline's ``threshold``, ``editing_threshold`` and ``minimal_topk`` are not read: the
  policy's own parameters decide, and nothing is edited (``editing_transfer_index`` is all False);
* tokens and confidences follow our engine (``slowfast.engine.confidences``: the argmax at
  temperature 0, float64 Gumbel noise above; a policy with a ``Scoring`` gets Dream's rule,
  ``slowfast.samplers.scoring.score_logits``); ``sampling_method="greedy"`` means temperature 0,
  and ``top_p``/``top_k`` are refused (set them as the sampler's parameters where it has them);
* the baseline's steps per block are ``num_inference_steps``, at most the block's positions;
* uniform-corruption pipelines (``mask_token_id=None``, DiffusionGemma) are refused: our
  policies decide over a mask map.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from diffusers import BlockRefinementScheduler, ConfigMixin, SchedulerMixin
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_block_refinement import BlockRefinementSchedulerOutput

from ..engine import confidences
from ..samplers import DecodingStalled, Layout, Observation, Policy, make_policy
from ..samplers.base import Decision
from ..samplers.scoring import score_logits


@dataclass
class RowState:
    """One batch row's policy and where it is in the current block."""

    policy: Policy
    offset: int = 0  # prompt positions at the start of the block (the policy's position 0 is after them)
    forwards: int = 0  # forwards this block
    done: bool = False  # the policy is done with this block
    decision: Optional[Decision] = None  # the last step's (positions relative to ``offset``)
    confidence: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))


class SlowFastScheduler(SchedulerMixin, ConfigMixin):
    """A diffusers scheduler whose decisions are one of our policies' (see the module docstring).

    Args:
        sampler: a registered sampler of ours (``slowfast``, ``threshold``, ``baseline``, ...).
        sampler_params: its parameters, by our names or the reference code's (checked here).
        block_length: the pipeline's block length when the call does not give one.
        num_inference_steps: forwards per block for a sampler that reads steps (the baseline).
        max_forwards_per_block: a block that needs more forwards ends the run with
            ``DecodingStalled``, as our engine does (None: 2 x the block's positions + 16).
        seed: the policies' own random generator (the baseline's random remasking).
    """

    order = 1

    @register_to_config
    def __init__(self, sampler: str = "slowfast", sampler_params: Optional[dict] = None, block_length: int = 32,
                 num_inference_steps: int = 32, max_forwards_per_block: Optional[int] = None, seed: int = 0):
        make_policy(sampler, dict(sampler_params or {}))  # bad settings are refused here, not mid-run
        if max_forwards_per_block is not None and int(max_forwards_per_block) < 1:
            raise ValueError(f"max_forwards_per_block: {max_forwards_per_block} is not allowed; allowed: an integer "
                             ">= 1 or None")
        self.num_inference_steps = int(num_inference_steps)
        self.timesteps = torch.arange(self.num_inference_steps - 1, -1, -1, dtype=torch.long)
        self.rows: list[RowState] = []
        self.rng = np.random.default_rng(seed)

    def make_policy(self) -> Policy:
        return make_policy(self.config.sampler, dict(self.config.sampler_params or {}))

    def set_timesteps(self, num_inference_steps: int, device: Any = None, block_length: Optional[int] = None) -> None:
        if num_inference_steps <= 0:
            raise ValueError(f"`num_inference_steps` must be > 0, got {num_inference_steps}.")
        if block_length is not None and block_length <= 0:
            raise ValueError(f"`block_length` must be > 0, got {block_length}.")
        self.num_inference_steps = int(num_inference_steps)
        self.timesteps = torch.arange(self.num_inference_steps - 1, -1, -1, device=device, dtype=torch.long)
        self.rows = []
        self.rng = np.random.default_rng(self.config.seed)

    # --- one forward ---------------------------------------------------------------------------
    def step(self, model_output: torch.Tensor, timestep: int | torch.Tensor, sample: torch.LongTensor, *,
             mask_token_id: Optional[int] = None, temperature: float = 0.0, top_p: Optional[float] = None,
             top_k: Optional[int] = None, sampling_method: str = "auto", threshold: Optional[float] = None,
             editing_threshold: Optional[float] = None, minimal_topk: Optional[int] = None,
             prompt_mask: Optional[torch.BoolTensor] = None, generator: Optional[torch.Generator] = None,
             return_dict: bool = True):
        """Commit what the policy decides after this forward. ``threshold``, ``editing_threshold``
        and ``minimal_topk`` are accepted for the pipeline's sake and not read (the policy's
        parameters decide; nothing is edited)."""
        if mask_token_id is None:
            raise ValueError("SlowFastScheduler needs the pipeline's mask token (mask_token_id): our policies decide "
                             "over a mask map; uniform-corruption pipelines (DiffusionGemma) are not supported")
        if top_p is not None or top_k is not None:
            raise ValueError("SlowFastScheduler: top_p / top_k are not read from the pipeline; set them as the "
                             "sampler's parameters (the dream sampler has top_p and top_k)")
        temperature = 0.0 if sampling_method == "greedy" else float(temperature)
        step_index = int(timestep.item()) if isinstance(timestep, torch.Tensor) else int(timestep)
        batch, length = sample.shape
        if step_index == 0 or len(self.rows) != batch:
            self._start_block(batch, length, prompt_mask)
        tokens, probs, scores = self._observe(model_output, temperature, generator)
        transfer = torch.zeros((batch, length), dtype=torch.bool, device=sample.device)
        masked = (sample == mask_token_id).cpu().numpy()
        for b, row in enumerate(self.rows):
            row.decision = None  # set again by a row that decides this step
            if not row.done:
                positions = self._decide(row, masked[b], probs[b], None if scores is None else scores[b])
                transfer[b, torch.as_tensor(positions + row.offset, dtype=torch.long, device=sample.device)] = True
        prev_sample = torch.where(transfer, tokens, sample)
        out = (prev_sample, transfer, torch.zeros_like(transfer), tokens, probs.to(model_output.device), model_output)
        return BlockRefinementSchedulerOutput(*out) if return_dict else out

    def _start_block(self, batch: int, length: int, prompt_mask: Optional[torch.BoolTensor]) -> None:
        """A new block: each row's policy reset on a one-block layout of the block's non-prompt positions."""
        offset = 0 if prompt_mask is None else int(prompt_mask.long().sum().item())
        if prompt_mask is not None and not bool(prompt_mask[:offset].all()):
            raise ValueError("SlowFastScheduler: the block's prompt positions must come first (prompt_mask a prefix)")
        size = length - offset
        if size < 1:
            raise ValueError("SlowFastScheduler: a block with no position to generate")
        steps = min(self.num_inference_steps, size)
        layout = Layout(gen_length=size, block_length=size, steps=steps)
        self.rows = []
        for _ in range(batch):
            policy = self.make_policy()
            policy.check_layout(layout)
            policy.reset(layout, self.rng)
            self.rows.append(RowState(policy=policy, offset=offset, confidence=np.zeros(size, dtype=np.float32)))

    def _observe(self, logits: torch.Tensor, temperature: float, generator: Optional[torch.Generator]):
        """Tokens, confidences (and a policy's score) per position, by our engine's rule."""
        scoring = self.rows[0].policy.scoring() if self.rows else None
        rows = logits.reshape(-1, logits.shape[-1])
        if scoring is None:
            conf, tok = confidences(rows, temperature, generator)
            score = None
        else:
            conf, tok, score = score_logits(rows, temperature, generator, scoring)
            score = score.float().cpu().numpy().reshape(logits.shape[:-1])
        return tok.view(logits.shape[:-1]), conf.float().cpu().reshape(logits.shape[:-1]), score

    def _decide(self, row: RowState, masked: np.ndarray, probs: torch.Tensor, score: Optional[np.ndarray]):
        """The policy's decision on the block's non-prompt positions (relative to ``row.offset``)."""
        o = row.offset
        mask = masked[o:].copy()
        row.confidence = probs[o:].numpy().astype(np.float32)
        obs = Observation(mask=mask.copy(), confidence=row.confidence.copy(),
                          score=None if score is None else score[o:].astype(np.float32))
        decision = row.policy.decide(obs)
        decode = np.asarray(decision.decode, dtype=np.int64)
        if decode.size and (decode.min() < 0 or decode.max() >= mask.size or not mask[decode].all()
                            or np.unique(decode).size != decode.size):
            raise RuntimeError(f"{self.config.sampler}: invalid positions to decode: {decode.tolist()}")
        row.decision = decision
        row.forwards += 1
        after = mask.copy()
        after[decode] = False
        row.done = row.policy.done(after)
        cap = self.config.max_forwards_per_block or 2 * mask.size + 16
        if not row.done and row.forwards >= cap:
            raise DecodingStalled(f"{self.config.sampler}: a block used {cap} forwards (max_forwards_per_block) "
                                  "and the sampler is not done with it; the run was ended")
        return decode

    # --- the pipeline's loop -------------------------------------------------------------------
    def check_block_should_continue(self, step_idx: int, masks_remaining: bool, editing_enabled: bool,
                                    editing_transfer_index: torch.BoolTensor, post_steps: int, max_post_steps: int,
                                    finished: torch.BoolTensor) -> bool:
        """Another forward on this block while a row that has not finished (EOS) is not done
        with it by its policy (the pipeline's step count, editing and post-steps are not read)."""
        done = finished.tolist() if finished is not None else [False] * len(self.rows)
        return any(not row.done and not done[b] for b, row in enumerate(self.rows))

    # the pipeline's EOS rule, diffusers' own
    check_eos_finished = staticmethod(BlockRefinementScheduler.check_eos_finished)

    def decisions(self) -> list[Optional[Decision]]:
        """Each row's last decision (positions relative to its block's first non-prompt position)."""
        return [row.decision for row in self.rows]
