"""``python -m slowfast sweep``: grid and random points over the parameters' ranges, each scored for
accuracy and speed, the Pareto front of accuracy vs NFE, resumable JSONL + CSV results, and
``visuals.pareto_figure``."""
import csv
import json

import plotly.graph_objects as go
import pytest

import visuals
from slowfast.commands.cli import main
from slowfast.commands.sweep import load_points, parse_grid
from slowfast.engine import GenerationSettings, generate
from slowfast.params import BY_NAME
from slowfast.problems import problem_set
from slowfast.sweep import ALL_PARAMS, BASELINE_POINT, grid_points, iter_sweep, pareto_front, random_points

PROMPTS = ["Hi", "abc", "Copy: x y", "zz"]
G = 16


@pytest.fixture(scope="module")
def jsonl(tiny_model, tmp_path_factory):
    """Four prompts; the first two answered with the baseline's own text."""
    path = tmp_path_factory.mktemp("sweep") / "set.jsonl"
    rows = []
    for i, prompt in enumerate(PROMPTS):
        text = generate(tiny_model, prompt, GenerationSettings(sampler="baseline", gen_length=G, block_length=G,
                                                               steps=G)).text
        rows.append(json.dumps({"prompt": prompt, "answer": text if i < 2 else "?"}))
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_grid_is_every_combination_per_sampler():
    grid = parse_grid(["exploration_steps=2,4", "high_confidence_threshold=0.8,0.9", "threshold=0.7,0.9"])
    assert grid == {"exploration_steps": [2, 4], "high_confidence_threshold": [0.8, 0.9], "threshold": [0.7, 0.9]}
    points = grid_points(grid)
    assert points[0] == BASELINE_POINT
    slowfast = [p for p in points if p["sampler"] == "slowfast"]
    assert [(p["params"]["exploration_steps"], p["params"]["high_confidence_threshold"]) for p in slowfast] == [
        (2, 0.8), (2, 0.9), (4, 0.8), (4, 0.9)]
    assert all(len(p["params"]) == 2 for p in slowfast)
    assert [p["params"] for p in points if p["sampler"] == "threshold"] == [{"threshold": 0.7}, {"threshold": 0.9}]
    assert all(p["cache"] is None for p in points)


def test_cache_axes_multiply_the_points_and_a_sampler_without_axes_runs_its_defaults():
    points = grid_points(parse_grid(["kr=2,5", "rho=0.25"]), baseline=False)
    assert [(p["sampler"], p["params"], p["cache"]) for p in points] == [
        ("slowfast", {}, {"kr": 2, "rho": 0.25}), ("slowfast", {}, {"kr": 5, "rho": 0.25}),
        ("threshold", {}, {"kr": 2, "rho": 0.25}), ("threshold", {}, {"kr": 5, "rho": 0.25})]
    both = grid_points({"threshold": [0.9]}, samplers=["threshold"], cache="both", baseline=False)
    assert [p["cache"] for p in both] == [None, {}]


@pytest.mark.parametrize("spec, message", [("nope=1", "NAME one of"), ("exploration_steps=2.5", "an integer"),
                                           ("threshold=", "no values"), ("threshold", "NAME one of")])
def test_bad_grids_fail_with_one_line(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_grid([spec])


def test_random_points_are_seeded_and_inside_the_ranges():
    a = random_points(12, seed=3, cache="both")
    assert a == random_points(12, seed=3, cache="both") and a != random_points(12, seed=4, cache="both")
    assert [p["sampler"] for p in a[1:5]] == ["slowfast", "threshold", "slowfast", "threshold"]
    for p in a[1:]:
        for name, value in {**p["params"], **(p["cache"] or {})}.items():
            assert BY_NAME[name].low <= value <= BY_NAME[name].high, name
            assert isinstance(value, int) == isinstance(BY_NAME[name].default, int)
        GenerationSettings(sampler=p["sampler"], gen_length=32, block_length=32, params=p["params"],
                           cache=p["cache"]).policy()  # every draw is a valid setting
    assert {p["cache"] is None for p in a[1:]} == {True, False}
    fixed = random_points(6, seed=0, samplers=["threshold"], fixed={"threshold": [0.5, 0.75]}, baseline=False)
    assert {p["params"]["threshold"] for p in fixed} <= {0.5, 0.75}


def test_the_front_keeps_what_nothing_beats_on_both():
    pts = [dict(name=n, accuracy=a, nfe=f) for n, a, f in
           [("a", 0.5, 10), ("b", 0.6, 20), ("c", 0.4, 15), ("d", 0.6, 30), ("e", 0.9, 50), ("f", 0.5, 10),
            ("g", 0.2, 5), ("h", 0.9, 60)]]
    assert [p["name"] for p in pareto_front(pts)] == ["g", "a", "f", "b", "e"]  # ties at the same point both kept
    assert pareto_front([]) == []


def test_the_front_leaves_out_zero_scores_and_its_table_lists_the_most_accurate_first():
    pts = [dict(name=n, accuracy=a, nfe=f) for n, a, f in
           [("zero", 0.0, 3), ("low", 0.5, 10), ("top", 1.0, 40), ("tie", 0.5, 10), ("beaten", 0.5, 50)]]
    front = pareto_front(pts)
    assert [p["name"] for p in front] == ["low", "tie", "top"]  # the 0% point is cheapest, yet not on it
    from slowfast.sweep import best_first

    assert [p["name"] for p in best_first(front)] == ["top", "low", "tie"]
    zeros = [dict(name="a", accuracy=0.0, nfe=9), dict(name="b", accuracy=0.0, nfe=4)]
    assert [p["name"] for p in pareto_front(zeros)] == ["b"]  # nothing above 0: the cheapest stays


def test_tune_points_start_informative_and_score_the_baseline_last(tiny_model, jsonl):
    from slowfast.sweep import INFORMATIVE_POINTS, tune_points

    points = tune_points(2, seed=0)
    assert points[:len(INFORMATIVE_POINTS)] == list(INFORMATIVE_POINTS)
    assert [p["params"]["exploration_steps"] for p in points if p["sampler"] == "slowfast"][:2] == [1, 2]
    assert points[len(INFORMATIVE_POINTS):-1] == random_points(2, seed=0, baseline=False)
    assert points[-1] == BASELINE_POINT and tune_points(2, seed=0, baseline=False) == points[:-1]
    problems = problem_set(jsonl=jsonl, count=1, gen_length=G)
    scored = [p["sampler"] for p in iter_sweep(tiny_model, problems, points)]
    assert scored[0] != "baseline" and scored[-1] == "baseline" and scored.count("baseline") == 1


def test_iter_sweep_yields_scored_points_that_reload_into_the_engine(tiny_model, jsonl):
    problems = problem_set(jsonl=jsonl, count=4, gen_length=G)
    points = grid_points({"threshold": [0.5, 0.9]}, samplers=["threshold"])
    calls = []
    it = iter_sweep(tiny_model, problems, points, progress=lambda done, total: calls.append((done, total)))
    first = next(it)  # one point at a time
    assert first["label"] == "baseline, 1 token per forward" and first["nfe"] == G and first["accuracy"] == 0.5
    assert len(calls) == 4
    rest = list(it)
    assert [p["params"] for p in rest] == [{"threshold": 0.5}, {"threshold": 0.9}] and calls[-1] == (12, 12)
    for p in [first, *rest]:
        assert p["count"] == 4 and p["metric"] == "exact_match"
        settings = GenerationSettings.from_dict(p["settings"])
        runs = [generate(tiny_model, prob.prompt, settings) for prob in problems.problems]
        assert p["nfe"] == sum(t.summary["nfe"] for t in runs) / 4
        assert p["tokens_fed"] == sum(t.summary["tokens_fed"] for t in runs) / 4
        assert [r["text"] for r in p["problems"]] == [t.text for t in runs]
    skipped = list(iter_sweep(tiny_model, problems, points, done={first["key"], rest[0]["key"]}))
    assert [p["key"] for p in skipped] == [rest[1]["key"]]
    with pytest.raises(ValueError, match="threshold: 2"):
        next(iter_sweep(tiny_model, problems, [{"sampler": "threshold", "params": {"threshold": 2}, "cache": None}]))


def test_the_cli_resumes_writes_csv_and_reloads_the_front(tiny_dir, jsonl, tmp_path, capsys):
    out = tmp_path / "s.jsonl"
    base = ["sweep", "--model", str(tiny_dir), "--jsonl", str(jsonl), "--count", "4", "--gen-length", str(G),
            "--samplers", "threshold", "--out", str(out)]
    assert main(base + ["--grid", "threshold=0.5,0.9"]) == 0
    first = capsys.readouterr().out
    assert "3 points (0 already in" in first and "[3/3]" in first and "Pareto front" in first
    assert len(out.read_text().splitlines()) == 3
    assert main(base + ["--grid", "threshold=0.5,0.7,0.9", "--html", str(tmp_path / "f.html")]) == 0
    second = capsys.readouterr().out
    assert "4 points (3 already in" in second and "[1/1]" in second and "threshold threshold=0.7" in second
    points = load_points(out)
    assert len(points) == 4 and (tmp_path / "f.html").stat().st_size > 0
    with open(tmp_path / "s.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and set(ALL_PARAMS) <= set(rows[0])
    front_labels = {p["label"] for p in pareto_front(points)}
    assert {r["label"] for r in rows if r["on_front"] == "True"} == front_labels
    assert main(["sweep", "--load", str(out)]) == 0
    loaded = capsys.readouterr().out
    assert f"({len(front_labels)} of 4 points)" in loaded and all(label in loaded for label in front_labels)
    with open(out, "a") as f:
        f.write('{"key": "cut sh')  # a crash mid-line: skipped with a warning
    assert len(load_points(out)) == 4


def test_bad_sweep_input_exits_2(tiny_dir, capsys, tmp_path):
    assert main(["sweep", "--model", str(tiny_dir), "--grid", "nope=1"]) == 2
    assert "--grid: 'nope=1'" in capsys.readouterr().err
    assert main(["sweep", "--model", str(tiny_dir), "--grid", "threshold=1.5"]) == 2
    assert "threshold: 1.5" in capsys.readouterr().err
    assert main(["sweep", "--load", str(tmp_path / "none.jsonl")]) == 2
    assert "holds no scored points" in capsys.readouterr().err


def test_the_pareto_figure_tells_samplers_apart_and_carries_settings():
    def point(sampler, acc, nfe, cache=None, **params):
        settings = {"sampler": sampler, "params": params, "cache": cache}
        return {"sampler": sampler, "params": params, "cache": cache, "accuracy": acc, "nfe": nfe,
                "tokens_fed": 10 * nfe, "seconds_per_prompt": 0.1, "label": f"{sampler} {params}",
                "settings": settings, "metric": "exact_match"}

    pts = [point("baseline", 0.5, 16), point("slowfast", 0.5, 8, exploration_steps=2),
           point("slowfast", 0.75, 12, cache={"kr": 2}), point("threshold", 0.25, 2, threshold=0.5),
           point("threshold", 0.5, 9, threshold=0.9)]
    fig = visuals.pareto_figure(pts)
    assert isinstance(fig, go.Figure)
    markers = {t.name: t for t in fig.data if t.mode == "markers"}
    assert set(markers) == {"baseline", "slowfast", "slowfast + cache", "threshold"}
    assert len({(t.marker.symbol, t.marker.color) for t in markers.values()}) == 4
    th = markers["threshold"]
    assert list(th.x) == [2, 9] and list(th.y) == [0.25, 0.5]
    assert [json.loads(c)["params"] for c in th.customdata] == [{"threshold": 0.5}, {"threshold": 0.9}]
    assert "threshold" in th.hovertext[0] and "accuracy 25.0%" in th.hovertext[0]
    (front,) = [t for t in fig.data if t.name == "Pareto front"]
    assert front.line.shape == "hv" and list(front.x) == [2, 8, 12] and list(front.y) == [0.25, 0.5, 0.75]
    given = visuals.pareto_figure(pts, front=[pts[0]])
    assert list([t for t in given.data if t.name == "Pareto front"][0].x) == [16]
    empty = visuals.pareto_figure([])
    assert not empty.data and "no scored points" in empty.layout.annotations[0].text
