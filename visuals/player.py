"""What the browser player draws, computed once per step: small JSON deltas, a run's header,
and the player's own files (``visuals/player/``). Pure functions of a Trace; no Gradio.

The server decodes and, for every step, sends ``step_delta``: the positions it decoded and
their tokens, the confidence row (one byte per position), the argmax changes since the step
before, the stage, span, horizon numbers, cache hit rates, the status line's numbers and the
explanation as HTML. The browser keeps the run and draws any step from those deltas, so
stepping, scrubbing, playing and switching tabs need no server. The exported HTML is the same
player with every delta inlined.
"""
from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from slowfast.samplers import thresholds_of
from slowfast.samplers.slowfast import SlowFastInfo
from slowfast.trace import tokens_per_second

from .explain import INTRO, explain_step
from .canvas import _is_end, _short
from .view import MASK_GLYPH, STAGE_COLORS, STAGE_LIGHT, VISIBLE_WHITESPACE

PLAYER_DIR = Path(__file__).parent / "player"
PROTOCOL = 1  # bumped when a delta's fields change


def player_files() -> dict[str, str]:
    """The player's JavaScript and CSS, as text (the app serves them inline, the export inlines them)."""
    return {name: (PLAYER_DIR / name).read_text(encoding="utf-8") for name in ("player.js", "player.css")}


def plotly_path() -> Path:
    """Plotly.js as the plotly package ships it (the page serves it; the export inlines it)."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def plotly_bundle() -> str:
    return plotly_path().read_text(encoding="utf-8")


# --- Markdown (the explanation's small subset) to HTML -------------------------------------------
_CODE = re.compile(r"`([^`]*)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])")
_LINK = re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


def _inline(text: str) -> str:
    """Bold, italics, code and links of already-escaped text (``esc`` makes brackets inert, so
    a link can only come from our own sentences, whose brackets arrive as written)."""
    text = _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", text)
    text = _LINK.sub(lambda m: f'<a href="{m.group(2)}" target="_blank" rel="noopener">{m.group(1)}</a>', text)
    text = _BOLD.sub(r"<b>\1</b>", text)
    return _ITALIC.sub(r"<i>\1</i>", text)


def markdown_html(md: str) -> str:
    """The Markdown subset the explanation writes (paragraphs, headings, **bold**, *italics*,
    `code`, links, a ``<details>`` fold) as HTML. Text from a trace reaches the explanation
    through ``esc`` already, so it is not escaped again (escaping happens once)."""
    out = []
    for block in re.split(r"\n\s*\n", md.strip()):
        block = block.strip()
        if not block:
            continue
        if block.startswith("<details") or block.startswith("</details") or block.startswith("<summary"):
            out.append(block if block.endswith(">") else _inline(block))
            continue
        m = _HEADING.match(block)
        if m:
            level = min(len(m.group(1)) + 1, 6)
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        else:
            out.append(f"<p>{_inline(block)}</p>")
    return "\n".join(out)


def explain_html(trace: Any, step: Optional[int]) -> str:
    """The explanation of a step without its heading and the intro fold (the player writes the
    heading, "step k of n", itself and shows the intro once)."""
    md = explain_step(trace, step).split("<details>")[0]
    md = re.sub(r"^#{1,6} [^\n]*\n", "", md.strip())
    return markdown_html(re.sub(r"^NFE \d+ so far[^\n]*\n", "", md.strip()))  # the status line says it


def intro_html() -> str:
    return f"<summary>What is SlowFast?</summary>{markdown_html(INTRO)}"


# --- the run's header ----------------------------------------------------------------------------------
def _layers(trace: Any) -> int:
    for r in trace.records:
        if r.cache:
            return len(r.cache.get("response_reused") or [])
    return 0


def run_head(trace: Any, run_id: str = "") -> dict[str, Any]:
    """What every step of a run shares: lengths, sampler, thresholds, colours, the prompt."""
    settings = trace.settings or {}
    lim = thresholds_of(settings)
    cache = settings.get("cache") or None
    return {
        "v": PROTOCOL, "id": run_id, "model": str(trace.model), "prompt": trace.prompt if isinstance(trace.prompt, str)
        else json.dumps(trace.prompt), "sampler": str(settings.get("sampler", "?")),
        "gen": int(trace.gen_length), "block": int(settings.get("block_length") or trace.gen_length),
        "mask": MASK_GLYPH, "thresholds": [[float(v), str(label)] for v, label in lim.lines()],
        "horizon": lim.horizon, "spread": lim.spread, "spread_label": lim.spread_label,
        "spread_inclusive": bool(lim.spread_inclusive), "stop_entropy": lim.stop_entropy, "cache": None if cache is None else
        {k: cache[k] for k in ("kp", "kr", "rho") if k in cache},
        "colors": {s: [STAGE_COLORS[s], STAGE_LIGHT[s]] for s in STAGE_COLORS}, "intro": intro_html(),
    }


# --- one step ----------------------------------------------------------------------------------------------
def _confidence_bytes(conf: np.ndarray) -> str:
    """A confidence row as two bytes per position (round(65535 c), little-endian), base64: finer
    than the trace's float16, so a colour break at a threshold falls where the number does."""
    q = np.rint(np.clip(np.nan_to_num(conf.astype(np.float64), nan=0.0), 0.0, 1.0) * 65535).astype("<u2")
    return base64.b64encode(q.tobytes()).decode("ascii")


def _round(x: Optional[float], digits: int = 4) -> Optional[float]:
    return None if x is None or not np.isfinite(x) else round(float(x), digits)


def step_delta(trace: Any, i: int, sent_tokens: Optional[set] = None) -> dict[str, Any]:
    """Record ``i`` of ``trace`` as the player's delta. ``sent_tokens``: token ids whose text the
    browser already has (updated here); the delta carries the text of the others it names."""
    records = trace.records
    r = records[i]
    prev = records[i - 1] if i > 0 else None
    argmax = np.asarray(r.argmax, dtype=np.int64)
    changed = (np.arange(len(argmax)) if prev is None
               else np.flatnonzero(argmax != np.asarray(prev.argmax, dtype=np.int64)))
    info = SlowFastInfo.of(r)
    decoded = [int(p) for p in r.decoded]
    d: dict[str, Any] = {
        "i": int(i), "stage": str(r.stage), "block": int(r.block),
        "span": None if r.span is None else [int(r.span[0]), int(r.span[1])],
        "fed_end": int(r.fed_end), "fed": int(r.tokens_fed), "nfe": int(r.nfe), "ms": round(float(r.ms), 2),
        "dec": decoded, "tok": [int(argmax[p]) for p in decoded],
        "conf": _confidence_bytes(np.asarray(r.confidence)),
    }
    if prev is None:  # every position's prediction: two bytes each where every id fits, else four
        if len(argmax) and 0 <= argmax.min() and argmax.max() < 1 << 16:
            d["arg16"] = base64.b64encode(argmax.astype("<u2").tobytes()).decode("ascii")
        else:
            d["arg"] = base64.b64encode(argmax.astype("<i4").tobytes()).decode("ascii")
    else:  # the positions whose prediction changed since the step before, and their new tokens
        d["chg"], d["chg_tok"] = [int(p) for p in changed], [int(argmax[p]) for p in changed]
    if info is not None:
        d["cycle"] = int(info.cycle)
        if info.estimate is not None:
            d["est"] = int(info.estimate)
        if info.frozen is not None:
            d["frozen"] = bool(info.frozen)
    if r.horizons is not None:
        d["hz"] = [int(h) for h in r.horizons]
    if r.horizon_spread is not None:
        d["sp"] = _round(r.horizon_spread)
    if r.cache:
        d["cache"] = _cache_rates(r.cache)
    if r.edited:  # llada2's editing: decoded positions that took a new token at this step
        d["ed"], d["ed_tok"] = [int(p) for p in r.edited], [int(argmax[p]) for p in r.edited]
    eb = r.info or {}
    if "mean_entropy" in eb:  # DiffusionGemma's step: the stopping rule's numbers and the sampler's acceptances
        d["eb"] = {"H": _round(eb["mean_entropy"]), "acc": len(r.accepted or []), "st": bool(eb.get("stable")),
                   "stop": bool(eb.get("stop"))}
    d["line"] = status_numbers(trace, i)
    d["explain"] = explain_html(trace, i)
    d["strs"] = token_strings(trace, [*d["tok"], *d.get("ed_tok", []), *(int(argmax[p]) for p in changed)],
                              sent_tokens)
    return d


def _cache_rates(stats: dict) -> dict[str, Any]:
    """Hit rates of one step: prompt and response rows reused (all layers), the response per layer."""
    def rate(reused: Iterable, recomputed: Iterable) -> Optional[float]:
        a = sum(x or 0 for x in reused)
        b = sum(x or 0 for x in recomputed)
        return None if a + b == 0 else round(a / (a + b), 3)

    pr, pc = stats.get("prompt_reused") or [], stats.get("prompt_recomputed") or []
    rr, rc = stats.get("response_reused") or [], stats.get("response_recomputed") or []
    return {"prompt": rate(pr, pc), "response": rate(rr, rc),
            "layers": [rate([a], [b]) for a, b in zip(rr, rc)]}


def token_strings(trace: Any, ids: Iterable[int], sent: Optional[set] = None) -> dict[str, list]:
    """``[text, cell text, 1 if it ends the text else 0]`` of the token ids not in ``sent`` (which
    then holds them too); the cell shows a special token as one glyph (end of text ∎)."""
    strings = trace.token_strings or {}
    out = {}
    for t in ids:
        t = int(t)
        if sent is not None and t in sent:
            continue
        if sent is not None:
            sent.add(t)
        text = strings.get(str(t))
        text = f"#{t}" if text is None else text
        view = text.translate(VISIBLE_WHITESPACE) if text else "∅"
        out[str(t)] = [text, _short(view) if text.startswith("<") else _short(view), int(_is_end(text))]
    return out


def status_numbers(trace: Any, i: int) -> str:
    """The status line's numbers as of record ``i`` (the player adds the run's state before them)."""
    records = trace.records[: i + 1]
    last = records[-1]
    decoded = sum(len(r.decoded) for r in records)
    seconds = sum(r.ms for r in records) / 1000
    cache = trace.stats.cache_bytes if getattr(trace, "stats", None) is not None else 0
    cache = f" | cache {cache / 2**20:.1f} MiB" if cache else ""
    return (f"step {last.step} ({last.stage}) | NFE {last.nfe} | decoded {decoded}/{trace.gen_length} "
            f"| tokens fed {sum(r.tokens_fed for r in records)} | {seconds:.2f} s | "
            f"{tokens_per_second(decoded, seconds):.1f} tokens/s{cache}")


# --- messages ---------------------------------------------------------------------------------------------
def run_end(trace: Any, note: str = "", verdict: Optional[dict] = None,
            sent_explain: Optional[dict[int, str]] = None) -> dict[str, Any]:
    """The end of a run: its state, final text, the verdict, and every explanation that reads
    differently now that the whole run is known (a live step's explanation cannot know what
    follows it)."""
    s = trace.stats
    state = "finished" if s.finished else "stopped" if s.stopped else "ended" if s.error else "stopped"
    changed = {}
    if sent_explain is not None:
        for i in range(len(trace.records)):
            now = explain_html(trace, i)
            if sent_explain.get(i) != now:
                changed[str(i)] = now
    return {"state": state, "error": s.error or None, "text": trace.text if s.finished else None,
            "note": note, "verdict": verdict, "explain": changed, "n": len(trace.records),
            "final_line": status_numbers(trace, len(trace.records) - 1) if trace.records else ""}


class PlayerStream:
    """One run's messages to the browser player: ``start`` then ``steps`` as records arrive,
    then ``end``. Each message is a JSON string with a sequence number (the page's component
    only notices a value that differs from the last one)."""

    def __init__(self, run_id: str, slot: int = 0, label: str = ""):
        self.run_id, self.slot, self.label = run_id, slot, label
        self.seq = 0
        self.sent = 0  # records sent
        self.tokens: set = set()
        self.explained: dict[int, str] = {}
        self.started = False

    def _message(self, **body: Any) -> dict[str, Any]:
        self.seq += 1
        return {"seq": self.seq, "run": self.run_id, "slot": self.slot, **body}

    def update(self, trace: Any) -> Optional[dict[str, Any]]:
        """The records of ``trace`` not sent yet (None if there are none and the run was announced)."""
        body: dict[str, Any] = {}
        if not self.started:
            body["head"] = dict(run_head(trace, self.run_id), label=self.label)
            self.started = True
        n = len(trace.records)
        if n > self.sent:
            steps = [step_delta(trace, i, self.tokens) for i in range(self.sent, n)]
            for s in steps:
                self.explained[s["i"]] = s["explain"]
            body["steps"] = steps
            self.sent = n
        return self._message(**body) if body else None

    def end(self, trace: Any, note: str = "", verdict: Optional[dict] = None) -> dict[str, Any]:
        message = self.update(trace) or self._message()
        message["end"] = run_end(trace, note, verdict, self.explained)
        return message


def whole_run(trace: Any, run_id: str = "replay", note: str = "", verdict: Optional[dict] = None,
              slot: int = 0, label: str = "") -> dict[str, Any]:
    """A finished (or replayed) trace as one message: its header, every step and its end."""
    stream = PlayerStream(run_id, slot, label)
    return stream.end(trace, note, verdict)


def dumps(message: Any) -> str:
    """A message as the component's value: compact JSON."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def player_html(messages: list[dict], title: str, header_html: str = "", plotly_js: str = "") -> str:
    """A standalone page: the player with ``messages`` inlined, working offline (``plotly_js``:
    Plotly's bundle, inlined; without it the plots say they need it)."""
    files = player_files()
    data = dumps(messages).replace("</", "<\\/")  # cannot end the script element
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
        f"<style>body{{font-family:sans-serif;margin:16px;max-width:1200px}}\n{files['player.css']}</style>"
        + (f"<script>{plotly_js}</script>" if plotly_js else "")
        + f"<script>{files['player.js']}</script></head><body>"
        f"<h1 style='font-size:1.3em'>{html.escape(title)}</h1>{header_html}"
        "<div id='player' class='sfp-host'></div>"
        f"<script>const p = SlowFastPlayer.mount(document.getElementById('player'));"
        f"for (const m of {data}) p.receive(m);</script></body></html>"
    )
