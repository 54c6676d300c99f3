"""Accuracy against mean NFE for the points of a sweep, with the Pareto front as a staircase.

``pareto_figure(points)`` takes scored points as ``slowfast.sweep.iter_sweep`` yields them
(or as the sweep command's results file holds them). Each family (baseline, SlowFast, SlowFast + cache,
threshold, threshold + cache) is its own trace with its own marker and colour, so the legend
tells them apart. Every marker carries its point's full generation settings as a JSON string
in ``customdata``: an app loads a clicked point with
``GenerationSettings.from_dict(json.loads(point["customdata"]))``.
"""
from __future__ import annotations

import json
from typing import Any, Optional, Sequence

import plotly.graph_objects as go

from slowfast.sweep import pareto_front

from .common import esc, fit_legend, layout, note

FAMILIES = {  # name: (colour, marker symbol)
    "baseline": ("#636363", "square"),
    "slowfast": ("#1f77b4", "circle"),
    "slowfast + cache": ("#1f77b4", "diamond-open"),
    "threshold": ("#ff7f0e", "triangle-up"),
    "threshold + cache": ("#ff7f0e", "triangle-up-open"),
}
TITLE = "Accuracy vs mean NFE (up and left is better)"


def family(point: dict[str, Any]) -> str:
    name = str(point.get("sampler", "?"))
    return f"{name} + cache" if point.get("cache") is not None else name


def hover(point: dict[str, Any]) -> str:
    return (f"<b>{esc(point.get('label', family(point)))}</b><br>accuracy {point['accuracy']:.1%} "
            f"({esc(point.get('metric', ''))})<br>mean NFE {point['nfe']:.1f}<br>"
            f"tokens fed {point.get('tokens_fed', 0):.0f}<br>{point.get('seconds_per_prompt', 0):.3f} s per prompt")


def pareto_figure(points: Sequence[dict[str, Any]], front: Optional[Sequence[dict[str, Any]]] = None,
                  height: int = 420) -> go.Figure:
    """Scatter of accuracy (y) against mean NFE (x), one trace per family, and the front
    (``pareto_front(points)`` unless given) as a step line. Hover shows each point's settings;
    ``customdata`` holds them as JSON."""
    points = [p for p in points if p.get("accuracy") is not None and p.get("nfe") is not None]
    if not points:
        return go.Figure(layout=layout("pareto", None, TITLE, height, annotations=[note("no scored points yet")],
                                       showlegend=False, xaxis=dict(visible=False), yaxis=dict(visible=False)))
    front = pareto_front(points) if front is None else sorted(front, key=lambda p: (p["nfe"], -p["accuracy"]))
    fig = go.Figure()
    names = list(FAMILIES) + sorted({family(p) for p in points} - set(FAMILIES))
    for name in names:
        pts = [p for p in points if family(p) == name]
        if not pts:
            continue
        colour, symbol = FAMILIES.get(name, ("#2ca02c", "x"))
        fig.add_trace(go.Scatter(
            x=[p["nfe"] for p in pts], y=[p["accuracy"] for p in pts], mode="markers", name=esc(name),
            marker=dict(color=colour, symbol=symbol, size=10, line=dict(width=1.5, color=colour)),
            hovertext=[hover(p) for p in pts], hoverinfo="text",
            customdata=[json.dumps(p.get("settings") or {}, sort_keys=True) for p in pts],
        ))
    if front:
        fig.add_trace(go.Scatter(
            x=[p["nfe"] for p in front], y=[p["accuracy"] for p in front], mode="lines", line_shape="hv",
            name="Pareto front", line=dict(color="#222", dash="dash", width=1.5), hoverinfo="skip",
        ))
    fig.update_layout(**layout("pareto", None, TITLE, height,
                               xaxis=dict(title="mean NFE (forwards per prompt)", rangemode="tozero"),
                               yaxis=dict(title="accuracy", tickformat=".0%", range=[-0.05, 1.05])))
    return fit_legend(fig)
