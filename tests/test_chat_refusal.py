"""/chat on a model without a chat template is refused with the page's reason (the page hides
the chat box for such a model; through the API it used to decode the conversation as plain
"role: text" lines and answer gibberish, without a word)."""
import json

import app
from explorer.controls import NO_CHAT_TEMPLATE, chat_refusal, on_model_change
from slowfast.session import Controls

REFUSAL = ("Chat needs a chat template; **embedded** has none, so its prompt would be fed as plain text. "
           "Use **Run** with a plain prompt.")


def values(**changes):
    c = Controls(**changes)
    return [getattr(c, n) for n in app.CONTROL_NAMES]


def test_a_model_without_a_chat_template_is_refused_with_a_sentence(tiny_dir, tmp_path):
    assert chat_refusal("embedded") == REFUSAL  # the embedded model has no template
    assert chat_refusal(" embedded ") == REFUSAL
    assert chat_refusal(str(tiny_dir)) is None  # the tiny checkpoint has one
    assert chat_refusal("GSAI-ML/LLaDA-8B-Instruct") is None  # not known without loading it: not refused
    assert chat_refusal("") is None and chat_refusal(None) is None
    folder = tmp_path / "<b>plain"  # a local folder whose tokenizer has no template; its name is shown as text
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    refusal = chat_refusal(str(folder))
    assert "**" + str(tmp_path) + "/&lt;b&gt;plain** has none" in refusal and "<b>" not in refusal


def test_the_refusal_and_the_page_say_the_same(tiny_dir):
    checkbox, box = on_model_change("embedded")
    assert checkbox.info == NO_CHAT_TEMPLATE and box.visible is False
    assert "fed as plain text" in NO_CHAT_TEMPLATE and "fed as plain text" in chat_refusal("embedded")
    checkbox, box = on_model_change(str(tiny_dir))
    assert box.visible is True


def test_chat_through_the_api_refuses_such_a_model_without_decoding():
    """Needs the three lines at the top of explorer/run.py's on_chat (see the report)."""
    state, history = {}, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    frames = list(app.on_chat("embedded", "What now?", history, state, *values(sampler="baseline")))
    assert len(frames) == 1
    message, *_, run_button, chat, box = frames[0]
    assert message == f"⚠️ {REFUSAL}"
    assert chat == history and box == "What now?"  # the conversation and the typed message are kept
    assert run_button.interactive
    assert "run" not in state and "trace" not in state  # nothing decoded
