"""``bench gpu``'s profile (how many forwards of which length a run makes) and the projection
from measured per-forward times, labelled as one."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

from ...cache import CacheSettings
from .shapes import CASE_NAMES, PROJECTION_LABEL
from .timing import cache_case, interpolate


DEFAULT_PROFILE_SOURCE = (
    "The paper's GSM8K setting: gen_length = block_length (one block), and the baseline at steps = gen_length "
    "(one token per forward: gen_length full forwards). SlowFast's forwards are an assumed cycle shape, since the "
    "paper reports times, not forward counts: 8 cycles, each 6 exploration forwards (full; the reference code runs "
    "all 6), one full fast-stage forward, then 3 fast-stage forwards truncated at the span end, k/8 of the "
    "generation in cycle k: 80 forwards, a 3.20x NFE reduction at gen 256 (the paper's measured GSM8K time "
    "speedup, RTX 4090; docs/algorithms.md section 2). SlowFast + cache: the same forwards under the cache "
    "schedule. Pass --profile with a trace of a real run to replace the assumption.")


def default_profile() -> dict[str, Any]:
    """The default NFE / tokens-fed profile (``DEFAULT_PROFILE_SOURCE``), per forward as the
    fraction of the generation it feeds."""
    slowfast: list[float] = []
    for k in range(1, 9):
        slowfast += [1.0] * 7 + [k / 8] * 3
    return {"name": "default: the paper's GSM8K setting, an assumed SlowFast cycle shape",
            "source": DEFAULT_PROFILE_SOURCE, "baseline": None,  # gen_length full forwards at every length
            "slowfast": slowfast, "slowfast_cache": None}  # None: the slowfast forwards


def load_profile(path: str) -> dict[str, Any]:
    """A profile from ``path``: a trace file (``Trace.save``'s format: its records' ``fed_end``
    per forward), or a JSON object with ``baseline`` / ``slowfast`` / ``slowfast_cache`` each
    either a list of fractions of the generation fed per forward, or a summary ``{"nfe",
    "tokens_fed", "prompt_length", "gen_length"}`` (then every forward is taken to feed the
    mean)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--profile: {path} cannot be read as JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"--profile: {path} holds no JSON object")
    if raw.get("format") == "slowfast-trace" or "records" in raw:
        return profile_from_trace(raw, path)
    profile: dict[str, Any] = {"name": str(raw.get("name", Path(path).name)),
                               "source": str(raw.get("source", f"--profile {path}")),
                               "baseline": None, "slowfast": None, "slowfast_cache": None}
    for key in ("baseline", "slowfast", "slowfast_cache"):
        if raw.get(key) is not None:
            profile[key] = fractions_of(raw[key], f"--profile {path}: {key}")
    if profile["slowfast"] is None:
        raise ValueError(f"--profile {path}: needs \"slowfast\" (fractions fed per forward, or a summary)")
    return profile


def fractions_of(value: Any, where: str) -> list[float]:
    if isinstance(value, list):
        if not value or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1
                                for v in value):
            raise ValueError(f"{where}: a list of fractions in (0, 1] per forward is expected")
        return [float(v) for v in value]
    if isinstance(value, dict):
        try:
            nfe, fed = int(value["nfe"]), float(value["tokens_fed"])
            P0, G0 = int(value["prompt_length"]), int(value["gen_length"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{where}: a summary needs nfe, tokens_fed, prompt_length and gen_length") from None
        if nfe < 1 or G0 < 1 or P0 < 0:
            raise ValueError(f"{where}: nfe and gen_length must be >= 1, prompt_length >= 0")
        mean = min(max((fed / nfe - P0) / G0, 1.0 / G0), 1.0)
        return [mean] * nfe
    raise ValueError(f"{where}: a list of fractions or a summary object is expected")


def profile_from_trace(raw: dict[str, Any], path: str) -> dict[str, Any]:
    try:
        G0 = int(raw["settings"]["gen_length"])
        fed = [int(r["fed_end"]) for r in raw["records"]]
        sampler = str(raw["settings"].get("sampler", "?"))
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"--profile {path}: a trace needs settings.gen_length and records[].fed_end") from None
    if G0 < 1 or not fed or not all(0 < f <= G0 for f in fed):
        raise ValueError(f"--profile {path}: fed_end must be 1..gen_length in every record")
    fractions = [f / G0 for f in fed]
    name = f"trace {Path(path).name} ({sampler}, gen {G0}, {len(fed)} forwards)"
    profile = {"name": name, "source": f"--profile {path}: each record's fed_end / gen_length, in order",
               "baseline": None, "slowfast": fractions, "slowfast_cache": None}
    if sampler == "baseline":
        profile["baseline"] = fractions
    return profile


def project(G: int, P: int, fractions: Sequence[float], cached: bool, settings: CacheSettings,
            uncached_points: Sequence[tuple[int, float]],
            cached_points: dict[str, Sequence[tuple[int, float]]], notes: list[str]) -> dict[str, Any]:
    """Projected time of one generation: the sum over its forwards (in order, for the cache
    schedule) of the measured ms of that forward's kind at its extent (interpolated)."""
    groups: dict[tuple[str, Optional[str], int], dict[str, Any]] = {}
    total_ms, fed = 0.0, 0
    for i, frac in enumerate(fractions, 1):
        extent = min(max(int(round(frac * G)), 1), G)
        if cached:
            case = cache_case(settings, i)
            use = case if cached_points.get(case) else "both"
            if use != case:
                note = f"gen {G}: {CASE_NAMES[case]} forwards were not measured; counted at the both-refresh time"
                if note not in notes:
                    notes.append(note)
            ms = interpolate(cached_points[use], extent)
            key = ("cached", case, extent)
        else:
            ms = interpolate(uncached_points, extent)
            key = ("full" if extent == G else "truncated", None, extent)
        g = groups.setdefault(key, {"kind": key[0], "case": key[1], "extent": extent, "tokens_fed": P + extent,
                                    "count": 0, "ms": ms})
        g["count"] += 1
        total_ms += ms
        fed += P + extent
    return {"nfe": len(fractions), "tokens_fed": fed, "ms": total_ms, "seconds": total_ms / 1000.0,
            "tokens_per_s": G / (total_ms / 1000.0) if total_ms > 0 else None, "forwards": list(groups.values())}


def projections(G: int, P: int, profile: dict[str, Any], settings: CacheSettings, length: dict[str, Any],
                anchor_tps: Optional[float], notes: list[str]) -> dict[str, Any]:
    uncached_points = [(e["extent"], e["ms"]) for e in length["extents"]["no_cache"]]
    cached_points: dict[str, list[tuple[int, float]]] = {}
    for e in length["extents"]["cache"]:
        for case, entry in e.items():
            cached_points.setdefault(case, []).append((entry["extent"], entry["ms"]))
    sf = profile["slowfast"]
    configs = [("baseline", profile["baseline"] or [1.0] * G, False),
               ("slowfast", sf, False),
               ("slowfast + cache", profile["slowfast_cache"] or sf, True)]
    out: dict[str, Any] = {"label": PROJECTION_LABEL, "gen_length": G, "prompt_length": P, "configs": []}
    if not cached_points:
        configs = configs[:2]
        notes.append(f"gen {G}: no cached forwards measured; SlowFast + cache not projected")
    for name, fractions, cached in configs:
        p = project(G, P, fractions, cached, settings, uncached_points, cached_points, notes)
        p["config"] = name
        out["configs"].append(p)
    base = out["configs"][0]["tokens_per_s"]
    for p in out["configs"]:
        p["x_baseline"] = p["tokens_per_s"] / base if base and p["tokens_per_s"] else None
        p["x_anchor"] = p["tokens_per_s"] / anchor_tps if anchor_tps and p["tokens_per_s"] else None
    return out


