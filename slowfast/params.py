"""Every generation, sampler and cache parameter, defined once.

Name, the reference code's name, the paper's name, default, range and one-line meaning.
The engine's and the app's defaults come from here (``DEFAULTS``); the CLI flags and help,
the app's sliders, the presets, the trace settings and the README table are tested against
it (``tests/test_params.py``), and ``markdown_table()`` writes the README's table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class Param:
    name: str  # ours: the engine's, the app's, the trace's
    group: str  # generation | baseline | slowfast | threshold | dream | cache
    default: Any  # the engine's default (None: unset, see ``unset``)
    low: Optional[float] = None  # the app's range (None: a choice or a switch)
    high: Optional[float] = None
    meaning: str = ""
    reference: Optional[str] = None  # the published code's name
    paper: Optional[str] = None  # the paper's symbol
    choices: tuple = ()
    unset: Optional[str] = None  # what "unset" means, when the default is None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


PARAMETERS: tuple[Param, ...] = (
    Param("gen_length", "generation", 96, 8, 1024, "positions to generate"),
    Param("block_length", "generation", 96, 8, 1024, "semi-autoregressive blocks, decoded left to right"),
    Param("steps", "generation", 96, 1, 1024, "baseline and dream: forwards in all (a multiple of the blocks)"),
    Param("temperature", "generation", 0.0, 0, 2, "0 = greedy; > 0 Gumbel noise in float64"),
    Param("seed", "generation", 0, 0, 2**63 - 1, "the run's random generator"),
    Param("cfg_scale", "generation", 0.0, 0, 5, "classifier-free guidance (0 = off)"),
    Param("max_forwards_per_block", "generation", None, 0, 4096,
          "a block that needs more forwards ends the run with a message", unset="2 x block_length + 16"),
    Param("remasking", "baseline", "low_confidence", meaning="which positions each step unmasks",
          choices=("low_confidence", "random")),
    Param("variant", "slowfast", "reference", meaning="reference = the published code; paper = the paper's text; "
          "dream = the published Dream code", choices=("reference", "paper", "dream")),
    Param("exploration_steps", "slowfast", 6, 1, 16, "full forwards per slow stage",
          reference="k_exploration_steps", paper="K_max"),
    Param("horizon_threshold", "slowfast", 0.3, 0, 1, "certainty a masked position needs to extend the horizon",
          reference="cycle_len_confidence_threshold", paper="tau_min_conf"),
    Param("stability_window", "slowfast", 2, 1, 8, "horizon estimates compared for convergence",
          reference="cycle_length_stability_window", paper="W_hist"),
    Param("std_threshold", "slowfast", 1.0, 0, 5, "the span freezes when the window's spread is below this",
          reference="cycle_length_stability_std_dev_threshold"),
    Param("high_confidence_threshold", "slowfast", 0.9, 0, 1,
          "decode every position at or above this if there are at least two, else the single most certain",
          reference="high_confidence_threshold", paper="tau_high_conf"),
    Param("slow_confidence_threshold", "slowfast", None, 0, 1, "the slow stage's parallel-decode threshold",
          reference="high_conf_for_parallel_decode_discovery", unset="the high-confidence threshold (dream: 0.8)"),
    Param("max_cycles", "slowfast", None, 0, 4096, "slow/fast cycle cap per block",
          reference="max_sub_cycles_per_block", unset="256 (dream: 4096)"),
    Param("stop_when_full", "slowfast", False, meaning="ours: end a slow stage as soon as its block is full "
          "(the published code runs all its forwards)"),
    Param("threshold", "threshold", 0.9, 0, 1, "Fast-dLLM: unmask every masked position of the block at or "
          "above it, at least one"),
    Param("factor", "threshold", None, 0, 4, "Fast-dLLM's factor rule: the largest n with c(n) >= 1 - factor/(n+1)",
          unset="the fixed threshold"),
    Param("alg", "dream", "entropy", meaning="how a position's confidence is scored",
          choices=("entropy", "maskgit_plus", "topk_margin", "origin")),
    Param("alg_temp", "dream", None, 0, 2, "> 0: sample positions by softmax(score / alg_temp)",
          unset="the most confident positions"),
    Param("eps", "dream", 1e-3, 0.0001, 0.1, "the timestep schedule runs from 1 to eps"),
    Param("top_p", "dream", None, 0.01, 1, "nucleus filtering of tokens", unset="off"),
    Param("top_k", "dream", None, 0, 200, "top-k filtering of tokens", unset="off"),
    Param("kp", "cache", 100, 1, 500, "prompt features recomputed every K_p forwards",
          reference="prompt_interval_steps", paper="K_p"),
    Param("kr", "cache", 5, 1, 100, "response features recomputed every K_r forwards",
          reference="gen_interval_steps", paper="K_r"),
    Param("rho", "cache", 0.25, 0, 1, "share of response rows recomputed (V-verify) in between",
          reference="transfer_ratio", paper="rho"),
    Param("refresh_first_layer", "cache", True, meaning="always recompute layer 0"),
)
BY_NAME = {p.name: p for p in PARAMETERS}
DEFAULTS = {p.name: p.default for p in PARAMETERS}


def markdown_table() -> str:
    """The README's table of every parameter (the README holds exactly this; a test checks)."""
    def fmt(v: Any) -> str:
        return f"`{v}`" if isinstance(v, str) else ("on" if v is True else "off" if v is False else str(v))

    rows = ["| group | parameter | reference name (paper) | default | range | meaning |", "|---|---|---|---|---|---|"]
    for p in PARAMETERS:
        ref = f"`{p.reference}`" if p.reference else ""
        if p.paper:
            ref += f" ({p.paper})"
        default = f"unset: {p.unset}" if p.default is None else fmt(p.default)
        rng = " / ".join(p.choices) if p.choices else ("" if p.low is None else f"{p.low:g} .. {p.high:g}")
        rows.append(f"| {p.group} | `{p.name}` | {ref} | {default} | {rng} | {p.meaning} |")
    return "\n".join(rows)
