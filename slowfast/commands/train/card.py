"""The exported folder and its card: the README.md written from the export's (and eval's) numbers."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ...models.loading import save_checkpoint
from ...models.transformer import Transformer
from .data import CHUNK, TRAIN_TASKS, TRUNCATE_P


def export(net: Transformer, tok, out: Path, info: dict) -> None:
    """Write the shipped folder: config.json + model.safetensors, the tokenizer, training info."""
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        for f in tmp.iterdir():
            f.unlink()
    tmp.mkdir(parents=True, exist_ok=True)
    save_checkpoint(net, tmp)
    tok.save_pretrained(str(tmp))
    # name the class every transformers version knows, and drop load-time noise
    tc_path = tmp / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in ("is_local", "local_files_only"):
        tc.pop(key, None)
    jinja = tmp / "chat_template.jinja"
    if jinja.is_file():  # the chat template in tokenizer_config.json, where every transformers version reads it
        tc["chat_template"] = jinja.read_text()
        jinja.unlink()
    tc_path.write_text(json.dumps(tc, indent=2) + "\n")
    (tmp / "training_info.json").write_text(json.dumps(info, indent=2) + "\n")
    (tmp / "README.md").write_text(model_card(info) + "\n")
    out.mkdir(parents=True, exist_ok=True)
    for f in tmp.iterdir():
        f.chmod(0o644)
        os.replace(f, out / f.name)
    tmp.rmdir()


TASK_LINES = {
    "story": "- `story`: `Story: Mia has two red apples .` -> a story that fills the canvas: events "
             "(finds / loses / a friend gives, with free places, counts and names, and fillers) each "
             "followed by `Now Mia has four red apples .`; scored by a checker (grammar and every fact "
             "consistent), generation length 96, no EOS.",
    "arithmetic": "- `arithmetic`: `Q: 7+5-3+8-6=? A:` -> ` 7+5=12, 12-3=09, 09+8=17, 17-6=11. The answer is 11.` "
                  "(1-10 operations, operands 1-9, every intermediate result 0-29 written with two digits, "
                  "so the layout depends only on the number of operations), "
                  "generation length 104, EOS after the answer.",
    "copy": "- `copy`: `Copy: c f a k e q x z. A:` -> ` c f a k e q x z.` (always 8 letters), generation "
            "length 16: the parallel-friendly contrast.",
    "chat-story": "- `chat-story`: the story asked in the chat template, `Tell me a story about Mia and her two red "
                  "apples.` -> the same story.",
    "chat-arithmetic": "- `chat-arithmetic`: `What is 7+5-3?` -> ` 7+5=12, 12-3=09. The answer is 09.` in the chat "
                       "template.",
    "chat-copy": "- `chat-copy`: `Copy: c f a k e q x z` -> ` c f a k e q x z.` in the chat template.",
}
METRIC_NAMES = {"consistent": "story checker pass", "answer_correct": "final answer correct",
                "exact_match": "exact match", "sentences": "sentences checked (mean)"}


def model_card(info: dict) -> str:
    """The README.md of the exported folder, from the numbers of the export (and of eval)."""
    lines = model_lines(info) + data_lines(info) + training_lines(info) + score_lines(info)
    if info.get("decoding"):
        lines += ["", info["decoding"].rstrip()]
    lines += ["", "## Samples (held out, same sampler)", ""]
    for name, samples in info["samples"].items():
        lines += [f"### {name}", ""]
        for s in samples:
            lines.append(f"- `{s['prompt']}` -> `{s['output']}`")
        lines.append("")
    return "\n".join(lines)


def share(args: dict, name: str) -> bool:
    """Was this share flag of the run (``info["args"]``, as strings) on?"""
    return float(args.get(name, 0) or 0) > 0


def model_lines(info: dict) -> list[str]:
    cfg = info["config"]
    return [
        "# slowfast embedded dLLM",
        "",
        "A small masked-diffusion language model (LLaDA objective, LLaDA-family architecture:",
        "bidirectional attention, RoPE, SwiGLU, RMSNorm) trained from scratch by `slowfast/commands/train/`,",
        "shipped so the explorer, the samplers and the tests run offline. Its tasks are built so",
        "that decoding has the structure a real dLLM's has: free choices make far positions",
        "uncertain, and what depends on a choice becomes certain once the choice is written.",
        "",
        "## Model",
        "",
        f"- {info['parameters'] / 1e6:.2f}M parameters: d_model {cfg['d_model']}, {cfg['n_layers']} layers, "
        f"{cfg['n_heads']} heads, SwiGLU hidden {cfg['mlp_hidden_size']}, vocabulary {cfg['vocab_size']}, "
        f"untied embeddings, RoPE theta {cfg['rope_theta']:g}, context {cfg['max_sequence_length']}.",
        f"- Special ids: EOS `<|endoftext|>` = {cfg['eos_token_id']}, mask `<|mdm_mask|>` = "
        f"{cfg['mask_token_id']}, pad `<|pad|>` = {cfg['pad_token_id']}.",
        "- Tokenizer (`tokenizer.json`, loads with `transformers.AutoTokenizer`): byte-level BPE",
        "  trained on task texts; every digit is its own token; no BOS/EOS is added on encoding and",
        *(["  the chat template (`tokenizer_config.json`, `slowfast/tasks/chat.py`) renders a conversation as",
           "  `User: What is 7+5-3?\\nAssistant:`, the answer ending in end-of-text; it needs no new tokens."]
          if any(name.startswith("chat-") for name in info["heldout"]) else
          ["  there is no chat template, so a prompt is fed as plain text."]),
        "",
    ]


def data_lines(info: dict) -> list[str]:
    h, args = info["heldout"], info.get("args", {})  # the run's flags, as strings
    event_tasks = args.get("event_tasks", "story").split(",")
    return [
        "## Data and objective",
        "",
        *[TASK_LINES.get(name, f"- `{name}`") for name in h if name in TRAIN_TASKS],
        "- Held-out problems (a fixed hash split of the prompt in `slowfast/tasks`) are never trained on.",
        "- LLaDA loss: t ~ U(0, 1) per example (stratified over the batch), response tokens",
        "  masked with probability t (prompts never), cross-entropy of masked tokens / t, divided by",
        "  the response length. The canvas length is drawn per batch around each task's length and a",
        f"  quarter of the batches are cut short on the right ({TRUNCATE_P:.0%}), as SlowFast's fast",
        "  forwards are.",
        *([f"- A share of the {' and '.join(args.get('suffix_tasks', 'story,arithmetic').split(','))} "
           f"examples ({args['suffix_p']}) is masked from a random "
           "cut to the end instead (the states of a decoder that has written everything left of a point), "
           "weighted by 1 / (masked share)."] if share(args, "suffix_p") else []),
        *([f"- A share of the story examples ({args['chunk_p']}) is masked in runs of {CHUNK[0]}-{CHUNK[1]} "
           "tokens (each run with probability t), so a count and its noun are often hidden together while the "
           "next fact is visible: the state of a decoder that wrote a later count first."]
          if share(args, "chunk_p") else []),
        *([f"- A share of the story examples ({args['event_p']}) has, in each count change with "
           "probability 1/2, the change and its noun masked and the counts before and after it shown (the state "
           "of a decoder that wrote the count first), the forced masks weighted 1."]
          if share(args, "event_p") and "story" in event_tasks else []),
        *([f"- A share of the chain examples ({args['event_p']}) has, in each worked step with "
           "probability 1/2 (unless the step before it was forced), the step's result and its next use masked "
           "and the numbers it is computed from shown (the state of a decoder that must compute the step, not "
           "copy it), the forced masks weighted 1."]
          if share(args, "event_p") and "arithmetic" in event_tasks else []),
        "",
    ]


def training_lines(info: dict) -> list[str]:
    args = info.get("args", {})
    return [
        "## Training",
        "",
        "```",
        *info.get("commands", [info["command"]]),
        "```",
        "",
        f"- {info.get('minutes_before', 0) + info['minutes_trained']:.0f} minutes, "
        f"{info.get('steps_before', 0) + info['step']} optimiser steps in all"
        + (f" ({info['steps_before']} before the last command's `--init-from`)" if info.get("steps_before") else "")
        + f", on {info['machine']}"
        f" (torch {info['torch']}). AdamW, warmup then cosine decay (by steps or by `--max-minutes`,",
        "  whichever is further along). Seeded and resumable (`.train/state.pt`); the export is the",
        *([f"  exponential moving average of the weights (decay {args['ema']}) at the",
           "  checkpoint with the best held-out score relative to the bars, evaluated every",]
          if share(args, "ema") else
          ["  checkpoint with the best held-out score relative to the bars, evaluated every"]),
        f"  {args.get('eval_every', '?')} steps on {args.get('eval_n', '?')} "
        "held-out problems per task.",
        "",
        f"## Held-out scores (step {info.get('steps_before', 0) + info['step']})",
        "",
        "Greedy baseline sampler at one token per step (low-confidence remasking, a single block),"
        f" {info['eval_n']} held-out problems per task:",
        "",
        "| task | metric | score |",
        "|---|---|---|",
    ]


def score_lines(info: dict) -> list[str]:
    h, lines = info["heldout"], []
    for name, scores in h.items():
        if name not in TRAIN_TASKS:
            continue
        for k, v in scores.items():
            if k in METRIC_NAMES and k != "sentences":
                lines.append(f"| {name} | {METRIC_NAMES[k]} | {v:.1%} |")
        if scores.get("by_ops"):
            lines.append(f"| {name} | final answer correct by operations | "
                         + ", ".join(f"{k}: {a:.0%} of {n}" for k, (a, n) in scores["by_ops"].items()) + " |")
    return lines
