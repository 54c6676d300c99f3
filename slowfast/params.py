"""Every generation, sampler and cache parameter, defined once.

A ``Param`` holds everything about one parameter: its name, the reference code's and the
paper's names, type, default, what "unset" means and the control's value for it, the values
it allows, the app's slider (range, step, label) and its one-line meaning. The generation,
limit and cache parameters are declared here; each sampler declares its own next to its
policy (``PARAMS`` in ``slowfast/samplers/*.py``), and the sampler registry
(``slowfast.samplers.register``) collects them. Generated from the table, when they are
built: the policies' and ``CacheSettings``' fields and aliases (``dataclass_of_params``), the
engine's checks (``Param.check``, also run on every trace file), the app's controls
(``explorer/layout.py``) and ``session.Controls``, the CLI flags (``add_flag``) and the README's
table (``markdown_table``). ``PARAMETERS``, ``BY_NAME`` and ``DEFAULTS`` are views of the
table as it is now (a sampler registered later is in them).
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import numpy as np

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed's range
MAX_INT = 2**31 - 1  # lengths, steps and caps (what a trace file may hold)


SHOWN_CHARS = 40  # a value longer than this is described in messages, not written out


def _fits_a_float(value: int) -> bool:
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _digits(value: int) -> int:
    """The decimal digits of ``value`` (without converting it to text: Python refuses
    integers of more than 4300 digits)."""
    n = abs(int(value))
    if n < 10:
        return 1
    d = int(math.log10(n)) + 1  # math.log10 takes integers of any size; rounding is fixed below
    while d > 1 and n < 10 ** (d - 1):
        d -= 1
    while n >= 10 ** d:
        d += 1
    return d


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``value`` for a one-line message: its repr when that is short, else what it is (an
    integer's digits, a string's length, a list's or an object's entries). Never fails,
    whatever the value (an integer too long for ``str``, a huge list, an odd object)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        digits = _digits(value)
        return str(int(value)) if digits <= limit else f"an integer of {digits} digits"
    if isinstance(value, str) and len(value) > limit:
        return f"a string of {len(value)} characters"
    sized = isinstance(value, (list, tuple, dict, set, frozenset))
    if not sized or len(value) <= limit // 2:
        try:
            text = repr(value)
        except Exception:  # noqa: BLE001 - e.g. a nested integer too long for repr
            text = ""
        if text and len(text) <= limit and "\n" not in text:
            return text
    entries = f"{len(value)} {'entry' if len(value) == 1 else 'entries'}" if sized else ""
    if isinstance(value, dict):
        return f"an object of {entries}"
    if sized:
        return f"a {type(value).__name__} of {entries}"
    return f"a value of type {type(value).__name__}"


def shown_name(key: Any) -> str:
    """A parameter's name as given, for a message: itself when it is a plain short name."""
    if isinstance(key, str) and key.isidentifier() and len(key) <= SHOWN_CHARS:
        return key
    return shown(key)


@dataclass(frozen=True)
class Param:
    name: str  # ours: the engine's, the app's, the trace's
    group: str  # generation | cache | the sampler's name (the samplers that use it)
    default: Any  # the engine's default (None: unset, see ``unset``)
    low: Optional[float] = None  # the app's slider range (and the sweeps'); None: a choice or a switch
    high: Optional[float] = None
    meaning: str = ""
    reference: Optional[str] = None  # the published code's name (also a flag and an accepted name)
    paper: Optional[str] = None  # the paper's symbol (also an accepted name)
    choices: tuple = ()
    unset: Optional[str] = None  # what "unset" means, when the default is None
    kind: Optional[type] = None  # int, float, bool or str; None: the default's type
    off: Any = None  # the control's value that means unset (the app's sliders cannot be empty)
    minimum: Optional[float] = None  # the values allowed (None: no bound; numbers are finite)
    maximum: Optional[float] = None
    open_min: bool = False  # the bound itself is not allowed
    open_max: bool = False
    step: Optional[float] = None  # the app's slider step (None: a number box)
    label: str = ""  # the app's label
    aliases: tuple = ()  # more accepted names (besides ``reference`` and ``paper``)
    flags: tuple = ()  # the CLI's flags when not ``--name`` (and ``--reference``)

    def __post_init__(self) -> None:
        if self.default is None and (self.kind is None or self.unset is None):
            raise TypeError(f"Param {self.name!r}: a parameter that may be unset needs its kind and what unset means")
        if self.default is not None and not self.accepts(self.default):
            raise TypeError(f"Param {self.name!r}: its default {self.default!r} is not {self.allowed()}")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def type(self) -> type:
        return self.kind or type(self.default)

    @property
    def names(self) -> tuple[str, ...]:
        """Other names it is accepted by: the reference code's, the paper's, aliases."""
        others = [n for n in (self.reference, self.paper, *self.aliases) if n and n.isidentifier() and n != self.name]
        return tuple(dict.fromkeys(others))

    @property
    def control_default(self) -> Any:
        """The control's value when nothing is chosen: the default, or the "unset" value."""
        return self.off if self.default is None else self.default

    # --- "unset" is the control's off value: the one rule, both ways --------------------------
    def to_control(self, value: Any) -> Any:
        """A run's value (None: unset) as the app's control shows it."""
        return self.off if value is None and self.default is None else value

    def from_control(self, value: Any) -> Any:
        """A control's value as the run takes it: the off value is unset (None); a whole float
        of an integer parameter (sliders send 3.0) an int, a number of a float parameter a float."""
        if self.default is None and (value is None or value == self.off):
            return None
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if self.type is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if self.type is float and isinstance(value, (int, float, np.integer, np.floating)):
            return float(value)
        if self.type is bool and value is not None:
            return bool(value)
        return value

    # --- the values allowed: one check for the engine, the app, the CLI and trace files -------
    def allowed(self) -> str:
        """What the check allows, in words ("an integer >= 1", "a number in (0, 1]")."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.type is bool:
            return "true or false"
        lo, hi = self.minimum, self.maximum
        if self.type is int:
            return f"an integer in {lo}..{hi}" if lo is not None and hi is not None else (
                f"an integer >= {lo}" if lo is not None else "an integer")
        if lo is not None and hi is not None:
            return f"a number in {'(' if self.open_min else '['}{lo:g}, {hi:g}{')' if self.open_max else ']'}"
        if lo is not None:
            return f"a number {'>' if self.open_min else '>='} {lo:g}"
        return "a finite number"

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.default is None
        if self.choices:
            return isinstance(value, str) and value in self.choices
        if isinstance(value, (bool, np.bool_)):
            return self.type is bool
        if self.type is str:
            return isinstance(value, str)
        if self.type is bool:
            return False
        if self.type is int and not isinstance(value, (int, np.integer)):
            return False
        if isinstance(value, (int, np.integer)):  # an integer is finite, but a float holds only up to ~1.8e308
            if self.type is float and not _fits_a_float(value):
                return False
        elif not isinstance(value, (float, np.floating)) or not math.isfinite(value):
            return False
        lo, hi = self.minimum, self.maximum
        return ((lo is None or (value > lo if self.open_min else value >= lo))
                and (hi is None or (value < hi if self.open_max else value <= hi)))

    def check(self, value: Any) -> None:
        """Raise ValueError naming the parameter, its value and what is allowed."""
        if self.accepts(value):
            return
        if self.choices:
            raise ValueError(f"{self.name}: {shown(value)} is not allowed; allowed: {', '.join(self.choices)}")
        lo, hi = self.minimum, self.maximum
        if self.type is float and lo is not None and hi is not None and not (self.open_min or self.open_max):
            raise ValueError(f"{self.name}: {shown(value)} is outside the allowed range [{lo:g}, {hi:g}]")
        unset = " (or unset)" if self.default is None else ""
        raise ValueError(f"{self.name}: {shown(value)} is not allowed; it must be {self.allowed()}{unset}")

    # --- words for the app, the CLI and the README ----------------------------------------
    @property
    def info(self) -> str:
        """The app's line under the control: the reference (and paper) name, the meaning and
        what the off value means."""
        names = " / ".join(n for n in (self.reference, self.paper) if n) or self.name
        off = f"; {self.off:g} = {self.unset}" if self.unset and isinstance(self.off, (int, float)) else ""
        return f"{names}: {self.meaning}{off}"

    def default_text(self) -> str:
        if self.default is None:
            return f"unset: {self.unset}"
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        return str(self.default)


def markdown_table() -> str:
    """The README's table of every parameter (the README holds exactly this; a test checks)."""
    rows = ["| group | parameter | reference name (paper) | default | range | allowed | meaning |",
            "|---|---|---|---|---|---|---|"]
    for p in PARAMETERS:
        ref = f"`{p.reference}`" if p.reference else ""
        if p.paper:
            ref += f" ({p.paper})"
        default = f"`{p.default}`" if isinstance(p.default, str) else p.default_text()
        rng = " / ".join(p.choices) if p.choices else ("" if p.low is None else f"{p.low:g} .. {p.high:g}")
        allowed = "" if p.choices or p.type is bool else p.allowed() + (" or unset" if p.default is None else "")
        rows.append(f"| {p.group} | `{p.name}` | {ref} | {default} | {rng} | {allowed} | {p.meaning} |")
    return "\n".join(rows)


def add_flag(parser: argparse.ArgumentParser, p: Param, default: Any = None,
             default_help: Optional[str] = None) -> None:
    """Add ``p``'s flag to ``parser``: ``--name`` (and ``--reference-name``), its type, and a help
    line with its meaning, default and allowed values from the table. The parsed value is
    ``default`` when the flag is not given (None: the run's own default applies, which for a
    sampler parameter may depend on another, e.g. SlowFast's variant). A switch that is on by
    default gets the flags in ``p.flags`` (``--no-...``), which turn it off."""
    prefix = "" if p.group == "generation" else f"{p.group}: "
    shown = default_help or p.default_text()
    if p.type is bool:
        if p.default:
            parser.add_argument(*p.flags, action="store_true", help=f"{prefix}turn off: {p.meaning} (default: on)")
        else:
            parser.add_argument(*(p.flags or (p.flag,)), dest=p.name, action="store_const", const=True,
                                default=default, help=f"{prefix}{p.meaning} (default: off)")
        return
    flags = p.flags or tuple(dict.fromkeys((p.flag, *([f"--{p.reference.replace('_', '-')}"] if p.reference else []))))
    allowed = p.allowed() + (" or unset" if p.default is None else "")
    parser.add_argument(*flags, dest=p.name, type=p.type, default=default,
                        help=f"{prefix}{p.meaning} (default: {shown}; allowed: {allowed})".replace("%", "%%"))


def dataclass_of_params(cls: type) -> type:
    """``cls`` made a dataclass whose fields are its ``PARAMS``, in order, so its signature is its
    configuration (as a diffusers scheduler's). A field not given is None until ``fill_defaults``
    puts in the table's default; ``cls.ALIASES`` maps the reference and paper names to ours."""
    cls.__annotations__ = {p.name: Optional[p.type] for p in cls.PARAMS}
    for p in cls.PARAMS:
        setattr(cls, p.name, None)
    cls.ALIASES = {alias: p.name for p in cls.PARAMS for alias in p.names}
    return dataclass(cls)


def fill_defaults(obj: Any) -> None:
    """Each of ``obj``'s parameters that is None takes its default from the table (as it is now)."""
    for p in type(obj).PARAMS:
        if getattr(obj, p.name) is None and p.default is not None:
            setattr(obj, p.name, p.default)


GENERATION: tuple[Param, ...] = (
    Param("gen_length", "generation", 96, 8, 1024, "positions to generate", minimum=1, maximum=MAX_INT, step=8,
          label="Generation length"),
    Param("block_length", "generation", 96, 8, 1024, "semi-autoregressive blocks, decoded left to right",
          minimum=1, maximum=MAX_INT, step=8, label="Block length"),
    Param("steps", "generation", 96, 1, 1024, "baseline and dream: forwards in all (a multiple of the blocks)",
          minimum=1, maximum=MAX_INT, step=1, label="Steps (baseline)"),
    Param("temperature", "generation", 0.0, 0, 2, "0 = greedy; > 0 Gumbel noise in float64", minimum=0,
          step=0.05, label="Temperature"),
    Param("seed", "generation", 0, 0, MAX_SEED, "the run's random generator", minimum=0, maximum=MAX_SEED,
          label="Seed"),
    Param("cfg_scale", "generation", 0.0, 0, 5, "classifier-free guidance (0 = off)", minimum=0, step=0.1,
          label="CFG scale"),
)
# caps on a run (the app's controls keep them last)
LIMITS: tuple[Param, ...] = (
    Param("max_forwards_per_block", "generation", None, 0, 4096,
          "a block that needs more forwards ends the run with a message", unset="2 x block_length + 16",
          kind=int, off=0, minimum=1, maximum=MAX_INT, step=1, label="Forward cap per block (0 = default)"),
)
CACHE: tuple[Param, ...] = (
    Param("kp", "cache", 100, 1, 500, "prompt features recomputed every K_p forwards",
          reference="prompt_interval_steps", paper="K_p", minimum=1, step=1, label="Prompt refresh interval K_p"),
    Param("kr", "cache", 5, 1, 100, "response features recomputed every K_r forwards",
          reference="gen_interval_steps", paper="K_r", minimum=1, step=1, label="Response refresh interval K_r"),
    Param("rho", "cache", 0.25, 0, 1, "share of response rows recomputed (V-verify) in between",
          reference="transfer_ratio", paper="rho", minimum=0, maximum=1, step=0.05, label="V-verify ratio rho"),
    Param("refresh_first_layer", "cache", True, meaning="always recompute layer 0", flags=("--no-layer0-refresh",),
          label="Always refresh layer 0"),
)


def parameters() -> tuple[Param, ...]:
    """The whole table, in order: generation, limits, each registered sampler's own, the cache's."""
    from .samplers import SAMPLERS  # here: the samplers declare their parameters with this module's Param

    return (*GENERATION, *LIMITS, *(p for policy in SAMPLERS.values() for p in policy.PARAMS), *CACHE)


class _Table(Sequence):
    """``PARAMETERS``: the table as it is when read."""

    def __getitem__(self, i):
        return parameters()[i]

    def __len__(self) -> int:
        return len(parameters())


class _ByName(Mapping):
    """``BY_NAME``: name -> Param, as the table is when read."""

    def __getitem__(self, name: str) -> Param:
        for p in (*GENERATION, *LIMITS, *CACHE):  # without the samplers (they may be importing)
            if p.name == name:
                return p
        for p in parameters():
            if p.name == name:
                return p
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return (p.name for p in parameters())

    def __len__(self) -> int:
        return len(parameters())


class _Defaults(Mapping):
    """``DEFAULTS``: name -> default, as the table is when read."""

    def __getitem__(self, name: str) -> Any:
        return BY_NAME[name].default

    def __iter__(self) -> Iterator[str]:
        return iter(BY_NAME)

    def __len__(self) -> int:
        return len(BY_NAME)


PARAMETERS: Sequence[Param] = _Table()
BY_NAME: Mapping[str, Param] = _ByName()
DEFAULTS: Mapping[str, Any] = _Defaults()

__all__ = ["BY_NAME", "CACHE", "DEFAULTS", "GENERATION", "LIMITS", "MAX_INT", "MAX_SEED", "PARAMETERS", "Param",
           "add_flag", "dataclass_of_params", "fill_defaults", "markdown_table", "parameters", "shown", "shown_name"]
