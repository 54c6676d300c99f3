"""``bench gpu``'s report in Markdown."""
from __future__ import annotations

from typing import Any, Optional

from .run import machine_text
from .shapes import CASE_NAMES, CASES
from .timing import count_text


def fmt(value: Optional[float], spec: str = ".2f", none: str = "n/a") -> str:
    return none if value is None else format(value, spec)


def header(res: dict[str, Any]) -> list[str]:
    s, m, peak = res["settings"], res["model"], res["peak_flops"]
    cfg, cache = m["config"], s["cache"]
    return [f"## GPU benchmark: {res['gpu'] or s['device']}", "", f"`{res['command']}`", "",
            f"Machine: {machine_text(res['machine'])}.", "",
            f"Model: {m['name']} ({m['config_source']}): d_model {cfg['d_model']}, {cfg['n_layers']} layers, "
            f"{cfg['n_heads']} heads ({cfg['n_kv_heads'] or cfg['n_heads']} KV), MLP {cfg['mlp_hidden_size']}, vocab "
            f"{cfg['vocab_size']}, RoPE theta {cfg['rope_theta']:g}; {count_text(m.get('parameters', 0))} "
            f"parameters in {s['dtype']} on {s['device']}. Prompt {s['prompt_length']} tokens; the truncated "
            f"fast-stage forward feeds the prompt and the first {s['span']} generated positions (the span end); "
            f"the cache runs K_p {cache['kp']}, K_r {cache['kr']}, rho {cache['rho']} in schedule order. "
            f"{s['timer']}; {s['warmup']} warm-up forwards, then the median of {s['repeats']}.", "",
            f"FLOPs: {res['flops_method']}. Peak: {peak['source']}"
            + (f" = {peak['value'] / 1e12:.1f} TFLOP/s." if peak["value"] else "."), ""]


def length_section(length: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """One generation length's per-forward times: the table, then the times by extent."""
    G = length["gen_length"]
    f = length["forwards"]
    full_ms = f["full"]["ms"]
    lines = [f"### Per-forward times, gen {G} after {length['prompt_length']} prompt tokens", "",
             "| forward | tokens fed | ms | TFLOP/s | MFU | x full |", "|---|---|---|---|---|---|"]
    rows = [("full", f["full"]), (f"truncated fast stage (span end {length['span']})", f["truncated"])]
    for case in CASES:
        entry = f["cached_cases"].get(case)
        if entry:
            rows.append((f"cached: {entry['case']} ({entry['samples']} timed"
                         + (f", {entry['rows_recomputed']:.3f} of rows recomputed" if entry.get("rows_recomputed")
                            is not None else "") + ")", entry))
    for name, e in rows:
        lines.append(f"| {name} | {e['tokens_fed']} | {e['ms']:.2f} | {fmt(e.get('tflops_per_s'), '.3g')} | "
                     f"{fmt(e.get('mfu'), '.1%')} | {e['ms'] / full_ms:.3f} |")
    nc = ", ".join(f"{e['extent']}: {e['ms']:.2f}" for e in length["extents"]["no_cache"])
    lines += ["", f"Uncached ms by generated positions fed: {nc}."]
    for row in length["extents"]["cache"]:
        ext = next(iter(row.values()))["extent"]
        lines.append(f"Cached ms at {ext} positions fed: "
                     + ", ".join(f"{CASE_NAMES[c]} {row[c]['ms']:.2f}" for c in CASES if c in row) + ".")
    return lines + variants_section(length, G, settings)


def variants_section(length: dict[str, Any], G: int, settings: dict[str, Any]) -> list[str]:
    """The uncached forward's CUDA graph and compiled times against eager, when measured."""
    v = length["variants"]
    lines: list[str] = []
    if v.get("speedup"):
        lines += ["", "| uncached forward | eager ms | " + " | ".join(f"{n} ms (x eager)" for n in v["speedup"])
                  + " |", "|---|---|" + "---|" * len(v["speedup"])]
        for e in sorted(v["eager"], reverse=True):
            cells = [f"{v[n][e]:.2f} ({v['speedup'][n][e]:.3f}x)" if e in v[n] else "skipped" for n in v["speedup"]]
            lines.append(f"| {'full' if e == G else 'truncated'} ({length['prompt_length'] + e} tokens) | "
                         f"{v['eager'][e]:.2f} | " + " | ".join(cells) + " |")
        if v.get("compile_seconds"):
            lines.append("")
            lines.append(f"{settings.get('compile_method', 'torch.compile')}. First call (compilation): " + ", ".join(
                f"{e} positions {sec:.1f} s" for e, sec in v["compile_seconds"].items()) + ".")
    return lines + [""]


def anchor_section(a: dict[str, Any]) -> list[str]:
    lines = ["### Autoregressive anchor", "",
             f"{a['model']} ({a['config_source']}): hidden {a['config']['hidden_size']}, "
             f"{a['config']['num_hidden_layers']} layers, {a['config']['num_attention_heads']} heads "
             f"({a['config']['num_key_value_heads']} KV), intermediate {a['config']['intermediate_size']}, vocab "
             f"{a['config']['vocab_size']}, RoPE theta {fmt(a['rope_theta'], 'g')}; {count_text(a['parameters'])} "
             f"parameters, random weights, transformers {a['transformers']} ({a['attention']} attention). "
             f"`generate`, greedy, {a['new_tokens']} new tokens (min = max) after {a['prompt_length']} prompt "
             f"tokens; wall time with a synchronisation before and after, median after a warm-up.", "",
             "| variant | s per generation | tok/s (prefill included) | prefill ms | decode tok/s |",
             "|---|---|---|---|---|"]
    for v in a["variants"]:
        lines.append(f"| {v['name']} | {v['seconds']:.3f} | {v['tokens_per_s']:.1f} | {v['prefill_ms']:.1f} | "
                     f"{fmt(v['decode_tokens_per_s'], '.1f')} |")
    return lines + [""]


def projection_section(res: dict[str, Any]) -> list[str]:
    a, p = res["anchor"], res["profile"]
    source = p["source"].rstrip()
    source += "" if source.endswith((".", "!", "?")) else "."  # a trace's or a file's source has no full stop
    lines = ["### Projection from measured per-forward times (not a measured generation)", "",
             f"Profile: {p['name']}. {source} {p['interpolation'].capitalize()}. Tokens/s = gen_length / "
             "(sum over the profile's forwards of the measured ms of that forward's kind and length); "
             + (f"x anchor: against the anchor's eager tok/s above ({a['new_tokens']} new tokens at every gen "
                f"length)." if a and a.get("tokens_per_s") else "x anchor: n/a (no anchor in this run)."), "",
             "| gen | config | NFE | tokens fed | projected s | projected tok/s | x baseline | x anchor |",
             "|---|---|---|---|---|---|---|---|"]
    for proj in res["projections"]:
        for c in proj["configs"]:
            lines.append(f"| {proj['gen_length']} | {c['config']} | {c['nfe']} | {c['tokens_fed']} | "
                         f"{c['seconds']:.3f} | {fmt(c['tokens_per_s'], '.1f')} | {fmt(c['x_baseline'], '.2f')} | "
                         f"{fmt(c['x_anchor'], '.2f')} |")
    return lines


def markdown(res: dict[str, Any]) -> str:
    lines = header(res)
    for length in res["lengths"]:
        lines += length_section(length, res["settings"])
    if res["anchor"]:
        lines += anchor_section(res["anchor"])
    lines += projection_section(res)
    if res["notes"]:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in res["notes"]]
    lines += ["", f"Whole run: {res['elapsed_seconds']:.0f} s in one process."]
    return "\n".join(lines) + "\n"
