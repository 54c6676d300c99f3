"""Shared Plotly pieces: layout defaults, the empty-figure note, colour scales, staircases."""
from __future__ import annotations

import html
from typing import Any, Optional, Sequence

import numpy as np
import plotly.graph_objects as go

from .view import STAGES, TraceView, stage_color

TEMPLATE = "plotly_white"
FONT = dict(size=11)
# The top of every figure, from the top down: a band for Plotly's toolbar (the modebar, at the
# right; nothing else is drawn there, so on a phone it covers no title), then the title's lines
# (short ones, joined with <br>: they must fit a 414 px phone), then the plots. The legend sits
# below the plots (``fit_legend`` makes room for the rows it wraps into on a phone).
TOOLBAR_PX = 28
TITLE_LINE_PX = 17
TITLE_CHARS = 56  # the longest title line (the step label "step 255/255 · slow · span [128, 256) · ..." included)
PHONE_PX = 280  # the width a legend's rows are counted at: a 414 px phone's plot area, a colour bar beside it
LEGEND_ROW_PX = 19
MARGIN = dict(l=50, r=20, t=TOOLBAR_PX + TITLE_LINE_PX + 10, b=36)  # t: a one-line title's
# the toolbar's buttons, less the ones with no use here (selections select nothing)
MODEBAR = dict(orientation="h", remove=["lasso2d", "select2d"])

# confidence colour segments by the number of threshold breaks (low -> high)
SEGMENTS = {
    0: [("#dbe9f6", "#08519c")],
    1: [("#dbe9f6", "#6baed6"), ("#a1d99b", "#00441b")],
    2: [("#dbe9f6", "#9ecae1"), ("#fdd49e", "#d7301f"), ("#a1d99b", "#00441b")],
}


# Markdown link/image brackets and Plotly's template sign as character references: they show
# as themselves in HTML and in Plotly text, but cannot form ``![x](http://...)`` or ``%{...}``.
_INERT = str.maketrans({"[": "&#91;", "]": "&#93;", "%": "&#37;"})


def esc(text: Any) -> str:
    """Text from a trace (tokens, prompt, stage, names) for HTML, Markdown or Plotly's HTML subset.

    Markup shows as text (``<|eot|>``, ``<script>``), quotes are safe in attributes, and
    Markdown link or image syntax cannot form, so a shared trace can neither load nor run
    anything. Every visual puts trace text through this before it reaches HTML or a figure.
    """
    return html.escape(str(text), quote=True).translate(_INERT)


def title_lines(title: str) -> int:
    """How many lines a figure title takes (its lines are joined with ``<br>``)."""
    return title.count("<br>") + 1


def layout(name: str, view: Optional[TraceView], title: str, height: int, **extra: Any) -> dict:
    """Compact defaults; ``uirevision`` keeps zoom across re-renders of the same figure.

    ``title`` is Plotly text (a subset of HTML): any part of it from the trace goes through esc().
    Its lines (joined with ``<br>``) are kept under ``TITLE_CHARS`` by the caller; the top margin
    holds them below the toolbar's band, and ``height`` grows by the title's lines past the first.
    Build the figure with ``figure`` (or pass it to ``fit_legend``): the legend's rows are added too.
    """
    gen = view.gen_length if view is not None else 0
    lines = title_lines(title)
    top = TOOLBAR_PX + TITLE_LINE_PX * lines + 10
    d = dict(
        template=TEMPLATE, height=height + (top - MARGIN["t"]), margin=dict(MARGIN, t=top), font=dict(FONT),
        # Plotly draws a one-line title 3 px, a longer one 12 px, above its pad: the title starts under the band
        title=dict(text=title, x=0.01, xanchor="left", y=1.0, yref="container", yanchor="top",
                   pad=dict(t=TOOLBAR_PX + (12 if lines > 1 else 3)), font=dict(size=13)),
        uirevision=f"{name}|{gen}",
        legend=dict(orientation="h", xref="container", x=0.01, xanchor="left", yref="container", y=0.0,
                    yanchor="bottom", font=dict(size=10)),
        modebar=dict(MODEBAR),
    )
    d.update(extra)
    return d


LEGEND_TRACES = ("scatter", "scattergl", "bar")


def legend_names(fig: go.Figure) -> list[str]:
    """The names the figure's legend lists (Plotly shows it from two such traces on)."""
    names = [t.name for t in fig.data if t.type in LEGEND_TRACES and t.showlegend is not False and t.name]
    return names if len(names) > 1 and fig.layout.showlegend is not False else []


def legend_px(names: Sequence[str], width: int = PHONE_PX) -> int:
    """The legend's height below the plots when the figure is ``width`` px wide. Plotly gives a
    horizontal legend that wraps equal columns as wide as its longest entry (symbol included)."""
    if not names:
        return 0
    widest = max(len(html.unescape(n)) for n in names) * 5.6 + 46
    per_row = max(1, int(width // widest))
    return -(-len(names) // per_row) * LEGEND_ROW_PX + 12


def fit_legend(fig: go.Figure) -> go.Figure:
    """Make room below the plots for the legend as a phone wraps it (a wider screen gives the
    plots what its fewer rows leave), so the legend never squeezes the plots."""
    fig.layout.height = (fig.layout.height or 0) + legend_px(legend_names(fig))
    return fig


def figure(data: Sequence[Any], fig_layout: dict) -> go.Figure:
    """``go.Figure(data, fig_layout)`` with room for its legend (see ``fit_legend``)."""
    return fit_legend(go.Figure(data, fig_layout))


def note(text: str, x: float = 0.5, y: float = 0.5, xref: str = "paper", yref: str = "paper") -> dict:
    return dict(text=text, x=x, y=y, xref=xref, yref=yref, showarrow=False,
                font=dict(size=13, color="#666"), bgcolor="rgba(255,255,255,0.8)")


def empty_figure(name: str, view: Optional[TraceView], title: str, message: str, height: int = 260) -> go.Figure:
    """A figure that says why there is nothing to draw (no records yet, no data of that kind)."""
    return go.Figure(layout=layout(
        name, view, title, height, annotations=[note(message)], showlegend=False,
        xaxis=dict(visible=False), yaxis=dict(visible=False),
    ))


def confidence_colorscale(breaks: Sequence[tuple[float, str]]) -> tuple[list, dict]:
    """A 0..1 colour scale with hard breaks at the sampler's thresholds, and its colour bar."""
    values = [min(max(v, 0.0), 1.0) for v, _ in breaks][:2]
    segs = SEGMENTS[len(values)]
    edges = [0.0, *values, 1.0]
    scale = []
    for (lo, hi), a, b in zip(segs, edges[:-1], edges[1:]):
        scale += [[a, lo], [b, hi]]
    ticks = spaced_ticks([(0.0, "0", True), *[(v, f"{label} {raw:g}", False) for v, (raw, label) in
                                              zip(values, breaks[:2])], (1.0, "1", True)])
    bar = dict(title=dict(text="conf", side="right"), tickvals=[v for v, _ in ticks],
               ticktext=[t for _, t in ticks], thickness=12, len=0.9)
    return scale, bar


COLORBAR_GAP = 0.07  # the least distance between two labels of a 0..1 colour bar (a label is ~14 px of ~220)


def spaced_ticks(ticks: Sequence[tuple[float, str, bool]], gap: float = COLORBAR_GAP) -> list[tuple[float, str]]:
    """A colour bar's (value, text) labels, ascending, none closer than ``gap``: an end ("0",
    "1"; ``True``) gives way to a threshold next to it, and two thresholds that close share
    one label (at the lower; the colour breaks still show both)."""
    out: list[tuple[float, str, bool]] = []
    for value, text, end in sorted(ticks, key=lambda t: t[0]):
        if out and value - out[-1][0] < gap:
            last_value, last_text, last_end = out[-1]
            if end:
                continue
            out[-1] = (value, text, False) if last_end else (last_value, f"{last_text} · {text}", False)
            continue
        out.append((value, text, end))
    return [(v, t) for v, t, _ in out]


def stage_colorscale(stages: Sequence[str], light: bool = False) -> list:
    """Stepped colour scale for stage codes 0..len(stages)-1 (use zmin=-0.5, zmax=len-0.5)."""
    k = len(stages)
    scale = []
    for i, s in enumerate(stages):
        c = stage_color(s, light)
        scale += [[i / k, c], [(i + 1) / k, c]]
    return scale


def stage_codes(stages: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Codes into a stage list: the known stages first, then any others in order of appearance."""
    names = list(STAGES)
    for s in stages:
        if s not in names:
            names.append(s)
    index = {s: i for i, s in enumerate(names)}
    return np.array([index[s] for s in stages], dtype=float), names


def staircase(values: np.ndarray, centers: np.ndarray, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A step line holding ``values[i] + offset`` over [centers[i] - 0.5, centers[i] + 0.5].

    Returns (level, along): two points per step, so ``level[::2] - offset`` are the values.
    NaN values break the line.
    """
    level = np.repeat(np.asarray(values, dtype=float) + offset, 2)
    along = np.stack([centers - 0.5, centers + 0.5], axis=1).ravel().astype(float)
    return level, along


def block_lines(edges: Sequence[float], axis: str = "x", xref: str = "x", yref: str = "y") -> list[dict]:
    """Dotted lines at block boundaries, across the whole plot area in the other direction."""
    out = []
    for e in edges:
        if axis == "x":
            out.append(dict(type="line", x0=e, x1=e, y0=0, y1=1, xref=xref, yref=f"{yref} domain",
                            line=dict(color="#555", width=1, dash="dot"), layer="above"))
        else:
            out.append(dict(type="line", y0=e, y1=e, x0=0, x1=1, yref=yref, xref=f"{xref} domain",
                            line=dict(color="#555", width=1, dash="dot"), layer="above"))
    return out


def grid(heights: Sequence[float], secondary: Sequence[bool] = (), gap: float = 0.1,
         shared_x: bool = True) -> tuple[dict, list[dict]]:
    """Rows of plots stacked top to bottom, built as a plain layout dict (make_subplots is slow).

    Returns (axes, refs): ``axes`` maps layout keys (``xaxis2``, ``yaxis3``...) to axis dicts
    to merge into the layout; ``refs[row]`` holds the trace references of that row: ``x``,
    ``y`` and, where ``secondary[row]``, ``y2`` (an overlaying right-hand axis), plus ``top``,
    the paper y of the row's top edge (for a panel title).
    """
    n = len(heights)
    secondary = list(secondary) + [False] * (n - len(secondary))
    scale = (1.0 - gap * (n - 1)) / float(sum(heights))
    axes: dict = {}
    refs: list[dict] = []
    top, y_index = 1.0, 0
    for row, h in enumerate(heights):
        lo = top - h * scale
        xi = row + 1
        xref = "x" if xi == 1 else f"x{xi}"
        y_index += 1
        yref = "y" if y_index == 1 else f"y{y_index}"
        axes[axis_key(xref)] = dict(domain=[0.0, 1.0], anchor=yref,
                                    **({"matches": "x", "showticklabels": row == n - 1} if shared_x and xi > 1 else {}))
        if shared_x and xi == 1 and n > 1:
            axes[axis_key(xref)]["showticklabels"] = False
        axes[axis_key(yref)] = dict(domain=[max(lo, 0.0), top], anchor=xref)
        ref = dict(x=xref, y=yref, top=top)
        if secondary[row]:
            y_index += 1
            y2 = f"y{y_index}"
            # round ticks of its own (Plotly would sync them to the left axis's grid: 3.75, 7.5, 11.25)
            axes[axis_key(y2)] = dict(overlaying=yref, side="right", anchor=xref, showgrid=False, tickmode="auto",
                                      nticks=5)
            ref["y2"] = y2
        refs.append(ref)
        top = lo - gap
    return axes, refs


def axis_key(ref: str) -> str:
    """'x' -> 'xaxis', 'y3' -> 'yaxis3'."""
    return f"{ref[0]}axis{ref[1:]}"

