"""``bench gpu``'s measurements of our transformer: the forwards of one generation length
(uncached, dLLM-Cache in schedule order, a CUDA graph replay) and torch.compile of its blocks."""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch

from ...cache import CacheSettings, FeatureCache
from ...models.transformer import Transformer
from .shapes import CASE_NAMES, CASES
from .timing import Clock, cache_case, free_memory, median


class LengthBench:
    """The forwards of one generation length G after a P-token prompt, on one canvas."""

    def __init__(self, net: Transformer, device: torch.device, P: int, G: int, repeats: int, warmup: int,
                 settings: CacheSettings, seed: int):
        self.net, self.device, self.P, self.G = net, device, P, G
        self.repeats, self.warmup, self.settings = repeats, warmup, settings
        cfg = net.cfg
        gen = torch.Generator(device="cpu").manual_seed(seed + G)
        mask = cfg.mask_token_id if 0 <= cfg.mask_token_id < cfg.vocab_size else cfg.vocab_size - 1
        prompt = torch.randint(0, cfg.vocab_size, (1, P), generator=gen)
        self.canvas = torch.cat([prompt, torch.full((1, G), mask, dtype=torch.long)], dim=1).to(device)
        self.clock = Clock(device)

    def tokens(self, extent: int) -> torch.Tensor:
        return self.canvas[:, : self.P + extent]

    def flops(self, extent: int, cache: Optional[FeatureCache] = None) -> Optional[float]:
        try:
            return float(self.net.forward_flops(1, self.P + extent, cache, logits_from=self.P))
        except Exception:  # noqa: BLE001 - a reporting extra; the timing stands without it
            return None

    @torch.inference_mode()
    def uncached(self, extent: int, forward: Optional[Callable] = None) -> dict[str, Any]:
        """Median ms of the uncached forward over P + ``extent`` tokens (``forward``: another
        callable of (tokens) -> logits, e.g. a compiled one)."""
        x = self.tokens(extent)
        call = forward or (lambda t: self.net(t, logits_from=self.P))
        for _ in range(self.warmup):
            self.clock.time(lambda: call(x))
        self.clock.read()
        for _ in range(self.repeats):
            self.clock.time(lambda: call(x))
        ms = self.clock.read()
        return {"extent": extent, "tokens_fed": self.P + extent, "ms": median(ms), "ms_all": ms,
                "flops": self.flops(extent)}

    @torch.inference_mode()
    def cached(self, extent: int) -> dict[str, Any]:
        """dLLM-Cache forwards in schedule order: the first forward full (it fills the cache),
        then forwards over P + ``extent`` tokens, each timed and classified by the case the
        schedule gives it; a warm-up sequence first. The both-refresh case is also timed as the
        first forward of fresh caches at this extent. Returns per case the median ms."""
        s, P, G, L = self.settings, self.P, self.G, self.net.cfg.n_layers
        wanted = max(self.repeats, 1)
        per_round = max(s.kr - 1, 1)  # V-verify forwards per K_r forwards
        n = 1 + s.kr * max(1, math.ceil(wanted / per_round)) if s.kr > 1 else 1 + wanted
        times: dict[str, list[float]] = {}
        rows: dict[str, float] = {}
        flops: dict[str, Optional[float]] = {}
        for timed in (False, True):
            cache = FeatureCache(s, P, G, L)
            count = n if timed else min(n, 1 + 2 * s.kr)
            cases = []
            for f in range(1, count + 1):
                cache.begin_forward()
                x = self.tokens(G if f == 1 else extent)
                self.clock.time(lambda: self.net(x, cache=cache, logits_from=P))
                cases.append(cache_case(s, f))
                if timed and f > 1 and cases[-1] not in rows:
                    rows[cases[-1]] = recomputed_share(cache, P + extent)
                    flops[cases[-1]] = self.flops(extent, cache)
            ms = self.clock.read()
            if timed:
                for case, m in list(zip(cases, ms))[1:]:
                    times.setdefault(case, []).append(m)
            clear(cache)
        both = []
        for i in range(self.warmup + wanted):  # fresh caches: their first forward refreshes everything
            cache = FeatureCache(s, P, G, L)
            cache.begin_forward()
            x = self.tokens(extent)
            self.clock.time(lambda: self.net(x, cache=cache, logits_from=P))
            if i == 0:
                rows["both"] = recomputed_share(cache, P + extent)
                flops["both"] = self.flops(extent, cache)
            both.append(self.clock.read()[0])
            clear(cache)
        times["both"] = both[self.warmup:]
        out = {}
        for case in CASES:
            if case in times:
                out[case] = {"case": CASE_NAMES[case], "extent": extent, "tokens_fed": P + extent,
                             "ms": median(times[case]), "ms_all": times[case], "samples": len(times[case]),
                             "rows_recomputed": rows.get(case), "flops": flops.get(case)}
        return out

    @torch.inference_mode()
    def cuda_graph(self, extent: int) -> dict[str, Any]:
        """The uncached forward captured once as a CUDA graph and replayed (static shapes)."""
        x = self.tokens(extent).clone()
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self.net(x, logits_from=self.P)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.net(x, logits_from=self.P)
        try:
            return self.uncached(extent, forward=lambda _t: graph.replay())
        finally:
            graph.reset()  # the graph's memory goes back before the next capture
            free_memory(self.device)


COMPILE_METHOD = ("torch.compile of each transformer block (regional compilation, inductor's default mode, "
                  "dynamic=False: one compiled graph per input shape serves all the identical blocks); the "
                  "embedding and the output head stay eager, the cached path (run_block) is not compiled")


def compile_blocks(net: Transformer) -> None:
    """Compile every block in place (``nn.Module.compile``); raises dynamo's recompile limit so
    that each timed shape gets its own graph instead of a silent fallback to eager."""
    try:
        import torch._dynamo  # here: only --compile loads dynamo

        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, max(int(getattr(torch._dynamo.config, name)), 64))
    except Exception:  # noqa: BLE001 - only a limit; compilation works without it
        pass
    for block in net.transformer["blocks"]:
        block.compile(dynamic=False)


def recomputed_share(cache: FeatureCache, rows: int) -> Optional[float]:
    """Share of (rows x layers) recomputed in the cache's last forward, from its stats if it has them."""
    stats = getattr(cache, "last_stats", None) or []
    try:
        done = sum(s.prompt_recomputed + s.response_recomputed for s in stats)
        return done / (rows * len(stats)) if stats else None
    except AttributeError:
        return None


def clear(cache: FeatureCache) -> None:
    if hasattr(cache, "clear"):
        cache.clear()


def rate(entry: dict[str, Any], peak: Optional[float]) -> None:
    """Adds achieved TFLOP/s (and MFU against ``peak``) to a timing entry."""
    if entry.get("flops") and entry.get("ms"):
        per_s = entry["flops"] / (entry["ms"] / 1000.0)
        entry["tflops_per_s"] = per_s / 1e12
        entry["mfu"] = per_s / peak if peak else None


def extents_for(G: int, span: int) -> list[int]:
    """Extents timed without the cache (for interpolation): the span, G/8, G/4, G/2, 3G/4, G."""
    return sorted({e for e in (span, G // 8, G // 4, G // 2, 3 * G // 4, G) if 1 <= e <= G})


def cached_extents_for(G: int, span: int) -> list[int]:
    return sorted({e for e in (span, G // 2, G) if 1 <= e <= G})


