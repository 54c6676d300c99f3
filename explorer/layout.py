"""The page: every component and event."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import gradio as gr

import visuals
from visuals.player import player_files, plotly_path
from slowfast.cache import CACHE_PRESETS
from slowfast import params
from slowfast.params import Param
from slowfast.samplers import SAMPLERS
from slowfast.session import DEFAULT_PROMPT, Controls, example_prompts
from explorer.compare import (
    COMPARE_CONFIGS, COMPARE_HEADERS, COMPARE_WIDTHS, TEXT_CHARS, on_compare, on_compare_end,
)
from explorer.controls import (
    CONTROL_NAMES,
    VARIANT_CONTROLS,
    chat_template_of,
    families_markdown,
    model_choices,
    on_check,
    on_model_change,
    on_model_family,
    on_preset,
    on_variant,
    template_checkbox,
)
from explorer.files import on_export, on_replay
from explorer.glue import named
from explorer.run import on_chat, on_run, on_run_end, on_stop
from explorer.sessions import (
    MAX_UPLOAD,
    PAGE_STATES,
    PRESET_PROBLEMS,
    STATE_HOLDERS,
    PRESETS,
    QUEUE_SIZE,
    TASK_NAMES,
    allowed_models,
    on_unload,
    queue_note_for,
)
from explorer.tune import TUNE_COUNT, TUNE_POINTS, on_tune, on_tune_select


SHOW_THE_RUN_ON_A_PHONE = ("() => { if (window.innerWidth < 700) "
                           "document.querySelector('#message')?.scrollIntoView({behavior: 'smooth'}); }")


STOP_THE_PLAYERS = "() => window.SlowFastPlayer ? window.SlowFastPlayer.stopAll() : ''"
PLAYER_FILES = player_files()
CSS = PLAYER_FILES["player.css"]


def player_component(elem_id: str, compare: bool = False) -> gr.HTML:
    """The browser player (visuals/player/): its value is the server's latest message (a JSON
    string of per-step deltas), which the player adds to the run it keeps; Plotly.js comes from
    the plotly package, served as a static file."""
    mount = (f"const player = SlowFastPlayer.mount(element, {{compare: {'true' if compare else 'false'}}});\n"
             "watch('value', () => player.receive(props.value));\n"
             "if (props.value) player.receive(props.value);\n")
    return gr.HTML("", html_template="<div class='sfp-host'></div>", js_on_load=PLAYER_FILES["player.js"] + mount,
                   head=f'<script src="/gradio_api/file={plotly_path()}"></script>', elem_id=elem_id,
                   padding=False, container=False)


def parameter_control(p: Param, value: Any):
    """The app's control of one parameter, made from its definition: a radio for a choice, a
    checkbox for a switch, a number box without a slider step, else a slider over the app's
    range; the label and the line under it from the table, the element id from the name."""
    common = dict(label=p.label or p.name, info=p.info, elem_id=p.name.replace("_", "-"))
    if p.choices:
        return gr.Radio(list(p.choices), value=value, **common)
    if p.type is bool:
        return gr.Checkbox(value, **common)
    if p.step is None:
        return gr.Number(value, precision=0 if p.type is int else None, **common)
    return gr.Slider(p.low, p.high, value, step=p.step, **common)


def add_controls(c: dict[str, Any], d: Controls, table) -> None:
    """A control for each parameter of ``table`` into ``c``, showing the values of ``d``."""
    for p in table:
        c[p.name] = parameter_control(p, getattr(d, p.name))


INTRO = ("# SlowFast Explorer\nWatch a diffusion LLM unmask its answer step by step, and see what "
         "[SlowFast sampling](https://arxiv.org/abs/2506.10848), Fast-dLLM's threshold and dLLM-Cache "
         "change. Pick a preset or type a prompt, press **Run**, then step through the run.")


class Page(SimpleNamespace):
    """The page's components by name, as its sections make them; ``c`` holds the controls by
    their setting's name (``CONTROL_NAMES``)."""


def build_app(default_model: str = "embedded") -> gr.Blocks:
    """The page: the settings on the left, the views' tabs on the right, then every event.
    Each section is made in page order (Gradio numbers components and events as they come)."""
    d = Controls()
    examples = example_prompts()
    has_chat = chat_template_of(default_model)
    # Gradio's own temporary files (uploads, downloads) are deleted an hour after they were made
    with gr.Blocks(title="SlowFast Explorer", delete_cache=(600, 3600)) as demo:
        gr.Markdown(INTRO)
        ui = Page(c={})
        with gr.Row():
            with gr.Column(scale=1, min_width=340):
                model_section(ui, default_model)
                run_section(ui)
                sampler_section(ui, d, examples)
                chat_section(ui, d, has_chat, default_model)
                parameter_sections(ui.c, d)
            with gr.Column(scale=2):
                ui.message = gr.Markdown(elem_id="message")
                with gr.Tabs():
                    with gr.Tab("Run"):
                        run_tab(ui)
                    with gr.Tab("Compare"):
                        compare_tab(ui)
                    with gr.Tab("Tune"):
                        tune_tab(ui)
                    with gr.Tab("Export / replay"):
                        export_tab(ui)
        controls = [ui.c[n] for n in CONTROL_NAMES]
        device_events = wire_device_events(demo, ui, controls)
        wire_stop(ui, device_events)
        wire_page(ui, controls, examples)
        demo.unload(on_unload)
        demo.controls = ui.c  # every control by its setting name (tests check them against params.py)
    return demo


# --- the settings column ---------------------------------------------------------------------

def model_section(ui: Page, default_model: str) -> None:
    """The model to run, and whether its own code may run."""
    only = allowed_models()  # a public host offers only the models it serves, and no typed name
    ui.model = gr.Dropdown(model_choices(default_model), allow_custom_value=only is None,
                           value=default_model if only is None or default_model in only else only[0],
                           label="Model", info="hub ids download once (a model too big for this machine is "
                                               "refused with what it needs); or type a local folder"
                           if only is None else "the models this host serves")
    with gr.Accordion("Model families: what runs on this machine", open=False, visible=only is None,
                      elem_id="model-families"):
        ui.families = gr.Markdown(families_markdown() if only is None else "")
    ui.trust = gr.Checkbox(False, label="Allow the model's own code (trust_remote_code)",
                           visible=only is None,
                           info="⚠️ only for a folder or hub id you trust: its Python runs on this "
                                "machine. Off: such models are refused with a message.")


def run_section(ui: Page) -> None:
    """The prompt, Run and Stop, and the line that checks the settings."""
    ui.prompt = gr.Textbox(DEFAULT_PROMPT, label="Prompt", lines=2, elem_id="prompt")
    with gr.Row():
        ui.run_btn = gr.Button("Run", variant="primary", elem_id="run")
        ui.stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
    ui.playback = gr.Textbox(visible=False)  # what Stop paused in the browser ("step/last")
    ui.check = gr.Markdown(elem_id="check")


def sampler_section(ui: Page, d: Controls, examples: dict) -> None:
    """The sampler, the cache switch, the presets (and the preset files skipped) and the example prompts."""
    ui.c["sampler"] = gr.Radio(list(SAMPLERS), value=d.sampler,
                               label="Sampler", elem_id="sampler",
                               info="LLaDA baseline, SlowFast (Wei et al. 2025), Fast-dLLM threshold, "
                                    "Dream's own decoding")
    ui.c["cache"] = gr.Checkbox(d.cache, label="dLLM-Cache (feature reuse)")
    ui.preset = gr.Dropdown(list(PRESETS), value=None, label="Preset", elem_id="preset",
                            info="paper settings and teaching scenarios; choosing one fills the controls")
    # preset files that were skipped at start-up, and why (the app starts without them)
    gr.Markdown("\n".join(f"⚠️ {visuals.esc(m)}" for m in PRESET_PROBLEMS), elem_id="preset-problems",
                visible=bool(PRESET_PROBLEMS))
    ui.explanation = gr.Markdown()
    ui.example = gr.Dropdown(list(examples), value=None, label="Example prompt")


def chat_section(ui: Page, d: Controls, has_chat, default_model: str) -> None:
    """The chat-template switch and the chat box (for instruct models: hidden without a template)."""
    box = template_checkbox(default_model, has_chat)
    ui.c["chat"] = gr.Checkbox(d.chat and box.pop("value"), label="Apply the chat template", **box)
    with gr.Accordion("Chat (instruct models)", open=False, visible=has_chat is not False) as chat_box:
        ui.chatbot = gr.Chatbot(label="Conversation", height=240)
        ui.chat_msg = gr.Textbox(label="Message", placeholder="Ask the instruct model; Enter sends")
        with gr.Row():
            ui.chat_send = gr.Button("Send")
            ui.chat_clear = gr.Button("Clear")
    ui.chat_box = chat_box


def parameter_sections(c: dict[str, Any], d: Controls) -> None:
    """The parameters' controls from the table: generation, each sampler's own (the default
    sampler's first and open), dLLM-Cache."""
    with gr.Accordion("Generation", open=False):
        add_controls(c, d, (*params.GENERATION, *params.LIMITS))
    for name in sorted(SAMPLERS, key=lambda n: n != d.sampler):
        policy = SAMPLERS[name]
        if policy.PARAMS:
            with gr.Accordion(policy.TITLE or name, open=name == d.sampler):
                add_controls(c, d, policy.PARAMS)
    with gr.Accordion("dLLM-Cache", open=False):
        add_controls(c, d, params.CACHE)
        gr.Markdown("Paper settings: " + ", ".join(
            f"`{k}` K_p={v['kp']} K_r={v['kr']} rho={v['rho']}" for k, v in CACHE_PRESETS.items()))


# --- the views' tabs -------------------------------------------------------------------------

def run_tab(ui: Page) -> None:
    # the browser's player: it keeps the run it is sent and draws any step of it
    ui.player = player_component("player")
    # for API clients: a run's text and status line when it ends (the player shows both)
    ui.api_text = gr.Textbox(visible=False, label="text")
    ui.api_status = gr.Textbox(visible=False, label="status")


def compare_tab(ui: Page) -> None:
    ui.configs = gr.CheckboxGroup(COMPARE_CONFIGS, value=["baseline", "slowfast", "slowfast + cache"],
                                  label="Configurations (same prompt, seed and sliders; the first is "
                                        "the reference for the speedups)")
    ui.compare_btn = gr.Button("Compare", elem_id="compare")
    ui.compare_msg = gr.Markdown()
    ui.compare_table = gr.Dataframe(headers=COMPARE_HEADERS, column_widths=COMPARE_WIDTHS, wrap=True,
                                    max_chars=TEXT_CHARS, interactive=False, elem_id="compare-table")
    gr.Markdown("NFE and tokens fed are exact and repeatable; seconds are one measurement on this "
                "machine (shared, so they vary between runs). With the cache, SlowFast's truncated "
                "fast forwards also recompute cached rows, so it can need more forwards to converge.")
    ui.compare_player = player_component("compare-player", compare=True)


def tune_tab(ui: Page) -> None:
    gr.Markdown("A random search over SlowFast's and the threshold sampler's parameters (and "
                "the cache's, on models that have one), each point scored on held-out task "
                "prompts for accuracy and NFE; the baseline at one token per forward is the "
                "reference. `python -m slowfast sweep` runs larger ones.")
    with gr.Row():
        # (a value outside the list reaches on_tune, which says what is allowed: Gradio's own check
        # answers an API client with an error event)
        ui.tune_task = gr.Dropdown(TASK_NAMES, value=TASK_NAMES[0] if TASK_NAMES else None, allow_custom_value=True,
                                   label="Task", elem_id="tune-task")
        ui.tune_count = gr.Slider(*TUNE_COUNT, 2, step=1, label="Prompts per setting", elem_id="tune-count")
        ui.tune_points = gr.Slider(*TUNE_POINTS, 2, step=1, label="Random settings", elem_id="tune-points")
        ui.tune_seed = gr.Number(0, precision=0, label="Seed")
    ui.tune_btn = gr.Button("Sweep", elem_id="tune")
    ui.tune_msg = gr.Markdown(elem_id="tune-msg")
    ui.tune_plot = gr.Plot(show_label=False, elem_id="tune-plot")
    ui.tune_table = gr.Dataframe(headers=["accuracy", "NFE", "tokens fed", "setting"],
                                 interactive=False, elem_id="tune-table", wrap=True,
                                 column_widths=["11%", "9%", "12%", "68%"])


def export_tab(ui: Page) -> None:
    ui.export_btn = gr.Button("Export the trace and a page that plays it")
    ui.export_msg = gr.Markdown()
    ui.export_files = gr.File(label="Downloads", file_count="multiple")
    ui.upload = gr.File(label="Replay a trace file (no model needed; restores the prompt and controls)",
                        file_types=[".json"], type="filepath", elem_id="upload")


# --- the events ------------------------------------------------------------------------------

HIDDEN = dict(api_visibility="undocumented")  # the page's own wiring, not an API


def wire_device_events(demo: gr.Blocks, ui: Page, controls: list) -> list:
    """The events that use the device, in the API as /run, /chat, /compare and /tune with the
    settings' own parameter names: [run, chat (Send), chat (Enter), compare, tune]."""
    queue_note = queue_note_for(demo)  # said at once when the device is busy
    ui.run_btn.click(queue_note, None, [ui.message], queue=False, **HIDDEN)
    # on a phone the views sit below every control: bring the run into view as it starts
    ui.run_btn.click(None, None, None, js=SHOW_THE_RUN_ON_A_PHONE, **HIDDEN)
    ui.compare_btn.click(queue_note, None, [ui.compare_msg], queue=False, **HIDDEN)
    run_outputs = [ui.message, ui.api_text, ui.player, ui.api_status, ui.run_btn]
    run_event = ui.run_btn.click(named(on_run, "model", "prompt", "state", *CONTROL_NAMES, device=True),
                                 [ui.model, ui.prompt, *controls], run_outputs,
                                 api_name="run", concurrency_id="device", concurrency_limit=1)
    chat_events = [
        trigger(named(on_chat, "model", "message", "history", "state", *CONTROL_NAMES, device=True),
                [ui.model, ui.chat_msg, ui.chatbot, *controls], [*run_outputs, ui.chatbot, ui.chat_msg],
                concurrency_id="device", **(dict(api_name="chat") if i == 0 else HIDDEN))
        for i, trigger in enumerate((ui.chat_send.click, ui.chat_msg.submit))]
    compare_event = ui.compare_btn.click(named(on_compare, "model", "prompt", "configs", "state", *CONTROL_NAMES,
                                               device=True),
                                         [ui.model, ui.prompt, ui.configs, *controls],
                                         [ui.compare_msg, ui.compare_table, ui.compare_player],
                                         api_name="compare", concurrency_id="device")
    tune_event = ui.tune_btn.click(named(on_tune, "model", "task", "count", "points", "seed", "state", device=True),
                                   [ui.model, ui.tune_task, ui.tune_count, ui.tune_points, ui.tune_seed],
                                   [ui.tune_msg, ui.tune_plot, ui.tune_table], api_name="tune",
                                   concurrency_id="device")
    return [run_event, *chat_events, compare_event, tune_event]


def wire_stop(ui: Page, device_events: list) -> None:
    """/stop, and what follows each run, chat turn or comparison as it ends."""
    run_event, chat_send, chat_enter, compare_event, tune_event = device_events
    # Stop ends this browser's running decode after its current forward and cancels
    # its queued ones (Gradio closes their generators, which stops their runs too)
    # (the browser's players pause at once, before the server hears of it; what they paused goes along)
    ui.stop_btn.click(named(on_stop, "state", "playback"), [ui.playback], [ui.message], api_name="stop",
                      queue=False, cancels=[run_event, compare_event, chat_send, chat_enter, tune_event],
                      js=STOP_THE_PLAYERS)
    # after each run or chat turn (a cancelled one too: the page runs it once the stream is
    # gone): a stopped run drawn as far as it got, Run enabled
    for event in (run_event, chat_send, chat_enter):
        event.then(named(on_run_end, "state"), None, [ui.message, ui.api_text, ui.player, ui.api_status, ui.run_btn],
                   queue=False, **HIDDEN)
    compare_event.then(named(on_compare_end, "state"), None, [ui.compare_msg, ui.compare_table, ui.compare_player],
                       queue=False, **HIDDEN)


def wire_page(ui: Page, controls: list, examples: dict) -> None:
    """The page's own events: /replay, export, chat's Clear, a Tune row, presets, examples, the
    variant, the model, trust_remote_code and the settings' check."""
    c = ui.c
    ui.chat_clear.click(lambda: [], None, [ui.chatbot], queue=False, **HIDDEN)
    ui.export_btn.click(named(on_export, "state"), None, [ui.export_msg, ui.export_files], **HIDDEN)
    ui.tune_table.select(on_tune_select, [ui.prompt], [ui.tune_msg, ui.prompt, *controls], **HIDDEN)
    ui.upload.upload(named(on_replay, "trace_file", "state"), [ui.upload],
                     [ui.message, ui.api_text, ui.player, ui.api_status, ui.prompt, ui.model, *controls],
                     api_name="replay")
    ui.preset.change(on_preset, [ui.preset], [*controls, ui.prompt, ui.explanation], **HIDDEN)
    ui.example.change(lambda k: examples.get(k, gr.update()), [ui.example], [ui.prompt], **HIDDEN)
    c["variant"].input(on_variant, [c["variant"]], [c[n] for n in VARIANT_CONTROLS], **HIDDEN)
    ui.model.change(on_model_change, [ui.model], [c["chat"], ui.chat_box], queue=False, **HIDDEN)
    ui.model.change(on_model_family, [ui.model, c["sampler"], c["gen_length"], c["block_length"]],
                    [c["sampler"], c["block_length"], c["gen_length"]], queue=False, **HIDDEN)
    ui.trust.change(named(lambda st, on: st.update(trust_remote_code=bool(on)), "state", "trust_remote_code"),
                    [ui.trust], None, queue=False, **HIDDEN)
    gr.on([x.change for x in controls] + [ui.prompt.change, ui.model.change], on_check,
          [ui.model, ui.prompt, *controls], [ui.check], queue=False, **HIDDEN)


def launch(demo: gr.Blocks, **kwargs):
    """Serve ``demo`` with the limits a public host needs (see the README's SECURITY)."""
    demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    gr.set_static_paths([plotly_path()])  # the players' Plotly.js, and nothing else of the package
    kwargs.setdefault("show_error", True)  # Gradio's own input checks say what is wrong, not a bare "Error"
    kwargs.setdefault("state_session_capacity", PAGE_STATES)  # Gradio's per-browser state, bounded (sessions.py)
    block = not kwargs.pop("prevent_thread_lock", False)
    launched = demo.launch(max_file_size=MAX_UPLOAD, css=CSS, prevent_thread_lock=True, **kwargs)
    holder = getattr(demo, "state_holder", None)  # made by launch: a browser's is dropped with its session
    if holder is not None and holder not in STATE_HOLDERS:
        STATE_HOLDERS.append(holder)
    if block:  # python app.py: serve until interrupted, as demo.launch() does
        demo.block_thread()
    return launched
