"""Canonical traces of many configurations, for checking that a refactor changed nothing.

    python -m slowfast.snapshot before.json            # on the old code
    python -m slowfast.snapshot after.json --against before.json   # on the new code

Every sampler (and SlowFast's variants), with and without dLLM-Cache, classifier-free
guidance and sampling at temperature > 0, on the embedded model and on tiny random
checkpoints in the LLaDA, Dream and masked-LM layouts (written to a temporary folder). Each
trace is kept as the JSON a trace file holds, key order included, with the timings
(``ms``, ``seconds``, ``tokens_per_second``) removed and the model named by its label; ``--against`` lists the configurations
whose traces differ and exits 1 if any does. A configuration a model refuses keeps its error
message instead.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..engine import GenerationSettings, generate
from ..models.loading import load_model
from ..models.tiny import write_tiny_checkpoint, write_tiny_dream_checkpoint, write_tiny_masked_lm
from .common import check_output_path, run

TIMING = {"ms", "seconds", "tokens_per_second"}
PROMPTS = {"embedded": "Q: 5+6-9+7-3+2+2=? A:", "tiny": "Hello there", "dream": "Hello there", "masked-lm": "Hello there"}
CONFIGS = [
    dict(sampler="baseline", gen_length=64, block_length=32, steps=64),
    dict(sampler="baseline", gen_length=64, block_length=32, steps=16, temperature=0.7, seed=3),
    dict(sampler="threshold", gen_length=64, block_length=32),
    dict(sampler="slowfast", gen_length=64, block_length=64),
    dict(sampler="slowfast", gen_length=96, block_length=32, params={"variant": "paper"}),
    dict(sampler="slowfast", gen_length=64, block_length=64, cache={}),
    dict(sampler="threshold", gen_length=64, block_length=32, cache={}),
    dict(sampler="baseline", gen_length=32, block_length=32, steps=32, cache={"kp": 3, "kr": 2, "rho": 0.5}),
    dict(sampler="baseline", gen_length=32, block_length=16, steps=32, cfg_scale=1.0),
    dict(sampler="slowfast", gen_length=64, block_length=64, params={"stop_when_full": True}),
]
DREAM_CONFIGS = [
    dict(sampler="dream", gen_length=48, block_length=48, steps=24),
    dict(sampler="dream", gen_length=48, block_length=48, steps=24, params={"alg": "topk_margin", "alg_temp": 0.5}),
    dict(sampler="slowfast", gen_length=48, block_length=48, params={"variant": "dream"}),
    dict(sampler="slowfast", gen_length=48, block_length=48, params={"variant": "dream"}, cache={}),
    dict(sampler="baseline", gen_length=32, block_length=32, steps=32),
]


def strip(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: strip(v) for k, v in o.items() if k not in TIMING}
    if isinstance(o, list):
        return [strip(v) for v in o]
    return o


def snapshot() -> dict[str, str]:
    torch.set_num_threads(1)
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = {
            "embedded": load_model("embedded", device="cpu"),
            "tiny": load_model(str(write_tiny_checkpoint(Path(tmp) / "tiny")), device="cpu"),
            "dream": load_model(str(write_tiny_dream_checkpoint(Path(tmp) / "dream")), device="cpu"),
            "masked-lm": load_model(str(write_tiny_masked_lm(Path(tmp) / "mlm")), device="cpu"),
        }
        for name, model in models.items():
            configs = DREAM_CONFIGS if name == "dream" else CONFIGS[:4] if name == "masked-lm" else CONFIGS
            for i, c in enumerate(configs):
                key = f"{name}/{i}/{json.dumps(c, sort_keys=True)}"
                try:
                    d = strip(generate(model, PROMPTS[name], GenerationSettings.from_dict({**c, "chat": False})).to_dict())
                    d["model"] = name  # not the temporary folder's path
                except ValueError as exc:  # a configuration this model refuses: its message is the result
                    d = {"error": f"{type(exc).__name__}: {exc}"}
                out[key] = json.dumps(d)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m slowfast.snapshot", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="JSON file to write the snapshot to")
    ap.add_argument("--against", help="an earlier snapshot: list the configurations whose traces differ")
    args = ap.parse_args(argv)
    return run(lambda: compare(args))


def compare(args: argparse.Namespace) -> int:
    check_output_path(args.out, "out")  # before the ~30 runs
    snap = snapshot()
    Path(args.out).write_text(json.dumps(snap, indent=0) + "\n", encoding="utf-8")
    print(f"{len(snap)} configurations written to {args.out}")
    if args.against:
        before = json.loads(Path(args.against).read_text(encoding="utf-8"))
        differ = sorted(k for k in set(before) | set(snap) if before.get(k) != snap.get(k))
        for key in differ:
            print(f"differs: {key}")
        print(f"{len(differ)} of {len(set(before) | set(snap))} configurations differ")
        return 1 if differ else 0
    return 0

