"""The model picker: the families with one line each (what runs them, whether they run here), and
a model this machine cannot hold refused before anything is downloaded (the memory check)."""
import os

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import app  # noqa: E402
from explorer.controls import families_markdown, model_choices  # noqa: E402
from slowfast.models import loading  # noqa: E402
from slowfast.models.families import FAMILIES, family_lines, family_of, refusal, verdict  # noqa: E402
from slowfast.session import Controls  # noqa: E402

GB = 10**9


@pytest.fixture
def memory(monkeypatch):
    """This machine's memory, as the memory check reads it (bytes)."""
    def set_to(available):
        monkeypatch.setattr(loading, "memory_available", lambda device=None: available)
    return set_to


def test_every_family_is_listed_in_one_line():
    titles = [f.title for f in FAMILIES]
    for needed in ("LLaDA-8B", "Dream-7B", "Masked LMs", "DiffusionGemma", "LLaDA2"):
        assert any(needed in t for t in titles), needed
    lines = family_lines()
    assert len(lines) == len(FAMILIES) and all("\n" not in line for line in lines)
    assert family_of("google/diffusiongemma-26B-A4B-it").title == "DiffusionGemma"
    assert family_of("inclusionAI/LLaDA2.1-mini").key == "llada2"
    assert family_of("embedded").key == "embedded"


def test_the_notes_say_what_runs_on_this_machine_and_what_needs_a_gpu(memory):
    memory(16 * GB)  # a 16 GB CPU machine
    lines = dict(zip([f.key for f in FAMILIES], family_lines("cpu")))
    assert lines["masked-lm"].endswith("runs here (cpu)")
    assert "needs a GPU with about 19 GB" in lines["llada"]  # 8B in bf16 + the margin
    assert "needs a GPU with about 62 GB" in lines["diffusion-gemma"]
    assert "needs a GPU" in lines["llada2"] and "runs on any CPU" in lines["embedded"]
    memory(64 * GB)  # enough for LLaDA-8B in fp32, not for the 16B MoE
    lines = dict(zip([f.key for f in FAMILIES], family_lines("cpu")))
    assert "runs here (cpu, seconds a forward)" in lines["llada"]
    assert "needs a GPU" in lines["llada2"]


def test_a_gpu_too_small_is_named_as_such():
    check = loading.MemoryCheck("inclusionAI/LLaDA2.1-flash", "cuda:0", "bfloat16", 100 * GB, 240 * GB, 80 * GB,
                                False, "")
    assert verdict(check) == "needs about 240 GB of GPU memory (more than one GPU)"
    assert "more than one GPU holds" in refusal(check) and "this GPU has 80 GB" in refusal(check)
    check = loading.MemoryCheck("google/diffusiongemma-26B-A4B-it", "cuda:0", "bfloat16", 26 * GB, 62 * GB, 40 * GB,
                                False, "")
    assert verdict(check) == "needs about 62 GB, more than this GPU's 40 GB"
    assert refusal(check).endswith("it needs a GPU with about 62 GB (bf16)")


def test_the_picker_lists_each_model_with_whether_it_runs_here(memory):
    memory(16 * GB)
    labels = dict((value, label) for label, value in model_choices("embedded"))
    assert "needs a GPU" in labels["google/diffusiongemma-26B-A4B-it"]
    assert "needs a GPU" in labels["inclusionAI/LLaDA2.1-mini"]
    assert "runs here" in labels["dllm-hub/ModernBERT-base-chat-v0.1"]
    markdown = families_markdown()
    assert markdown.count("\n- ") == len(FAMILIES) - 1 and "DiffusionGemma" in markdown


def test_what_cannot_run_here_is_refused_before_loading(memory, monkeypatch):
    memory(16 * GB)
    def no_download(*args, **kwargs):
        raise AssertionError("the model was loaded (or downloaded) although it cannot run here")
    monkeypatch.setattr("slowfast.session.load_model", no_download)
    values = [getattr(Controls(), n) for n in app.CONTROL_NAMES]
    for name in ("google/diffusiongemma-26B-A4B-it", "inclusionAI/LLaDA2.1-flash"):
        message, *_ = list(app.on_run(name, "Hi", {}, *values))[-1]
        assert message.startswith("⚠️ Not loaded: ") and "cannot run here" in message and "needs a GPU" in message


def test_a_space_offers_only_its_models_and_no_family_notes(monkeypatch):
    monkeypatch.setenv("SPACE_ID", "someone/slowfast")
    monkeypatch.delenv("SLOWFAST_ONLY_MODELS", raising=False)
    monkeypatch.delenv("SLOWFAST_MODEL", raising=False)
    assert [value for _, value in model_choices("embedded")] == ["embedded"]
    demo = app.build_app("embedded")
    accordion = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "model-families")
    assert accordion.visible is False


def test_the_sampler_and_lengths_follow_a_diffusion_gemma(tmp_path):
    from explorer.controls import on_model_family
    from slowfast.models.tiny_gemma import write_tiny_diffusion_gemma

    folder = str(write_tiny_diffusion_gemma(tmp_path / "gemma", canvas_length=16))
    sampler, block, gen = on_model_family(folder, "slowfast", 40, 96)
    assert sampler["value"] == "entropy_bound" and block["value"] == 16 and gen["value"] == 48  # whole canvases
    assert on_model_family(folder, "entropy_bound", 32, 16) == (gr_update(), gr_update(), gr_update())  # it fits
    sampler, block, gen = on_model_family("embedded", "entropy_bound", 32, 16)
    assert sampler["value"] == "slowfast" and block == gen == gr_update()
    assert on_model_family("embedded", "threshold", 32, 16) == (gr_update(),) * 3
    sampler, block, gen = on_model_family("google/diffusiongemma-26B-A4B-it", "slowfast", 96, 96)
    assert (sampler["value"], block["value"], gen["value"]) == ("entropy_bound", 256, 256)


def gr_update():
    import gradio as gr

    return gr.update()


def test_the_picker_states_small_models_memory_in_megabytes():
    """ModernBERT-base's 298 MB of bf16 weights read "0 GB" before."""
    from explorer.controls import model_choices

    labels = dict((v, label) for label, v in model_choices("embedded"))
    assert "· 298 MB bf16 / 596 MB fp32 ·" in labels["dllm-hub/ModernBERT-base-chat-v0.1"]
    assert "· 16 GB bf16 / 32 GB fp32 ·" in labels["GSAI-ML/LLaDA-8B-Instruct"]
    assert not any(" 0 GB" in label for label in labels.values())
