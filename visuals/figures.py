"""Trace -> Plotly figures of the decoding, each as of a step (the app's scrubber).

Every function takes a Trace and ``step`` (a record index, inclusive; None = the last
record) and returns a figure; partial traces and traces with no records give a figure with
a note instead of an error. The per-step x per-position data is built with numpy and drawn
with one ``go.Heatmap`` per matrix, so a 256 x 256 trace renders in a few tens of ms.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import plotly.graph_objects as go

from slowfast.samplers.slowfast import SlowFastInfo
from slowfast.trace import tokens_per_second as tokens_per_second_of

from .common import (
    MARGIN,
    axis_key,
    grid,
    block_lines,
    confidence_colorscale,
    empty_figure,
    esc,
    figure,
    layout,
    stage_codes,
    stage_colorscale,
    staircase,
)
from .view import TraceView, stage_color

SPAN_START_COLOR, SPAN_END_COLOR = "#222222", "#d62728"
NO_STEPS = "no steps yet: the figure fills in as the run streams"


def _axis_steps(v: TraceView) -> list[float]:
    """The step axis covers the whole trace, so scrubbing does not rescale it."""
    return [-0.5, max(v.n_total, 1) - 0.5]


def step_ticks(n: int) -> dict:
    """Whole-number ticks on a step axis (a one-step run gets "0", not 0.2, 0.4, ...)."""
    return dict(tick0=0, dtick=max(1, int(np.ceil(max(n, 1) / 10))), tickformat="d")


# --- certainty heatmap -----------------------------------------------------------------------------
def certainty_traces(v: TraceView, coloraxis: Optional[str] = None, showlegend: bool = True) -> list:
    """Heatmap of confidence at still-masked positions, decode markers, span staircases, stage strip."""
    G = v.gen_length
    z = v.confidence.copy()
    z[~v.masked_before()] = np.nan  # decoded at an earlier step: blank
    heat = dict(z=z, x=np.arange(G), y=v.steps, hoverongaps=False, name="confidence",
                hovertemplate="position %{x}<br>step %{y}<br>confidence %{z:.3f}<extra></extra>")
    if coloraxis:
        heat["coloraxis"] = coloraxis
    else:
        scale, bar = confidence_colorscale(v.thresholds())
        heat.update(colorscale=scale, colorbar=bar, zmin=0.0, zmax=1.0)
    st, pos = v.decoded_pairs
    traces = [
        go.Heatmap(**heat),
        go.Scatter(x=pos, y=st, mode="markers", name="decoded", showlegend=showlegend, legendgroup="decoded",
                   marker=dict(symbol="x-thin", size=6, line=dict(width=1.5, color="#111")),
                   hovertemplate="decoded position %{x} at step %{y}<extra></extra>"),
    ]
    for col, name, color in ((0, "span start", SPAN_START_COLOR), (1, "span end", SPAN_END_COLOR)):
        level, along = staircase(v.spans[:, col], v.steps, offset=-0.5)  # cell edges sit at p - 0.5
        traces.append(go.Scatter(x=level, y=along, mode="lines", name=name, showlegend=showlegend,
                                 legendgroup=name, line=dict(color=color, width=2), hoverinfo="skip"))
    codes, names = stage_codes(v.stages)
    traces.append(go.Heatmap(
        z=codes[:, None], x=[-2], y=v.steps, zmin=-0.5, zmax=len(names) - 0.5, showscale=False, name="stage",
        colorscale=stage_colorscale(names), hovertext=[[esc(s)] for s in v.stages],
        hovertemplate="step %{y}: %{hovertext}<extra></extra>",
    ))
    for s in dict.fromkeys(v.stages):  # legend entries for the strip's colours
        traces.append(go.Scatter(x=[None], y=[None], mode="markers", name=esc(s), showlegend=showlegend,
                                 legendgroup=f"stage {esc(s)}",
                                 marker=dict(symbol="square", size=10, color=stage_color(s))))
    return traces


def certainty_heatmap(trace: Any, step: Optional[int] = None) -> go.Figure:
    """Steps (y, top to bottom) x positions (x): confidence where still masked, as of ``step``."""
    v = TraceView(trace, step)
    title = f"Certainty of masked positions<br>{v.step_label(esc)}"
    if v.empty:
        return empty_figure("certainty", v, title, NO_STEPS, height=320)
    lo, hi = _axis_steps(v)
    return figure(certainty_traces(v), layout(
        "certainty", v, title, 340,
        xaxis=dict(title=dict(text="position (left strip: stage)"), range=[-3, v.gen_length - 0.5],
                   zeroline=False, showgrid=False),
        yaxis=dict(title=dict(text="step"), range=[hi, lo], zeroline=False, showgrid=False, **step_ticks(v.n_total)),
        shapes=block_lines([e - 0.5 for e in v.block_edges()], "x"),
    ))


# --- stage timeline -----------------------------------------------------------------------------------
def stage_timeline(trace: Any, step: Optional[int] = None) -> go.Figure:
    """Stage bands per step, the span's start and end as staircases, decodes and block boundaries."""
    v = TraceView(trace, step)
    title = f"Stages and span<br>{v.step_label(esc)}"
    if v.empty:
        return empty_figure("timeline", v, title, NO_STEPS, height=300)
    G, stages = v.gen_length, np.array(v.stages, dtype=object)
    data = []
    for s in dict.fromkeys(v.stages):
        idx = v.steps[stages == s]
        data.append(go.Bar(x=idx, y=np.full(idx.size, G), base=0, width=1.0, name=esc(s), opacity=0.25,
                           marker=dict(color=stage_color(s), line=dict(width=0)),
                           hovertemplate=f"step %{{x}}: {esc(s)}<extra></extra>"))
    for col, name, color in ((0, "span start", SPAN_START_COLOR), (1, "span end", SPAN_END_COLOR)):
        level, along = staircase(v.spans[:, col], v.steps)
        data.append(go.Scatter(x=along, y=level, mode="lines", name=name, line=dict(color=color, width=2),
                               hoverinfo="skip"))
    fed = v.per_step("fed_end")
    if (fed < G).any():  # SlowFast's truncated forwards: the canvas they fed
        level, along = staircase(fed, v.steps)
        data.append(go.Scatter(x=along, y=level, mode="lines", name="fed up to", hoverinfo="skip",
                               line=dict(color="#7f7f7f", width=1, dash="dash")))
    infos = [SlowFastInfo.of(r) for r in v.records]
    estimate = np.array([np.nan if i is None or i.estimate is None else i.estimate for i in infos], dtype=float)
    if np.isfinite(estimate).any():
        data.append(go.Scatter(x=v.steps, y=estimate, mode="markers", name="this forward's horizon estimate",
                               marker=dict(symbol="diamond-open", size=6, color="#9467bd"),
                               hovertemplate="step %{x}: horizon estimate %{y}<extra></extra>"))
    st, pos = v.decoded_pairs
    data.append(go.Scatter(x=st, y=pos + 0.5, mode="markers", name="decoded",
                           marker=dict(size=4, color="#111"), customdata=pos,
                           hovertemplate="step %{x}: decoded position %{customdata}<extra></extra>"))
    changes = np.flatnonzero(np.diff(v.blocks)) + 1
    shapes = block_lines(v.block_edges(), "y") + block_lines([c - 0.5 for c in changes], "x")
    return figure(data, layout(
        "timeline", v, title, 300, barmode="overlay", bargap=0, shapes=shapes,
        xaxis=dict(title=dict(text="step"), range=_axis_steps(v), zeroline=False, **step_ticks(v.n_total)),
        yaxis=dict(title=dict(text="position"), range=[0, G], zeroline=False),
    ))


# --- convergence ----------------------------------------------------------------------------------------
def argmax_stability(v: TraceView) -> np.ndarray:
    """Per position: for how many consecutive steps up to this one its argmax is unchanged (>= 1)."""
    A = v.argmax
    if A.shape[0] == 0:
        return np.zeros(v.gen_length, dtype=np.int64)
    same = (A[1:] == A[:-1])[::-1]  # most recent pair first
    return 1 + np.cumprod(same, axis=0).sum(axis=0).astype(np.int64)


def estimates_horizons(v: TraceView) -> bool:
    """Whether the run's sampler estimates a horizon (SlowFast's slow stage): by its settings, or
    by any record of the whole run holding estimates (so scrubbing keeps the same panels)."""
    return v.limits.horizon is not None or any(r.horizons for r in v.trace.records)


CAPTION_PX = 18  # a panel's caption line, above the panel


def caption(text: str, y: float) -> dict:
    """A panel's one-line caption, just above the panel whose top edge is at paper ``y``."""
    return dict(text=text, x=0.0, xref="paper", xanchor="left", xshift=-44, y=y, yref="paper", yanchor="bottom",
                yshift=2, showarrow=False, align="left", font=dict(size=11, color="#444"))


def convergence(trace: Any, step: Optional[int] = None) -> go.Figure:
    """SlowFast: (a) horizon estimates and their spread vs the threshold, span freezes; (b) argmax
    stability. A sampler that estimates no horizon gets (b) alone, captioned with that."""
    v = TraceView(trace, step)
    title = f"Convergence<br>{v.step_label(esc)}"
    if v.empty:
        return empty_figure("convergence", v, title, NO_STEPS, height=360)
    horizons = estimates_horizons(v)
    annotations: list = []
    data: list = []
    if horizons:  # two panels in pixels: (a) 150, the gap for (a)'s axis and (b)'s caption 66, (b) 110
        axes, (a, b) = grid([150, 110], secondary=[True, False], gap=66 / 326, shared_x=False)
        plots_px = 326
        data += _horizon_panel(v, a, axes, annotations)
    else:
        axes, (b,) = grid([1.0], shared_x=False)
        plots_px = 150
        # the panel that does not apply is left out; the title says why
        title = f"Convergence: the {esc(v.sampler)} sampler estimates no horizon<br>{v.step_label(esc)}"
    data += _stability_panel(v, b, axes, annotations, captioned=horizons)
    height = plots_px + MARGIN["t"] + MARGIN["b"] + CAPTION_PX
    fig_layout = layout("convergence", v, title, height, barmode="overlay", bargap=0.1, annotations=annotations, **axes)
    fig_layout["margin"]["t"] += CAPTION_PX  # the top panel's caption sits between the title and the panel
    return figure(data, fig_layout)


def _horizon_panel(v: TraceView, a: dict, axes: dict, annotations: list) -> list:
    """Panel (a): the window's horizon estimates, the span's end, their spread against its
    threshold and the steps the span froze; its caption goes into ``annotations``, its axes into ``axes``."""
    spread_name = v.limits.spread_label
    hx = [i for i, r in enumerate(v.records) if r.horizons for _ in r.horizons]
    hy = [h for r in v.records if r.horizons for h in r.horizons]
    spread = np.array([np.nan if r.horizon_spread is None else r.horizon_spread for r in v.records], dtype=float)
    level, along = staircase(v.spans[:, 1], v.steps)
    data = [
        go.Scatter(x=hx, y=hy, mode="markers", name="the window's horizon estimates", xaxis=a["x"], yaxis=a["y"],
                   marker=dict(size=6, color="#9467bd", opacity=0.7),
                   hovertemplate="step %{x}: horizon %{y}<extra></extra>"),
        go.Scatter(x=along, y=level, mode="lines", name="span end", xaxis=a["x"], yaxis=a["y"],
                   line=dict(color=SPAN_END_COLOR, width=1, dash="dot"), hoverinfo="skip"),
        go.Scatter(x=v.steps, y=spread, mode="lines+markers", name=f"spread ({spread_name})",
                   xaxis=a["x"], yaxis=a["y2"], line=dict(color="#17becf"), marker=dict(size=4),
                   hovertemplate=f"step %{{x}}: {spread_name} %{{y:.3f}}<extra></extra>"),
    ]
    thr = v.limits.spread
    if thr is not None:
        data.append(go.Scatter(x=_axis_steps(v), y=[thr, thr], mode="lines",
                               name=f"{spread_name} threshold {thr:g}",
                               xaxis=a["x"], yaxis=a["y2"], line=dict(color="#17becf", dash="dash", width=1),
                               hoverinfo="skip"))
    if v.freezes:
        fx = [i for i, _ in v.freezes]
        data.append(go.Scatter(
            x=fx, y=v.spans[fx, 1], mode="markers", name="span froze", xaxis=a["x"], yaxis=a["y"],
            marker=dict(symbol="star", size=12, color="#ffbf00", line=dict(width=1, color="#333")),
            text=["converged" if c else "forced (exploration cap)" for _, c in v.freezes],
            hovertemplate="step %{x}: span froze at %{y} (%{text})<extra></extra>"))
    annotations.append(caption(f"(a) horizon estimates in the window, their {spread_name}", a["top"]))
    axes[axis_key(a["x"])].update(range=_axis_steps(v), title=dict(text="step", standoff=2),
                                  **step_ticks(v.n_total))
    axes[axis_key(a["y"])].update(title=dict(text="horizon"), rangemode="tozero")
    axes[axis_key(a["y2"])].update(title=dict(text=spread_name), rangemode="tozero")
    return data


def _stability_panel(v: TraceView, b: dict, axes: dict, annotations: list, captioned: bool) -> list:
    """Panel (b): how many steps each masked position's argmax has held, the positions decoded
    now and earlier; its caption (lettered when ``captioned``: below panel (a)) goes into
    ``annotations``, its axes into ``axes``."""
    G = v.gen_length
    count = argmax_stability(v).astype(float)
    da, last = v.decoded_at, v.last
    positions = np.arange(G)
    earlier = (da >= 0) & (da < last)
    data = [
        go.Bar(x=positions, y=np.where(da < 0, count, np.nan), name="masked", xaxis=b["x"], yaxis=b["y"],
               marker=dict(color="#1f77b4", line=dict(width=0)),
               hovertemplate="position %{x}: unchanged %{y} steps<extra></extra>"),
        go.Bar(x=positions, y=np.where(da == last, count, np.nan), name="decoded this step", xaxis=b["x"],
               yaxis=b["y"], marker=dict(color="#ff7f0e", line=dict(width=0)),
               hovertemplate="position %{x} (decoded now): unchanged %{y} steps<extra></extra>"),
        go.Scatter(x=positions[earlier], y=np.zeros(int(earlier.sum())), mode="markers", name="decoded earlier",
                   xaxis=b["x"], yaxis=b["y"], marker=dict(symbol="square", size=4, color="#bbbbbb"),
                   customdata=da[earlier], hovertemplate="position %{x}: decoded at step %{customdata}<extra></extra>"),
    ]
    what = ("every position is decoded: no argmax left to watch" if not (da < 0).any()
            else "steps each masked position's argmax has held")
    annotations.append(caption(f"(b) {what}" if captioned else what, b["top"]))
    top = max(float(count[(da < 0) | (da == last)].max(initial=0)), 1.0)  # the highest bar drawn
    axes[axis_key(b["x"])].update(range=[-0.5, G - 0.5], title=dict(text="position", standoff=2))
    axes[axis_key(b["y"])].update(title=dict(text="steps"), range=[0, top * 1.05], tick0=0,
                                  dtick=max(1, int(np.ceil(top / 4))), tickformat="d")
    return data


# --- dLLM-Cache -----------------------------------------------------------------------------------------
CACHE_KEYS = ("prompt_recomputed", "prompt_reused", "response_recomputed", "response_reused")


def cache_counts(v: TraceView) -> Optional[dict[str, np.ndarray]]:
    """Per key, rows as a float [steps, layers] matrix (NaN for steps without statistics); None: no cache."""
    stats = [r.cache for r in v.records]
    layers = max((len(c.get("response_reused") or []) for c in stats if c), default=0)
    if layers == 0:
        return None
    out = {k: np.full((v.n, layers), np.nan) for k in CACHE_KEYS}
    for i, c in enumerate(stats):
        if not c:
            continue
        for k in CACHE_KEYS:
            vals = [np.nan if x is None else x for x in (c.get(k) or [])]
            out[k][i, : len(vals)] = vals
    return out


def hit_rate(reused: np.ndarray, recomputed: np.ndarray, axis: Optional[int] = None) -> np.ndarray:
    """reused / (reused + recomputed), summed over ``axis`` first; NaN where no rows."""
    if axis is not None:
        missing = np.isnan(reused).all(axis=axis)
        reused, recomputed = np.nansum(reused, axis=axis), np.nansum(recomputed, axis=axis)
    else:
        missing = np.isnan(reused)
    total = reused + recomputed
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(total > 0, reused / np.where(total > 0, total, 1), np.nan)
    return np.where(missing, np.nan, rate)


def cache_hits(trace: Any, step: Optional[int] = None) -> go.Figure:
    """Rows reused per step (prompt, response), the response hit rate per layer, FLOPs per step."""
    v = TraceView(trace, step)
    title = f"dLLM-Cache<br>{v.step_label(esc)}"
    if v.empty:
        return empty_figure("cache", v, title, NO_STEPS, height=300)
    flops = v.per_step("flops")
    counts = cache_counts(v)
    flops_bar = go.Bar(x=v.steps, y=flops, name="FLOPs", marker=dict(color="#8c564b", line=dict(width=0)),
                       hovertemplate="step %{x}: %{y:.3s} FLOPs<extra></extra>")
    if counts is None:
        return figure([flops_bar], layout(
            "cache", v, f"dLLM-Cache: cache off: every forward computes every row<br>{v.step_label(esc)}", 260,
            xaxis=dict(title=dict(text="step"), range=_axis_steps(v), **step_ticks(v.n_total)),
            yaxis=dict(title=dict(text="FLOPs per step"), rangemode="tozero"),
        ))
    prompt = hit_rate(counts["prompt_reused"], counts["prompt_recomputed"], axis=1)
    response = hit_rate(counts["response_reused"], counts["response_recomputed"], axis=1)
    per_layer = hit_rate(counts["response_reused"], counts["response_recomputed"]).T  # [layers, steps]
    total_p = hit_rate(counts["prompt_reused"].ravel(), counts["prompt_recomputed"].ravel(), axis=0)
    total_r = hit_rate(counts["response_reused"].ravel(), counts["response_recomputed"].ravel(), axis=0)
    cs = v.settings.get("cache") or {}
    params = " · ".join(f"{k} {esc(cs[k])}" for k in ("kp", "kr", "rho") if k in cs)
    axes, (a, b, c) = grid([0.3, 0.42, 0.28], gap=0.07)
    flops_bar.update(xaxis=c["x"], yaxis=c["y"])
    data = [
        go.Scatter(x=v.steps, y=prompt, mode="lines+markers", name="prompt rows reused", xaxis=a["x"], yaxis=a["y"],
                   line=dict(color="#1f77b4"), marker=dict(size=4),
                   hovertemplate="step %{x}: prompt hit rate %{y:.0%}<extra></extra>"),
        go.Scatter(x=v.steps, y=response, mode="lines+markers", name="response rows reused", xaxis=a["x"],
                   yaxis=a["y"], line=dict(color="#2ca02c"), marker=dict(size=4),
                   hovertemplate="step %{x}: response hit rate %{y:.0%}<extra></extra>"),
        go.Heatmap(z=per_layer, x=v.steps, y=np.arange(per_layer.shape[0]), zmin=0, zmax=1, xaxis=b["x"],
                   yaxis=b["y"], colorscale="Greens", name="response hit rate", hoverongaps=False,
                   colorbar=dict(title=dict(text="reused", side="right"), len=0.4, y=0.5, thickness=10),
                   hovertemplate="step %{x}, layer %{y}: %{z:.0%} response rows reused<extra></extra>"),
        flops_bar,
    ]
    for ref in (a, b, c):
        axes[axis_key(ref["x"])].update(range=_axis_steps(v))
    axes[axis_key(c["x"])].update(title=dict(text="step"), **step_ticks(v.n_total))
    axes[axis_key(a["y"])].update(title=dict(text="hit rate"), range=[0, 1.05])
    axes[axis_key(b["y"])].update(title=dict(text="layer"), **({"dtick": 1} if per_layer.shape[0] <= 12 else {}))
    axes[axis_key(c["y"])].update(title=dict(text="FLOPs"), rangemode="tozero")
    title = (f"dLLM-Cache ({params})<br>rows reused so far: prompt {total_p:.0%}, response {total_r:.0%}"
             f"<br>{v.step_label(esc)}")
    return figure(data, layout("cache", v, title, 400, **axes))


# --- speed ------------------------------------------------------------------------------------------------
def tokens_per_second(v: TraceView) -> tuple[float, str]:
    """The run's tokens/s from the summary when it finished, else from the records so far."""
    s = v.trace.stats
    if v.is_last and s.finished and s.tokens_per_second:
        return float(s.tokens_per_second), "run"
    seconds = float(v.per_step("ms").sum()) / 1000.0
    decoded = int((v.decoded_at >= 0).sum())
    return tokens_per_second_of(decoded, seconds), "so far"


def speed(trace: Any, step: Optional[int] = None) -> go.Figure:
    """Tokens decoded per step and cumulative NFE; tokens fed and wall ms per step."""
    v = TraceView(trace, step)
    if v.empty:
        return empty_figure("speed", v, "Speed · no steps yet", NO_STEPS, height=300)
    decoded = np.array([len(r.decoded) for r in v.records])
    nfe, fed, ms = v.per_step("nfe"), v.per_step("tokens_fed"), v.per_step("ms")
    tps, source = tokens_per_second(v)
    axes, (a, b) = grid([0.5, 0.5], secondary=[True, True], gap=0.1)
    data = [
        go.Bar(x=v.steps, y=decoded, name="tokens decoded", xaxis=a["x"], yaxis=a["y"],
               marker=dict(color="#2ca02c", line=dict(width=0)),
               hovertemplate="step %{x}: %{y} tokens decoded<extra></extra>"),
        go.Scatter(x=v.steps, y=nfe, mode="lines", name="cumulative NFE", xaxis=a["x"], yaxis=a["y2"],
                   line=dict(color="#d62728"), hovertemplate="step %{x}: NFE %{y}<extra></extra>"),
        go.Bar(x=v.steps, y=fed, name="tokens fed", xaxis=b["x"], yaxis=b["y"],
               marker=dict(color="#1f77b4", line=dict(width=0)),
               hovertemplate="step %{x}: %{y} tokens fed<extra></extra>"),
        go.Scatter(x=v.steps, y=ms, mode="lines", name="wall ms", xaxis=b["x"], yaxis=b["y2"],
                   line=dict(color="#ff7f0e"), hovertemplate="step %{x}: %{y:.1f} ms<extra></extra>"),
    ]
    r = v.record
    title = (f"Speed · {tps:.1f} tokens/s ({source}) · NFE {r.nfe}<br>forwards {r.forwards}"
             f" · {ms.sum() / 1000:.3f} s of steps<br>{v.step_label(esc)}")
    for ref in (a, b):
        axes[axis_key(ref["x"])].update(range=_axis_steps(v))
    axes[axis_key(b["x"])].update(title=dict(text="step"), **step_ticks(v.n_total))
    for key, text in ((a["y"], "decoded"), (a["y2"], "NFE"), (b["y"], "fed"), (b["y2"], "ms")):
        axes[axis_key(key)].update(title=dict(text=text), rangemode="tozero")
    return figure(data, layout("speed", v, title, 340, bargap=0.15, **axes))
