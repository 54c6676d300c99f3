"""/chat on a model without a chat template is refused with the page's reason (the page hides
the chat box for such a model; through the API it used to decode the conversation as plain
"role: text" lines and answer gibberish, without a word)."""
import json

import app
from explorer.controls import NO_CHAT_TEMPLATE, chat_refusal, on_model_change
from slowfast.session import Controls



def refusal_for(folder) -> str:
    return (f"Chat needs a chat template; **{folder}** has none, so its prompt would be fed as plain text. "
            "Use **Run** with a plain prompt.")


def values(**changes):
    c = Controls(**changes)
    return [getattr(c, n) for n in app.CONTROL_NAMES]


def test_a_model_without_a_chat_template_is_refused_with_a_sentence(plain_dir, tiny_dir, tmp_path):
    assert chat_refusal(str(plain_dir)) == refusal_for(plain_dir)  # the embedded model without its template
    assert chat_refusal(f" {plain_dir} ") == refusal_for(plain_dir)
    assert chat_refusal(str(tiny_dir)) is None  # the tiny checkpoint has one
    assert chat_refusal("embedded") is None and chat_refusal(" embedded ") is None  # so has the embedded model
    assert chat_refusal("GSAI-ML/LLaDA-8B-Instruct") is None  # not known without loading it: not refused
    assert chat_refusal("") is None and chat_refusal(None) is None
    folder = tmp_path / "<b>plain"  # a local folder whose tokenizer has no template; its name is shown as text
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    refusal = chat_refusal(str(folder))
    assert "**" + str(tmp_path) + "/&lt;b&gt;plain** has none" in refusal and "<b>" not in refusal


def test_the_refusal_and_the_page_say_the_same(plain_dir, tiny_dir):
    checkbox, box = on_model_change(str(plain_dir))
    assert checkbox.info == NO_CHAT_TEMPLATE and box.visible is False
    assert "fed as plain text" in NO_CHAT_TEMPLATE and "fed as plain text" in chat_refusal(str(plain_dir))
    for chats in (str(tiny_dir), "embedded"):
        checkbox, box = on_model_change(chats)
        assert box.visible is True and checkbox.interactive is True


def test_chat_through_the_api_refuses_such_a_model_without_decoding(plain_dir):
    """Needs the three lines at the top of explorer/run.py's on_chat (see the report)."""
    state, history = {}, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    frames = list(app.on_chat(str(plain_dir), "What now?", history, state, *values(sampler="baseline")))
    assert len(frames) == 1
    message, *_, run_button, chat, box = frames[0]
    assert message == f"⚠️ {refusal_for(plain_dir)}"
    assert chat == history and box == "What now?"  # the conversation and the typed message are kept
    assert run_button.interactive
    assert "run" not in state and "trace" not in state  # nothing decoded


def test_the_embedded_models_task_prompts_stay_plain_by_default(tiny_dir):
    """The embedded model has a template, for questions; its task prompts (``Q: 7+5-3=? A:``)
    are plain text, so its template checkbox starts off (on the page and in the API's default),
    while a model whose template is its prompt format (the tiny LLaDA checkpoint) starts on."""
    checkbox, box = on_model_change("embedded")
    assert checkbox.value is False and checkbox.interactive is True and box.visible is True
    assert "plain text" in checkbox.info and "What is 7+5-3?" in checkbox.info
    checkbox, _ = on_model_change(str(tiny_dir))
    assert checkbox.value is True
    page = app.build_app()
    assert page.config is not None
    (chat,) = [c for c in page.blocks.values() if getattr(c, "label", None) == "Apply the chat template"]
    assert chat.value is False and chat.interactive is not False


def test_an_export_of_the_embedded_model_is_treated_as_the_model_it_is(tmp_path):
    """What makes the chat box feed one question and the checkbox start off is the model (made
    by ``slowfast train``: its folder has training_info.json), not the name "embedded": a copy
    of its folder gets the same; a folder without training_info.json the conversation."""
    import shutil

    from explorer.controls import chat_turns
    from slowfast.models.loading import EMBEDDED_DIR

    copy = tmp_path / "my-export"
    shutil.copytree(EMBEDDED_DIR, copy)
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
             {"role": "user", "content": "What is 2+3?"}]
    for name in ("embedded", str(copy)):
        assert chat_turns(name, turns) == turns[-1:]
        assert on_model_change(name)[0].value is False
    (copy / "training_info.json").unlink()
    assert chat_turns(str(copy), turns) == turns and on_model_change(str(copy))[0].value is True
    assert chat_turns("GSAI-ML/LLaDA-8B-Instruct", turns) == turns
