"""DiffusionGemma's sampler: entropy-bound acceptance with renoising, and its stopping rule.

DiffusionGemma (``google/diffusiongemma-26B-A4B-it``) denoises a canvas of uniformly random
tokens; there is no mask token. After each decoder forward (logits divided by a temperature
that falls linearly from ``t_max`` to ``t_min`` over ``denoising_steps``), transformers'
``EntropyBoundSampler`` accepts the k lowest-entropy positions with
``sum(entropy_1..k) - max(entropy_1..k) <= entropy_bound`` (arXiv 2505.24857) and renoises the
others; ``StableAndConfidentStoppingCriteria`` ends the canvas once its argmax has been the same
for ``stop_stability`` steps and the mean entropy is below ``stop_entropy``.

This policy is the parameters' declaration and their thresholds for the views: the decoding
itself runs in transformers' own ``generate`` (``slowfast.gemma_run``), never here, so the
engine's loop refuses it (``OWN_GENERATION``).
"""
from __future__ import annotations

import numpy as np

from ..params import Param, dataclass_of_params
from .base import Decision, Layout, Observation, Policy, Thresholds

DENOISE = "denoise"  # the stage of every DiffusionGemma step


@dataclass_of_params
class EntropyBoundPolicy(Policy):
    name = "entropy_bound"
    TITLE = "Entropy bound (DiffusionGemma)"
    STAGES = (DENOISE,)
    OWN_GENERATION = True  # decoded by the model's own generate (DiffusionGemma), not by our engine
    PARAMS = (
        Param("entropy_bound", "entropy_bound", 0.1, 0.01, 5, "accept the lowest-entropy positions while their "
              "entropy sum minus its largest term stays at or below this (nats)", reference="entropy_bound",
              minimum=0, open_min=True, step=0.01, label="Entropy bound"),
        Param("t_min", "entropy_bound", 0.4, 0.05, 2, "temperature at the last denoising step (linear schedule)",
              reference="t_min", minimum=0, open_min=True, step=0.05, label="Final temperature t_min"),
        Param("t_max", "entropy_bound", 0.8, 0.05, 2, "temperature at the first denoising step (above t_min)",
              reference="t_max", minimum=0, open_min=True, step=0.05, label="Initial temperature t_max"),
        Param("denoising_steps", "entropy_bound", 48, 1, 256, "denoising forwards per canvas at most",
              reference="max_denoising_steps", minimum=1, maximum=4096, step=1, label="Max denoising steps"),
        Param("stop_stability", "entropy_bound", 1, 0, 16, "stop a canvas once its argmax equals that of this "
              "many previous steps (0: no stability test)", reference="stability_threshold", minimum=0,
              maximum=4096, step=1, label="Stop: stable for steps"),
        Param("stop_entropy", "entropy_bound", 0.005, 0.001, 2, "... and the canvas's mean entropy is below this "
              "(nats)", reference="confidence_threshold", minimum=0, open_min=True, step=0.001,
              label="Stop: mean entropy below"),
    )

    def validate(self) -> None:
        super().validate()
        if self.t_max <= self.t_min:
            raise ValueError(f"t_max: {self.t_max:g} is not above t_min {self.t_min:g}; allowed: t_max > t_min "
                             "(the temperature falls from t_max to t_min)")

    def thresholds(self) -> Thresholds:
        return Thresholds(entropy_bound=self.entropy_bound, stop_entropy=self.stop_entropy,
                          stop_stability=self.stop_stability)

    def reset(self, layout: Layout, rng: np.random.Generator) -> None:
        raise ValueError(f"sampler: {self.name} is DiffusionGemma's own sampler; it runs in transformers' "
                         "generate for a DiffusionGemma checkpoint, not in this engine")

    def decide(self, obs: Observation) -> Decision:  # never reached: reset refuses
        raise ValueError(f"sampler: {self.name} runs in DiffusionGemma's own generate")
