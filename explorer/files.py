"""Export and replay of trace files."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import gradio as gr

import visuals
from slowfast.session import preset_controls
from slowfast.trace import Trace
from explorer.controls import CONTROL_NAMES
from explorer.run import result, run_message, verdict_of
from visuals.player import player_html, plotly_bundle, whole_run


def on_export(state: dict):
    """The trace file and an offline HTML page that plays it (the same player as the page's)."""
    trace = state.get("trace")
    if trace is None:
        return "Run or replay something first.", None
    if state.get("export_dir"):  # one export folder per browser session, replaced each time
        shutil.rmtree(state["export_dir"], ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix="slowfast-export-"))
    state["export_dir"] = str(folder)
    trace_path = trace.save(folder / "trace.json")
    html_path = folder / "player.html"  # the page's player with the run inlined, Plotly too: works offline
    html_path.write_text(player_html([whole_run(trace, "export", verdict=verdict_of(trace))],
                                     f"SlowFast Explorer: {trace.settings.get('sampler')} run",
                                     visuals.run_header(trace), plotly_js=plotly_bundle()), encoding="utf-8")
    return f"Exported {len(trace.records)} steps.", [str(trace_path), str(html_path)]


def on_replay(file, state: dict):
    keep = [gr.update()] * (2 + len(CONTROL_NAMES))
    if file is None:
        return ["", gr.update(), gr.update(), gr.update(), *keep]
    try:
        trace = read_trace_upload(file)
    except (ValueError, OSError) as exc:
        return [f"⚠️ Not a trace file: {visuals.esc(str(exc))}", gr.update(), gr.update(), gr.update(), *keep]
    state["trace"] = trace
    values = preset_controls({"settings": trace.settings})
    return [f"Replaying a trace of **{visuals.esc(trace.model)}** ({trace.settings['sampler']}, "
            f"{len(trace.records)} steps); no model needed. The prompt, model and every control are as in "
            "that run: Run decodes it again.", *result_with_player(trace),
            gr.update(value=trace.prompt), gr.update(value=trace.model),
            *[gr.update(value=values[n]) if n in values else gr.update() for n in CONTROL_NAMES]]


def result_with_player(trace: Trace) -> list:
    text, status = result(trace)
    return [text, run_message(trace), status]


def read_trace_upload(file) -> Trace:
    """The trace in an uploaded file (its path, or Gradio's file object), checked in full and
    size-capped before anything renders. Raises ValueError (not a trace) or OSError (not
    readable), each with a message for the page.

    The file is only read, never deleted: Gradio keeps an upload under a hash of its content, so
    two browsers replaying the same file at once share one path, and deleting it after one read
    made the other's fail ("No such file or directory"). Uploads do not pile up: Gradio's
    ``delete_cache`` (``build_app``) deletes them an hour after they arrive."""
    path = Path(str(file if isinstance(file, (str, Path)) else getattr(file, "name", file)))
    try:
        return Trace.load(path)
    except OSError as exc:
        raise OSError(f"the uploaded file {path.name!r} could not be read ({exc.strerror or exc}); "
                      "upload it again") from None
