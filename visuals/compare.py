"""Several traces side by side, and the HTML export of figures."""
from __future__ import annotations

import html
import math
import re
from typing import Any, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from slowfast.tasks.chat import example_or_question

from .common import confidence_colorscale, esc, fit_legend, layout, note
from .figures import certainty_traces
from .view import TraceView


def compare_table(traces: Sequence[Any], labels: Sequence[str]) -> list[dict]:
    """One row per trace: label, sampler, nfe, forwards, tokens_fed, seconds, tokens_per_second,
    speedups against the first trace (the reference, e.g. the baseline): ``speedup_nfe`` and
    ``speedup_tokens`` (deterministic: forwards and tokens fed), ``speedup`` (wall time measured
    on this machine; NaN without time), ``same_text`` (the same text as the first), text,
    and where a trace's prompt belongs to a task set (see ``slowfast.tasks.chat.example_or_question``)
    ``task`` (its name) and ``correct`` (its scorer's verdict on the text), else None."""
    if len(traces) != len(labels):
        raise ValueError(f"labels: {len(labels)} labels for {len(traces)} traces; allowed: one label per trace")
    rows = []
    stats = [trace.stats for trace in traces]  # totals a hand-built or partial trace lacks come from its records
    for trace, label, s in zip(traces, labels, stats):
        found = example_or_question(getattr(trace, "prompt", "") or "")
        rows.append(dict(
            label=label, sampler=trace.settings.get("sampler"), nfe=int(s.nfe), forwards=int(s.forwards),
            tokens_fed=int(s.tokens_fed), seconds=float(s.seconds), tokens_per_second=float(s.tokens_per_second),
            text=trace.text,
            task=found[0].name if found else None,
            correct=found[0].correct(found[1], trace.text) if found else None,
        ))
    if rows:
        for row, s in zip(rows, stats):
            x = s.speedups(stats[0])
            row.update(speedup=x["time"], speedup_nfe=x["nfe"], speedup_tokens=x["tokens_fed"],
                       same_text=row["text"] == rows[0]["text"])
    order = ("label", "sampler", "nfe", "forwards", "tokens_fed", "seconds", "tokens_per_second", "speedup_nfe",
             "speedup_tokens", "speedup", "same_text", "task", "correct", "text")
    return [{k: row[k] for k in order} for row in rows]


def compare_heatmaps(traces: Sequence[Any], labels: Sequence[str]) -> go.Figure:
    """The certainty heatmaps side by side, sharing the position and step axes and one colour scale."""
    if len(traces) != len(labels):
        raise ValueError(f"labels: {len(labels)} labels for {len(traces)} traces; allowed: one label per trace")
    if not traces:
        return go.Figure(layout=layout("compare", None, "Compare", 260, annotations=[note("no runs to compare")],
                                       xaxis=dict(visible=False), yaxis=dict(visible=False)))
    views = [TraceView(t) for t in traces]
    n = len(views)
    # each run gets its own step axis over the full height, so a 9-step run is as readable as a
    # 96-step one next to it (the titles give the step counts)
    fig = make_subplots(rows=1, cols=n, shared_yaxes=False, horizontal_spacing=0.05 if n > 1 else 0.0)
    breaks = next((v.thresholds() for v in views if v.thresholds()), [])
    scale, bar = confidence_colorscale(breaks)
    for i, v in enumerate(views, start=1):
        if v.empty:  # plotly.js draws a subplot only if it holds a trace
            fig.add_trace(go.Scatter(x=[None], y=[None], showlegend=False, hoverinfo="skip"), row=1, col=i)
            suffix = "" if i == 1 else str(i)
            fig.add_annotation(note("no steps", xref=f"x{suffix} domain", yref=f"y{suffix} domain"))
            continue
        fig.add_traces(certainty_traces(v, coloraxis="coloraxis"), rows=1, cols=i)
    named: set = set()  # one legend entry per name: every run's stages, each once
    for t in fig.data:
        if isinstance(t, go.Scatter) and t.showlegend is not False and t.name:
            t.showlegend = t.name not in named
            named.add(t.name)
    max_gen = max(v.gen_length for v in views)
    title = "Certainty side by side<br>one colour scale; each run's own steps, top to bottom"
    fig.update_layout(layout("compare", views[0], title, 360,
                             coloraxis=dict(colorscale=scale, cmin=0.0, cmax=1.0, colorbar=bar)))
    fig.update_xaxes(range=[-3, max_gen - 0.5], matches="x", showgrid=False, zeroline=False)
    for i, (label, v) in enumerate(zip(labels, views), start=1):
        fig.update_xaxes(title=dict(text=f"{wrap_words(esc(label))}<br>{v.n} steps"), row=1, col=i)
    for i, v in enumerate(views, start=1):
        steps = max(v.n, 1)
        fig.update_yaxes(range=[steps - 0.5, -0.5], showgrid=False, zeroline=False, tick0=0,
                         dtick=max(1, math.ceil(steps / 8)), tickformat="d", row=1, col=i)
    fig.update_yaxes(title=dict(text="step"), row=1, col=1)
    return fit_legend(fig)


def wrap_words(text: str, width: int = 9) -> str:
    """``text`` in lines of about ``width`` characters, broken at spaces with ``<br>`` (the runs'
    labels under side-by-side panels, each a third of a phone's width)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "<br>".join(lines)


def _slug(name: str, used: set) -> str:
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "figure"
    slug, k = base, 2
    while slug in used:
        slug, k = f"{base}-{k}", k + 1
    used.add(slug)
    return slug


FIGURE_TITLES = {
    "token_canvas": "Token canvas: what was decoded when",
    "certainty_heatmap": "Certainty per step and position, with the span",
    "convergence": "Convergence: horizon estimates and their spread",
    "stage_timeline": "Stages: slow and fast forwards",
    "cache_hits": "dLLM-Cache: rows reused per step and layer",
    "speed": "Speed: tokens per forward, NFE, tokens fed",
}


def run_header(trace: Any) -> str:
    """HTML: the prompt, model, settings and summary of a run, for the top of an export."""
    s, st = trace.stats.to_dict(), dict(trace.settings or {})
    params = st.pop("params", {}) or {}
    rows = [("model", trace.model), ("prompt", trace.prompt), ("text", trace.text),
            ("sampler", st.pop("sampler", "?")),
            ("settings", ", ".join(f"{k}={v}" for k, v in st.items())),
            ("sampler parameters", ", ".join(f"{k}={v}" for k, v in params.items())),
            ("summary", ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in s.items() if v is not None))]
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f'<table class="run">{cells}</table>'


def figures_html(figs: dict[str, go.Figure], title: str = "SlowFast Explorer figures", header: str = "") -> str:
    """One standalone HTML document with every figure under a human title (``FIGURE_TITLES``),
    ``header`` (e.g. ``run_header``) on top; plotly.js is inlined once (works offline)."""
    used: set = set()
    parts = []
    for i, (name, fig) in enumerate(figs.items()):
        slug = _slug(name, used)
        div = fig.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=f"fig-{slug}",
                          config={"responsive": True})
        parts.append(f'<section id="{slug}"><h2>{html.escape(FIGURE_TITLES.get(name, name))}</h2>\n{div}\n</section>')
    body = "\n".join(parts) if parts else "<p>No figures.</p>"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n"
        "<style>body{font-family:sans-serif;margin:16px}h2{font-size:15px;margin:18px 0 4px}"
        "table.run{border-collapse:collapse;font-size:13px;max-width:1100px}"
        "table.run th{text-align:left;vertical-align:top;padding:2px 10px 2px 0;white-space:nowrap}"
        "table.run td{padding:2px 0;white-space:pre-wrap;word-break:break-word}</style>\n"
        f"</head>\n<body>\n<h1 style=\"font-size:18px\">{html.escape(title)}</h1>\n{header}\n{body}\n</body>\n</html>\n"
    )
