"""The training script on a tiny model: seeded, resumable (to the same weights as a run that
never stopped), the weight average (--ema) it evaluates and exports, and an export that loads
as the app loads the shipped model."""
from __future__ import annotations

import json

import pytest
import torch

from slowfast.commands import train
from slowfast.models.loading import load_model
from slowfast.tasks import TASKS

TINY = ["--d-model", "32", "--n-layers", "1", "--n-heads", "2", "--mlp-hidden", "64", "--threads", "1",
        "--batch-story", "2", "--batch-arithmetic", "2", "--batch-copy", "2", "--eval-n", "2",
        "--warmup", "2", "--lr", "3e-3"]


def run(tmp_path, name, steps, *extra):
    work = tmp_path / name
    args = TINY + ["--work-dir", str(work), "--out", str(work / "export"), "--steps", str(steps), *extra]
    assert train.main(args) == 0
    return torch.load(work / "state.pt", weights_only=True)


def refused(tmp_path, capsys, *extra) -> str:
    """The one ``error:`` line of a run the flags refuse (exit status 2)."""
    work = tmp_path / "bad"
    assert train.main(TINY + ["--work-dir", str(work), "--out", str(work / "export"), "--steps", "1", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_ema_update_is_the_moving_average_of_the_weights():
    net, ema = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in ema.parameters()]
    train.ema_update(ema, net, 0.9)
    for p_ema, p0, p in zip(ema.parameters(), before, net.parameters()):
        torch.testing.assert_close(p_ema, 0.9 * p0 + 0.1 * p.detach())


def test_a_resumed_run_ends_with_the_weights_of_one_that_never_stopped(tmp_path):
    straight = run(tmp_path, "straight", 4, "--eval-every", "100", "--ema", "0.5")
    run(tmp_path, "halves", 2, "--eval-every", "100", "--ema", "0.5")
    resumed = run(tmp_path, "halves", 4, "--eval-every", "100", "--ema", "0.5")
    assert straight["step"] == resumed["step"] == 4
    for key in ("model", "ema"):
        for name, value in straight[key].items():
            assert torch.equal(value, resumed[key][name]), (key, name)
    # the average is not the raw weights: it is what gets evaluated and exported
    assert any(not torch.equal(straight["model"][n], straight["ema"][n]) for n in straight["model"])


def test_the_export_is_the_averaged_model_and_loads_as_the_shipped_one(tmp_path):
    state = run(tmp_path, "ema", 3, "--eval-every", "3", "--ema", "0.5")
    out = tmp_path / "ema" / "export"
    model = load_model(str(out), device="cpu", dtype="float32")
    for name, value in model.net.state_dict().items():
        assert torch.equal(value, state["ema"][name]), name
    info = json.loads((out / "training_info.json").read_text())
    assert info["args"]["ema"] == "0.5"
    assert "moving average of the weights (decay 0.5)" in (out / "README.md").read_text()


def test_a_decay_outside_zero_to_one_is_refused(tmp_path, capsys):
    assert "--ema" in refused(tmp_path, capsys, "--ema", "1.5")


def test_suffix_masking_names_only_tasks_it_knows(tmp_path, capsys):
    err = refused(tmp_path, capsys, "--suffix-p", "0.3", "--suffix-tasks", "arithmetic,copy")
    assert "--suffix-tasks: copy not allowed" in err


class Recorder(torch.nn.Module):
    """Stands in for the network: remembers the noisy input, returns uniform logits."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(8))

    def forward(self, x):
        self.seen = x.clone()
        return self.w.expand(*x.shape, 8)


def masked_runs(row):
    runs, n = [], 0
    for m in row.tolist() + [False]:
        if m:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


def test_chunk_masking_hides_runs_of_tokens_at_the_rate_t():
    net, gen = Recorder(), torch.Generator().manual_seed(0)
    tokens = torch.full((256, 4 + 60), 5)
    train.masked_diffusion_loss(net, tokens, 4, 1, gen, chunk_p=1.0)
    masked = net.seen[:, 4:] == 1
    # stratified t over the batch: every rate in (0, 1) once, so about half of all tokens
    assert 0.45 < masked.float().mean() < 0.55
    # masked in runs of at least 2 (a run can only be shorter where the canvas cuts it)
    for row in masked:
        runs = masked_runs(row)
        inner = runs[:-1] if row[-1] else runs
        assert all(run >= 2 for run in inner), runs
    plain, gen = Recorder(), torch.Generator().manual_seed(0)
    train.masked_diffusion_loss(plain, tokens, 4, 1, gen)
    singles = sum(run == 1 for row in plain.seen[:, 4:] == 1 for run in masked_runs(row))
    assert singles > 500  # token-by-token masking leaves many lone masks; chunks leave none



def test_event_masking_hides_changes_and_shows_the_counts_they_led_to():
    B, L = 400, 30
    events = [train.story_forced([(2, 4, 8), (12, 14, 20)])] * B  # (change, noun, new count) of two changes
    hidden_change = lambda m: m[:, [2, 4]].all(1) & ~m[:, 8]  # the state of a count written first
    plain, _ = train.draw_masks(B, L, torch.Generator().manual_seed(0))
    masked, p_tok = train.draw_masks(B, L, torch.Generator().manual_seed(0), event_p=1.0, events=events)
    # plain masking: t^2 (1 - t) on average, 1/12; forced in half the events, plus that
    assert hidden_change(plain).float().mean() < 0.15
    assert 0.5 < hidden_change(masked).float().mean() < 0.65
    # a forced token's loss weight is 1 (it was masked for sure); the others keep 1/t
    forced = (p_tok == 1.0)[:, [2, 4]].all(1)
    assert masked[forced][:, [2, 4]].all() and not masked[forced][:, 8].any()
    # the second change is inferred from its count (20) and the count before it (8): both shown
    second = (p_tok == 1.0)[:, [12, 14]].all(1)
    assert second.float().mean() > 0.4 and not masked[second][:, [8, 20]].any()
    others = [c for c in range(L) if c not in (2, 4, 8, 12, 14, 20)]
    assert (p_tok[:, others] < 1.0).all()
    # events past a canvas cut are left alone; an event share of 0 is plain masking
    short, _ = train.draw_masks(B, 16, torch.Generator().manual_seed(0), event_p=1.0, events=events)
    assert 0.5 < hidden_change(short).float().mean() < 0.65  # the first event fits the canvas
    assert short[:, [12, 14]].all(1).float().mean() < 0.4  # the second's count is cut off: plain t^2
    same, _ = train.draw_masks(B, L, torch.Generator().manual_seed(0), event_p=0.0, events=events)
    assert torch.equal(same, plain)


def test_count_events_of_a_training_batch_are_response_positions():
    import random

    from slowfast.tasks.story import NUMBERS, OBJECTS

    tok = train.load_tokenizer(train.SHIPPED_DIR)
    data = train.Data(tok)
    tokens, plen, _ = data.task_batch(TASKS["story"], random.Random(0), 3)
    nouns = set(OBJECTS) | set(OBJECTS.values())
    for row, found in zip(tokens, data.count_events(tokens, plen)):
        assert len(found) >= 3
        words = [tok.decode([int(i)]).strip() for i in row[plen:]]
        for k, noun, new in found:
            assert words[k] in ("one", "two") and words[noun] in nouns
            assert words[new - 1] == "has" and words[new] in NUMBERS


def test_step_events_hide_a_result_and_its_next_use_and_show_what_it_is_computed_from():
    from slowfast.tasks.arithmetic import step_events

    text = " 7+5=12, 12-3=09, 09+8=17. The answer is 17."
    strings = [" ", "7", "+", "5", "=", "1", "2", ",", " ", "1", "2", "-", "3", "=", "0", "9", ",", " ", "0", "9",
               "+", "8", "=", "1", "7", ".", " The", " answer", " is", " ", "1", "7", "."]
    assert "".join(strings) == text
    found = step_events(strings)
    as_text = [("".join(strings[i] for i in hide), "".join(strings[i] for i in show)) for hide, show in found]
    assert as_text == [("1212", "7+5="), ("0909", "12-3="), ("1717", "09+8=")]
    # a canvas that cuts a result's next use (or the answer's last digit) leaves that step out
    assert [h for h, _ in step_events(strings[:10])] == []  # "12" of the next step cut after "1"
    assert [h for h, _ in step_events(strings[:11])] == []  # whole only once a non-digit follows it
    assert [h for h, _ in step_events(strings[:12])] == [found[0][0]]
    assert [h for h, _ in step_events(strings[:31])] == [found[0][0], found[1][0]]
    assert [h for h, _ in step_events(strings[:32])] == [found[0][0], found[1][0]]  # "is 17" without "."


def test_step_events_of_a_training_batch_and_their_masks():
    import random

    tok = train.load_tokenizer(train.SHIPPED_DIR)
    data = train.Data(tok)
    tokens, plen, exs = data.task_batch(TASKS["arithmetic"], random.Random(0), 8)
    events = data.events("arithmetic", tokens, plen)
    for row, found, ex in zip(tokens, events, exs):
        assert len(found) == len(ex.meta["ops"])  # every step of a chain that fits its canvas
        strings = [tok.decode([int(i)]) for i in row[plen:]]
        for hide, show in found:
            digits = "".join(strings[i] for i in hide)
            assert digits[:len(digits) // 2] == digits[len(digits) // 2:]  # the result, then its next use
            assert "".join(strings[i] for i in show).endswith("=") and max(show) < min(hide)
    # forced steps never show what an earlier forced step hid: a step after a forced one is left alone
    B = 300
    masked, p_tok = train.draw_masks(B, tokens.shape[1] - plen, torch.Generator().manual_seed(0),
                                     event_p=1.0, events=[events[0]] * B)
    (h0, s0), (h1, s1) = events[0][:2]
    forced0 = (p_tok == 1.0)[:, list(h0)].all(1)
    forced1 = (p_tok == 1.0)[:, list(h1)].all(1) & (p_tok == 1.0)[:, list(s1)].all(1)
    assert 0.4 < forced0.float().mean() < 0.6 and not (forced0 & forced1).any()
    assert masked[forced0][:, list(h0)].all() and not masked[forced0][:, list(s0)].any()
    assert masked[forced1][:, list(h1)].all() and not masked[forced1][:, list(s1)].any()
    with pytest.raises(ValueError, match="copy"):
        data.events("copy", tokens, plen)


def test_a_run_with_chain_events_logs_step_computation_and_its_card_says_so(tmp_path):
    state = run(tmp_path, "events", 2, "--eval-every", "2", "--event-p", "1", "--event-tasks", "story,arithmetic")
    rec = state["history"][-1]
    assert rec["step_inference"]["steps"] >= 2 * 4 and 0.0 <= rec["step_inference"]["computed"] <= 1.0
    assert rec["count_inference"]["events"] > 0
    card = (tmp_path / "events" / "export" / "README.md").read_text()
    assert "A share of the chain examples (1.0)" in card and "A share of the story examples (1.0)" in card


def test_unknown_event_tasks_are_refused(tmp_path, capsys):
    assert "--event-tasks: copy not allowed" in refused(tmp_path, capsys, "--event-p", "1", "--event-tasks", "story,copy")


@pytest.mark.parametrize("flag", ["--suffix-p", "--chunk-p", "--event-p"])
def test_a_share_outside_zero_to_one_is_refused(tmp_path, capsys, flag):
    assert refused(tmp_path, capsys, flag, "1.5").startswith(f"error: {flag}: ")
