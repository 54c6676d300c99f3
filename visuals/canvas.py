"""The generated canvas as of a step: a Plotly grid and a light HTML version for live updates."""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import plotly.graph_objects as go

from .common import esc, figure, layout, note, stage_codes
from .view import MASK_GLYPH, TraceView, stage_color

WIDTH = 32  # positions per row
CELL_CHARS = 5  # token text longer than this is cut in the cell (full text in the hover)
MASK_BG = "#e3e3e3"
STEP_LO, STEP_HI = "#fff3b0", "#5fb3c8"  # early decodes light yellow -> late ones teal
NOW_COLOR, SPAN_COLOR = "#d62728", "#111111"


END_GLYPH, SPECIAL_GLYPH = "∎", "◆"
END_NAMES = ("endoftext", "eot_id", "im_end", "end_of_text", "eos")


def _short(text: str) -> str:
    """What a cell shows: special tokens as one glyph (end of text ∎, others ◆), long text cut."""
    if text.startswith("<|") and text.endswith("|>") or text in ("</s>", "<eos>", "[SEP]"):
        return END_GLYPH if any(n in text for n in END_NAMES) or text in ("</s>", "<eos>", "[SEP]") else SPECIAL_GLYPH
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"


def _is_end(text: str) -> bool:
    return _short(text) == END_GLYPH


def text_at(trace: Any, step: Optional[int] = None) -> str:
    """The answer's text as of ``step``: the finished run's own ``trace.text`` at its last step;
    before it, the committed tokens' strings in order up to the first end of text, each
    still-masked position as ``MASK_GLYPH`` (so the text forms as the canvas does)."""
    v = TraceView(trace, step)
    if v.is_last and (trace.summary or {}).get("finished"):
        return trace.text
    strings = trace.token_strings or {}
    parts = []
    for token in v.tokens.tolist():
        if token == int(trace.mask_id):
            parts.append(MASK_GLYPH)
            continue
        text = strings.get(str(token), "")
        if _is_end(text):
            break
        parts.append(text)
    return "".join(parts).rstrip(MASK_GLYPH) + (MASK_GLYPH if parts and parts[-1] == MASK_GLYPH else "")


def _hex_to_rgb(c: str) -> np.ndarray:
    return np.array([int(c[i: i + 2], 16) for i in (1, 3, 5)], dtype=float)


def step_colors(steps: np.ndarray, last: int) -> list[str]:
    """Hex colour per decode step on the STEP_LO -> STEP_HI ramp (0 .. last)."""
    t = np.clip(np.asarray(steps, dtype=float) / max(last, 1), 0, 1)[:, None]
    rgb = np.rint(_hex_to_rgb(STEP_LO) * (1 - t) + _hex_to_rgb(STEP_HI) * t).astype(int)
    return ["#%02x%02x%02x" % tuple(c) for c in rgb]


class CanvasState:
    """Per position: display text, hover text, decode step and stage, as of a step."""

    def __init__(self, v: TraceView):
        self.v = v
        G = v.gen_length
        self.decoded_at = da = v.decoded_at
        self.masked = da < 0
        stages = v.stages
        self.stage = [stages[d] if d >= 0 else "" for d in da]
        self.now = np.zeros(G, dtype=bool)
        r = v.record
        if r is not None:
            self.now[r.decoded] = True
        self.span = r.span if r is not None and r.span is not None else None
        tokens, conf = v.tokens, v.decode_confidence
        names: dict[int, str] = {}

        def name(t: int) -> str:
            if t not in names:
                names[t] = v.token_text(t)
            return names[t]

        cur_tok = v.argmax[-1] if r is not None else None
        cur_conf = v.confidence[-1] if r is not None else None
        self.full, self.tip = [], []  # display text; tooltip lines (raw text)
        for p in range(G):
            if self.masked[p]:
                self.full.append(MASK_GLYPH)
                lines = [f"position {p}: masked"]
                if r is not None:
                    lines.append(f"current argmax {name(int(cur_tok[p]))} ({cur_conf[p]:.3f})")
            else:
                text = name(int(tokens[p]))
                self.full.append(text)
                lines = [f"position {p}: {text}", f"decoded at step {da[p]} ({self.stage[p]})",
                         f"confidence when decoded {conf[p]:.3f}"]
            self.tip.append(lines)
        self.hover = ["<br>".join(esc(x) for x in lines) for lines in self.tip]  # Plotly hover
        self.cell = [_short(t) for t in self.full]


def _cell_path(cells, width: int, inset: float) -> str:
    parts = []
    for p in cells:
        row, col = divmod(int(p), width)
        parts.append(f"M{col - inset},{row - inset}H{col + inset}V{row + inset}H{col - inset}Z")
    return "".join(parts)


def _span_path(span: tuple[int, int], width: int) -> str:
    """Outline of the cells [start, end) of a grid ``width`` wide, as one SVG path."""
    start, end = int(span[0]), int(span[1])
    (rs, cs), (re_, ce) = divmod(start, width), divmod(end - 1, width)
    w = width - 0.5
    if rs == re_:
        return f"M{cs - 0.5},{rs - 0.5}H{ce + 0.5}V{rs + 0.5}H{cs - 0.5}Z"
    if re_ == rs + 1 and ce < cs - 1:  # two pieces that do not touch
        return (f"M{cs - 0.5},{rs - 0.5}H{w}V{rs + 0.5}H{cs - 0.5}Z"
                f"M-0.5,{re_ - 0.5}H{ce + 0.5}V{re_ + 0.5}H-0.5Z")
    return (f"M{cs - 0.5},{rs - 0.5}H{w}V{re_ - 0.5}H{ce + 0.5}V{re_ + 0.5}H-0.5V{rs + 0.5}"
            f"H{cs - 0.5}Z")


def token_canvas(trace: Any, step: Optional[int] = None, color_by: str = "step", width: int = WIDTH) -> go.Figure:
    """The generated positions as a grid of tokens, coloured by the step (or stage) that decoded them.

    Masked cells are grey with a mask glyph; cells decoded at this step are outlined red; the
    current span (``record.span``) is outlined black. Hover: position, token, step, stage and
    the confidence when decoded.
    """
    if color_by not in ("step", "stage"):
        raise ValueError(f"color_by: {color_by!r} is not allowed; allowed: step, stage")
    v = TraceView(trace, step)
    G = v.gen_length
    rows = max(1, math.ceil(G / width))
    cs = CanvasState(v)
    pad = rows * width - G
    z, heat, data = _step_colours(v, cs) if color_by == "step" else _stage_colours(cs)
    z = np.concatenate([z, np.full(pad, np.nan)]).reshape(rows, width)
    text = np.array(cs.cell + [""] * pad, dtype=object).reshape(rows, width)
    hover = np.array(cs.hover + [""] * pad, dtype=object).reshape(rows, width)
    escaped = np.vectorize(esc, otypes=[object])(text) if G else text
    data.insert(0, go.Heatmap(
        z=z, x=np.arange(width), y=np.arange(rows), text=escaped, texttemplate="%{text}",
        textfont=dict(size=10, color="#111"), hovertext=hover, hovertemplate="%{hovertext}<extra></extra>",
        xgap=1, ygap=1, hoverongaps=False, name="canvas", **heat,
    ))
    annotations = [] if not v.empty else [note("no steps yet: every position is masked", y=1.0)]
    return figure(data, layout(
        "canvas", v, f"Canvas<br>{v.step_label(esc)}", min(350, max(160, 80 + 26 * rows)),
        shapes=_canvas_shapes(cs, width), annotations=annotations, plot_bgcolor="white",
        xaxis=dict(range=[-0.5, width - 0.5], tickvals=list(range(0, width, 8)), showgrid=False, zeroline=False,
                   title=dict(text="column")),
        yaxis=dict(range=[rows - 0.5, -0.5], tickvals=list(range(rows)),
                   ticktext=[str(r * width) for r in range(rows)], showgrid=False, zeroline=False,
                   title=dict(text="position")),
    ))


def _step_colours(v: TraceView, cs: CanvasState) -> tuple[np.ndarray, dict, list]:
    """Cells by the step that decoded them (masked cells grey, below the scale): the cell values,
    the heatmap's colour settings and (none) legend entries."""
    zmax, zmin = max(v.n_total - 1, 1), -1.0
    z = np.where(cs.masked, -1.0, cs.decoded_at.astype(float))
    f = 0.5 / (zmax - zmin)
    heat = dict(colorscale=[[0, MASK_BG], [f, MASK_BG], [f, STEP_LO], [1, STEP_HI]], zmin=zmin, zmax=zmax,
                showscale=not v.empty,
                colorbar=dict(title=dict(text="decoded at step", side="right"), thickness=10,
                              tickvals=[-1, zmax], ticktext=["masked", str(zmax)]))
    return z, heat, []


def _stage_colours(cs: CanvasState) -> tuple[np.ndarray, dict, list]:
    """Cells by the stage that decoded them, one colour band per stage (masked last): the cell
    values, the heatmap's colour settings and a legend entry per stage."""
    _, names = stage_codes([s for s in cs.stage if s])
    lookup = {s: i for i, s in enumerate(names)}
    K = len(names)
    z = np.array([K if m else lookup[s] for m, s in zip(cs.masked, cs.stage)], dtype=float)
    scale = []
    for i, c in enumerate([stage_color(s, light=True) for s in names] + [MASK_BG]):
        scale += [[i / (K + 1), c], [(i + 1) / (K + 1), c]]
    heat = dict(colorscale=scale, zmin=-0.5, zmax=K + 0.5, showscale=False)
    legend = [go.Scatter(x=[None], y=[None], mode="markers", name=f"decoded in {esc(s)}",
                         marker=dict(symbol="square", size=10, color=stage_color(s, light=True)))
              for s in dict.fromkeys(s for s in cs.stage if s)]
    return z, heat, legend


def _canvas_shapes(cs: CanvasState, width: int) -> list[dict]:
    """The current span's outline and the outlines of the cells decoded at this step."""
    shapes = []
    if cs.span is not None and cs.span[1] > cs.span[0]:
        shapes.append(dict(type="path", name="span", path=_span_path(cs.span, width), xref="x", yref="y",
                           line=dict(color=SPAN_COLOR, width=2), layer="above"))
    if cs.now.any():
        shapes.append(dict(type="path", name="decoded this step", path=_cell_path(np.flatnonzero(cs.now), width, 0.4),
                           xref="x", yref="y", line=dict(color=NOW_COLOR, width=2), layer="above"))
    return shapes


def canvas_html(trace: Any, step: Optional[int] = None, color_by: str = "step", width: int = WIDTH) -> str:
    """The canvas as lightweight HTML (inline styles, ``title`` tooltips), for per-step updates.

    Every text from the trace (tokens, stages) is escaped with ``esc``: markup and Markdown
    in a shared trace show as text."""
    v = TraceView(trace, step)
    cs = CanvasState(v)
    G = v.gen_length
    if color_by == "stage":
        bg = [MASK_BG if m else stage_color(s, light=True) for m, s in zip(cs.masked, cs.stage)]
    else:
        ramp = step_colors(np.maximum(cs.decoded_at, 0), max(v.n_total - 1, 1))
        bg = [MASK_BG if m else c for m, c in zip(cs.masked, ramp)]
    start, end = cs.span if cs.span is not None else (0, 0)
    cells = []
    for p in range(G):
        # the span is a bar under its cells, so it reads the same however many cells fit a row
        bar = f"box-shadow:inset 0 -3px 0 {SPAN_COLOR};" if start <= p < end else ""
        now = (f"outline:2px solid {NOW_COLOR};outline-offset:-3px;font-weight:bold;" if cs.now[p] else "")
        tip = "\n".join(cs.tip[p])
        cells.append(
            f'<span class="sf-cell" data-pos="{p}" title="{esc(tip)}" '
            f'style="background:{bg[p]};{bar}{now}overflow:hidden;white-space:nowrap;'
            f'text-align:center;padding:1px 0 3px 0;min-width:0">{esc(cs.cell[p])}</span>'
        )
    masked_key = f'<span style="background:{MASK_BG};padding:0 4px">{MASK_GLYPH} masked</span>'
    if color_by == "stage":
        colours = " ".join(
            f'<span style="background:{stage_color(s, light=True)};padding:0 4px">{esc(s)}</span>'
            for s in dict.fromkeys(s for s in cs.stage if s))
    else:
        colours = (f'<span style="background:linear-gradient(90deg,{STEP_LO},{STEP_HI});padding:0 4px">'
                   'decoded early → late</span>')
    legend = (f'{masked_key} {colours} '
              f'<span style="outline:2px solid {NOW_COLOR};outline-offset:-2px;padding:0 4px">this step</span> '
              f'<span style="box-shadow:inset 0 -3px 0 {SPAN_COLOR};padding:0 4px">span</span> '
              f'{END_GLYPH} end of text')
    return (
        '<div class="sf-canvas" style="font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;'
        'line-height:1.35;color:#111">'
        f'<div style="font-family:sans-serif;margin:0 0 4px 0">{v.step_label(esc)} &nbsp; {legend}</div>'
        # as many cells per row as fit with room for a short token each (at most ``width``)
        f'<div style="display:grid;grid-template-columns:repeat(auto-fill,minmax(max(3.4em,calc(100% / {width} - 1px)),1fr));'
        'gap:1px">'
        + "".join(cells) + "</div></div>"
    )
