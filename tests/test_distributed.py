"""Scale-out: ``bench tasks`` and ``sweep`` under ``torchrun`` (2 processes, gloo, CPU) give exactly the
one-process results (NFE, tokens fed, texts, accuracy; not times), and only rank 0 prints and writes."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from slowfast.commands.cli import main
from slowfast.distributed import Dist, setup
from slowfast.engine import GenerationSettings, generate

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["Hi", "abc", "Copy: x y", "Q: 1+2", "hello there", "zz"]
G = 16
DRIVER = """\
import sys
from slowfast.commands.cli import main
args = sys.argv[1:]
cut = args.index("--then")
sys.exit(main(args[:cut]) or main(args[cut + 1:]))
"""
EXACT = ("nfe", "forwards", "tokens_fed", "text", "score", "stalled")


def test_one_process_is_rank_0_of_1_and_slices_are_rank_strided(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    d = setup()
    assert (d.rank, d.world, d.is_main, d.active) == (0, 1, True, False)
    assert d.shard(list(range(5))) == [0, 1, 2, 3, 4] and d.all_gather("x") == ["x"] and d.broadcast(3) == 3
    assert Dist(rank=1, world=3).shard(list(range(7))) == [1, 4]
    assert Dist().gather_rows([{"index": 2}, {"index": 0}]) == [{"index": 0}, {"index": 2}]
    assert Dist(rank=1, world=2, local_rank=1).device("cpu") == "cpu"


def test_two_gloo_processes_give_the_one_process_results(tiny_dir, tiny_model, tmp_path, capsys):
    data = tmp_path / "set.jsonl"
    rows = []
    for i, prompt in enumerate(PROMPTS):
        text = generate(tiny_model, prompt, GenerationSettings(sampler="baseline", gen_length=G, block_length=G,
                                                               steps=G)).text
        rows.append(json.dumps({"prompt": prompt, "answer": text if i % 2 == 0 else "?"}))
    data.write_text("\n".join(rows) + "\n")
    common = ["--model", str(tiny_dir), "--jsonl", str(data), "--count", "6", "--gen-length", str(G)]
    bench = ["bench", "tasks", *common, "--configs", "slowfast,slowfast+cache,threshold-0.7"]
    sweep = ["sweep", *common, "--grid", "exploration_steps=2,4", "--grid", "threshold=0.6"]

    assert main(bench + ["--json", str(tmp_path / "one.json")]) == 0
    assert main(sweep + ["--out", str(tmp_path / "one.jsonl")]) == 0
    capsys.readouterr()

    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(driver),
           *bench, "--json", str(tmp_path / "two.json"), "--then", *sweep, "--out", str(tmp_path / "two.jsonl")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: a hang kills the ranks too
    try:
        stdout, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("torchrun with 2 processes did not finish in 180 s")
    assert proc.returncode == 0, stderr[-3000:]
    printed = stdout.splitlines()  # rank 0 alone prints: one header per command
    assert sum(line.startswith("machine: ") for line in printed) == 1
    assert sum(line.startswith("sweep: 4 points") for line in printed) == 1
    assert "2 processes" in stdout

    one, two = (json.loads((tmp_path / f"{n}.json").read_text())["tasks"][0] for n in ("one", "two"))
    assert [r["index"] for r in two["problems"]] == list(range(6))
    for a, b in zip(one["problems"], two["problems"]):
        assert a["runs"].keys() == b["runs"].keys()
        for cid in a["runs"]:
            assert {k: a["runs"][cid][k] for k in EXACT} == {k: b["runs"][cid][k] for k in EXACT}
    for a, b in zip(one["configs"], two["configs"]):
        assert (a["id"], a["accuracy"], a["nfe"], a["tokens_fed"], a["speedup_nfe"]) == \
               (b["id"], b["accuracy"], b["nfe"], b["tokens_fed"], b["speedup_nfe"])
    assert 0 < one["configs"][0]["accuracy"] < 1

    lines = [(tmp_path / f"{n}.jsonl").read_text().splitlines() for n in ("one", "two")]
    assert len(lines[0]) == len(lines[1]) == 4
    for a, b in zip(*(map(json.loads, ls) for ls in lines)):
        assert [a[k] for k in ("key", "accuracy", "nfe", "tokens_fed")] == \
               [b[k] for k in ("key", "accuracy", "nfe", "tokens_fed")]
        assert [{k: r[k] for k in EXACT} for r in a["problems"]] == [{k: r[k] for k in EXACT} for r in b["problems"]]
