"""``bench samplers``: baseline vs SlowFast (the published forward count, and with our
``stop_when_full``) vs SlowFast + cache on the same prompt and seed: NFE, tokens fed, seconds,
speedup by NFE and by time, and whether the texts agree with the baseline's."""
from __future__ import annotations

import argparse

from ...engine import GenerationSettings, generate
from ...models.loading import load_model
from ..common import ONE_BLOCK, at_least


def configs_of(args: argparse.Namespace) -> list[tuple[str, GenerationSettings]]:
    """The four configurations, every setting checked before a model is loaded."""
    at_least(args.block_length, "--block-length", unset=ONE_BLOCK)
    block = args.block_length or args.gen_length
    common = dict(gen_length=args.gen_length, block_length=block, seed=args.seed, chat=not args.no_chat)
    configs = [
        ("baseline", GenerationSettings(sampler="baseline", steps=args.gen_length, **common)),
        ("slowfast", GenerationSettings(sampler="slowfast", **common)),
        ("slowfast, stop when full", GenerationSettings(sampler="slowfast", params={"stop_when_full": True},
                                                        **common)),
        ("slowfast + cache", GenerationSettings(sampler="slowfast", cache={"kp": args.kp, "kr": args.kr,
                                                                            "rho": args.rho}, **common)),
    ]
    for _, settings in configs:
        settings.policy()
        settings.cache_settings()
    return configs


def cmd_samplers(args: argparse.Namespace) -> int:
    configs = configs_of(args)
    block = configs[0][1].block_length
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    generate(model, args.prompt, configs[0][1])  # warm-up
    print(f"model: {args.model} | prompt: {args.prompt!r} | gen {args.gen_length}, block {block}")
    print(f"{'config':26s} {'NFE':>5s} {'tokens fed':>11s} {'seconds':>8s} {'tok/s':>8s} {'x by NFE':>9s} "
          f"{'x by time':>9s} same text as baseline")
    base = None
    for name, settings in configs:
        t = generate(model, args.prompt, settings)
        s = t.stats
        base = base or t
        x = s.speedups(base.stats)
        print(f"{name:26s} {s.nfe:5d} {s.tokens_fed:11d} {s.seconds:8.2f} {s.tokens_per_second:8.1f} "
              f"{x['nfe']:8.2f}x {x['time']:8.2f}x {'yes' if t.text == base.text else 'no'}")
    return 0


def add_parser(bs: argparse._SubParsersAction) -> None:
    s = bs.add_parser("samplers", help="baseline vs SlowFast vs SlowFast + cache on one prompt")
    s.add_argument("--model", default="embedded")
    s.add_argument("--prompt", required=True)
    s.add_argument("--gen-length", type=int, default=128)
    s.add_argument("--block-length", type=int, default=None, help="default: the generation length (one block)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-chat", action="store_true")
    s.add_argument("--kp", type=int, default=100)
    s.add_argument("--kr", type=int, default=5)
    s.add_argument("--rho", type=float, default=0.25)
    s.add_argument("--device", default=None)
    s.add_argument("--dtype", default="auto")
    s.set_defaults(func=cmd_samplers)
