"""Shared Plotly pieces: layout defaults, the empty-figure note, colour scales, staircases."""
from __future__ import annotations

import html
from typing import Any, Optional, Sequence

import numpy as np
import plotly.graph_objects as go

from .view import STAGES, TraceView, stage_color

TEMPLATE = "plotly_white"
MARGIN = dict(l=50, r=20, t=62, b=36)  # top: the title, then up to two legend rows
FONT = dict(size=11)

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


def layout(name: str, view: Optional[TraceView], title: str, height: int, **extra: Any) -> dict:
    """Compact defaults; ``uirevision`` keeps zoom across re-renders of the same figure.

    ``title`` is Plotly text (a subset of HTML): any part of it from the trace goes through esc().
    """
    gen = view.gen_length if view is not None else 0
    d = dict(
        template=TEMPLATE, height=height, margin=dict(MARGIN), font=dict(FONT),
        title=dict(text=title, x=0.01, xanchor="left", y=0.995, yref="container", yanchor="top",
                   font=dict(size=13)),
        uirevision=f"{name}|{gen}",
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0, font=dict(size=10)),
    )
    d.update(extra)
    return d


def note(text: str, x: float = 0.5, y: float = 0.5, xref: str = "paper", yref: str = "paper") -> dict:
    return dict(text=text, x=x, y=y, xref=xref, yref=yref, showarrow=False,
                font=dict(size=13, color="#666"), bgcolor="rgba(255,255,255,0.8)")


def empty_figure(name: str, view: Optional[TraceView], title: str, message: str, height: int = 260) -> go.Figure:
    """A figure that says why there is nothing to draw (no records yet, no data of that kind)."""
    return go.Figure(layout=layout(
        name, view, title, height, annotations=[note(message)],
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
    tickvals = [0.0, *values, 1.0]
    ticktext = ["0", *[f"{label} {v:g}" for v, label in breaks[:2]], "1"]
    bar = dict(title=dict(text="conf", side="right"), tickvals=tickvals, ticktext=ticktext, thickness=12, len=0.9)
    return scale, bar


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
            axes[axis_key(y2)] = dict(overlaying=yref, side="right", anchor=xref, showgrid=False)
            ref["y2"] = y2
        refs.append(ref)
        top = lo - gap
    return axes, refs


def axis_key(ref: str) -> str:
    """'x' -> 'xaxis', 'y3' -> 'yaxis3'."""
    return f"{ref[0]}axis{ref[1:]}"

