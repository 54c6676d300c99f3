"""``bench render``: the decoder's wall time alone against while the app streams each step to the
browser's player, with what streaming costs: the server's time per step and each step's delta."""
from __future__ import annotations

import argparse
import math
import statistics
import time

from ...engine import GenerationSettings, generate
from ...models.loading import load_model
from ...session import BackgroundRun, stream_batches
from ..common import ONE_BLOCK, at_least


def settings_of(args: argparse.Namespace) -> GenerationSettings:
    """The run's settings, every flag checked before a model is loaded."""
    at_least(args.block_length, "--block-length", unset=ONE_BLOCK)
    at_least(args.repeats, "--repeats")
    if not 0.0 <= args.interval < math.inf:
        raise ValueError(f"--interval: {args.interval:g} is not allowed; allowed: seconds >= 0")
    if not 0.0 < args.budget <= 1.0:
        raise ValueError(f"--budget: {args.budget:g} is not allowed; allowed: a share in (0, 1] (1: no limit)")
    settings = GenerationSettings(sampler=args.sampler, gen_length=args.gen_length,
                                  block_length=args.block_length or args.gen_length, steps=args.gen_length,
                                  chat=not args.no_chat)
    settings.policy()
    return settings


def streamed_run(model, args: argparse.Namespace, settings: GenerationSettings) -> tuple[float, int, list[int], float]:
    """One run while its steps are streamed as the app streams them: (its decoding seconds, its
    steps, each step delta's size in bytes, the server CPU seconds spent on the player)."""
    import visuals.player as player  # here: visuals loads plotly, which no other command needs at start

    job = BackgroundRun(model, args.prompt, settings).start()
    stream = player.PlayerStream("bench")
    sizes, cpu = [], 0.0
    for trace, done in stream_batches(job, args.interval, budget=args.budget):
        t0 = time.thread_time()  # this thread's CPU: what the server spends on the player
        message = stream.end(trace) if done else stream.update(trace)
        if message is not None:
            for d in message.get("steps", []):
                sizes.append(len(player.dumps(d).encode()))
            player.dumps(message)
        cpu += time.thread_time() - t0
    return trace.stats.seconds, len(trace.records), sizes, cpu


def cmd_render(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    model = load_model(args.model, device=args.device)
    generate(model, args.prompt, settings)  # warm-up
    alone, streamed, steps, sizes, cpu = [], [], 0, [], 0.0
    for _ in range(args.repeats):  # interleaved, so that load on the machine hits both alike
        alone.append(generate(model, args.prompt, settings).stats.seconds)
        seconds, n, run_sizes, run_cpu = streamed_run(model, args, settings)
        streamed.append(seconds)
        steps, sizes, cpu = steps + n, sizes + run_sizes, cpu + run_cpu
    a, r = statistics.median(alone), statistics.median(streamed)
    paired = statistics.median(x / y for x, y in zip(streamed, alone))  # each run against the one just before it
    print(f"model: {args.model} | {args.sampler} | gen {args.gen_length} | sent at most every {args.interval} s | "
          f"streaming budget {args.budget:g} while decoding | {args.repeats} interleaved pairs")
    print(f"decoder alone {a:.3f} s | while streaming {r:.3f} s (medians) | slowdown {paired - 1:+.1%} "
          "(median of paired ratios)")
    print(f"per step: server CPU {1000 * cpu / max(steps, 1):.2f} ms (deltas, explanations, JSON) | delta "
          f"{statistics.mean(sizes) / 1024:.2f} KiB mean, {max(sizes) / 1024:.2f} KiB largest "
          f"({sum(s > 2048 for s in sizes)} of {len(sizes)} over 2 KiB; the first carries every position)")
    return 0


def add_parser(bs: argparse._SubParsersAction) -> None:
    r = bs.add_parser("render", help="decoder time alone vs while the app streams its steps to the browser")
    r.add_argument("--model", default="embedded")
    r.add_argument("--prompt", default="Story: Ivy has three blue keys .")
    r.add_argument("--sampler", default="slowfast")
    r.add_argument("--gen-length", type=int, default=128)
    r.add_argument("--block-length", type=int, default=None, help="default: the generation length (one block)")
    r.add_argument("--interval", type=float, default=0.05, help="seconds between two messages at least (the app uses 0.05)")
    r.add_argument("--budget", type=float, default=0.05,
                   help="share of the time streaming may take while the run decodes (the app uses 0.05); 1: no limit")
    r.add_argument("--repeats", type=int, default=5)
    r.add_argument("--no-chat", action="store_true")
    r.add_argument("--device", default=None)
    r.set_defaults(func=cmd_render)
