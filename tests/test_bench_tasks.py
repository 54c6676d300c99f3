"""``python -m slowfast bench tasks`` and ``bench overhead``: every configuration over a prompt set,
accuracy by the set's scorer, exact NFE and tokens fed, speedups against one token per forward,
and the engine timed against a bare loop that replays its forwards."""
import json
import re
import statistics

import pytest

from slowfast.commands.bench.overhead import bench_overhead
from slowfast.commands.bench.tasks import BASE, CONFIG_IDS, bench_task, summarize_configs, task_configs
from slowfast.commands.common import machine, machine_line
from slowfast.cache import CACHE_PRESETS
from slowfast.commands.cli import main
from slowfast.engine import GenerationSettings, generate
from slowfast.problems import Problem, ProblemSet, problem_set, read_jsonl

PROMPTS = ["Hi", "abc", "Copy: x y", "Q: 1+2", "hello there", "zz"]
G = 16


@pytest.fixture(scope="module")
def jsonl(tiny_model, tmp_path_factory):
    """Six prompts; the first three answered with the baseline's own text (so they score 1)."""
    path = tmp_path_factory.mktemp("tasks") / "set.jsonl"
    lines = []
    for i, prompt in enumerate(PROMPTS):
        text = generate(tiny_model, prompt, GenerationSettings(sampler="baseline", gen_length=G, block_length=G,
                                                               steps=G)).text
        lines.append(json.dumps({"prompt": prompt, "answer": f"  {text} " if i < 3 else text + "!"}))
    path.write_text("\n".join(lines) + "\n\n")
    return path


def test_the_configurations_are_the_issues_list():
    configs = task_configs(64, 64)
    assert [c[0] for c in configs] == list(CONFIG_IDS)
    by_id = {cid: s for cid, _, s in configs}
    assert [by_id[c].steps for c in ("baseline", "baseline/2", "baseline/4", "baseline/8")] == [64, 32, 16, 8]
    assert all(by_id[c].sampler == "baseline" for c in ("baseline", "baseline/2", "baseline/4", "baseline/8"))
    assert by_id["slowfast"].params == {} and by_id["slowfast"].cache is None
    assert by_id["slowfast-early"].params == {"stop_when_full": True}
    assert by_id["slowfast-paper"].params == {"variant": "paper"}
    assert by_id["slowfast+cache"].cache == CACHE_PRESETS["slowfast-headline"]
    assert [by_id[f"threshold-{t}"].params["threshold"] for t in ("0.7", "0.8", "0.9")] == [0.7, 0.8, 0.9]
    assert by_id["threshold-0.9+cache"].cache == CACHE_PRESETS["slowfast-headline"]


def test_reduced_baseline_steps_are_a_multiple_of_the_blocks():
    by_id = {cid: s for cid, _, s in task_configs(16, 4)}  # four blocks: gen/8 = 2 steps rounds up to 4
    assert [by_id[c].steps for c in ("baseline", "baseline/2", "baseline/4", "baseline/8")] == [16, 8, 4, 4]


def test_a_subset_always_keeps_the_baseline_and_unknown_ids_fail():
    assert [c[0] for c in task_configs(32, 32, only=["threshold-0.8"])] == [BASE, "threshold-0.8"]
    assert [c[0] for c in task_configs(32, 32, only=["slowfast+cache"], cache=False)] == [BASE]
    with pytest.raises(ValueError, match="--configs: nope not known"):
        task_configs(32, 32, only=["nope"])


def test_jsonl_scoring_is_exact_match_of_the_stripped_text(tmp_path):
    ps = ProblemSet(name="x", gen_length=8, metric="exact_match",
                    problems=[Problem(0, "p", " 12 ")], source="jsonl")
    assert ps.score(ps.problems[0], "12") == 1.0 and ps.score(ps.problems[0], "12.") == 0.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "answer": "b"}\n{"prompt": "", "answer": "b"}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_jsonl(bad)
    assert len(read_jsonl(bad, count=1)) == 1


def test_speed_by_time_is_the_median_of_paired_ratios():
    configs = task_configs(8, 8, only=["threshold-0.9"])

    def run(nfe, secs):
        return dict(nfe=nfe, forwards=nfe, tokens_fed=10 * nfe, seconds=secs, score=1.0, stalled=False)

    rows = [{"index": i, "runs": {BASE: run(8, b), "threshold-0.9": run(2, t)}}
            for i, (b, t) in enumerate([(1.0, 0.5), (2.0, 0.5), (3.0, 3.0)])]
    base, th = summarize_configs(configs, rows)
    assert base["speedup_nfe"] == base["speedup_time"] == 1.0
    assert th["speedup_nfe"] == 4.0 and th["speedup_tokens_fed"] == 4.0 and th["nfe"] == 2.0
    assert th["speedup_time"] == statistics.median([2.0, 4.0, 1.0])
    assert th["seconds"] == 4.0 and th["tokens_per_second"] == pytest.approx(8 * 3 / 4.0)


def test_bench_tasks_on_a_jsonl_set(tiny_dir, tiny_model, jsonl, tmp_path, capsys):
    out, md = tmp_path / "b.json", tmp_path / "b.md"
    code = main(["bench", "tasks", "--model", str(tiny_dir), "--jsonl", str(jsonl), "--gen-length", str(G),
                 "--configs", "slowfast,threshold-0.9,slowfast+cache", "--json", str(out), "--md", str(md)])
    text = capsys.readouterr().out
    assert code == 0
    assert "1 torch thread per process" in text and "6 prompts from the JSONL file" in text
    data = json.loads(out.read_text())
    (task,) = data["tasks"]
    assert [c["id"] for c in task["configs"]] == [BASE, "slowfast", "slowfast+cache", "threshold-0.9"]
    assert [r["index"] for r in task["problems"]] == list(range(6))
    base = task["configs"][0]
    assert base["nfe"] == G and base["accuracy"] == 0.5  # one token per forward; the three answers it wrote
    for c in task["configs"]:
        runs = [r["runs"][c["id"]] for r in task["problems"]]
        assert c["nfe"] == statistics.mean(r["nfe"] for r in runs)
        assert c["speedup_nfe"] == pytest.approx(G * 6 / sum(r["nfe"] for r in runs))
        assert c["accuracy"] == statistics.mean(r["score"] for r in runs)
        row = next(line for line in text.splitlines() if line.startswith(c["label"][:42]))
        assert f"{c['nfe']:.1f}" in row
    # the texts are the engine's, run alone with the same settings
    sf = GenerationSettings.from_dict(task["configs"][1]["settings"])
    assert task["configs"][1]["id"] == "slowfast"
    assert task["problems"][4]["runs"]["slowfast"]["text"] == generate(tiny_model, PROMPTS[4], sf).text
    m = md.read_text()
    assert data["machine"]["cpu"] in m and f"torch {data['machine']['torch']}" in m and data["machine"]["date"] in m
    assert "| SlowFast (reference defaults) |" in m and "--configs slowfast,threshold-0.9,slowfast+cache" in m


def test_bench_tasks_on_an_embedded_task_uses_its_scorer():
    from slowfast.models import load_model

    model = load_model("embedded", device="cpu")
    ps = problem_set("copy", 2)
    r = bench_task(model, ps, task_configs(ps.gen_length, ps.gen_length, only=["threshold-0.9"]), progress=False)
    assert r["metric"] == "exact_match" and r["count"] == 2 and r["gen_length"] == 16
    for row, ex in zip(r["problems"], ps.problems):
        for run in row["runs"].values():
            assert run["score"] == float(ex.answer.strip() == run["text"].strip())


def test_bad_bench_input_exits_2(tiny_dir, capsys, tmp_path):
    assert main(["bench", "tasks", "--model", str(tiny_dir), "--task", "nope"]) == 2
    assert "task: 'nope' is not known" in capsys.readouterr().err
    assert main(["bench", "tasks", "--model", str(tiny_dir), "--task", "copy", "--configs", "x"]) == 2
    assert "--configs: x not known" in capsys.readouterr().err
    assert main(["bench", "tasks", "--task", "copy", "--json", str(tmp_path / "no" / "x.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_overhead_replays_the_engines_forwards(tiny_model, tiny_dir, capsys):
    settings = GenerationSettings(sampler="slowfast", gen_length=32, block_length=32, steps=32, chat=False)
    ids = tiny_model.encode_prompt("Hello", chat=False)
    r = bench_overhead(tiny_model, ids, settings, repeats=2)
    assert r["same_canvas"] and r["steps"] == r["nfe"] and r["bare_s"] > 0
    cached = GenerationSettings(sampler="threshold", gen_length=32, block_length=32, steps=32, chat=False,
                                cache=dict(CACHE_PRESETS["slowfast-headline"]))
    assert bench_overhead(tiny_model, ids, cached, repeats=1)["same_canvas"]
    assert main(["bench", "overhead", "--model", str(tiny_dir), "--gen-length", "16", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"engine overhead [+-][\d.]+% \([\d.-]+ ms per forward\)", out)
    assert "same final canvas as the engine: yes" in out


def test_the_machine_line_states_threads_and_torch():
    import torch

    line = machine_line(machine("cpu", 3, 2))
    assert "3 torch threads per process" in line and "2 processes" in line and torch.__version__ in line


def test_a_run_the_engine_ends_counts_as_stalled_with_what_it_decoded(tiny_model):
    from slowfast.problems import run_problem

    ps = ProblemSet(name="x", gen_length=G, metric="exact_match", problems=[Problem(0, "Hi", "x")], source="jsonl")
    capped = GenerationSettings(sampler="baseline", gen_length=G, block_length=G, steps=G, max_forwards_per_block=3)
    r = run_problem(tiny_model, ps, ps.problems[0], capped)
    assert r["stalled"] and r["nfe"] == 3 and r["score"] == 0.0
    assert not run_problem(tiny_model, ps, ps.problems[0], GenerationSettings(sampler="threshold", gen_length=G,
                                                                              block_length=G))["stalled"]
