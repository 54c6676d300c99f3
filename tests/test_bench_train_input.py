"""Bad input to ``bench`` and ``train``: one line on stderr, ``error: --flag: ...``, exit status
2, no traceback, and nothing run, built or written first (an existing model folder is kept)."""
import json

import pytest
import torch

from slowfast.commands import gpu_bench, train
from slowfast.commands.bench import cache as bench
from slowfast.commands.cli import main as cli_main

TINY_SHAPE = dict(d_model=32, n_heads=2, n_kv_heads=2, n_layers=2, mlp_hidden_size=64, vocab_size=64,
                  embedding_size=64, max_sequence_length=128, rope_theta=10000.0)


def refused(argv, capsys, flag):
    """``python -m slowfast ARGV`` exits 2 with one ``error: FLAG: ...`` line and prints nothing else."""
    assert cli_main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"error: {flag}: ") and err.count("\n") == 1, err
    assert out == ""
    return err


@pytest.fixture
def no_model_built(monkeypatch):
    """A network built anyway fails the test at once (an 8B one would not fit a test machine)."""
    def fail(*args, **kwargs):
        raise AssertionError("a model was built before the flags were checked")

    monkeypatch.setattr(bench, "Transformer", fail)


# --- bench cache (defects 5, 12, 19, 22, 27) ------------------------------------------------------

@pytest.mark.parametrize("argv, flag", [
    (["--shape", "llada-8b", "--layers", "0"], "--layers"),  # 0 meant all 32 layers
    (["--shape", "llada-8b", "--layers", "33"], "--layers"),
    (["--layers", "2"], "--layers"),  # without --shape it was ignored
    (["--gen-length", "0"], "--gen-length"),
    (["--gen-length", "-4"], "--gen-length"),
    (["--prompt-len", "-3"], "--prompt-len"),
    (["--device", "bogus"], "--device"),
    (["--repeats", "0"], "--repeats"),
    (["--repeats", "-2"], "--repeats"),
])
def test_bench_cache_refuses_bad_flags_before_anything_runs(argv, flag, capsys, no_model_built):
    err = refused(["bench", "cache", *argv], capsys, flag)
    if flag == "--layers" and "--shape" in argv:
        assert "1 .. 32" in err


def test_bench_cache_checks_the_memory_of_a_shape_before_building_it(monkeypatch, capsys, no_model_built):
    from slowfast.models import loading

    monkeypatch.setattr(loading, "memory_available", lambda device=None: 8 * 10**9)
    err = refused(["bench", "cache", "--shape", "llada-8b", "--device", "cpu"], capsys, "--shape")
    assert "(32 layers)" in err and "needs about 38.5 GB in float32" in err and "cpu has 8.0 GB" in err
    assert "--layers 1 .. " in err


def test_bench_cache_on_one_layer_does_not_speak_of_layers_above_it(monkeypatch, capsys):
    monkeypatch.setitem(bench.SHAPES, "tiny", TINY_SHAPE)
    argv = ["bench", "cache", "--shape", "tiny", "--prompt-len", "4", "--gen-length", "8", "--repeats", "1",
            "--device", "cpu"]
    assert cli_main(argv + ["--layers", "1"]) == 0
    out = capsys.readouterr().out
    assert "layers >= 1" not in out and "only layer (layer 0) refreshes fully" in out
    assert cli_main(argv + ["--layers", "2"]) == 0
    assert "layers >= 1 recompute" in capsys.readouterr().out


# --- bench overhead, samplers, render, tasks (defects 12, 16, 20, 21, 22, 26) ------------------------

@pytest.mark.parametrize("argv, flag", [
    (["overhead", "--threads", "0"], "--threads"),
    (["overhead", "--block-length", "0"], "--block-length"),  # 0 became the default
    (["samplers", "--prompt", "P", "--gen-length", "16", "--block-length", "16", "--kp", "0"], "kp"),
    (["samplers", "--prompt", "P", "--gen-length", "16", "--block-length", "16", "--rho", "5"], "rho"),
    (["render", "--interval", "-1"], "--interval"),
    (["render", "--budget", "-1"], "--budget"),
    (["render", "--budget", "0"], "--budget"),
    (["render", "--repeats", "0"], "--repeats"),
    (["tasks", "--block-length", "0", "--count", "1"], "--block-length"),
])
def test_bench_commands_refuse_bad_flags_before_the_first_run(argv, flag, capsys):
    refused(["bench", *argv], capsys, flag)  # nothing printed: no table row before the error


@pytest.mark.parametrize("command", ["samplers", "render"])
def test_samplers_and_render_default_the_block_to_the_generation_length(command, capsys):
    argv = ["bench", command, "--gen-length", "16"] + (["--prompt", "P"] if command == "samplers" else
                                                      ["--repeats", "1"])
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert ("gen 16, block 16" if command == "samplers" else "gen 16 |") in out
    # with the default generation length (128) the block stays 128, as before
    parser_args = bench_args(["bench", command] + (["--prompt", "P"] if command == "samplers" else []))
    assert parser_args.gen_length == 128 and (parser_args.block_length or parser_args.gen_length) == 128


def bench_args(argv):
    from slowfast.commands.cli import build_parser

    return build_parser().parse_args(argv)


def test_bench_tasks_names_the_flag_of_a_file_that_is_not_utf8(tmp_path, capsys):
    path = tmp_path / "bin.jsonl"
    path.write_bytes(b"\xff\xfe\x00not text\n")
    err = refused(["bench", "tasks", "--jsonl", str(path), "--count", "1"], capsys, "--jsonl")
    assert "UTF-8" in err


# --- bench gpu's report (defect 27) -------------------------------------------------------------------

def test_the_gpu_report_ends_the_profile_source_sentence(tmp_path):
    trace = tmp_path / "t.json"
    trace.write_text(json.dumps({"settings": {"gen_length": 8, "sampler": "slowfast"},
                                 "records": [{"fed_end": 8}, {"fed_end": 4}]}))
    md = tmp_path / "r.md"
    assert gpu_bench.main(["--small", "--device", "cpu", "--max-minutes", "1e-9", "--profile", str(trace),
                           "--out", str(tmp_path / "r.json"), "--md", str(md)]) == 0
    text = md.read_text()
    assert "gen_length, in order. Ms at an extent" in text and "in order Ms" not in text


# --- train (defects 13, 14, 26) -----------------------------------------------------------------------

TINY = ["--d-model", "32", "--n-layers", "1", "--n-heads", "2", "--mlp-hidden", "64", "--threads", "1",
        "--batch-story", "2", "--batch-arithmetic", "2", "--batch-copy", "2", "--eval-n", "2", "--warmup", "2",
        "--steps", "2", "--eval-every", "2"]


def train_refused(tmp_path, capsys, flag, *extra):
    """train exits 2 with one ``error: FLAG: ...`` line, creating neither the work-dir nor the export."""
    work, out = tmp_path / "work", tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / "keep.txt").write_text("the model that was there")
    assert train.main(TINY + ["--work-dir", str(work), "--out", str(out), *extra]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {flag}: ") and captured.err.count("\n") == 1, captured.err
    assert captured.out == ""
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # nothing exported
    return work, captured.err


@pytest.mark.parametrize("extra, flag", [
    (["--n-heads", "3"], "--n-heads"),
    (["--lr", "-1"], "--lr"),
    (["--threads", "0"], "--threads"),
    (["--device", "bogus"], "--device"),
    (["--eval-every", "0"], "--eval-every"),
    (["--vocab-size", "10"], "--vocab-size"),
    (["--init-from", "/nope"], "--init-from"),
    (["--ema", "1.5"], "--ema"),
    (["--steps", "0"], "--steps"),  # exported an untrained model
    (["--steps", "-5"], "--steps"),
    (["--batch-story", "-1"], "--batch-story"),
    (["--max-minutes", "-1"], "--max-minutes"),
    (["--suffix-p", "2"], "--suffix-p"),  # was exit status 1 and no "error:"
    (["--event-p", "1", "--event-tasks", "copy"], "--event-tasks"),
])
def test_train_refuses_bad_flags_before_anything_is_created(tmp_path, capsys, extra, flag):
    work, _ = train_refused(tmp_path, capsys, flag, *extra)
    assert not work.exists()


def test_train_refuses_an_init_from_folder_of_another_shape(tmp_path, capsys):
    from slowfast.models.loading import EMBEDDED_DIR

    work, err = train_refused(tmp_path, capsys, "--d-model", "--init-from", str(EMBEDDED_DIR))
    assert "d_model 256" in err and not work.exists()


def test_resuming_with_another_network_names_the_setting_of_the_work_dir(tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    saved = {"d_model": 32, "n_layers": 1, "n_heads": 2, "mlp_hidden": 64, "max_seq_len": 512, "vocab_size": 512}
    torch.save({"args": saved, "step": 1}, work / "state.pt")
    _, err = train_refused(tmp_path, capsys, "--d-model", "--d-model", "64")
    assert "started with --d-model 32" in err
    assert sorted(p.name for p in work.iterdir()) == ["state.pt"]  # no tokenizer, no log written


def test_a_vocabulary_too_small_for_the_answers_is_refused_before_the_work_dir(tmp_path, capsys):
    work, err = train_refused(tmp_path, capsys, "--vocab-size", "--vocab-size", "259")
    assert "more than its canvas" in err and not work.exists()


def test_a_run_stopped_before_its_first_step_exports_nothing(tmp_path, capsys):
    work, out = tmp_path / "work", tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("the model that was there")
    assert train.main(TINY + ["--work-dir", str(work), "--out", str(out), "--max-minutes", "1e-9"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert "nothing evaluated or exported" in (work / "train.log").read_text()
