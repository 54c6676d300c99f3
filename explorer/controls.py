"""The controls: presets, a variant's defaults, the settings check, the model picker and its chat template."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Optional

import gradio as gr

import visuals
from slowfast.models.families import FAMILIES, family_line, memory_text, verdict
from slowfast.models.loading import DIFFUSION_GEMMA, EMBEDDED_DIR, KNOWN_MODELS, check_memory
from slowfast.samplers import DEFAULT_SAMPLER
from slowfast.samplers.entropy_bound import EntropyBoundPolicy

DIFFUSION_GEMMA_CANVAS = 256  # DiffusionGemmaConfig's default canvas_length
from slowfast.params import BY_NAME, MAX_SEED, shown
from slowfast.samplers.slowfast import VARIANT_PARAMS, variant_defaults
from slowfast.session import Controls, check_controls, preset_controls
from explorer.sessions import POOL, PRESETS, allowed_models, model_name_refusal, prompt_refusal


CONTROL_NAMES = [f.name for f in dataclasses.fields(Controls)]


def controls_from(values: tuple) -> Controls:
    """The controls an event sent (the page's or an API client's), each checked for its kind
    first: a value the settings check cannot weigh (text for a number, a number beyond any
    float, a list for a switch) raises ValueError in the settings check's words, naming the
    control; everything else is left to that check (``Controls.settings``)."""
    given = dict(zip(CONTROL_NAMES, values))
    for name, value in given.items():
        given[name] = control_value(name, value)
    return Controls(**given)


SWITCHES = ("chat", "cache")  # the controls that are not parameters of the table


def control_value(name: str, value: Any) -> Any:
    """``value`` for control ``name`` as the settings check can weigh it (see controls_from)."""
    p = BY_NAME.get(name) if name not in SWITCHES and name != "sampler" else None
    if name == "sampler" or (p is not None and (p.choices or p.type is str)):
        if not isinstance(value, str) or len(value) > 64:
            allowed = ", ".join(p.choices) if p is not None and p.choices else "a sampler's name"
            raise ValueError(f"{name}: {shown(value)} is not allowed; allowed: {allowed}")
        return value
    if name in SWITCHES or (p is not None and p.type is bool):
        if isinstance(value, bool) or value is None or (isinstance(value, int) and value in (0, 1)):
            return bool(value) if value is not None or name in SWITCHES else value
        raise ValueError(f"{name}: {shown(value)} is not allowed; allowed: true or false")
    if p is None or value is None:
        return value
    allowed = p.allowed() + (" (or unset)" if p.default is None else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: {shown(value)} is not a number; it must be {allowed}")
    if isinstance(value, int) and (abs(value) > MAX_SEED if p.type is int else abs(value) > 1e308):
        # beyond every integer parameter (the seed's range is the widest), or beyond a float (10**400)
        bound = f" (at most {MAX_SEED})" if p.type is int and p.maximum is None else ""
        raise ValueError(f"{name}: {shown(value)} is too large; it must be {allowed}{bound}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name}: {value} is not allowed; it must be {allowed}")
    return value


def on_preset(name: str):
    preset = PRESETS.get(name)
    if preset is None:
        return [gr.update()] * (len(CONTROL_NAMES) + 2)
    values = preset_controls(preset)
    updates = [gr.update(value=values[n]) if n in values else gr.update() for n in CONTROL_NAMES]
    explanation = f"**{preset['name']}**: {preset.get('description', '')}"
    if preset.get("explanation"):
        explanation += f"\n\n*What to look for:* {preset['explanation']}"
    prompt = gr.update(value=preset["prompt"]) if preset.get("prompt") else gr.update()
    return [*updates, prompt, explanation]


VARIANT_CONTROLS = VARIANT_PARAMS  # the SlowFast parameters whose default depends on the variant


def on_variant(variant: str):
    """A variant's defaults into its sliders (unset ones at the sliders' off value)."""
    d = variant_defaults(variant)
    return [BY_NAME[n].to_control(d[n]) for n in VARIANT_CONTROLS]


def model_choices(default_model: str) -> list:
    """The picker's entries: (name, size, memory, cache, whether it runs here) for the models we know."""
    only = allowed_models()
    out = [("embedded · 5M · runs offline on a CPU", "embedded")]
    for name, info in KNOWN_MODELS.items():
        size = f"{info.parameters / 1e9:.1f}B" if info.parameters >= 1e9 else f"{info.parameters / 1e6:.0f}M"
        out.append((f"{name} · {size} · {memory_text(info.weight_bytes('bfloat16'))} bf16 / "
                    f"{memory_text(info.weight_bytes('float32'))} fp32 · cache {'yes' if info.cache else 'no'} · "
                    f"{verdict(check_memory(name))}", name))
    if default_model not in [v for _, v in out]:
        out.insert(0, (default_model, default_model))
    if only is not None:  # a public host offers only what it serves
        out = [(label, v) for label, v in out if v in only] + [(m, m) for m in only if m not in [v for _, v in out]]
    return out


def families_markdown() -> str:
    """The model families, one line each: what runs them and whether they run on this machine."""
    return "\n".join(f"- **{visuals.esc(f.title)}**: {visuals.esc(family_line(f).removeprefix(f.title + ': '))}"
                     for f in FAMILIES)


def on_check(model_name: str, prompt: str, *values) -> str:
    model = POOL.models.get(model_name.strip()) if isinstance(model_name, str) else None  # never loads on a keystroke
    try:
        message = prompt_refusal(prompt, model_name) or check_controls(controls_from(values), model,
                                                                  prompt if model is not None else None)
    except (TypeError, ValueError, OverflowError) as exc:
        message = str(exc)
    return f"⚠️ {message}" if message else "✓ Settings are valid."


def resolve_local(model_name: str) -> Optional[Path]:
    """The local folder of ``model_name`` without downloading (None for a hub id, or a name
    that cannot be a folder)."""
    if model_name_refusal(model_name) is not None:
        return None
    name = model_name.strip()
    if name == "embedded":
        return EMBEDDED_DIR
    try:
        folder = Path(name).expanduser()
        return folder if folder.is_dir() else None
    except (OSError, RuntimeError):  # '~nobody', a name the file system refuses
        return None


def chat_template_of(model_name: str) -> Optional[bool]:
    """Whether a model has a chat template, as far as we know without loading it (None: unknown)."""
    model = POOL.models.get(model_name.strip()) if isinstance(model_name, str) else None
    if model is not None:
        return model.has_chat_template
    folder = resolve_local(model_name)
    if folder is None:
        return None
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        return bool(json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template"))
    except (OSError, ValueError, AttributeError):
        return None


NO_CHAT_TEMPLATE = "this model has no chat template: the prompt is fed as plain text"


def chat_refusal(model_name: str) -> Optional[str]:
    """Why a chat turn on ``model_name`` is refused (Markdown, for the page's message), or None.

    A model known to have no chat template would get the conversation as plain "role: text"
    lines and answer gibberish: the page hides its chat box (``on_model_change``), and the API's
    /chat says this instead of decoding. A model not known yet (a hub id not loaded and not a
    local folder) is not refused: loading it tells, and later turns are checked."""
    if chat_template_of(model_name) is not False:
        return None
    name = visuals.esc(model_name.strip())
    return (f"Chat needs a chat template; **{name}** has none, so its prompt would be fed as plain text. "
            "Use **Run** with a plain prompt.")


def canvas_of(model_name: str) -> Optional[int]:
    """A DiffusionGemma's canvas length as far as we know without loading it (None: not one).
    The hub id's is transformers' default (256) until its config.json, once loaded, says."""
    model = POOL.models.get(model_name.strip()) if isinstance(model_name, str) else None
    if model is not None:
        return getattr(model, "canvas_length", None)
    info = KNOWN_MODELS.get(model_name.strip()) if isinstance(model_name, str) else None
    if info is not None:
        return DIFFUSION_GEMMA_CANVAS if info.family == DIFFUSION_GEMMA else None
    folder = resolve_local(model_name)
    try:
        raw = json.loads((folder / "config.json").read_text()) if folder is not None else {}
    except (OSError, ValueError):
        return None
    canvas = raw.get("canvas_length") if isinstance(raw, dict) and raw.get("model_type") == "diffusion_gemma" else None
    return canvas if isinstance(canvas, int) and not isinstance(canvas, bool) and canvas > 0 else None


def on_model_family(model_name: str, sampler: str, gen_length, block_length):
    """The sampler and lengths follow the model's family: a DiffusionGemma gets its own sampler
    (entropy_bound), blocks of its canvas and a whole number of canvases; another model leaves
    entropy_bound for the default sampler. Controls that already fit are left as they are."""
    canvas = canvas_of(model_name)
    keep = gr.update()
    if canvas is None:
        return (gr.update(value=DEFAULT_SAMPLER) if sampler == EntropyBoundPolicy.name else keep), keep, keep
    try:
        gen = int(gen_length)
    except (TypeError, ValueError, OverflowError):
        gen = canvas
    whole = max(canvas, -(-gen // canvas) * canvas)
    return (gr.update(value=EntropyBoundPolicy.name) if sampler != EntropyBoundPolicy.name else keep,
            gr.update(value=canvas) if block_length != canvas else keep,
            gr.update(value=whole) if gen != whole or gen_length != gen else keep)


TEMPLATE_INFO = "wrap the prompt in the tokenizer's chat template"
PLAIN_PROMPTS = ("off: this model's task prompts (Q: 7+5-3=? A:) are plain text; its template is for "
                 "questions (What is 7+5-3?), as the chat box asks them")


def trained_here(model_name) -> bool:
    """Whether ``model_name`` is a model ``python -m slowfast train`` made (the embedded one, or
    an export of it: its folder has training_info.json). Its chat data are single questions and
    its tasks' own prompts plain text, so its chat box feeds the last question alone (after an
    earlier turn in its template it answers an empty text) and its template checkbox starts off."""
    folder = resolve_local(model_name) if isinstance(model_name, str) else None
    return folder is not None and (folder / "training_info.json").is_file()


def chat_turns(model_name, turns: list[dict]) -> list[dict]:
    """What a chat turn feeds the model: the whole conversation, or for a model trained here
    (``trained_here``) its last message (the chat box still shows every turn)."""
    return turns[-1:] if trained_here(model_name) else turns


def template_checkbox(model_name, has_chat: Optional[bool]) -> dict:
    """The template checkbox's value, whether it can be changed, and its line: off and fixed
    without a template; off for a model trained here (a task prompt wrapped in its template is a
    form it was hardly trained on); on otherwise."""
    if has_chat is False:
        return dict(value=False, interactive=False, info=NO_CHAT_TEMPLATE)
    plain = trained_here(model_name)
    return dict(value=not plain, interactive=True, info=PLAIN_PROMPTS if plain else TEMPLATE_INFO)


def on_model_change(model_name: str):
    """The chat box and the template checkbox follow the model: shown where it has a template."""
    has = chat_template_of(model_name)
    return gr.Checkbox(**template_checkbox(model_name, has)), gr.Accordion(visible=has is not False)
