"""slowfast/gpu_bench.py's CPU path on the shrunken shape (--small): every section measured, the
projection's arithmetic against a longhand recomputation, the anchor run, the shapes of record."""
import json

import pytest
import torch

from slowfast.commands import gpu_bench
from slowfast.models.loading import LLADA_8B, parameter_count


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu-bench")
    out, md = folder / "bench-{gpu}.json", folder / "bench-{gpu}.md"
    rc = gpu_bench.main(["--small", "--device", "cpu", "--repeats", "2", "--out", str(out), "--md", str(md)])
    assert rc == 0
    res = json.loads((folder / "bench-cpu.json").read_text())
    return res, (folder / "bench-cpu.md").read_text()


def test_every_section_is_measured_with_positive_numbers(report):
    res, _ = report
    s = res["settings"]
    assert s["small"] and s["device"] == "cpu" and s["cache"] == {"kp": 100, "kr": 5, "rho": 0.25}
    assert [x["gen_length"] for x in res["lengths"]] == s["gen_lengths"] == [128, 256]
    for length in res["lengths"]:
        G, P = length["gen_length"], length["prompt_length"]
        f = length["forwards"]
        assert f["full"]["ms"] > 0 and f["full"]["tokens_fed"] == P + G
        assert f["full"]["flops"] > 0 and f["full"]["tflops_per_s"] > 0
        assert f["full"]["mfu"] is None  # a CPU has no peak in the table
        assert 0 < f["truncated"]["ms"] and f["truncated"]["tokens_fed"] == P + s["span"] < f["full"]["tokens_fed"]
        assert f["truncated"]["flops"] < f["full"]["flops"]
        cached = f["cached"]
        assert cached["case"].startswith("V-verify") and cached["ms"] > 0 and cached["tokens_fed"] == P + G
        assert cached["samples"] >= s["repeats"]
        # V-verify at rho 0.25 recomputes layer 0 fully and a quarter of the response rows elsewhere
        assert 0 < cached["rows_recomputed"] < 1
        assert cached["flops"] < f["full"]["flops"]
        assert {"both", "response", "neither"} <= set(f["cached_cases"])
        assert all(e["ms"] > 0 for e in length["extents"]["no_cache"])
        assert {e["extent"] for e in length["extents"]["no_cache"]} >= {s["span"], G}
    a = res["anchor"]
    assert a["new_tokens"] == max(s["gen_lengths"]) and a["prompt_length"] == s["prompt_length"]
    assert a["tokens_per_s"] > 0 and a["config"]["num_key_value_heads"] == 2
    assert all(n == a["new_tokens"] for v in a["variants"] for n in v["new_tokens_made"])
    assert len(res["projections"]) == 2
    for proj in res["projections"]:
        assert proj["label"] == gpu_bench.PROJECTION_LABEL
        assert [c["config"] for c in proj["configs"]] == ["baseline", "slowfast", "slowfast + cache"]
        assert all(c["tokens_per_s"] > 0 and c["x_anchor"] > 0 for c in proj["configs"])
        base, sf = proj["configs"][0], proj["configs"][1]
        assert base["nfe"] == proj["gen_length"] and sf["nfe"] == 80 and sf["tokens_fed"] < base["tokens_fed"]


def test_the_report_states_the_machine_and_labels_the_projection(report):
    res, md = report
    assert res["machine"]["torch"] == torch.__version__ and res["settings"]["dtype"] == "float32"
    assert "Projection from measured per-forward times (not a measured generation)" in md
    assert "Autoregressive anchor" in md and res["command"].startswith("python -m slowfast bench gpu --device cpu")
    assert "--small" in res["command"].split() and "--repeats 2" in res["command"]
    assert any("CUDA graphs" in n for n in res["notes"])


def longhand_ms(points, extent):
    """Piecewise linear between measured (extent, ms), clamped outside: written out again."""
    pts = sorted(points)
    if extent <= pts[0][0]:
        return pts[0][1]
    if extent >= pts[-1][0]:
        return pts[-1][1]
    i = max(j for j in range(len(pts)) if pts[j][0] <= extent)
    (e0, m0), (e1, m1) = pts[i], pts[i + 1]
    return m0 + (m1 - m0) * (extent - e0) / (e1 - e0)


def test_projection_equals_a_longhand_recomputation_from_the_reported_ms(report):
    res, _ = report
    kp, kr = res["settings"]["cache"]["kp"], res["settings"]["cache"]["kr"]
    fractions = res["profile"]["slowfast_fractions"]
    for proj, length in zip(res["projections"], res["lengths"]):
        G, P = proj["gen_length"], proj["prompt_length"]
        uncached = [(e["extent"], e["ms"]) for e in length["extents"]["no_cache"]]
        cached = {}
        for row in length["extents"]["cache"]:
            for case, e in row.items():
                cached.setdefault(case, []).append((e["extent"], e["ms"]))
        by_name = {c["config"]: c for c in proj["configs"]}
        for name, fr, with_cache in (("baseline", [1.0] * G, False), ("slowfast", fractions, False),
                                     ("slowfast + cache", fractions, True)):
            total, fed = 0.0, 0
            for f, x in enumerate(fr, 1):
                extent = min(max(round(x * G), 1), G)
                fed += P + extent
                if with_cache:
                    p, r = (f - 1) % kp == 0, (f - 1) % kr == 0
                    case = "both" if f == 1 or (p and r) else "response" if r else "prompt" if p else "neither"
                    total += longhand_ms(cached[case], extent)
                else:
                    total += longhand_ms(uncached, extent)
            c = by_name[name]
            assert c["nfe"] == len(fr) and c["tokens_fed"] == fed
            assert c["ms"] == pytest.approx(total, rel=1e-12)
            assert c["tokens_per_s"] == pytest.approx(G / (total / 1000.0), rel=1e-12)
            assert sum(g["count"] * g["ms"] for g in c["forwards"]) == pytest.approx(c["ms"], rel=1e-12)
            assert sum(g["count"] for g in c["forwards"]) == c["nfe"]
        base = by_name["baseline"]["tokens_per_s"]
        assert by_name["slowfast"]["x_baseline"] == pytest.approx(by_name["slowfast"]["tokens_per_s"] / base)
        assert by_name["slowfast + cache"]["x_anchor"] == pytest.approx(
            by_name["slowfast + cache"]["tokens_per_s"] / res["anchor"]["tokens_per_s"])
        # the baseline is G full forwards: exactly the measured full forward's median, G times
        assert by_name["baseline"]["ms"] == pytest.approx(G * length["forwards"]["full"]["ms"], rel=1e-12)


def test_the_shapes_are_llada_8b_and_llama_3_8b():
    cfg = gpu_bench.llada_config(small=False)
    for field in ("d_model", "n_heads", "kv_heads", "n_layers", "hidden_size", "vocab_size", "rows", "rope_theta",
                  "rms_norm_eps", "weight_tying", "include_bias", "max_sequence_length", "mask_token_id"):
        assert getattr(cfg, field) == getattr(LLADA_8B, field), field
    assert parameter_count(cfg) == 8_015_581_184
    llama = gpu_bench.llama_config(small=False)
    assert (llama.hidden_size, llama.num_hidden_layers, llama.num_attention_heads, llama.num_key_value_heads,
            llama.intermediate_size, llama.vocab_size) == (4096, 32, 32, 8, 14336, 128256)
    d, kv, ff, v, L = 4096, 1024, 14336, 128256, 32
    assert 2 * v * d + L * (2 * d * d + 2 * d * kv + 3 * d * ff + 2 * d) + d == 8_030_261_248  # Llama-3-8B's count


def test_random_weights_are_built_on_the_device_in_the_dtype_without_nans():
    cfg = gpu_bench.llada_config(small=True)
    net = gpu_bench.random_transformer(cfg, torch.device("cpu"), torch.bfloat16, seed=0)
    assert {p.dtype for p in net.parameters()} == {torch.bfloat16}
    assert all(p.device.type == "cpu" for p in net.parameters())
    assert torch.equal(net.transformer["ln_f"].weight, torch.ones(cfg.d_model, dtype=torch.bfloat16))
    with torch.inference_mode():
        logits = net(torch.randint(0, cfg.vocab_size, (1, 12)), logits_from=4)
    assert logits.shape == (1, 8, cfg.vocab_size) and torch.isfinite(logits).all()


def test_peak_table_and_override():
    assert gpu_bench.peak_flops("NVIDIA H200")[0] == 989.4e12
    assert gpu_bench.peak_flops("NVIDIA H100 80GB HBM3")[0] == 989.4e12
    assert gpu_bench.peak_flops("NVIDIA H100 PCIe")[0] == 756e12
    assert gpu_bench.peak_flops("NVIDIA A100-SXM4-80GB")[0] == 312e12
    assert gpu_bench.peak_flops("NVIDIA L4")[0] is None
    assert gpu_bench.peak_flops(None)[0] is None
    assert gpu_bench.peak_flops("NVIDIA L4", 121.0) == (121e12, "--peak-tflops 121")


def test_profiles_from_a_trace_and_from_a_summary(tmp_path):
    trace = {"format": "slowfast-trace", "settings": {"gen_length": 64, "sampler": "slowfast"},
             "records": [{"fed_end": 64}, {"fed_end": 16}, {"fed_end": 32}]}
    (tmp_path / "t.json").write_text(json.dumps(trace))
    p = gpu_bench.load_profile(str(tmp_path / "t.json"))
    assert p["slowfast"] == [1.0, 0.25, 0.5] and p["baseline"] is None
    summary = {"slowfast": {"nfe": 4, "tokens_fed": 4 * 100 + 128, "prompt_length": 100, "gen_length": 64}}
    (tmp_path / "s.json").write_text(json.dumps(summary))
    assert gpu_bench.load_profile(str(tmp_path / "s.json"))["slowfast"] == [0.5] * 4
    (tmp_path / "bad.json").write_text(json.dumps({"slowfast": [0.5, 1.5]}))
    with pytest.raises(ValueError, match="fractions"):
        gpu_bench.load_profile(str(tmp_path / "bad.json"))


def test_cache_schedule_cases():
    s = gpu_bench.CacheSettings(kp=100, kr=5, rho=0.25)
    cases = [gpu_bench.cache_case(s, f) for f in range(1, 12)]
    assert cases == ["both", "neither", "neither", "neither", "neither", "response", "neither", "neither",
                     "neither", "neither", "response"]
    assert gpu_bench.cache_case(s, 101) == "both"
    assert gpu_bench.cache_case(gpu_bench.CacheSettings(kp=3, kr=5), 4) == "prompt"


def test_the_time_budget_skips_parts_with_a_note(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert gpu_bench.main(["--small", "--device", "cpu", "--max-minutes", "1e-9", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["lengths"] == [] and res["anchor"] is None and res["projections"] == []
    assert any(n.startswith("skipped gen 128") for n in res["notes"])
    assert any(n.startswith("skipped the autoregressive anchor") for n in res["notes"])


def test_bad_options_fail_before_anything_runs(capsys):
    assert gpu_bench.main(["--small", "--device", "cpu", "--span", "999"]) == 2
    assert "--span" in capsys.readouterr().err
    assert gpu_bench.main(["--device", "cpu"]) == 2  # the 8B shape on a CPU: refused, --small suggested
    assert "--small" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        gpu_bench.main(["--help"])
    assert exc.value.code == 0


def test_wired_as_a_subcommand_its_func_runs_the_parsed_options(tmp_path):
    import argparse

    parser = argparse.ArgumentParser(prog="python -m slowfast")
    sub = parser.add_subparsers(dest="command").add_parser("bench").add_subparsers(dest="bench")
    gpu_bench.add_arguments(sub.add_parser("gpu"))
    out = tmp_path / "r.json"
    args = parser.parse_args(["bench", "gpu", "--small", "--device", "cpu", "--max-minutes", "1e-9", "--out", str(out)])
    assert args.func(args) == 0
    assert json.loads(out.read_text())["command"].startswith("python -m slowfast bench gpu --device cpu")
