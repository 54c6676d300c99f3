"""``python -m slowfast generate``: text, one summary line, a trace; bad input exits 2."""
import re
import subprocess
import sys

import pytest

from slowfast.commands.cli import main
from slowfast.trace import Trace


def test_generate_end_to_end_in_a_subprocess(tiny_dir, tmp_path):
    out = tmp_path / "trace.json"
    proc = subprocess.run(
        [sys.executable, "-m", "slowfast", "generate", "--model", str(tiny_dir), "--prompt", "Hello",
         "--sampler", "slowfast", "--gen-length", "64", "--block-length", "32", "--seed", "3",
         "--k-exploration-steps", "4", "--trace", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert re.fullmatch(r"NFE \d+ \| forwards \d+ \| tokens fed \d+ \| [\d.]+ s \| [\d.]+ tokens/s", lines[-2])
    trace = Trace.load(out)
    assert trace.settings["params"]["exploration_steps"] == 4 and trace.settings["seed"] == 3
    assert f"NFE {trace.summary['nfe']} " in lines[-2]
    assert "\n".join(lines[:-2]) == trace.text


@pytest.mark.parametrize("sampler, extra", [("baseline", ["--steps", "32", "--remasking", "random"]),
                                            ("threshold", ["--param", "factor=1.0"])])
def test_generate_other_samplers(tiny_dir, capsys, sampler, extra):
    code = main(["generate", "--model", str(tiny_dir), "--prompt", "Hi", "--sampler", sampler,
                 "--gen-length", "32", "--block-length", "16", "--no-chat", *extra])
    assert code == 0
    assert "NFE" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--gen-length", "60", "--block-length", "32"], "gen_length: 60 is not divisible by block_length 32"),
    (["--sampler", "nope"], "sampler: 'nope'"),
    (["--param", "tau_high_conf=1.5"], "high_confidence_threshold: 1.5"),
    (["--stability-window", "0"], "stability_window: 0"),
    (["--threshold", "0.5"], "threshold: unknown parameter for sampler 'slowfast'"),
    (["--prompt", "  "], "prompt: empty"),
    (["--gen-length", "512", "--block-length", "512"], "exceeds the model's context of 512"),
    (["--dtype", "int4"], "dtype: 'int4'"),
])
def test_bad_input_prints_one_line_and_exits_2(tiny_dir, capsys, args, message):
    base = ["generate", "--model", str(tiny_dir), "--prompt", "Hi"]
    code = main(base + args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_unknown_model_folder_exits_2(capsys, tmp_path):
    assert main(["generate", "--model", str(tmp_path / "missing"), "--prompt", "Hi"]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_generate_with_cache_and_preset(tiny_dir, tmp_path, capsys):
    out = tmp_path / "t.json"
    assert main(["generate", "--model", str(tiny_dir), "--prompt", "Hi", "--gen-length", "32",
                 "--cache-preset", "slowfast-gsm8k", "--transfer-ratio", "0.5", "--trace", str(out)]) == 0
    assert "cache" in capsys.readouterr().out.splitlines()[-2]
    assert Trace.load(out).settings["cache"] == {"kp": 15, "kr": 1, "rho": 0.5, "refresh_first_layer": True}


def test_cache_parameters_without_cache_exit_2(tiny_dir, capsys):
    assert main(["generate", "--model", str(tiny_dir), "--prompt", "Hi", "--kp", "3"]) == 2
    assert "need --cache" in capsys.readouterr().err


def test_bench_cache_prints_costs_next_to_recomputed_rows(tiny_dir, capsys):
    assert main(["bench", "cache", "--model", str(tiny_dir), "--prompt-len", "16", "--gen-length", "64",
                 "--repeats", "1"]) == 0
    rows = {line[:28].strip(): line.split()[-3:] for line in capsys.readouterr().out.splitlines()[2:-1]}
    # two layers: layer 0 recomputes all 80 rows, layer 1 int(64 * 0.25) = 16 (V-verify) or 64 (response)
    assert float(rows["V-verify (rho=0.25)"][2]) == pytest.approx((80 + 16) / 160)
    assert float(rows["response refresh"][2]) == pytest.approx((80 + 64) / 160)
    assert rows["full forward (no cache)"] == ["1.000", "1.000", "1.000"]


def test_bench_samplers_compares_side_by_side(tiny_dir, capsys):
    assert main(["bench", "samplers", "--model", str(tiny_dir), "--prompt", "Hi", "--gen-length", "32",
                 "--block-length", "32"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[2:]] == ["baseline", "slowfast", "slowfast,", "slowfast"]
    row = re.compile(r"(.+?)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x\s+([\d.]+|nan)x\s+(yes|no)")
    rows = {m[1]: m.groups()[1:] for m in map(row.fullmatch, lines[2:])}
    assert list(rows) == ["baseline", "slowfast", "slowfast, stop when full", "slowfast + cache"]
    nfe = {name: int(r[0]) for name, r in rows.items()}
    assert nfe["baseline"] == 32  # one token per forward: gen_length forwards
    assert rows["baseline"][4] == "1.00"
    # every other row's speedup by NFE is the baseline's NFE over its own, as the rows print them
    for name in ["slowfast", "slowfast, stop when full", "slowfast + cache"]:
        assert float(rows[name][4]) == pytest.approx(32 / nfe[name], abs=0.005), name
    assert nfe["slowfast"] < 32 and float(rows["slowfast"][4]) > 1.0  # SlowFast needs fewer forwards
    published, early = nfe["slowfast"], nfe["slowfast, stop when full"]
    assert early <= published  # stop_when_full only drops forwards that decode nothing


@pytest.mark.parametrize("extra, message", [
    (["--device", "meta"], "device: 'meta' is not allowed"),
    (["--device", "gpu7"], "device: 'gpu7' is not allowed"),
    (["--device", "cuda:3"], "device: 'cuda:3' is not available here"),
    (["--trace", "/nonexistent-folder/t.json"], "--trace: the folder /nonexistent-folder does not exist"),
    (["--param", "factor=true", "--sampler", "threshold"], "factor: True is not allowed"),
    (["--seed", str(2**64)], "seed: 18446744073709551616 is not allowed"),
])
def test_cli_edges_exit_2_before_any_run(tiny_dir, capsys, extra, message):
    code = main(["generate", "--model", str(tiny_dir), "--prompt", "Hi", "--gen-length", "16",
                 "--block-length", "16", *extra])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.strip() == f"error: {captured.err.strip()[7:]}" and message in captured.err
    assert "NFE" not in captured.out  # nothing ran


def test_trace_onto_a_folder_is_refused_before_the_run(tiny_dir, tmp_path, capsys):
    code = main(["generate", "--model", str(tiny_dir), "--prompt", "Hi", "--gen-length", "16",
                 "--block-length", "16", "--trace", str(tmp_path)])
    assert code == 2 and "is a folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no stray .tmp


def test_max_forwards_per_block_is_an_upper_bound(tiny_dir, tmp_path):
    out = tmp_path / "t.json"
    code = main(["generate", "--model", str(tiny_dir), "--prompt", "Hi", "--sampler", "baseline", "--gen-length",
                 "32", "--block-length", "16", "--steps", "32", "--max-forwards-per-block", "3", "--trace", str(out)])
    trace = Trace.load(out)
    assert code == 1 and len(trace.records) == 3 and "used 3 forwards" in trace.summary["error"]
