"""Pure functions: Trace -> Plotly figures (and HTML), each as of a step. No Gradio, no model.

Every single-trace function takes ``(trace, step=None)``: ``step`` is a record index,
inclusive (None = the last record), so a scrubber can replay any step; partial traces
and traces without records give a figure with a note rather than an error.
"""
from .canvas import canvas_html, text_at, token_canvas
from .common import esc
from .explain import explain_step
from .compare import FIGURE_TITLES, compare_heatmaps, compare_table, figures_html, run_header
from .figures import argmax_stability, cache_hits, certainty_heatmap, convergence, speed, stage_timeline
from .pareto import pareto_figure
from .view import MASK_GLYPH, TraceView

ALL_FIGURES = {
    "token_canvas": token_canvas,
    "certainty_heatmap": certainty_heatmap,
    "convergence": convergence,
    "stage_timeline": stage_timeline,
    "cache_hits": cache_hits,
    "speed": speed,
}

__all__ = [
    "ALL_FIGURES", "FIGURE_TITLES", "MASK_GLYPH", "run_header", "TraceView", "argmax_stability", "cache_hits", "canvas_html", "certainty_heatmap",
    "compare_heatmaps", "compare_table", "convergence", "esc", "explain_step", "figures_html", "pareto_figure", "speed", "stage_timeline",
    "text_at", "token_canvas",
]
