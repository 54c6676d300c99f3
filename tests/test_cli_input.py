"""Bad command-line input for generate, sweep, eval and lm-eval: one line on stderr, exit 2, no
traceback, nothing written; output paths checked before the run; results files never lost."""
import json
import shutil
import sys

import pytest

from slowfast.commands import evaluate
from slowfast.commands.cli import main
from slowfast.commands.sweep import load_points
from slowfast.models.loading import EMBEDDED_DIR
from slowfast.problems import problem_set
from slowfast.trace import Trace

SWEEP = ["sweep", "--task", "copy", "--count", "1"]
SMALL_SWEEP = SWEEP + ["--samplers", "threshold", "--grid", "threshold=0.9"]  # the baseline and one point
EVAL = ["eval", "--tasks", "copy", "--n", "1", "--slider-task", ""]


def refused(capsys, argv, message):
    """``argv`` exits 2 with one line on stderr that holds ``message``."""
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    return err


# --- generate ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--block-length", "0"], "block_length: 0"),  # 16: 0 was the default
    (["--sampler", "baseline", "--steps", "0"], "steps: 0"),
    (["--steps", "4"], "--steps: 4 is not allowed with the slowfast sampler"),  # 17: silently ignored
    (["--sampler", "threshold", "--steps", "4"], "allowed: --steps with the baseline or dream sampler"),
    (["--std-threshold", "inf"], "--std-threshold: inf is not allowed; it must be a finite number"),  # 11
    (["--param", "std_threshold=nan"], "--param std_threshold: nan is not allowed"),
    (["--cache", "--rho", "inf"], "--rho: inf is not allowed"),
    (["--trace", ""], "--trace: '' is not allowed"),  # 23: wrote nothing, exit 0
    (["--trace", "/proc/nope.json"], "--trace: the folder /proc is not writable"),  # 10: failed after the run
])
def test_generate_refuses_before_the_run(tiny_dir, capsys, args, message):
    refused(capsys, ["generate", "--model", str(tiny_dir), "--prompt", "Hi", "--gen-length", "16"] + args, message)


def test_a_trace_that_cannot_be_written_keeps_the_run_on_the_console(tiny_dir, capsys, tmp_path, monkeypatch):
    def fail(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Trace, "save", fail)
    code = main(["generate", "--model", str(tiny_dir), "--prompt", "Hi", "--gen-length", "16",
                 "--trace", str(tmp_path / "t.json")])
    out, err = capsys.readouterr()
    assert code == 1
    assert "NFE " in out.splitlines()[-1]
    assert err.strip().startswith("error: --trace:") and "No space left" in err and "Traceback" not in err


# --- sweep ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--samplers", "foo"], "samplers: ['foo'] is not allowed"),  # 1: KeyError
    (["--samplers", "baseline"], "allowed: slowfast, threshold"),
    (["--random", "0"], "--random: 0 is not allowed"),  # 16: ran the default grid
    (["--gen-length", "0"], "--gen-length: 0 is not allowed"),
    (["--block-length", "0"], "--block-length: 0 is not allowed"),
    (["--grid", "threshold=0.5,0.7", "--samplers", "slowfast"], "--grid: threshold is not allowed"),  # 18
    (["--grid", "kp=5", "--cache", "off"], "--grid: kp is not allowed"),
    (["--grid", "std_threshold=inf"], "each value must be a finite number"),  # 11
])
def test_sweep_refuses_before_the_run(capsys, args, message):
    refused(capsys, SWEEP + args, message)


def test_problem_sets_refuse_a_zero_gen_length():
    with pytest.raises(ValueError, match="--gen-length: 0 is not allowed"):
        problem_set("copy", 1, gen_length=0)


def test_the_csv_never_replaces_the_results(capsys, tmp_path):  # 2
    out = tmp_path / "sweep.csv"
    out.write_text("kept\n")
    refused(capsys, SWEEP + ["--out", str(out)], "--csv (default: --out with .csv): ")
    refused(capsys, SWEEP + ["--out", str(out), "--csv", str(out)], "it is the file of --out")
    assert out.read_text() == "kept\n"


def test_a_file_that_is_not_sweep_results_is_refused(capsys, tmp_path):  # 4
    foreign = tmp_path / "prompts.jsonl"
    foreign.write_text('{"prompt": "a", "answer": "b"}\n')
    refused(capsys, SWEEP + ["--out", str(foreign)], "line 1 is not a scored sweep point")
    assert foreign.read_text() == '{"prompt": "a", "answer": "b"}\n'


def test_load_names_a_missing_file(capsys, tmp_path):  # 25
    refused(capsys, ["sweep", "--load", str(tmp_path / "none.jsonl")], "does not exist")


def test_a_line_cut_short_is_dropped_when_the_sweep_resumes(capsys, tmp_path):  # 3
    out = tmp_path / "s.jsonl"
    assert main(SMALL_SWEEP + ["--out", str(out)]) == 0
    first, second = out.read_text().splitlines()
    out.write_text(first + "\n" + second[:40])  # a crash in the middle of the last point
    assert main(SMALL_SWEEP + ["--out", str(out)]) == 0
    assert "1 already in" in capsys.readouterr().out
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)
    assert main(SMALL_SWEEP + ["--out", str(out)]) == 0
    assert "2 already in" in capsys.readouterr().out and len(load_points(out)) == 2


def test_a_sweep_without_out_says_it_is_not_saved(capsys):  # 27
    assert main(SMALL_SWEEP) == 0
    out = capsys.readouterr().out
    assert "None" not in out and "not saved: no --out" in out


# --- eval -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "--n: 0 is not allowed"),  # 6: ZeroDivisionError
    (["--n", "-1"], "--n: -1 is not allowed"),
    (["--slider-n", "0"], "--slider-n: 0 is not allowed"),
    (["--also-blocks", "copy=0"], "--also-blocks: 'copy=0' is not allowed"),
    (["--threads", "0"], "--threads: 0 is not allowed"),
    (["--model", "/nope"], "model '/nope': no such folder"),  # 7: traceback
    (["--json", "/nope/x.json"], "--json: the folder /nope does not exist"),  # 8: failed after the run
    (["--tasks", ""], "--tasks: '' is not allowed"),  # 24: ran nothing
    (["--slider-task", "foo"], "--slider-task: 'foo' is not allowed"),
    (["--slider-task", "story"], "allowed: one of --tasks (copy)"),
])
def test_eval_refuses_before_the_run(capsys, args, message):
    refused(capsys, EVAL + args, message)


def test_card_replaces_only_the_reports_of_the_tasks_run(capsys, tmp_path):  # 9 (a copy, never the shipped card)
    folder = tmp_path / "embedded"
    shutil.copytree(EMBEDDED_DIR, folder)
    info_path = folder / "training_info.json"
    before = json.loads(info_path.read_text())["decoding"]
    assert all(f"| {task} | 100 |" in before for task in ("arithmetic", "chat-story", "story", "copy"))
    readme = (folder / "README.md").read_text()

    # copy shares its report with story: refused before the run, nothing written
    refused(capsys, EVAL + ["--model", str(folder), "--card"], "not only this run's copy")
    assert json.loads(info_path.read_text())["decoding"] == before and (folder / "README.md").read_text() == readme

    chain_and_chat = "arithmetic,chat-arithmetic,chat-story,chat-copy"
    assert main(["eval", "--model", str(folder), "--tasks", chain_and_chat, "--baseline-only", chain_and_chat[11:],
                 "--n", "1", "--slider-task", "", "--card"]) == 0
    assert "(0 min" not in capsys.readouterr().out  # 27
    after = json.loads(info_path.read_text())["decoding"]
    assert "| arithmetic | 1 |" in after and "| arithmetic | 100 |" not in after and "| chat-story | 1 |" in after
    kept = before[before.index("## Decoding", 10):]  # the story and copy report, and all text after it
    assert after.rstrip().endswith(kept.rstrip())
    assert "| arithmetic | 1 |" in (folder / "README.md").read_text()


def test_card_needs_a_trained_model(capsys, tiny_dir):
    refused(capsys, EVAL + ["--model", str(tiny_dir), "--card"], "has no training_info.json")


def test_markdown_reads_short_runs_in_seconds():
    assert evaluate.duration(5) == "5 s" and evaluate.duration(480) == "8 min"


def test_markdown_states_the_threads_it_ran_on():  # it said "one thread" whatever --threads was
    assert "-core CPU, 2 threads)" in evaluate.markdown([], "cmd", 5, 10, threads=2)
    assert "-core CPU, one thread)" in evaluate.markdown([], "cmd", 5, 10)


# --- lm-eval ----------------------------------------------------------------------------------------


def test_lm_eval_bad_model_args_exit_2(capsys, tmp_path, monkeypatch):  # 15
    pytest.importorskip("lm_eval")
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "Q: 1+2=? A:", "answer": "3"}\n')
    (tmp_path / "tiny_task.yaml").write_text(json.dumps({
        "task": "tiny_task", "dataset_path": "json", "test_split": "test",
        "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(tmp_path / "hf")},
        "output_type": "generate_until", "doc_to_text": "{{question}}", "doc_to_target": "{{answer}}",
        "metric_list": [{"metric": "exact_match"}]}))
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["lm-eval", "--model", "slowfast", "--model_args", "pretrained=embedded,sampler=foo",
                 "--tasks", "tiny_task", "--include_path", str(tmp_path)])
    err = capsys.readouterr().err.strip()  # lm_eval's own log lines, then ours
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("error: sampler: 'foo' is not allowed; allowed: baseline"), err


def test_lm_eval_help_names_the_slowfast_model(capsys, monkeypatch):  # 29
    pytest.importorskip("lm_eval")
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    assert main(["lm-eval", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.index("--model slowfast") < out.index("usage:")
    assert "model_args" in out and "pretrained" in out and "sampler" in out
