"""``eval``'s probes: one forward on the true continuation of held-out examples, with a count of a
story or a step of a chain hidden, and whether the model's argmax fills it in."""
from __future__ import annotations

import torch

from ...tasks.arithmetic import step_events
from ...tasks.story import count_events

def true_responses(model, task, n: int, find):
    """(prompt ids, true response ids, its events) of each of the first ``n`` held-out
    examples in which ``find`` (of the response's token strings) finds any events."""
    for ex in task.examples("heldout", n):
        prompt = model.encode_prompt(ex.prompt, chat=False)
        response = list(model.tokenizer(ex.target)["input_ids"])[:task.gen_length]
        found = find(model.token_strings(response))
        if found:
            yield prompt, response, found


def hidden(model, prompt: list[int], response: list[int], hide) -> list[int]:
    """The prompt and the response with the positions ``hide`` masked."""
    x = list(response)
    for h in hide:
        x[h] = model.mask_id
    return prompt + x


def count_inference(model, task, n: int) -> dict[str, float]:
    """One forward per hidden count on the true continuations of ``n`` held-out stories:
    "forward" hides the new count (the change and the count before it visible), "backward"
    hides the change and its noun (the new count visible). Share of argmax hits of each."""
    hits = {"forward": 0, "backward": 0}
    events = 0
    for prompt, response, found in true_responses(model, task, n, count_events):
        rows, targets = [], []
        for k, noun, new in found:
            for kind, hide, at in (("forward", (new,), new), ("backward", (k, noun), k)):
                rows.append(hidden(model, prompt, response, hide))
                targets.append((kind, len(prompt) + at, response[at]))
        logits = model.forward(torch.tensor(rows, device=model.device))
        for row, (kind, at, want) in enumerate(targets):
            hits[kind] += int(logits[row, at].argmax()) == want
        events += len(found)
    return {"forward": hits["forward"] / max(events, 1), "backward": hits["backward"] / max(events, 1),
            "events": events}


def step_inference(model, task, n: int) -> dict[str, float]:
    """One forward per worked step on the true chains of ``n`` held-out problems: the step's
    result and its next use hidden (``tasks.arithmetic.step_events``), everything else shown.
    Share of steps whose every result token is the argmax ("computed")."""
    hits = steps = 0
    for prompt, response, found in true_responses(model, task, n, step_events):
        rows = [hidden(model, prompt, response, hide) for hide, _ in found]
        logits = model.forward(torch.tensor(rows, device=model.device))
        for row, (hide, _) in enumerate(found):
            result = hide[:len(hide) // 2]  # the result's own digits (its next use has as many)
            hits += all(int(logits[row, len(prompt) + h].argmax()) == response[h] for h in result)
        steps += len(found)
    return {"computed": hits / max(steps, 1), "steps": steps}


