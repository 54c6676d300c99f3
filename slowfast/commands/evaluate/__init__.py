"""``python -m slowfast eval``: does a model decode the way SlowFast is meant to be seen?

On the fixed held-out split of each task, greedy, through the real engine:

1. accuracy of the one-token-per-forward baseline (steps = gen length, one block);
2. positional certainty: Spearman correlation between position and the first forward's
   confidence over the answer's non-EOS positions, averaged over prompts;
3. SlowFast's stages with the reference-code defaults: cycles per run, share of runs with a
   fast-stage forward that decodes at least two tokens;
4. speed at equal accuracy: SlowFast's NFE (every forward the published code runs) against
   the baseline's, and its accuracy (also with ``stop_when_full``);
5. whether the sliders matter: mean NFE on a task for a few values of each SlowFast
   parameter (the rest at their defaults);
6. how often SlowFast's decode order differs from the threshold sampler's at the same
   high-confidence threshold, and both samplers' accuracy and NFE;
7. on the story, how well one forward infers a hidden count on the true story: a later count
   from the change before it ("forward"), and a change from the count after it ("backward"),
   which a decoder needs whenever it wrote the later count first;
8. on the chain, how well one forward computes a worked step on the true chain: its result
   hidden (with the result's next use, so it cannot be copied), the numbers it is computed
   from shown.

It prints a Markdown report (the model card's "Decoding" section) and can write JSON.

The command's parts: ``measures`` (runs of each task and what is read off them), ``probes``
(one forward on the true continuation), ``report`` (the Markdown and the model card's
decoding section) and ``command`` (flags, the run, the files it writes).
"""
# the names the tests, the presets' checks and a reader reach for (the command is in .command: it
# imports the training's model card, and training imports .probes)
from .measures import (FAILURE_KINDS, SLIDERS, TaskReport, cycles, evaluate_task,  # noqa: F401
                       has_parallel_fast_step, ranks, spearman, story_failure)
from .probes import count_inference, step_inference  # noqa: F401
from .report import duration, markdown, merge_decoding  # noqa: F401
