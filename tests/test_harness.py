"""The lm-evaluation-harness model ``slowfast`` (slowfast/harness.py), offline: the embedded
model on local lm_eval tasks written to a temporary folder (5 held-out arithmetic problems),
scored through ``lm_eval.simple_evaluate`` and through the command line a user runs, against
the same prompts decoded directly by ``slowfast.engine.generate``; LLaDA's Monte-Carlo
log-likelihood against a longhand expectation over every mask pattern."""
from __future__ import annotations

import glob
import itertools
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

lm_eval = pytest.importorskip("lm_eval")

import torch  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.model import LM  # noqa: E402
from lm_eval.api.registry import get_model  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from slowfast.engine import GenerationSettings, first_end, generate  # noqa: E402
from slowfast.models.loading import default_device  # noqa: E402
from slowfast.harness import SlowFastLM  # noqa: E402
from slowfast.models import load_model  # noqa: E402
from slowfast.tasks import TASKS  # noqa: E402
from slowfast.tasks.arithmetic import written  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N = 5
GEN_LENGTH = 64
STEPS = {"baseline": 32, "slowfast": GEN_LENGTH}  # the baseline at two tokens per forward keeps this quick
ANSWER_RE = re.compile(r"The answer is (\-?[0-9]+)")
TASK, MC_TASK = "slowfast_arith", "slowfast_arith_mc"


def model_args(sampler: str) -> str:
    steps = f"steps={STEPS[sampler]}," if sampler == "baseline" else ""  # slowfast stops when the canvas is full
    return (f"pretrained=embedded,sampler={sampler},gen_length={GEN_LENGTH},block_length={GEN_LENGTH},{steps}"
            "chat=False,device=cpu")  # the tasks' prompts are the embedded tasks' own, not chat questions


def request(kind: str, *args) -> Instance:
    return Instance(request_type=kind, doc={}, arguments=tuple(args), idx=0)


def stem(example) -> str:
    """The prompt with its worked steps, up to the answer: `... The answer is`."""
    return example.prompt + example.target[: example.target.rindex(" ")]


@pytest.fixture(scope="module")
def model():
    return load_model("embedded", device="cpu")


@pytest.fixture(scope="module")
def examples():
    return TASKS["arithmetic"].examples("heldout", N)


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory, examples):
    """Two lm_eval tasks over one local JSONL file: generation (the number after `The answer
    is`, exact match) and multiple choice (the right number against its neighbours)."""
    folder = tmp_path_factory.mktemp("lm-eval-tasks")
    data = folder / "arithmetic.jsonl"
    with data.open("w") as f:
        for i, ex in enumerate(examples):
            answer = int(ex.meta["answer"])
            wrong = [answer + 1, answer - 1 if answer > 0 else answer + 2]
            choices = wrong[:]
            choices.insert(i % 3, answer)
            f.write(json.dumps({"question": ex.prompt, "answer": written(answer), "stem": stem(ex),
                                "choices": [f"{written(c)}." for c in choices], "label": i % 3}) + "\n")
    dataset = {"dataset_path": "json", "test_split": "test",
               "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(folder / "hf-datasets")}}
    generation = {
        "task": TASK, **dataset, "output_type": "generate_until",
        "doc_to_text": "{{question}}", "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["Q:"], "do_sample": False},
        "filter_list": [{"name": "answer", "filter": [
            {"function": "regex", "regex_pattern": ANSWER_RE.pattern}, {"function": "take_first"}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
    choice = {
        "task": MC_TASK, **dataset, "output_type": "multiple_choice",
        "doc_to_text": "{{stem}}", "doc_to_choice": "choices", "doc_to_target": "label",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
    # JSON is YAML: no quoting rules to get wrong
    (folder / f"{TASK}.yaml").write_text(json.dumps(generation, indent=1))
    (folder / f"{MC_TASK}.yaml").write_text(json.dumps(choice, indent=1))
    return folder


@pytest.fixture(scope="module")
def direct(model, examples):
    """The independent path: each prompt decoded by slowfast.engine.generate, and the share
    whose `The answer is N` is right. Keyed by sampler, computed on first use."""
    cache = {}

    def get(sampler):
        if sampler not in cache:
            settings = GenerationSettings(sampler=sampler, gen_length=GEN_LENGTH, block_length=GEN_LENGTH,
                                          steps=STEPS[sampler], chat=False)
            texts = [generate(model, ex.prompt, settings).text for ex in examples]
            found = [ANSWER_RE.search(t) for t in texts]
            right = [m is not None and m.group(1) == written(ex.meta["answer"]) for m, ex in zip(found, examples)]
            cache[sampler] = texts, sum(right) / len(right)
        return cache[sampler]

    return get


def local_tasks(task_dir) -> TaskManager:
    return TaskManager(include_path=str(task_dir), include_defaults=False)


def test_registered():
    assert get_model("slowfast") is SlowFastLM
    assert get_model("dummy").__name__ == "DummyLM"  # lm_eval's own models are still there


def test_task_scores_a_correct_model(task_dir, examples):
    """The local task passes a model that writes the worked answer (and only that)."""
    by_prompt = {ex.prompt: ex.target for ex in examples}

    class Oracle(LM):
        def generate_until(self, requests, disable_tqdm=False):
            return [by_prompt[r.args[0]] for r in requests]

        def loglikelihood(self, requests, disable_tqdm=False):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            raise NotImplementedError

    res = lm_eval.simple_evaluate(model=Oracle(), tasks=[TASK], task_manager=local_tasks(task_dir))
    assert res["results"][TASK]["exact_match,answer"] == 1.0


@pytest.mark.parametrize("sampler", ["baseline", "slowfast"])
def test_simple_evaluate_matches_the_engine(sampler, task_dir, examples, direct):
    texts, expected = direct(sampler)
    res = lm_eval.simple_evaluate(model="slowfast", model_args=model_args(sampler), tasks=[TASK],
                                  task_manager=local_tasks(task_dir), log_samples=True)
    assert res["results"][TASK]["exact_match,answer"] == pytest.approx(expected)
    assert 0 < expected  # the embedded model solves some of them
    samples = sorted(res["samples"][TASK], key=lambda s: s["doc_id"])
    assert [s["resps"][0][0] for s in samples] == texts
    info = res["config"]["slowfast"]
    assert info["settings"]["sampler"] == sampler and info["settings"]["steps"] == STEPS[sampler]
    assert info["generate_until"]["requests"] == N and info["generate_until"]["nfe"] > 0


def test_command_line_matches_the_engine(tmp_path, task_dir, direct):
    """The way a user runs it: `python -m slowfast.harness` is lm_eval's own command line
    with the model registered (the plain `lm_eval` command cannot see outside models)."""
    _, expected = direct("slowfast")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    out_dir = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "slowfast.harness", "--model", "slowfast", "--model_args", model_args("slowfast"),
         "--tasks", TASK, "--include_path", str(task_dir), "--output_path", str(out_dir)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert TASK in proc.stdout and "exact_match" in proc.stdout  # lm_eval's results table
    files = glob.glob(str(out_dir / "**" / "results_*.json"), recursive=True)
    assert len(files) == 1, files
    results = json.loads(Path(files[0]).read_text())
    assert results["results"][TASK]["exact_match,answer"] == pytest.approx(expected)
    assert results["config"]["model"] == "slowfast"


def test_generate_until_cuts_and_caps(model, examples):
    """`until` cuts at the first stop string; max_gen_toks shortens the canvas (whole
    blocks, or one block of exactly max_gen_toks) and the text to max_gen_toks tokens."""
    lm = SlowFastLM(pretrained="embedded", chat=False, sampler="slowfast", gen_length=96, block_length=32, device="cpu")
    prompt = examples[0].prompt

    def engine(gen_length, block_length, steps, limit):
        s = GenerationSettings(sampler="slowfast", gen_length=gen_length, block_length=block_length, steps=steps,
                               chat=False)
        tokens = generate(model, prompt, s).tokens[:limit]
        return model.decode(tokens[: first_end(tokens, model.eos_ids)])

    full = engine(96, 32, 96, 96)
    assert lm.generate_until([request("generate_until", prompt, {"until": ["Q:"]})]) == [full]
    cut = lm.generate_until([request("generate_until", prompt, {"until": ["=", ", "]})])[0]
    assert cut == full.split("=")[0] and cut  # the earliest stop string wins
    assert lm.generate_text(prompt, {"max_gen_toks": 40}) == engine(64, 32, 64, 40)  # two blocks, 40 tokens
    assert lm.generate_text(prompt, {"max_gen_toks": 20}) == engine(20, 20, 20, 20)  # one block of 20
    with pytest.raises(ValueError, match="max_gen_toks"):
        lm.generate_text(prompt, {"max_gen_toks": 0})


def test_loglikelihood_prefers_the_right_answer(examples):
    lm = SlowFastLM(pretrained="embedded", chat=False, mc_num=8, device="cpu")
    for ex in examples:
        answer = int(ex.meta["answer"])
        scores = lm.loglikelihood([request("loglikelihood", stem(ex), f" {written(a)}.")
                                   for a in (answer, answer + 1, answer + 2)])
        assert scores[0][0] > max(s[0] for s in scores[1:]), (ex.prompt, scores)
        assert all(greedy is False for _, greedy in scores)  # check_greedy is off


def longhand(model, ctx: list[int], cont: list[int]) -> tuple[float, float]:
    """The expectation the estimate samples, over every mask pattern: l uniform in 1..L,
    then each l-subset S of the continuation equally likely, the value L / l times the sum
    over S of log p(true token | S masked). Returns (mean, standard deviation)."""
    L, P = len(cont), len(ctx)
    values, weights = [], []
    for l in range(1, L + 1):
        for subset in itertools.combinations(range(L), l):
            tokens = torch.tensor([ctx + cont])
            tokens[0, [P + i for i in subset]] = model.mask_id
            logp = torch.log_softmax(model.forward(tokens)[0].double(), dim=-1)
            values.append(L / l * sum(float(logp[P + i, cont[i]]) for i in subset))
            weights.append(1.0 / (L * math.comb(L, l)))
    mean = sum(w * v for w, v in zip(weights, values))
    var = sum(w * (v - mean) ** 2 for w, v in zip(weights, values))
    return mean, math.sqrt(var)


def test_monte_carlo_matches_the_longhand(model, examples):
    lm = SlowFastLM(pretrained="embedded", chat=False, mc_num=256, mc_batch=64, device="cpu")
    ex = examples[2]
    ctx = model.tokenizer(ex.prompt)["input_ids"]
    for text in (ex.target[:5], " 9+9=1"):  # the right start of the working, and a wrong one
        cont = model.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert 4 <= len(cont) <= 6
        exact, spread = longhand(model, ctx, cont)
        estimate, _ = lm.loglikelihood_tokens(ctx, cont)
        # within 4 standard errors of plain sampling (the stratified draws vary less)
        assert abs(estimate - exact) <= 4 * spread / math.sqrt(256) + 1e-6, (text, estimate, exact, spread)
    # one token: every sample masks it, so the estimate is exactly its log-probability
    one = model.tokenizer(" 5", add_special_tokens=False)["input_ids"][:1]
    exact, spread = longhand(model, ctx, one)
    assert spread == 0 and lm.loglikelihood_tokens(ctx, one)[0] == pytest.approx(exact, abs=1e-5)
    # the same request gives the same estimate (seeded), whatever came before
    assert lm.loglikelihood_tokens(ctx, cont)[0] == lm.loglikelihood_tokens(ctx, cont)[0]


def test_check_greedy_matches_the_baseline(model, examples):
    """is_greedy: the continuation decoded one most-confident position per forward, which is
    the baseline sampler with one block of L positions and L steps."""
    lm = SlowFastLM(pretrained="embedded", chat=False, mc_num=4, check_greedy=True, device="cpu")
    ctx = model.tokenizer(examples[1].prompt)["input_ids"]
    L = 8
    tokens = generate(model, ctx, GenerationSettings(sampler="baseline", gen_length=L, block_length=L, steps=L,
                                                     chat=False)).tokens
    assert lm.loglikelihood_tokens(ctx, tokens)[1] is True
    other = list(tokens)
    other[3] = next(t for t in range(model.vocab_size) if t not in (tokens[3], model.mask_id))
    assert lm.loglikelihood_tokens(ctx, other)[1] is False


def test_multiple_choice_task(task_dir, examples):
    """A loglikelihood task through lm_eval: its accuracy is the share of documents whose
    right choice has the highest estimate in direct calls (all of them, given the working)."""
    res = lm_eval.simple_evaluate(model="slowfast", model_args="pretrained=embedded,mc_num=8,chat=False,device=cpu",
                                  tasks=[MC_TASK], task_manager=local_tasks(task_dir))
    lm = SlowFastLM(pretrained="embedded", chat=False, mc_num=8, device="cpu")
    right = 0
    for i, ex in enumerate(examples):
        with (task_dir / "arithmetic.jsonl").open() as f:
            doc = json.loads(f.readlines()[i])
        scores = [s for s, _ in lm.loglikelihood([request("loglikelihood", doc["stem"], f" {c}")
                                                  for c in doc["choices"]])]
        right += scores.index(max(scores)) == doc["label"]
    assert res["results"][MC_TASK]["acc,none"] == pytest.approx(right / N) == 1.0


@pytest.mark.parametrize("args, match", [
    (dict(foo=1), r"unknown keys \['foo'\].*allowed: .*high_confidence_threshold"),
    (dict(sampler="slowfast", threshold=0.9), r"unknown keys \['threshold'\]"),
    (dict(sampler="threshold", threshold=2), "threshold"),
    (dict(sampler="nope"), "sampler"),
    (dict(gen_length=64, block_length=30), "block_length"),
    (dict(kp=3), "cache is off"),
    (dict(cache="fastest"), "cache.*allowed: off, on"),
    (dict(mc_num=0), "mc_num"),
    (dict(sampler="slowfast", steps=8), "steps: 8 is not allowed with the slowfast sampler"),  # was ignored
])
def test_bad_model_args(args, match):
    with pytest.raises(ValueError, match=match):
        SlowFastLM(**args)


def test_sampler_and_cache_args_reach_the_engine():
    lm = SlowFastLM(sampler="threshold", confidence_threshold=0.8, cache="llada-gsm8k", kr=3, gen_length=32,
                    device="cpu")
    assert lm.policy_params["threshold"] == 0.8
    assert lm.settings.cache_settings().kr == 3 and lm.settings.cache_settings().kp == 50
    assert lm.generate_text("Q: 1+2+3+1=? A:")  # decodes with the cache
    with pytest.raises(NotImplementedError, match="ELBO"):
        lm.loglikelihood_rolling([request("loglikelihood_rolling", "some text")])


def test_lm_eval_device_and_batch_size():
    """lm_eval always passes a device (its command line's default is cuda:0) and a batch size:
    the model_args' device wins, and a device this machine lacks falls back to the default."""
    lm = SlowFastLM.create_from_arg_obj({"pretrained": "embedded", "gen_length": 32},
                                        {"device": "cuda:99", "batch_size": 1, "max_batch_size": None})
    assert lm.model.device.type == default_device().type
    lm = SlowFastLM.create_from_arg_string("gen_length=32,device=cpu", {"device": "cuda:0", "batch_size": 8})
    assert lm.model.device.type == "cpu" and lm.device.type == "cpu"
    with pytest.raises(ValueError, match="device"):
        SlowFastLM.create_from_arg_string("gen_length=32,device=cuda:99")


def test_chat_template(tiny_dir, tiny_model):
    """A tokenizer with a chat template (the tiny LLaDA-layout checkpoint): by default each
    context is one user turn, as the engine sends a prompt; after lm_eval renders the template
    itself (--apply_chat_template) the rendered text is encoded as it is, to the same ids."""
    lm = SlowFastLM(pretrained=str(tiny_dir), sampler="baseline", gen_length=16, steps=16, mc_num=2, device="cpu")
    assert lm.chat is True
    context = "What is 7+5?"
    ids = tiny_model.encode_prompt(context, chat=True)
    assert lm.encode_context(context) == ids and lm.encode_pair(context, " 12")[0] == ids
    settings = GenerationSettings(sampler="baseline", gen_length=16, block_length=16, steps=16, chat=True)
    assert lm.generate_text(context) == generate(tiny_model, context, settings).text
    rendered = lm.apply_chat_template([{"role": "user", "content": context}])
    assert lm.encode_context(rendered) == ids
    plain = SlowFastLM(pretrained=str(tiny_dir), chat=False, gen_length=16, device="cpu")
    assert plain.chat is False and plain.encode_context(context) == tiny_model.encode_prompt(context, chat=False)
